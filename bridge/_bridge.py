"""The bridge: the public facade over the registry, the scheduler and shutdown.

The layers, each in its own module, with dependencies pointing down::

    _bridge.py      Bridge: argument and thread checks, wiring (this module)
    _launch.py      starting the loop thread and its watchdog
    _shutdown.py    the two-phase shutdown procedure and its report
    _scheduler.py   loop thread: drain, launch, run, deadlines, lanes, finish
    _registry.py    the lock: jobs, keys, intake, room, counters, state
    _job.py         Job, JobState, JobInfo (talks up only through JobOwner)

Below them: the loop thread (``_loop.py``), lanes, deadlines, resources,
channels, worker threads, the watchdog, logging and argument checks.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from . import _log
from ._arguments import (
    check_count,
    check_limits,
    check_timeout,
    check_timeouts,
    close_if_coroutine,
)
from ._channel import ChannelSet
from ._exceptions import WrongThread
from ._failures import FailureRecord
from ._intake import Intake
from ._job import Job, JobInfo
from ._lanes import Lane
from ._launch import job_of_task, launch
from ._operations import BridgeOperations
from ._pinned import PinnedThreads
from ._processes import BridgeProcesses
from ._procpool import ProcessPool
from ._registry import Registry
from ._resources import ResourceStack
from ._scheduler import Scheduler
from ._shutdown import Shutdown
from ._state import BridgeState
from ._stats import BridgeStats, ShutdownReport
from ._streams import BridgeStreams
from ._tools import BridgeTools
from ._typing import USE_DEFAULT, DefaultType, TypeVarTuple, Unpack
from ._workers import WorkerPool

__all__ = ["Bridge", "OnConflict", "WhenFull"]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")

OnConflict = Literal["reject", "replace", "join"]
WhenFull = Literal["block", "reject"]
_WHEN_FULL: Final = frozenset({"block", "reject"})


class Bridge(BridgeTools, BridgeStreams, BridgeProcesses, BridgeOperations):
    """One background event-loop thread that runs coroutines for any thread.

    Every coroutine it runs is a :class:`Job`, accounted for from ``submit()``
    until it ends: id, key, kind, deadline, cancellation, and a report at
    :meth:`shutdown`.

    Args:
        name: the bridge's name; its loop thread is named after it.
        default_timeout: seconds a job may take, counted from ``submit()``, when
            neither the job nor its kind says otherwise; ``None`` for no limit.
        timeouts: per-kind defaults, e.g. ``{"hangup": 5.0}``.
        limits: per-kind concurrency limits, e.g. ``{"tts": 2}``: at most that
            many jobs of the kind run at once; the others wait, in FIFO order.
        max_pending: at most this many unfinished jobs; ``None`` for no bound.
        when_full: what ``submit()`` does when *max_pending* is reached:
            ``"block"`` waits for room (up to its ``block_timeout``),
            ``"reject"`` raises :class:`Overloaded` at once.
        thread_workers: how many threads :meth:`to_thread` may use.
        process_workers: how many worker processes :meth:`to_process` and
            :meth:`process_map` may use (started at first use); by default
            the CPU count.
        thread_initializer: called once on each worker thread before its first
            task, e.g. to register the thread with a native library.
        loop_block_warning: log a ``loop.blocked`` warning when the loop thread
            has not come back to the event loop for this many seconds;
            ``None`` (the default) disables the watchdog.
        use_uvloop: run the loop on uvloop when it is installed (the ``uvloop``
            extra); plain asyncio otherwise.
        history: keep snapshots of the last *history* finished jobs
            (:meth:`history`); 0, the default, keeps none and costs nothing.

    Use it as a context manager, or call :meth:`start` (``submit()`` does it
    for you) and :meth:`shutdown`.

    **Signal handlers:** :meth:`shutdown`, :meth:`stats`, :meth:`jobs`,
    :meth:`get`, :meth:`cancel`, :meth:`cancel_all` and :attr:`state` may be
    called from a signal handler; the read-only calls may then see the update
    the handler interrupted half done.
    """

    def __init__(
        self,
        name: str = "bridge",
        *,
        default_timeout: float | None = 30.0,
        timeouts: Mapping[str, float | None] | None = None,
        limits: Mapping[str, int] | None = None,
        max_pending: int | None = None,
        when_full: WhenFull = "block",
        thread_workers: int = 8,
        thread_initializer: Callable[[], object] | None = None,
        loop_block_warning: float | None = None,
        use_uvloop: bool = False,
        history: int = 0,
        process_workers: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        self._name: Final = name
        self._default_timeout = check_timeout("default_timeout", default_timeout)
        self._timeouts: Final = check_timeouts(timeouts)
        lanes = {kind: Lane(n) for kind, n in check_limits(limits).items()}
        max_pending = check_count("max_pending", max_pending, allow_none=True)
        if when_full not in _WHEN_FULL:
            raise ValueError(f"when_full must be 'block' or 'reject', not {when_full!r}")
        self._when_full: Final = when_full
        check_count("thread_workers", thread_workers, allow_none=False)
        if thread_initializer is not None and not callable(thread_initializer):
            raise TypeError(f"thread_initializer must be callable, not {thread_initializer!r}")
        self._block_warning = check_timeout("loop_block_warning", loop_block_warning)
        if self._block_warning == 0:
            raise ValueError("loop_block_warning must be > 0 seconds, or None to disable it")
        self._use_uvloop: Final = bool(use_uvloop)
        if history != 0:
            check_count("history", history, allow_none=False)
        if process_workers is None:
            process_workers = os.cpu_count() or 1
        check_count("process_workers", process_workers, allow_none=False)
        self._wire(lanes, max_pending, thread_workers, thread_initializer, history)
        self._procpool = ProcessPool(name, process_workers)  # no process until first use
        self._shutdown.add_after_jobs(self._procpool.close)  # to_process calls may finish

    def _wire(
        self,
        lanes: dict[str, Lane],
        max_pending: int | None,
        thread_workers: int,
        thread_initializer: Callable[[], object] | None,
        history: int,
    ) -> None:
        """Build the layers (nothing runs until :meth:`start`)."""
        self._events = _log.EventLog(self._name)
        self._registry = Registry(self._name, max_pending, history)
        self._scheduler = Scheduler(self._name, self._registry, lanes, self._events)
        self._resources = ResourceStack(self._events.emit)
        self._channels = ChannelSet()
        self._workers = WorkerPool(self._name, thread_workers, thread_initializer)
        self._intake = Intake(
            self._registry,
            self._scheduler,
            self._events,
            self.start,
            self._default_timeout,
            self._timeouts,
            self._when_full,
        )
        self._shutdown = Shutdown(
            self._name,
            self._registry,
            self._scheduler,
            self._resources,
            self._workers,
            self._channels.close_all,
            self._events,
        )
        self._pinned = PinnedThreads()
        self._shutdown.add_after_jobs(self._pinned.close_all)
        self._shutdown.add_thread_source(self._pinned.threads)

    # -- identity ------------------------------------------------------------

    @property
    def name(self) -> str:
        """The bridge's name."""
        return self._name

    @property
    def state(self) -> BridgeState:
        """Where the bridge is in its life (NEW, RUNNING, CLOSING, CLOSED, BROKEN). Any thread."""
        return self._registry.state

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread once the bridge has started, else ``None``."""
        runner = self._shutdown.runner
        return None if runner is None else runner.thread

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        """The bridge's event loop once started (for the benchmarks and tests)."""
        return self._scheduler.loop

    def __repr__(self) -> str:
        stats = self._registry.stats()
        return (
            f"<Bridge {self._name!r} {self.state.name} "
            f"active={stats.active} submitted={stats.submitted}>"
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Bridge:
        """Start the loop thread, once; later calls do nothing. Any thread.

        Returns:
            The bridge itself.

        Raises:
            BridgeClosed: the bridge has been shut down.
        """
        self._scheduler.check_forked()
        self._registry.start(self._launch)
        return self

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def shutdown(self, timeout: float | None = 5.0) -> ShutdownReport:
        """Stop the bridge: stop intake, drain, cancel the rest, stop the loop.

        Intake stops at once (``submit()`` raises :class:`BridgeClosed`).
        Unfinished jobs get *timeout* seconds to finish by themselves; the rest
        receive their cancellation and get a short grace to unwind. Jobs that
        still have not ended (they block the loop thread or ignore
        cancellation) are listed in :attr:`ShutdownReport.stuck` and resolved
        with :class:`JobCancelled`. Then pinned threads (:meth:`pinned_thread`)
        close, one second at most in all. Then, on the loop, resources exit (one
        second at most, in all), the tasks nobody owns are cancelled and the
        loop stops; the loop thread, worker threads and watchdog get half a
        second together to end, and those still alive are named in
        :attr:`ShutdownReport.threads_left`. Shutdown returns within *timeout*
        plus about one second, whatever the jobs do (plus up to one more for
        resources slow to exit, one more for pinned threads slow to stop,
        and, while process jobs have live children, their largest
        ``kill_grace``: see :meth:`run_process`).

        Idempotent: later calls return the first report. If a call is
        interrupted (``KeyboardInterrupt``), the bridge stays CLOSING and the
        next call finishes the work. A broken bridge (:attr:`state` BROKEN)
        returns a report too, and ends CLOSED.

        Args:
            timeout: seconds to let unfinished jobs finish; ``None`` (or
                ``math.inf``) waits for them without a limit.

        **Thread safety:** any thread but the loop thread, where it would wait
        for the loop it blocks (:class:`WrongThread`); a worker thread of
        :meth:`to_thread` may call it. Safe in a signal handler: if the handler
        interrupted the bridge's own bookkeeping on this thread, the work goes
        on in a thread named ``"<name>-shutdown"`` and this call returns a
        report with ``deferred=True`` at once (call again later for the final
        one).
        """
        timeout = check_timeout("timeout", timeout)
        self._scheduler.check_forked()
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.shutdown() on the bridge's loop thread would wait for jobs "
                "that need the very loop it blocks: a deadlock. Call it from another thread."
            )
        return self._shutdown.shutdown(timeout)

    # -- submitting ------------------------------------------------------------

    def submit(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]] | Coroutine[Any, Any, T],
        /,
        *args: Unpack[PosArgsT],
        key: str | None = None,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
        on_conflict: OnConflict = "reject",
        block_timeout: float | None = None,
    ) -> Job[T]:
        """Run ``fn(*args)`` on the loop thread as a job, and return the job.

        Args:
            fn: an async function (called on the loop thread with *args), a
                coroutine object (no *args), or a plain callable that returns an
                awaitable (called at once, on this thread). Pass keyword
                arguments with :func:`functools.partial` or a coroutine object.
            key: a name unique among unfinished jobs, e.g. ``"hangup:42"``.
            kind: the job's kind, for per-kind timeouts and :meth:`jobs`.
            timeout: seconds the job may take from now; ``None`` for no limit;
                by default the kind's timeout, else ``default_timeout``.
            on_conflict: when *key* names an unfinished job: ``"reject"``
                raises :class:`DuplicateJob`, ``"replace"`` cancels that job and
                submits this one, ``"join"`` returns that job instead.
            block_timeout: with ``max_pending`` and ``when_full="block"``, how
                long to wait for room; ``None`` waits as long as it takes.

        Raises:
            TypeError: *fn* is not async, or a coroutine came with *args*.
            ValueError: *timeout* is negative or NaN, or *on_conflict* unknown.
            DuplicateJob: *key* is taken and *on_conflict* is ``"reject"``.
            Overloaded: ``max_pending`` jobs are unfinished and there was no
                room in time (at once with ``when_full="reject"`` or on the
                loop thread, which never blocks).
            BridgeClosed: the bridge is shutting down or shut down.

        A refused submission leaves nothing behind: no job, task or key, and a
        coroutine object passed in is closed (no "never awaited" warning).

        **Thread safety:** any thread, the loop thread included. Blocks only
        for backpressure (``max_pending`` with ``when_full="block"``), never on
        the loop thread. Starts the bridge if it has not been started.

        **Cancellation and timeouts:** the deadline counts from this call; when
        it expires the coroutine is cancelled and the job ends ``TIMED_OUT``,
        whatever the coroutine does while it unwinds (unless :meth:`Job.cancel`
        had been called first: then it ends as the cancellation makes it end).
        """
        return self._intake.submit(fn, args, key, kind, timeout, on_conflict, False, block_timeout)

    def call(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]] | Coroutine[Any, Any, T],
        /,
        *args: Unpack[PosArgsT],
        key: str | None = None,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
    ) -> T:
        """Run ``fn(*args)`` on the loop thread, wait for it, return its value.

        Arguments as for :meth:`submit` (a taken key raises
        :class:`DuplicateJob`).

        Raises:
            JobTimeout: the job's deadline expired (its coroutine was cancelled).
            JobCancelled: the job was cancelled by someone else.
            WrongThread: called on the loop thread.
            Exception: whatever the coroutine raised.

        **Thread safety:** any thread but the loop thread, where waiting would
        block the loop the job needs (:class:`WrongThread`); use ``await``
        there.

        **Cancellation and timeouts:** if the wait is interrupted (for example
        by ``KeyboardInterrupt``), the job is cancelled.
        """
        if self._on_loop_thread():
            close_if_coroutine(fn)
            raise WrongThread(
                "Bridge.call() on the bridge's loop thread would block the loop until "
                "a job finishes that needs that loop to run: a deadlock. "
                "Inside a coroutine, 'await' the coroutine (or 'await bridge.submit(...)')."
            )
        job: Job[T] = self._intake.submit(fn, args, key, kind, timeout, "reject", True)
        try:
            job._wait(None)  # not the loop thread (checked above)
            job._mark_retrieved()
            return job._outcome()
        except BaseException:
            job.cancel()
            raise

    # -- inspecting and cancelling ----------------------------------------------

    def jobs(self, kind: str | None = None) -> list[JobInfo]:
        """Snapshots of the jobs that have not finished, oldest first. Any thread."""
        self._scheduler.check_forked()
        return [job.info() for job in self._registry.unfinished(kind)]

    def get(self, key: str) -> Job[Any] | None:
        """The unfinished job with this key, or ``None``. Any thread."""
        self._scheduler.check_forked()
        return self._registry.get(key)

    def cancel(self, key: str) -> bool:
        """Cancel the unfinished job with this key. Any thread.

        Returns:
            Whether there was such a job (see :meth:`Job.cancel`).
        """
        job = self.get(key)
        return job is not None and job.cancel()

    def cancel_all(self, kind: str | None = None) -> int:
        """Cancel every unfinished job, or those of one kind. Any thread.

        Returns:
            How many jobs were asked to stop.
        """
        self._scheduler.check_forked()
        return sum(job.cancel() for job in self._registry.unfinished(kind))

    def stats(self) -> BridgeStats:
        """A snapshot of the bridge's counters. Any thread."""
        self._scheduler.check_forked()
        return self._registry.stats()

    # -- internals ------------------------------------------------------------------

    def _launch(self) -> None:
        """Start the loop thread and the watchdog (the registry calls this once)."""
        launch(
            self._name,
            self._registry,
            self._scheduler,
            self._shutdown,
            self._events,
            use_uvloop=self._use_uvloop,
            block_warning=self._block_warning,
        )

    def _current_deadline(self) -> float | None:
        """The monotonic deadline of the job whose task is running (loop thread), or None."""
        job = job_of_task(self._registry, asyncio.current_task())
        return None if job is None else job._deadline_at

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._scheduler.loop_ident

    def _unretrieved_failures(self) -> list[FailureRecord]:
        """The latest failures (256 kept) nobody retrieved (for the pytest plugin)."""
        return self._registry.unretrieved_failures()

    def _owned_threads(self) -> list[threading.Thread]:
        """The threads this bridge started (loop, workers, watchdog). Any thread."""
        return self._shutdown.owned_threads()
