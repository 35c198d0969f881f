"""The bridge: one event-loop thread that runs and accounts for every coroutine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from . import _fork, _log
from ._arguments import (
    check_count,
    check_kind,
    check_limits,
    check_timeout,
    check_timeouts,
    close_if_coroutine,
    split_callable,
)
from ._channel import Channel, new_channel
from ._deadlines import Deadlines
from ._exceptions import (
    BridgeClosed,
    BridgeError,
    DuplicateJob,
    JobCancelled,
    JobTimeout,
    Overloaded,
    WrongThread,
)
from ._job import Job, JobInfo, JobState
from ._lanes import Lane
from ._loop import LoopThread
from ._map import map_jobs
from ._resources import ResourceStack
from ._stats import BridgeStats, ShutdownReport
from ._typing import USE_DEFAULT, DefaultType, TypeVarTuple, Unpack
from ._watchdog import Watchdog
from ._workers import WorkerPool

__all__ = ["Bridge", "OnConflict", "WhenFull"]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")

OnConflict = Literal["reject", "replace", "join"]
_ON_CONFLICT: Final = frozenset({"reject", "replace", "join"})
WhenFull = Literal["block", "reject"]
_WHEN_FULL: Final = frozenset({"block", "reject"})

#: After the shutdown timeout: how long cancelled jobs get to unwind ...
_CANCEL_GRACE: Final = 0.5
#: ... and how long the loop gets to close before its thread is left behind.
_STOP_GRACE: Final = 0.5
#: How long resources get, in all, to exit (on top of _STOP_GRACE).
_RESOURCE_GRACE: Final = 1.0
#: How many of the latest unobserved failures a bridge remembers.
_UNOBSERVED_KEPT: Final = 256

_PENDING: Final = JobState.PENDING
_RUNNING: Final = JobState.RUNNING
_SUCCEEDED: Final = JobState.SUCCEEDED
_FAILED: Final = JobState.FAILED
_CANCELLED: Final = JobState.CANCELLED
_TIMED_OUT: Final = JobState.TIMED_OUT
_FINAL: Final = frozenset({_SUCCEEDED, _FAILED, _CANCELLED, _TIMED_OUT})

if sys.version_info >= (3, 11):

    def _create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        return loop.create_task(coro, context=ctx)

else:  # pragma: no cover - 3.10 only

    def _create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        return ctx.run(loop.create_task, coro)


class _Lifecycle(enum.Enum):
    NEW = "has not been started"
    RUNNING = "is running"
    CLOSING = "is shutting down"
    CLOSED = "has been shut down"


class Bridge:
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
        thread_initializer: called once on each worker thread before its first
            task, e.g. to register the thread with a native library.
        loop_block_warning: log a ``loop.blocked`` warning when the loop thread
            has not come back to the event loop for this many seconds;
            ``None`` (the default) disables the watchdog.
        use_uvloop: run the loop on uvloop when it is installed (the ``uvloop``
            extra); plain asyncio otherwise.

    Use it as a context manager, or call :meth:`start` (``submit()`` does it
    for you) and :meth:`shutdown`.
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
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        self._name: Final = name
        self._default_timeout = check_timeout("default_timeout", default_timeout)
        self._timeouts: Final = check_timeouts(timeouts)
        self._lanes: Final = {kind: Lane(n) for kind, n in check_limits(limits).items()}
        self._max_pending: Final = check_count("max_pending", max_pending, allow_none=True)
        if when_full not in _WHEN_FULL:
            raise ValueError(f"when_full must be 'block' or 'reject', not {when_full!r}")
        self._when_full: Final = when_full
        check_count("thread_workers", thread_workers, allow_none=False)
        if thread_initializer is not None and not callable(thread_initializer):
            raise TypeError(f"thread_initializer must be callable, not {thread_initializer!r}")
        self._workers: Final = WorkerPool(name, thread_workers, thread_initializer)
        self._block_warning = check_timeout("loop_block_warning", loop_block_warning)
        if self._block_warning == 0:
            raise ValueError("loop_block_warning must be > 0 seconds, or None to disable it")
        self._use_uvloop: Final = bool(use_uvloop)
        self._watchdog: Watchdog | None = None
        self._resources = ResourceStack()  # loop thread only
        self._init_state()

    def _init_state(self) -> None:
        """The bridge's mutable state: a registry of jobs and the loop's handles."""
        self._lock = threading.Lock()  # guards everything below
        self._room = threading.Condition(self._lock)  # max_pending: a job finished
        self._channels: weakref.WeakSet[Channel[Any]] = weakref.WeakSet()
        self._lifecycle = _Lifecycle.NEW
        self._runner: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ident: int | None = None  # read by Job without the lock
        self._pid: int | None = None  # the process that started the loop ...
        self._fork_generation = 0  # ... and its _fork.generation then
        self._deadlines: Deadlines | None = None  # loop thread only
        self._ids = itertools.count(1)
        self._active: dict[int, Job[Any]] = {}
        self._keys: dict[str, Job[Any]] = {}
        self._incoming: list[Job[Any]] = []  # accepted, not yet seen by the loop
        self._wake_pending = False  # a _drain() is scheduled on the loop
        self._counts: dict[JobState, int] = dict.fromkeys(_FINAL, 0)
        self._submitted = 0
        self._rejected = 0
        self._overloaded = 0
        self._report: ShutdownReport | None = None
        self._closed = threading.Event()
        # The latest failures nobody waited for (for the pytest plugin), held
        # strongly so a dropped job still counts, and bounded so a long-running
        # application does not grow.
        self._unobserved: deque[Job[Any]] = deque(maxlen=_UNOBSERVED_KEPT)

    # -- identity ------------------------------------------------------------

    @property
    def name(self) -> str:
        """The bridge's name."""
        return self._name

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread once the bridge has started, else ``None``."""
        runner = self._runner
        return None if runner is None else runner.thread

    def __repr__(self) -> str:
        return (
            f"<Bridge {self._name!r} {self._lifecycle.name} "
            f"active={len(self._active)} submitted={self._submitted}>"
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Bridge:
        """Start the loop thread, once; later calls do nothing. Any thread.

        Returns:
            The bridge itself.

        Raises:
            BridgeClosed: the bridge has been shut down.
        """
        self._check_forked()
        with self._lock:
            if self._lifecycle is _Lifecycle.RUNNING:
                return self
            if self._lifecycle is not _Lifecycle.NEW:
                raise BridgeClosed(f"bridge {self._name!r} {self._lifecycle.value}")
            runner = LoopThread(self._name, use_uvloop=self._use_uvloop)
            self._loop = runner.start()
            self._runner = runner
            self._loop_ident = runner.ident
            self._pid = os.getpid()
            self._fork_generation = _fork.generation
            self._deadlines = Deadlines(self._loop, self._active, self._expire_id)
            self._lifecycle = _Lifecycle.RUNNING
            if self._block_warning is not None:
                assert runner.ident is not None
                self._watchdog = Watchdog(
                    self._loop,
                    runner.ident,
                    self._block_warning,
                    self._describe_task,
                    f"{self._name}-watchdog",
                )
                self._watchdog.start()
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
        are cancelled and get a short grace to unwind. Jobs that still have not
        ended (they block the loop thread or ignore cancellation) are listed in
        :attr:`ShutdownReport.stuck` and resolved with :class:`JobCancelled`.
        Then resources are exited (one second at most, in all), channels and
        worker threads closed, the loop stopped and its thread joined with a
        bound. Shutdown returns within *timeout* plus about one second,
        whatever the jobs do (plus up to one more for resources slow to exit).
        Idempotent: later calls return the first report.

        Args:
            timeout: seconds to let unfinished jobs finish; ``None`` waits for
                them without a limit.

        **Thread safety:** any thread but the loop thread, where it would wait
        for the loop it blocks (:class:`WrongThread`).
        """
        timeout = check_timeout("timeout", timeout)
        self._check_forked()
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.shutdown() on the bridge's loop thread would wait for jobs "
                "that need the very loop it blocks: a deadlock. Call it from another thread."
            )
        with self._lock:
            lifecycle = self._lifecycle
            if lifecycle is _Lifecycle.RUNNING:
                self._lifecycle = _Lifecycle.CLOSING
                self._room.notify_all()  # blocked submitters raise BridgeClosed
            elif lifecycle is _Lifecycle.NEW:
                self._lifecycle = _Lifecycle.CLOSED
                self._report = ShutdownReport(0, (), (), 0.0)
                self._closed.set()
        if lifecycle is not _Lifecycle.RUNNING:
            self._closed.wait()
            assert self._report is not None
            return self._report
        try:
            self._report = self._shutdown(timeout)
        finally:
            with self._lock:
                self._lifecycle = _Lifecycle.CLOSED
            self._closed.set()
        return self._report

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
        return self._submit(fn, args, key, kind, timeout, on_conflict, False, block_timeout)

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
        job: Job[T] = self._submit(fn, args, key, kind, timeout, "reject", True)
        job._retrieved = True
        try:
            # Job.result() without its checks: this is not the loop thread
            # (checked above) and the job was submitted as observed.
            if not job.done():
                concurrent.futures.Future.exception(job)  # waits
            return job._outcome()
        except BaseException:
            job.cancel()
            raise

    def blocking(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        /,
        *,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
    ) -> Callable[[Unpack[PosArgsT]], T]:
        """Return a sync function with *fn*'s positional signature that calls it.

        ``greet = bridge.blocking(tts.greet)`` then ``greet(call_id)`` from a
        callback thread is ``bridge.call(tts.greet, call_id)``. *kind* and
        *timeout* apply to every call.
        """
        if not callable(fn):
            raise TypeError(f"fn must be an async function, not {type(fn).__name__}")
        check_kind(kind)
        if timeout is not USE_DEFAULT:
            check_timeout("timeout", timeout)

        @functools.wraps(fn)
        def blocking_fn(*args: Unpack[PosArgsT]) -> T:
            return self.call(fn, *args, kind=kind, timeout=timeout)

        return blocking_fn

    def map(
        self,
        fn: Callable[[T], Awaitable[R]],
        iterable: Iterable[T],
        /,
        *,
        concurrency: int = 16,
        kind: str = "map",
        timeout: float | DefaultType | None = USE_DEFAULT,
        ordered: bool = True,
        on_progress: Callable[[int, int | None], object] | None = None,
    ) -> Iterator[R]:
        """Run ``fn(item)`` for each item as jobs, lazily; yield the results.

        Items are pulled from *iterable* only as places free up: at most
        *concurrency* jobs exist at once, and in ordered mode results that
        arrive early count toward that bound, so memory depends on
        *concurrency*, not on the length of the input.

        Args:
            fn: an async function of one argument.
            iterable: the items; a generator is fine (and is not read ahead).
            concurrency: how many jobs may be in flight.
            kind: the jobs' kind; *timeout* is each job's own deadline.
            ordered: yield in input order (``True``) or as jobs complete.
            on_progress: called as ``on_progress(done, total)`` on the
                iterating thread after each result; *total* is ``len(iterable)``
                when it has one, else ``None``.

        Returns:
            An iterator of the results.

        Raises:
            ValueError: *concurrency* < 1.
            WrongThread: called on the loop thread (iterating would block it).

        **Cancellation and timeouts:** the first failure (an exception, a
        timeout, a cancellation) is raised from the iterator and cancels the
        jobs in flight; so does closing the iterator early (``break``,
        ``close()``, garbage collection).
        """
        if not callable(fn):
            raise TypeError(f"fn must be an async function, not {type(fn).__name__}")
        if not isinstance(iterable, Iterable):
            raise TypeError(f"iterable must be iterable, not {type(iterable).__name__}")
        check_count("concurrency", concurrency, allow_none=False)
        check_kind(kind)
        if timeout is not USE_DEFAULT:
            check_timeout("timeout", timeout)
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable or None, not {on_progress!r}")
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.map() on the bridge's loop thread would block the loop while "
                "waiting for jobs that need it: a deadlock. Use asyncio.gather or a "
                "task group inside coroutines."
            )
        return map_jobs(self, fn, iterable, concurrency, kind, timeout, ordered, on_progress)

    def resource(self, factory: Callable[[], AbstractAsyncContextManager[T]], /) -> T:
        """Enter ``factory()`` on the loop; exit it when the bridge shuts down.

        ``client = bridge.resource(lambda: httpx.AsyncClient(timeout=5))`` gives
        a client that lives on the bridge's loop and is closed at shutdown,
        after the jobs and before the loop stops. Resources are exited in
        reverse order of entry; an error in one exit is logged and recorded in
        :attr:`ShutdownReport.resource_errors`, and the others still close.

        Args:
            factory: called on the loop thread; must return an async context
                manager. What its ``__aenter__`` returns is returned here.

        Raises:
            TypeError: *factory* does not return an async context manager
                (nothing is left to close).
            WrongThread: called on the loop thread; use :meth:`aresource`.

        **Thread safety:** any thread but the loop thread.
        """
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.resource() on the bridge's loop thread would block the loop "
                "that must enter the resource: a deadlock. Use 'await bridge.aresource(...)'."
            )
        return self.call(self.aresource, factory, kind="resource")

    async def aresource(self, factory: Callable[[], AbstractAsyncContextManager[T]], /) -> T:
        """:meth:`resource` for coroutines running on the bridge's loop.

        **Cancellation:** if cancelled while ``__aenter__`` runs, the resource
        is not registered (and ``__aenter__`` decides what to undo).
        """
        self._check_on_loop("aresource")
        return await self._resources.enter(factory)

    def channel(self, maxsize: int = 0) -> Channel[Any]:
        """Create a :class:`Channel` (a janus queue) bound to the bridge's loop.

        Args:
            maxsize: the capacity; 0 means unbounded. A full channel blocks
                ``sync_q.put`` and ``await async_q.put``: that is the
                backpressure between a media thread and the loop.

        The bridge closes its channels when it shuts down.

        **Thread safety:** any thread (it starts the bridge if needed).
        """
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0: unbounded), not {maxsize}")
        if self._on_loop_thread():
            channel = new_channel(maxsize)
        else:
            channel = self.call(_anew_channel, maxsize, kind="channel", timeout=None)
        with self._lock:
            self._channels.add(channel)
        return channel

    async def to_thread(self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]) -> T:
        """Run blocking ``fn(*args)`` on one of the bridge's worker threads.

        At most ``thread_workers`` run at once; each worker thread has run
        ``thread_initializer`` before its first task. *fn* runs in a copy of
        the caller's context (contextvars).

        **Cancellation:** a call still waiting for a worker is dropped; one that
        is running cannot be interrupted: the await ends at once with
        ``CancelledError`` and the thread finishes *fn* in the background.
        """
        future = self._workers.submit(fn, args)
        return await asyncio.wrap_future(future)

    # -- inspecting and cancelling ----------------------------------------------

    def jobs(self, kind: str | None = None) -> list[JobInfo]:
        """Snapshots of the jobs that have not finished, oldest first. Any thread."""
        self._check_forked()
        with self._lock:
            jobs = list(self._active.values())
        return [job.info() for job in jobs if kind is None or job.kind == kind]

    def get(self, key: str) -> Job[Any] | None:
        """The unfinished job with this key, or ``None``. Any thread."""
        self._check_forked()
        return self._keys.get(key)

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
        self._check_forked()
        with self._lock:
            jobs = [j for j in self._active.values() if kind is None or j.kind == kind]
        return sum(job.cancel() for job in jobs)

    def stats(self) -> BridgeStats:
        """A snapshot of the bridge's counters. Any thread."""
        self._check_forked()
        with self._lock:
            counts = self._counts
            return BridgeStats(
                submitted=self._submitted,
                succeeded=counts[_SUCCEEDED],
                failed=counts[_FAILED],
                cancelled=counts[_CANCELLED],
                timed_out=counts[_TIMED_OUT],
                rejected=self._rejected,
                active=len(self._active),
                pending_by_kind=_count_by_kind(self._active.values(), _PENDING),
                running_by_kind=_count_by_kind(self._active.values(), _RUNNING),
                overloaded=self._overloaded,
            )

    # -- internals: intake (any thread) ------------------------------------------

    def _submit(
        self,
        fn: Any,
        args: tuple[Any, ...],
        key: str | None,
        kind: str,
        timeout: float | DefaultType | None,
        on_conflict: str,
        observed: bool,
        block_timeout: float | None = None,
    ) -> Job[Any]:
        coro: Coroutine[Any, Any, Any] | None = None
        try:
            self._check_forked()
            fn, coro = split_callable(fn, args)
            if fn is None:
                args = ()
            job = self._new_job(fn, args, coro, key, kind, timeout, on_conflict, observed)
            block_timeout = check_timeout("block_timeout", block_timeout)
            if self._loop is None:
                self.start()
            existing = self._register(job, on_conflict, block_timeout)
        except BaseException:
            if coro is not None:
                coro.close()
            raise
        if existing is not None:  # on_conflict="join"
            if coro is not None:
                coro.close()
            return existing
        return job

    def _new_job(
        self,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        coro: Coroutine[Any, Any, Any] | None,
        key: str | None,
        kind: str,
        timeout: float | DefaultType | None,
        on_conflict: str,
        observed: bool,
    ) -> Job[Any]:
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        check_kind(kind)
        if on_conflict not in _ON_CONFLICT:
            raise ValueError(
                f"on_conflict must be 'reject', 'replace' or 'join', not {on_conflict!r}"
            )
        if timeout is USE_DEFAULT:
            timeout = self._timeouts.get(kind, self._default_timeout)
        else:
            timeout = check_timeout("timeout", timeout)
        now = time.monotonic()
        return Job(
            self,
            next(self._ids),
            key,
            kind,
            fn,
            args,
            coro,
            contextvars.copy_context(),
            threading.current_thread().name,
            time.time(),
            now,
            None if timeout is None else now + timeout,
            observed,
        )

    def _register(
        self, job: Job[Any], on_conflict: str, block_timeout: float | None
    ) -> Job[Any] | None:
        """Account for *job* and hand it to the loop; or return the job to join."""
        key = job.key
        replaced = None
        traced = _log.tracing()
        with self._lock:
            self._check_accepting()
            if key is not None and on_conflict == "join" and key in self._keys:
                return self._keys[key]  # joining needs no room
            if self._max_pending is not None and len(self._active) >= self._max_pending:
                self._wait_for_room(block_timeout)  # may release the lock while waiting
            if key is not None:
                replaced = self._keys.get(key)
                if replaced is not None:
                    if on_conflict == "join":
                        return replaced
                    if on_conflict == "reject":
                        self._rejected += 1
                        raise DuplicateJob(f"key {key!r} is already used by {replaced!r}")
                self._keys[key] = job
            self._active[job.id] = job
            self._submitted += 1
            if not traced:
                wake = self._hand_to_loop(job)
        if traced:
            # Logged before the loop can see the job: job.started never precedes it.
            _log.emit("debug", _log.JOB_SUBMITTED, self._fields(job))
            with self._lock:
                wake = self._hand_to_loop(job)
        if replaced is not None:
            replaced.cancel()
        if wake:
            self._call_soon(self._drain)
        return None

    # Called with self._lock held.
    def _hand_to_loop(self, job: Job[Any]) -> bool:
        """Queue *job* for the loop's next drain; return whether to wake the loop."""
        self._incoming.append(job)
        wake = not self._wake_pending
        self._wake_pending = True
        return wake

    # Called with self._lock held.
    def _check_accepting(self) -> None:
        if self._lifecycle is not _Lifecycle.RUNNING:
            self._rejected += 1
            raise BridgeClosed(
                f"bridge {self._name!r} {self._lifecycle.value}: it accepts no new jobs"
            )

    # Called with self._lock held (self._room waits on it).
    def _wait_for_room(self, block_timeout: float | None) -> None:
        limit = self._max_pending
        assert limit is not None
        if self._when_full == "block" and not self._on_loop_thread():
            deadline = None if block_timeout is None else time.monotonic() + block_timeout
            while len(self._active) >= limit and self._lifecycle is _Lifecycle.RUNNING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._room.wait(remaining)
            self._check_accepting()
            if len(self._active) < limit:
                return
        self._rejected += 1
        self._overloaded += 1
        if self._when_full == "reject":
            why = ""
        elif self._on_loop_thread():
            why = "; submit() never blocks on the loop thread"
        else:
            why = "; no room came in time"
        raise Overloaded(f"bridge {self._name!r} has max_pending={limit} unfinished jobs{why}")

    def _call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Schedule ``callback(*args)`` on the loop, from any thread."""
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_ident:
            loop.call_soon(callback, *args)
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop has closed; shutdown resolves every job
            pass

    def _request_cancel(self, job: Job[Any]) -> None:
        """Deliver a cancellation to *job* on the loop (called by Job.cancel)."""
        self._call_soon(self._cancel_on_loop, job)

    # -- internals: the loop thread ---------------------------------------------

    def _drain(self) -> None:
        """Start every job accepted since the last drain (one wake-up per burst)."""
        with self._lock:
            batch = self._incoming
            self._incoming = []
            self._wake_pending = False
        for job in batch:
            self._launch(job)
        if batch:
            # Runs after the first step of every task just created (the ready
            # queue is FIFO): catches a task cancelled before that step, which
            # never enters _run's handlers. Cheaper than a done-callback per task.
            assert self._loop is not None
            self._loop.call_soon(self._check_started, batch)

    def _check_started(self, batch: list[Job[Any]]) -> None:
        for job in batch:
            task = job._task
            if task is not None and job._job_state is _PENDING and task.done():
                self._task_done(job, task)

    def _launch(self, job: Job[Any]) -> None:
        if job._job_state is not _PENDING:  # cancelled before the loop saw it
            return
        loop = self._loop
        assert loop is not None
        deadline = job._deadline_at
        if deadline is not None:
            if deadline <= time.monotonic():
                self._finish(job, _TIMED_OUT, error=_timeout_error(job))
                return
            assert self._deadlines is not None
            self._deadlines.add(deadline, job.id, len(self._active))
        lane = self._lanes.get(job.kind)
        if lane is None or lane.admit(job):
            self._start_task(loop, job, checked=True)

    def _start_task(
        self, loop: asyncio.AbstractEventLoop, job: Job[Any], *, checked: bool = False
    ) -> None:
        """Create the job's task; *checked*: _drain's _check_started covers it."""
        # The task runs in a copy: job._ctx stays as submit() saw it, for tracing.
        task = _create_task(loop, self._run(job), job._ctx.copy())
        job._task = task
        if not checked:
            task.add_done_callback(job._task_done)

    async def _run(self, job: Job[Any]) -> None:
        """The task body of every job: start it, run it, record how it ended."""
        try:
            coro = self._begin(job)
            if coro is None:
                return
            value = await coro
        except asyncio.CancelledError:
            self._finish(job, _CANCELLED, error=_cancelled_error(job))
        except BaseException as exc:  # noqa: BLE001 - the job failed: record it
            # KeyboardInterrupt and SystemExit too: re-raised here they would stop
            # the loop thread and leave every later job hanging; result() raises them.
            self._finish(job, _FAILED, error=exc)
        else:
            self._finish(job, _SUCCEEDED, value=value)

    def _begin(self, job: Job[Any]) -> Awaitable[Any] | None:
        """Mark *job* running and return what to await; ``None`` if it ended."""
        with self._lock:
            if job._job_state is not _PENDING:
                return None
            job._job_state = _RUNNING
        job._started_mono = time.monotonic()
        job._started_at = time.time()
        if _log.tracing():
            queue_ms = (job._started_mono - job._submitted_mono) * 1000.0
            _log.emit("debug", _log.JOB_STARTED, self._fields(job, queue_ms=queue_ms))
        coro, fn, args = job._coro, job._fn, job._args
        job._coro = job._fn = None
        job._args = ()
        if coro is not None:
            return coro
        assert fn is not None
        awaitable: Awaitable[Any] = fn(*args)
        return awaitable

    def _expire_id(self, job_id: int) -> None:
        """The deadline of the unfinished job *job_id* has come."""
        job = self._active.get(job_id)
        if job is not None:
            self._expire(job)

    def _expire(self, job: Job[Any]) -> None:
        if job._job_state is _PENDING:
            self._finish(job, _TIMED_OUT, error=_timeout_error(job))
        elif job._cancel_requested:
            pass  # already unwinding from a cancel(): let its cleanup finish
        elif job._job_state is _RUNNING and job._task is not None:
            job._timed_out = True
            job._task.cancel()

    def _cancel_on_loop(self, job: Job[Any]) -> None:
        if job._job_state is _PENDING:
            self._finish(job, _CANCELLED, error=_cancelled_error(job))
        elif job._job_state is _RUNNING and job._task is not None:
            job._task.cancel()

    def _task_done(self, job: Job[Any], task: asyncio.Task[None]) -> None:
        """Safety net: resolve a job whose task ended without _run resolving it.

        That happens when a task is cancelled before its first step: _run never
        starts, so its handlers never run.
        """
        if job._job_state in _FINAL:
            return
        if task.cancelled():
            self._finish(job, _CANCELLED, error=_cancelled_error(job))
        else:
            self._finish(job, _FAILED, error=task.exception() or _cancelled_error(job))

    def _finish(
        self,
        job: Job[Any],
        state: JobState,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Record how *job* ended, free its key, trace it, then resolve it.

        Any thread (the shutdown thread resolves stuck jobs); the first call
        for a job wins, later ones do nothing.
        """
        if job._timed_out and state is not _TIMED_OUT:
            # Its deadline fired: the contract says TIMED_OUT, even if the
            # coroutine caught the cancellation and returned or raised.
            state, value, error = _TIMED_OUT, None, _timeout_error(job, error)
        with self._lock:
            previous = job._job_state
            if previous in _FINAL:
                return
            job._job_state = state
            del self._active[job.id]
            key = job.key
            if key is not None and self._keys.get(key) is job:
                del self._keys[key]
            self._counts[state] += 1
            if self._max_pending is not None:
                self._room.notify()
        if job._task is not None and job.kind in self._lanes:
            self._next_in_lane(job.kind)
        # A finished job may be held for long (a list of submitted jobs): let
        # its task, coroutine and context copy go now.
        job._task = None
        unstarted = job._coro if previous is _PENDING else None
        job._coro = job._fn = None
        job._args = ()
        if unstarted is not None:  # never started, so never running: safe to close
            unstarted.close()
        try:
            self._trace_finished(job, state, error)
        finally:
            self._resolve(job, value, error)

    @staticmethod
    def _resolve(job: Job[Any], value: Any, error: BaseException | None) -> None:
        job._error = error
        job._settle(value, error)

    def _next_in_lane(self, kind: str) -> None:
        """A job of a limited kind that had a place ended: start the next one."""
        loop = self._loop
        if loop is None or threading.get_ident() != self._loop_ident:
            return  # shutdown is resolving stuck jobs: nothing more starts
        following = self._lanes[kind].release()
        if following is not None:
            self._start_task(loop, following)

    def _trace_finished(self, job: Job[Any], state: JobState, error: BaseException | None) -> None:
        if _log.tracing():
            run_ms = 0.0
            if job._started_at is not None:
                run_ms = (time.monotonic() - job._started_mono) * 1000.0
            fields = self._fields(job, run_ms=run_ms, outcome=state.value)
            _log.emit("debug", _log.JOB_FINISHED, fields)
        if state is _TIMED_OUT:
            _log.emit("warning", _log.JOB_TIMED_OUT, self._fields(job))
        elif state is _FAILED and not job._observed:
            with self._lock:
                self._unobserved.append(job)
            _log.emit("error", _log.JOB_FAILED, self._fields(job, exc_info=error))

    def _fields(self, job: Job[Any], **extra: Any) -> dict[str, Any]:
        """The fields of a job's event: its submit-time bindings, then its own."""
        fields = job._ctx.run(_log.bindings)
        fields["job_id"] = job.id
        fields["key"] = job.key
        fields["kind"] = job.kind
        fields["thread"] = job._thread_name
        fields.update(extra)
        return fields

    # -- internals: shutdown -------------------------------------------------------

    def _shutdown(self, timeout: float | None) -> ShutdownReport:
        started = time.monotonic()
        with self._lock:
            jobs = list(self._active.values())
            channels = list(self._channels)
        for channel in channels:  # wakes producers and consumers alike
            channel.close()
        finished, pending = _wait(jobs, timeout)
        cancelled: list[JobInfo] = []
        if pending:
            self._call_soon(self._cancel_everything)
            ended, pending = _wait(pending, _CANCEL_GRACE)
            cancelled = sorted((job.info() for job in ended), key=_by_id)
        stuck = tuple(sorted((job.info() for job in pending), key=_by_id))
        for job in pending:
            self._finish(job, _CANCELLED, error=_stuck_error(job))
        assert self._runner is not None
        # A blocked loop (stuck jobs) will not close resources: do not wait for it.
        self._runner.stop(self._before_stop, _STOP_GRACE + (0.0 if stuck else _RESOURCE_GRACE))
        self._workers.shutdown(_STOP_GRACE)
        if self._watchdog is not None:
            self._watchdog.stop(_STOP_GRACE)
        return ShutdownReport(
            finished=len(finished),
            cancelled=tuple(cancelled),
            stuck=stuck,
            duration=time.monotonic() - started,
            resources_closed=self._resources.closed,
            resource_errors=self._resources.errors,
        )

    def _cancel_everything(self) -> None:
        with self._lock:
            jobs = list(self._active.values())
        for job in jobs:
            self._cancel_on_loop(job)

    async def _before_stop(self) -> None:
        """Runs on the loop after the jobs, before the loop stops."""
        await self._resources.aclose(_RESOURCE_GRACE)

    def _describe_task(self, task: asyncio.Task[Any] | None) -> dict[str, Any]:
        """Fields naming the job whose task is *task* (for the watchdog)."""
        with self._lock:
            jobs = list(self._active.values())
        for job in jobs:
            if task is not None and job._task is task:
                return self._fields(job)
        return {"job_id": None, "key": None, "kind": None}

    # -- internals: threads and processes --------------------------------------------

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_ident

    def _check_on_loop(self, what: str) -> None:
        if not self._on_loop_thread():
            raise WrongThread(
                f"Bridge.{what}() must be awaited on the bridge's own loop (inside a job); "
                f"from other threads use the blocking form"
            )

    def _check_forked(self) -> None:
        pid = self._pid
        if pid is not None and self._fork_generation != _fork.generation:
            raise BridgeError(
                f"bridge {self._name!r} was started in process {pid}; its loop thread "
                f"does not exist in this process (a child created by os.fork()). "
                f"Create a new Bridge in the child; bridge.default() does so by itself."
            )

    def _unretrieved_failures(self) -> list[Job[Any]]:
        """Failed jobs nobody waited for and whose exception nobody retrieved."""
        with self._lock:
            jobs = list(self._unobserved)
        return [job for job in jobs if not job._retrieved]


# -- helpers ---------------------------------------------------------------------------


async def _anew_channel(maxsize: int) -> Channel[Any]:
    return new_channel(maxsize)


def _count_by_kind(jobs: Iterable[Job[Any]], state: JobState) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        if job._job_state is state:
            counts[job.kind] = counts.get(job.kind, 0) + 1
    return counts


def _wait(jobs: list[Job[Any]], timeout: float | None) -> tuple[list[Job[Any]], list[Job[Any]]]:
    """Wait for *jobs* (any thread); return those done and those not done."""
    concurrent.futures.wait(jobs, timeout=timeout)
    done: list[Job[Any]] = []
    not_done: list[Job[Any]] = []
    for job in jobs:
        (done if job.done() else not_done).append(job)
    return done, not_done


def _by_id(info: JobInfo) -> int:
    return info.id


def _describe(job: Job[Any]) -> str:
    return f"job {job.id} (key={job.key!r}, kind={job.kind!r})"


def _timeout_error(job: Job[Any], cause: BaseException | None = None) -> JobTimeout:
    error = JobTimeout(f"{_describe(job)} did not finish before its deadline; it was cancelled")
    if cause is not None and not isinstance(cause, JobCancelled):
        error.__cause__ = cause  # what the coroutine raised while it unwound
    return error


def _cancelled_error(job: Job[Any]) -> JobCancelled:
    return JobCancelled(f"{_describe(job)} was cancelled")


def _stuck_error(job: Job[Any]) -> JobCancelled:
    return JobCancelled(
        f"{_describe(job)} did not end when the bridge shut down (it blocks the loop "
        f"or ignores cancellation); it was abandoned"
    )
