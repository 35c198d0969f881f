"""Shutdown: the two-phase procedure that stops a bridge and reports on it.

1. Intake stops (the registry goes CLOSING) and the channels close, which
   wakes producers and consumers blocked on them.
2. Unfinished jobs get the caller's *timeout* to finish by themselves.
3. The rest receive their one cancellation and get :data:`CANCEL_GRACE` to
   unwind (while process jobs have live children: the largest ``kill_grace``
   plus :data:`PROCESS_GRACE`, the time to end a child's group); those that
   still have not ended block the loop or ignore cancellation: they are
   reported as stuck and resolved with ``JobCancelled`` from the calling thread.
   Then the parts jobs used until their end close (``add_after_jobs``: pinned
   threads, the process pool); each is called again if the procedure repeats.
4. On the loop, while it and the resources' own tasks still run, resources
   exit (:data:`RESOURCE_GRACE` in all); then the tasks nobody owns are
   cancelled, async generators closed, and the loop stops.
5. Once the resources have closed (or the loop has stayed blocked for
   :data:`STOP_GRACE`), the loop thread, the worker threads and the watchdog
   are joined against one shared deadline, and the report names any that are
   still alive. Any child process group still listed is SIGKILLed from the
   calling thread (nothing on the stopped loop can end it any more). The
   report is made after the resources' exits, so it counts every one; a
   resource a blocked loop never exited is reported as a ``TimeoutError``.

The procedure runs under this module's own lock, one caller at a time. If it
raises (``KeyboardInterrupt`` in the middle, say), the bridge stays CLOSING and
the next ``shutdown()`` runs it again from where things are: every step may
be repeated. A call that cannot wait without deadlocking (a signal handler
that interrupted the registry's critical section, or this procedure, on the
same thread) hands the work to a thread of its own and returns a deferred
report at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from . import _log
from ._children import ChildGroups
from ._endings import describe
from ._exceptions import JobCancelled
from ._job import Job, JobInfo, JobState
from ._loop import LoopThread, cancel_leftover_tasks
from ._registry import Registry
from ._resources import ResourceStack
from ._scheduler import Scheduler
from ._state import BridgeState
from ._stats import ShutdownReport
from ._watchdog import Watchdog
from ._workers import WorkerPool

__all__ = ["CANCEL_GRACE", "PROCESS_GRACE", "RESOURCE_GRACE", "STOP_GRACE", "Shutdown"]

#: After the shutdown timeout: how long cancelled jobs get to unwind ...
CANCEL_GRACE: Final = 0.5
#: ... (a process job: its ``kill_grace`` plus this, to SIGKILL and reap its group) ...
PROCESS_GRACE: Final = 1.0
#: ... how long resources get, in all, to exit ...
RESOURCE_GRACE: Final = 1.0
#: ... and how long the bridge's threads get to end before they are reported.
STOP_GRACE: Final = 0.5
#: Idle threads get at least this long to end, even after a stuck loop.
_JOIN_AT_LEAST: Final = 0.1
#: How long the default executor gets to shut down on the loop.
_EXECUTOR_GRACE: Final = 0.2


class Shutdown:
    """Stops one bridge, once, and keeps the report. Any thread but the loop's."""

    def __init__(
        self,
        name: str,
        registry: Registry,
        scheduler: Scheduler,
        resources: ResourceStack,
        workers: WorkerPool,
        close_channels: Callable[[], object],
        events: _log.EventLog,
    ) -> None:
        self._name = name
        self._events = events
        self._registry = registry
        self._scheduler = scheduler
        self._resources = resources
        self._workers = workers
        self._close_channels = close_channels
        #: Set by the bridge when it starts.
        self.runner: LoopThread | None = None
        self.watchdog: Watchdog | None = None
        #: The process groups of the children of process jobs (``run_process``).
        self.children = ChildGroups()
        # One procedure at a time; guards the fields below. Re-entrant only so
        # that a signal handler on the thread running the procedure can tell.
        self._lock = threading.RLock()
        self._report: ShutdownReport | None = None
        self._deferred: threading.Thread | None = None
        self._awaited: list[Job[Any]] | None = None  # jobs the procedure still waits for
        self._cancel_sent = False
        self._finished = 0
        self._cancelled: list[JobInfo] = []
        self._closers_lock = threading.Lock()  # guards the two fields below
        self._closers: list[Callable[[], object]] = []
        self._closers_ran = False
        # Closed after the jobs end and before the loop stops (pinned threads, the
        # process pool); registered while the bridge is built, read only by the procedure.
        self._after_jobs: list[Callable[[], object]] = []
        self._thread_sources: list[Callable[[], Iterable[threading.Thread]]] = []

    # -- the public procedure --------------------------------------------------------

    def shutdown(self, timeout: float | None) -> ShutdownReport:
        """Run the procedure (or wait for the one running); return the report."""
        report = self._report
        if report is not None:
            return report
        if self._lock._is_owned():  # type: ignore[attr-defined]
            return _DEFERRED  # a signal handler interrupted the procedure, which goes on
        if self._registry.held_here():
            return self._defer(timeout)  # a signal handler interrupted the registry
        with self._lock:  # one procedure at a time; a later caller gets its report
            if self._report is not None:
                return self._report
            report = self._run(timeout)
            self._report = report
        self._registry.mark_closed()
        return report

    def add_closer(self, closer: Callable[[], object]) -> None:
        """Call *closer()* when shutdown begins (at once if it has). Any thread."""
        with self._closers_lock:  # the list, or the fact that it has been run
            if not self._closers_ran:
                self._closers.append(closer)
                return
        self._call_closer(closer)

    def add_after_jobs(self, closer: Callable[[], object]) -> None:
        """Call *closer()* once the jobs have ended, before the loop stops.

        For parts that jobs use until their end (a pinned thread, the process
        pool): they close after the last job, and before the resources exit.
        Registered while the bridge is built; an error in *closer* is logged
        as ``bridge.closer_error`` and never stops the shutdown.
        """
        self._after_jobs.append(closer)

    def add_thread_source(self, source: Callable[[], Iterable[threading.Thread]]) -> None:
        """Count the threads *source()* returns as the bridge's own (``threads_left``)."""
        self._thread_sources.append(source)

    def owned_threads(self) -> list[threading.Thread]:
        """The threads the bridge started and may still run. Any thread."""
        threads = list(self._workers.threads())
        for source in self._thread_sources:
            threads.extend(source())
        if self.runner is not None:
            threads.append(self.runner.thread)
        if self.watchdog is not None:
            threads.append(self.watchdog.thread)
        if self._deferred is not None:
            threads.append(self._deferred)
        return threads

    async def close_on_loop(self) -> None:
        """Step 4, on the loop: resources exit, then the tasks nobody owns end."""
        await self._resources.aclose(RESOURCE_GRACE)
        await cancel_leftover_tasks()
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        try:
            await asyncio.wait_for(loop.shutdown_default_executor(), _EXECUTOR_GRACE)
        except asyncio.TimeoutError:
            pass

    # -- steps ------------------------------------------------------------------------

    def _run(self, timeout: float | None) -> ShutdownReport:
        started = time.monotonic()
        if self._registry.begin_close() is BridgeState.NEW:
            self._run_closers()  # an operations server may serve a bridge never started
            self._run_after_jobs()  # a process pool may serve one too (process_map)
            return ShutdownReport(0, (), (), 0.0)
        self._close_channels()
        self._run_closers()
        stuck = self._end_jobs(timeout)
        self._run_after_jobs()
        self._stop_threads()
        return ShutdownReport(
            finished=self._finished,
            cancelled=tuple(sorted(self._cancelled, key=_by_id)),
            stuck=stuck,
            duration=time.monotonic() - started,
            resources_closed=self._resources.closed,
            resource_errors=self._resource_errors(),
            threads_left=self._threads_left(),
        )

    def _run_after_jobs(self) -> None:
        for closer in self._after_jobs:
            self._call_closer(closer)

    def _run_closers(self) -> None:
        """Close what was attached to the bridge (an operations server, metrics)."""
        with self._closers_lock:  # take them all; later ones run at once
            closers, self._closers = self._closers, []
            self._closers_ran = True
        for closer in closers:
            self._call_closer(closer)

    def _call_closer(self, closer: Callable[[], object]) -> None:
        try:
            closer()
        except Exception as exc:  # noqa: BLE001 - one closer never stops the shutdown
            fields = {"closer": repr(closer), "exc_info": exc}
            self._events.emit("error", _log.CLOSER_ERROR, fields)

    def _end_jobs(self, timeout: float | None) -> tuple[JobInfo, ...]:
        """Steps 2 and 3; return the stuck jobs, as they were.

        Resumable: what is known is kept between runs (the jobs still awaited,
        whether they were cancelled), so a run interrupted in a wait counts
        every job once, and as it ended, when the next run repeats that wait.
        """
        if self._awaited is None:  # the first run: every job this shutdown answers for
            self._awaited = self._registry.unfinished()
        if not self._cancel_sent:
            finished, self._awaited = _wait(self._awaited, timeout)
            self._finished += len(finished)
            if self._awaited:
                self._cancel_sent = True
                self._scheduler.cancel_all_for_shutdown()
        ended, pending = _wait(self._awaited, self._cancel_grace())
        self._cancelled.extend(job.info() for job in ended)
        self._awaited = []
        stuck = tuple(sorted((job.info() for job in pending), key=_by_id))
        for job in pending:
            self._scheduler.finish(job, JobState.CANCELLED, error=_stuck_error(job))
        return stuck

    def _cancel_grace(self) -> float:
        """How long cancelled jobs get to end: longer while children must be ended."""
        kill_grace = self.children.max_grace()
        if kill_grace is None:
            return CANCEL_GRACE
        return max(CANCEL_GRACE, kill_grace + PROCESS_GRACE)

    def _stop_threads(self) -> None:
        """Steps 4 and 5: the loop closes and stops, then every thread is joined."""
        runner = self.runner
        closed = False
        if runner is not None:
            runner.request_stop()
            # A loop still blocked after STOP_GRACE never begins the exits.
            closed = self._resources.wait_closed(start_timeout=STOP_GRACE, slack=0.1)
        self._workers.close()  # after the resources: their exits may use to_thread()
        now = time.monotonic()
        deadline = now + max(STOP_GRACE if closed else 0.0, _JOIN_AT_LEAST)
        if runner is not None and runner.join(deadline):
            self._scheduler.forget_lanes()
        self._workers.join(deadline)
        if self.watchdog is not None:
            self.watchdog.stop(deadline)
        self.children.kill_all()  # the loop has stopped: no child may outlive it

    def _resource_errors(self) -> tuple[tuple[str, BaseException], ...]:
        """The exits' errors, plus a ``TimeoutError`` for each resource never exited."""
        outcome = self._resources.outcome
        if outcome.finished or self.runner is None:
            return outcome.errors
        never = TimeoutError("never exited: the loop was blocked when the bridge shut down")
        return outcome.errors + tuple((name, never) for name in outcome.open)

    def _threads_left(self) -> tuple[str, ...]:
        me = threading.current_thread()
        return tuple(t.name for t in self.owned_threads() if t.is_alive() and t is not me)

    def _defer(self, timeout: float | None) -> ShutdownReport:
        """Run the procedure on a thread of its own; report that it was deferred."""
        if self._deferred is None:
            self._deferred = threading.Thread(
                target=self.shutdown, args=(timeout,), name=f"{self._name}-shutdown", daemon=True
            )
            self._deferred.start()
        return _DEFERRED


#: What a call that cannot wait for the procedure returns.
_DEFERRED: Final = ShutdownReport(0, (), (), 0.0, deferred=True)


def _wait(jobs: list[Job[Any]], timeout: float | None) -> tuple[list[Job[Any]], list[Job[Any]]]:
    """Wait for *jobs* (any thread); return those done and those not done."""
    if jobs:
        concurrent.futures.wait(jobs, timeout=timeout)
    done: list[Job[Any]] = []
    not_done: list[Job[Any]] = []
    for job in jobs:
        (done if job.done() else not_done).append(job)
    return done, not_done


def _by_id(info: JobInfo) -> int:
    return info.id


def _stuck_error(job: Job[Any]) -> JobCancelled:
    return JobCancelled(
        f"{describe(job)} did not end when the bridge shut down (it blocks the loop "
        f"or ignores cancellation); it was abandoned"
    )
