"""The scheduler: the loop-thread side of the bridge.

It takes the jobs the registry accepted (one drain per burst of submissions),
starts them (now, or when their lane has a place), keeps every deadline in one
heap, delivers each job's one cancellation, and finishes jobs: the registry
records the outcome, then the job is traced and resolved.

Loop thread only, except the methods marked "any thread": :meth:`call_soon`,
:meth:`request_cancel` and :meth:`cancel_soon` (which hand work to the loop),
:meth:`check_wait`, and :meth:`finish` (the shutdown thread resolves jobs
stuck on a blocked loop). It never takes a lock itself: every decision about
a job's state is the registry's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import _fork, _log
from ._deadlines import Deadlines
from ._endings import cancelled_error, describe, timeout_error
from ._exceptions import BridgeError, WrongThread
from ._failures import FailureWatch
from ._job import CancelReason, Job, JobState, one_line
from ._lanes import Lane
from ._observers import Observers
from ._registry import Registry
from ._tasks import EAGER, create_eager_task, create_task, task_context

__all__ = ["Scheduler"]

_PENDING: Final = JobState.PENDING
_RUNNING: Final = JobState.RUNNING
_SUCCEEDED: Final = JobState.SUCCEEDED
_FAILED: Final = JobState.FAILED
_CANCELLED: Final = JobState.CANCELLED
_TIMED_OUT: Final = JobState.TIMED_OUT
_DEADLINE: Final = CancelReason.DEADLINE
#: At most this many jobs start per turn of the loop (see Scheduler._drain).
SLICE: Final = 256
#: The bindings of a job submitted from an empty context (shared, never changed).
_NO_BINDINGS: Final[dict[str, Any]] = {}
#: The ``outcome`` field of job.finished: ``state.value`` without the enum's property.
_OUTCOME: Final = {state: state.value for state in JobState}


class Scheduler:
    """Runs the registry's jobs on one event loop (the :class:`JobOwner` of jobs)."""

    def __init__(
        self, name: str, registry: Registry, lanes: Mapping[str, Lane], log: _log.EventLog
    ) -> None:
        self._name = name
        self._registry = registry
        self._lanes = lanes
        self._log = log
        #: Who follows every job (metrics, spans); see ``_observers.py``.
        self.observers = Observers(log)
        #: The loop, once :meth:`attach` ran; read by the facade.
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The loop thread's ident (compared by every blocking call).
        self.loop_ident: int | None = None
        self._deadlines: Deadlines | None = None
        # Jobs taken from the registry, not yet started (loop thread only).
        self._backlog: deque[Job[Any]] = deque()
        self._fork_generation = -1  # _fork.generation when the loop started

    def attach(self, loop: asyncio.AbstractEventLoop, ident: int) -> None:
        """Bind to the loop the loop thread runs (called once, at start)."""
        self.loop = loop
        self.loop_ident = ident
        self._fork_generation = _fork.generation
        self._active_ids = self._registry.active_ids  # a live view, read per deadline
        self._deadlines = Deadlines(loop, self._active_ids, self._expire)

    def detach(self) -> None:
        """The loop thread is ending (called on it, last): it is no longer the loop's."""
        self.loop_ident = None

    # -- any thread -------------------------------------------------------------

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Schedule ``callback(*args)`` on the loop, from any thread."""
        loop = self.loop
        assert loop is not None
        if threading.get_ident() == self.loop_ident:
            loop.call_soon(callback, *args)
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop has closed: shutdown or BROKEN resolves every job
            pass

    def wake(self) -> None:
        """Ask the loop to take the jobs queued in the registry. Any thread."""
        self.call_soon(self._drain)

    def request_cancel(self, job: Job[Any]) -> bool:
        """Decide *job*'s cancellation and deliver it, unless decided before. Any thread."""
        if self._registry.claim_cancel(job, CancelReason.CANCEL):
            self.call_soon(self._deliver, job)
            return True
        state = job._job_state
        return state is _CANCELLED or not state.finished

    def cancel_soon(self, job: Job[Any]) -> None:
        """Deliver the cancellation the registry decided for *job*. Any thread."""
        self.call_soon(self._deliver, job)

    def check_wait(self, what: str) -> None:
        """Raise unless this thread may block waiting for a job. Any thread."""
        self.check_forked()
        if threading.get_ident() == self.loop_ident:
            raise WrongThread(
                f"Job.{what}() on the bridge's loop thread would block the loop that "
                f"must run the job: a deadlock. Use 'await job' inside a coroutine."
            )

    def check_forked(self) -> None:
        """Raise in a child process made by ``os.fork()`` after the loop started."""
        if self._fork_generation not in (-1, _fork.generation):
            raise BridgeError(
                f"bridge {self._name!r} was started in another process; its loop thread "
                f"does not exist in this process (a child created by os.fork()). "
                f"Create a new Bridge in the child; bridge.default() does so by itself."
            )

    def finish(
        self,
        job: Job[Any],
        state: JobState,
        *,
        value: Any = None,
        error: BaseException | None = None,
        forced: bool = False,
        detail: object = None,
    ) -> bool:
        """Record how *job* ended, trace it, then resolve it; return whether it did.

        Any thread (the shutdown thread resolves stuck jobs); the first call
        for a job wins. Unless *forced*, a job whose deadline fired ends
        TIMED_OUT, whatever its coroutine did while it unwound. *detail*, if a
        str, is appended to the message of the JobCancelled/JobTimeout made here.
        """
        if not forced and job._cancel is _DEADLINE and state is not _TIMED_OUT:
            state, value, error = _TIMED_OUT, None, timeout_error(job, error, detail)
        elif error is None and state is _CANCELLED:
            error = cancelled_error(job, detail)
        elif error is None and state is _TIMED_OUT:
            error = timeout_error(job)
        # The one-line error is made here, not under the registry's lock (__str__ is user code).
        line = None if error is None else one_line(error)
        previous = self._registry.finish(job, state, error, line)
        if previous is None:
            return False
        self._release(job, previous)
        try:
            self._trace_finished(job, state, error)
            if self.observers.all:
                self.observers.finished(job)
        finally:
            job._settle(value, error)
        return True

    def fields(self, job: Job[Any], **extra: Any) -> dict[str, Any]:
        """The fields of a job's event: its submit-time bindings, then its own.

        Any thread. The bindings are read from the job's context once, at its
        first event, and kept on the job for the others (``job._ctx`` keeps
        what ``submit()`` saw, so they would not change). A new dict each time.
        """
        bound = job._bindings
        if bound is None:
            ctx = job._ctx  # the EMPTY_CONTEXT marker included: nothing to read
            bound = job._bindings = ctx.run(_log.bindings) if len(ctx) else _NO_BINDINGS
        return {
            **bound,
            "job_id": job.id,
            "key": job.key,
            "kind": job.kind,
            "thread": job._thread_name,
            **extra,
        }

    # -- loop thread: starting ------------------------------------------------------

    def _drain(self) -> None:
        """Start the jobs accepted since the last drain (one wake-up per burst).

        At most :data:`SLICE` per turn of the loop; the rest wait, in order, in
        the backlog: a burst never has thousands of tasks alive at once.
        """
        batch = self._registry.take_intake()
        backlog = self._backlog
        if backlog:  # a slice is already scheduled: the new jobs queue behind it
            backlog.extend(batch)
        elif len(batch) <= SLICE:
            self._start_slice(batch)
        else:
            backlog.extend(batch)
            self._drain_backlog()

    def _drain_backlog(self) -> None:
        """Start the next :data:`SLICE` jobs of the backlog; schedule the rest."""
        backlog = self._backlog
        count = min(SLICE, len(backlog))
        batch = [backlog.popleft() for _ in range(count)]
        self._start_slice(batch)
        if backlog:
            assert self.loop is not None
            self.loop.call_soon(self._drain_backlog)

    def _start_slice(self, batch: list[Job[Any]]) -> None:
        if EAGER:
            self._start_eagerly(batch)
            return
        for job in batch:
            if self._launch(job):
                self._start_task(job, checked=True)
        if batch:
            # Runs after the first step of every task just created (the ready
            # queue is FIFO): catches a task cancelled before that step, which
            # never enters _run's handlers. Cheaper than a done-callback per task.
            assert self.loop is not None
            self.loop.call_soon(self._check_started, batch)

    def _start_eagerly(self, batch: list[Job[Any]]) -> None:
        """3.12+: create the tasks of *batch*, each taking its first step now.

        A failure's frames reach these frames (``f_back``): none may hold a job
        when it returns, so *batch* (the callers' list too) is emptied first.
        No ``_check_started``: a task has taken its first step already.
        """
        loop = self.loop
        assert loop is not None
        starts = [(self._run(job), task_context(job)) for job in batch if self._launch(job)]
        batch.clear()
        for coro, ctx in starts:
            create_eager_task(loop, coro, ctx)

    def _check_started(self, batch: list[Job[Any]]) -> None:
        for job in batch:
            task = job._task
            if task is not None and job._job_state is _PENDING and task.done():
                self._task_done(job, task)

    def _launch(self, job: Job[Any]) -> bool:
        """Arm *job*'s deadline and take its lane place; return whether it starts now."""
        if job._job_state is not _PENDING or job._cancel is not None:
            return False  # ended, or its cancellation is on its way to _deliver
        deadline = job._deadline_at
        if deadline is not None:
            if deadline <= time.monotonic():
                self._expire_job(job)
                return False
            assert self._deadlines is not None
            self._deadlines.add(deadline, job.id, len(self._active_ids))
        lane = self._lanes.get(job.kind)
        return lane is None or lane.admit(job)

    def _start_task(self, job: Job[Any], *, checked: bool = False) -> None:
        """Create the job's task; *checked*: _drain's _check_started covers it."""
        assert self.loop is not None
        task = create_task(self.loop, self._run(job), task_context(job))
        job._task = task
        if not checked:
            task.add_done_callback(lambda t: self._task_done(job, t))

    async def _run(self, job: Job[Any]) -> None:
        """The task body of every job: start it, run it, record how it ended.

        The job leaves this frame's locals before it returns: a failure's
        frames keep this frame alive (``f_back``), and through it the job.
        """
        if job._task is None:  # an eager task: its first step runs inside its creation
            job._task = asyncio.current_task()
        try:
            begun = self._begin(job)
            if begun is None:
                if job._job_state is _PENDING:  # its cancellation was decided: end it now
                    self._deliver(job)
                del job
                return
            coro, fn, args = begun
            value = await (coro if fn is None else fn(*args))
        except asyncio.CancelledError as exc:
            # A message on the CancelledError says how the job unwound (a process
            # job: how its child ended); it goes into the JobCancelled/JobTimeout.
            self.finish(job, _CANCELLED, detail=exc.args[0] if exc.args else None)
        except BaseException as exc:  # noqa: BLE001 - the job failed: record it
            # KeyboardInterrupt and SystemExit too: re-raised here they would stop
            # the loop thread and leave every later job hanging; result() raises them.
            self.finish(job, _FAILED, error=_without_own_frames(exc))
        else:
            self.finish(job, _SUCCEEDED, value=value)
        del job

    def _begin(
        self, job: Job[Any]
    ) -> tuple[Any, Callable[..., Any] | None, tuple[Any, ...]] | None:
        """Mark *job* running; return ``(coroutine, fn, args)`` to run, or ``None``.

        Either the coroutine object or ``fn(*args)`` is what the job awaits.
        """
        if not self._registry.begin(job):
            return None
        job._started_mono = time.monotonic()
        job._started_at = time.time()
        if self.observers.all:
            self.observers.started(job)
        debug = self._log.debug()
        if debug is not None:
            queue_ms = (job._started_mono - job._submitted_mono) * 1000.0
            self._log.send(debug, _log.JOB_STARTED, self.fields(job, queue_ms=queue_ms))
        begun = (job._coro, job._fn, job._args)
        job._coro = job._fn = None
        job._args = ()
        return begun

    # -- loop thread: cancelling ------------------------------------------------------

    def _expire(self, job_id: int) -> None:
        """The deadline of job *job_id* has come (the heap's callback)."""
        job = self._registry.find(job_id)
        if job is not None:
            self._expire_job(job)

    def _expire_job(self, job: Job[Any]) -> None:
        if self._registry.claim_cancel(job, _DEADLINE):
            self._deliver(job)
        # else: already being cancelled: let that cleanup finish undisturbed

    def _deliver(self, job: Job[Any]) -> None:
        """Deliver the one cancellation the registry decided for *job*."""
        state = job._job_state
        if state is _PENDING:
            self.finish(job, _TIMED_OUT if job._cancel is _DEADLINE else _CANCELLED)
        elif state is _RUNNING and job._task is not None:
            job._task.cancel()

    def _task_done(self, job: Job[Any], task: asyncio.Task[None]) -> None:
        """Safety net: resolve a job whose task ended without _run resolving it.

        That happens when a task is cancelled before its first step: _run never
        starts, so its handlers never run.
        """
        if job._job_state.finished:
            return
        if task.cancelled():
            self.finish(job, _CANCELLED)
        else:
            self.finish(job, _FAILED, error=task.exception() or cancelled_error(job))

    # -- the end of the loop ---------------------------------------------------------------

    def cancel_all_for_shutdown(self) -> None:
        """Decide and deliver a cancellation for every unfinished job. Any thread."""
        registry = self._registry
        for job in registry.unfinished():
            if registry.claim_cancel(job, CancelReason.CANCEL):
                self.call_soon(self._deliver, job)

    def loop_died(self, reason: str) -> None:
        """The loop stopped without shutdown() asking: fail every unfinished job.

        Called on the loop thread, after ``run_forever()`` returned or raised.
        """
        jobs = self._registry.mark_broken()
        if jobs is None:
            return
        self._log.emit("error", _log.LOOP_DIED, {"bridge": self._name, "reason": reason})
        for job in jobs:
            error = BridgeError(
                f"the event loop of bridge {self._name!r} {reason}; {describe(job)} was abandoned"
            )
            self.finish(job, _FAILED, error=error, forced=True)

    def lane_counts(self) -> dict[str, tuple[int, int, int]]:
        """``{kind: (limit, running, waiting)}`` for every lane. Any thread (a snapshot)."""
        lanes = self._lanes.items()
        return {kind: (lane.limit, lane.running, len(lane.waiting)) for kind, lane in lanes}

    def forget_lanes(self) -> None:
        """Drop every job still queued in a lane (the loop has stopped)."""
        for lane in self._lanes.values():
            lane.clear()
        self._backlog.clear()

    # -- helpers --------------------------------------------------------------------------

    def _release(self, job: Job[Any], previous: JobState) -> None:
        """Free what a finished job held: its lane place, task and coroutine."""
        if job._lane and threading.get_ident() == self.loop_ident:
            following = self._lanes[job.kind].leave(job)
            if following is not None:
                self._start_task(following)
        # A finished job may be held for long (a list of submitted jobs): let
        # its task, coroutine and context copy go now.
        job._task = None
        unstarted = job._coro if previous is _PENDING else None
        job._coro = job._fn = None
        job._args = ()
        if unstarted is not None:  # never started, so never running: safe to close
            unstarted.close()

    def _trace_finished(self, job: Job[Any], state: JobState, error: BaseException | None) -> None:
        log = self._log
        debug = log.debug()
        if debug is not None:
            run_ms = 0.0
            if job._started_at is not None:
                run_ms = (time.monotonic() - job._started_mono) * 1000.0
            fields = self.fields(job, run_ms=run_ms, outcome=_OUTCOME[state])
            log.send(debug, _log.JOB_FINISHED, fields)
        if state is _TIMED_OUT:
            log.emit("warning", _log.JOB_TIMED_OUT, self.fields(job))
        elif state is _FAILED:
            if job._observed:
                # Somebody waits or has a callback: they will look. If nobody
                # ever does, say so when the job is collected (as asyncio does).
                fields = self.fields(job, exc_info=error, unretrieved=True)
                assert job._failure is not None
                job._watch = FailureWatch(
                    job._failure, lambda: log.emit("error", _log.JOB_FAILED, fields)
                )
            else:
                log.emit("error", _log.JOB_FAILED, self.fields(job, exc_info=error))


# -- errors ---------------------------------------------------------------------------------

#: The scheduler's frames that a job's exception passes through.
_OWN_CODE: Final = frozenset({Scheduler._run.__code__})


def _without_own_frames(error: BaseException) -> BaseException:
    """Drop the scheduler's frames from the front of *error*'s traceback.

    They reference the job (a local), so a failure record that keeps the
    error would keep the job alive; and they are not the user's code.
    """
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_CODE:
        tb = tb.tb_next
    return error.with_traceback(tb)
