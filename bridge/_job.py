"""Jobs: the handle a submitter gets for one coroutine the bridge runs.

A job never changes its own state: every transition is made by the registry
(``_registry.py``) under its lock, and the job talks to whoever owns it only
through the small :class:`JobOwner` protocol. This module imports nothing of
the bridge above it.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import threading
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, final

from ._exceptions import JobCancelled
from ._future import FINISHED, PENDING, SlimCondition, SlimFuture

__all__ = [
    "CancelReason",
    "Job",
    "JobInfo",
    "JobOwner",
    "JobState",
    "one_line",
]

T = TypeVar("T")


class JobState(enum.Enum):
    """Where a job is in its life. The last four are final."""

    #: Accepted, waiting for the loop (or for a free place in its kind's lane).
    PENDING = "pending"
    #: Its coroutine is running on the loop thread.
    RUNNING = "running"
    #: The coroutine returned a value.
    SUCCEEDED = "succeeded"
    #: The coroutine raised an exception.
    FAILED = "failed"
    #: The job was cancelled and its coroutine has finished unwinding.
    CANCELLED = "cancelled"
    #: The job's deadline expired and its coroutine has finished unwinding.
    TIMED_OUT = "timed_out"

    # Members are singletons compared by identity: hash them by identity too
    # (C speed; Enum's own __hash__ is Python code, and the registry hashes
    # states for every job it finishes).
    __hash__ = object.__hash__

    @property
    def finished(self) -> bool:
        """Whether the state is final."""
        return self in FINAL_STATES

    def __repr__(self) -> str:
        return f"JobState.{self.name}"


FINAL_STATES: Final = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)


class CancelReason(enum.Enum):
    """Why a job's one cancellation was decided (first source wins)."""

    #: ``cancel()``, ``cancel(key)``, ``cancel_all()``, ``replace`` or shutdown.
    CANCEL = "cancel"
    #: The job's deadline.
    DEADLINE = "deadline"

    __hash__ = object.__hash__


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job. Times are wall-clock ``time.time()`` values."""

    #: The job's number, unique within its bridge.
    id: int
    #: The key it was submitted with, or ``None``.
    key: str | None
    #: Its kind (``"job"`` unless given).
    kind: str
    #: Its state when the snapshot was taken.
    state: JobState
    #: The name of the thread that submitted it.
    thread: str
    #: When it was submitted.
    submitted_at: float
    #: When its coroutine started, or ``None`` if it has not.
    started_at: float | None
    #: When its deadline expires, or ``None`` if it has none.
    deadline: float | None
    #: When it finished, or ``None`` while it has not.
    finished_at: float | None = None
    #: How it ended: ``"succeeded"``, ``"failed"``, ``"cancelled"``,
    #: ``"timed_out"``; ``None`` while unfinished.
    outcome: str | None = None
    #: The exception it ended with, as ``"Type: message"`` on one line (never
    #: the traceback, never the arguments); ``None`` if it ended without one.
    error: str | None = None
    #: The child process's id, for a job that runs one (``run_process``).
    pid: int | None = None
    #: The child's program (``argv[0]`` only, never the other arguments).
    program: str | None = None


class Retrievable(Protocol):
    """A failure's record (``_failures.FailureRecord``): marked once retrieved."""

    retrieved: bool


class JobOwner(Protocol):
    """What a job needs from the bridge that runs it."""

    def request_cancel(self, job: Job[Any]) -> bool:
        """Decide the job's one cancellation, if not yet decided, and deliver it.

        Returns whether the job was unfinished, or had ended cancelled.
        """

    def check_wait(self, what: str) -> None:
        """Raise if this thread may not block waiting for a job."""


@final
class Job(SlimFuture[T], Generic[T]):
    """One coroutine the bridge runs, accounted for until it ends.

    A :class:`concurrent.futures.Future`: it works with
    :func:`concurrent.futures.wait` and :func:`~concurrent.futures.as_completed`,
    and ``await job`` works from any asyncio event loop. Jobs are created by
    :meth:`Bridge.submit`, never directly.

    **Thread safety:** every method may be called from any thread. Done
    callbacks run on the loop thread (or on the thread that shuts the bridge
    down, for a job stuck at shutdown).

    **Cancellation and timeouts:** :meth:`cancel` delivers the cancellation to
    the coroutine itself, also while it runs; the job is done once the coroutine
    has finished unwinding, and then :meth:`result` raises
    :class:`~bridge.JobCancelled`. A job whose deadline expired raises
    :class:`~bridge.JobTimeout`. Whatever the sources (``cancel()``, its
    key, its kind, its deadline, ``replace``, shutdown), the coroutine receives
    one cancellation at most.
    """

    # Fields below are written by the registry (state, cancel, room) or by the
    # scheduler on the loop thread (task, lane, times); read from any thread.
    __slots__ = (
        "_args",
        "_bindings",
        "_cancel",
        "_coro",
        "_ctx",
        "_deadline_at",
        "_error",
        "_error_line",
        "_failure",
        "_finished_at",
        "_fn",
        "_holds_room",
        "_job_state",
        "_lane",
        "_observed",
        "_owner",
        "_pid",
        "_program",
        "_started_at",
        "_started_mono",
        "_submitted_at",
        "_submitted_mono",
        "_task",
        "_thread_name",
        "_watch",
        "id",
        "key",
        "kind",
    )

    def __init__(
        self,
        owner: JobOwner,
        job_id: int,
        key: str | None,
        kind: str,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        coro: Coroutine[Any, Any, T] | None,
        ctx: contextvars.Context,
        thread_name: str,
        submitted_at: float,
        submitted_mono: float,
        deadline_at: float | None,
        observed: bool,
    ) -> None:
        # SlimFuture.__init__, inlined (one call less per job on the hot path).
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._lazy_waiters: list[Any] | None = None
        self._lazy_callbacks: list[Callable[[Any], object]] | None = None
        self._lazy_condition: SlimCondition | None = None
        self._owner = owner
        #: The job's number, unique within its bridge.
        self.id: Final = job_id
        #: The key the job was submitted with, or ``None``.
        self.key: Final = key
        #: The job's kind.
        self.kind: Final = kind
        # Either a coroutine object, or an async function and its arguments that
        # the loop thread calls when the job starts. Dropped once it has.
        self._fn = fn
        self._args = args
        self._coro = coro
        self._ctx = ctx
        self._bindings: dict[str, Any] | None = None  # the scheduler's, for the events
        self._thread_name = thread_name
        self._submitted_at = submitted_at
        self._submitted_mono = submitted_mono
        self._deadline_at = deadline_at  # time.monotonic() value or None
        self._job_state = JobState.PENDING  # written by the registry only
        self._cancel: CancelReason | None = None  # the one cancellation, once decided
        self._holds_room = False  # counts toward max_pending (the registry's)
        self._lane = 0  # scheduler: 0 no lane place, 1 queued in its lane, 2 has a place
        self._started_at: float | None = None
        self._started_mono = 0.0
        self._finished_at: float | None = None  # set by the registry
        self._pid: int | None = None  # a child process's, set by the job's coroutine
        self._program: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._observed = observed  # somebody waits for the outcome
        self._error: BaseException | None = None
        self._error_line: str | None = None  # one_line(_error), made outside the lock
        self._failure: Retrievable | None = None  # set by the registry if it failed
        self._watch: object | None = None  # logs an unretrieved failure at collection

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> JobState:
        """The job's current state."""
        return self._job_state

    def info(self) -> JobInfo:
        """Return a frozen snapshot of the job."""
        return JobInfo(*self._fields())

    def _fields(self) -> tuple[Any, ...]:
        """The fields of :meth:`info`, in order: a tuple is cheap to keep.

        The history ring keeps these and makes the :class:`JobInfo` only when
        asked (a frozen dataclass costs microseconds to build).
        """
        deadline = None
        if self._deadline_at is not None:
            deadline = self._submitted_at + (self._deadline_at - self._submitted_mono)
        state = self._job_state
        if state not in FINAL_STATES:
            finished_at = outcome = error = None
        else:
            finished_at, outcome, error = self._finished_at, state.value, self._error_line
        return (
            self.id,
            self.key,
            self.kind,
            state,
            self._thread_name,
            self._submitted_at,
            self._started_at,
            deadline,
            finished_at,
            outcome,
            error,
            self._pid,
            self._program,
        )

    def __repr__(self) -> str:
        return f"<Job {self.id} key={self.key!r} kind={self.kind!r} {self._job_state.name}>"

    # -- cancellation --------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the job to stop; any thread may call this.

        A pending job ends without starting. A running job's coroutine receives
        the cancellation at its next ``await``; the job is done (and
        :meth:`cancelled` true) only once the coroutine has finished unwinding.
        The coroutine receives one cancellation at most, whoever asks and
        however often: calling again, or a deadline that passes meanwhile,
        does not interrupt its cleanup.

        Returns:
            ``True`` if the job had not finished (the cancellation is
            delivered; a coroutine that catches it and returns still ends
            ``SUCCEEDED``) or had ended cancelled; ``False`` if it had already
            finished otherwise.
        """
        state = self._job_state
        if state is JobState.CANCELLED:
            return True
        if state in FINAL_STATES:
            return False
        return self._owner.request_cancel(self)

    def cancelled(self) -> bool:
        """Whether the job ended cancelled (its coroutine has finished unwinding)."""
        return self._job_state is JobState.CANCELLED

    def running(self) -> bool:
        """Whether the job's coroutine is running now."""
        return self._job_state is JobState.RUNNING

    # -- outcome -------------------------------------------------------------

    def result(self, timeout: float | None = None) -> T:
        """Wait for the job and return its value.

        Args:
            timeout: seconds to wait; ``None`` (or ``math.inf``) waits until
                the job ends.

        Returns:
            What the coroutine returned.

        Raises:
            JobCancelled: the job was cancelled.
            JobTimeout: the job's own deadline expired.
            TimeoutError: *timeout* expired first; the job keeps running.
            WrongThread: called on the loop thread before the job is done.
            Exception: whatever the coroutine raised.

        **Thread safety:** any thread but the bridge's loop thread, where
        waiting would deadlock; there, only a finished job may be asked.
        """
        if self._state != FINISHED:
            self._wait_for("result", timeout)
        self._mark_retrieved()
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return the exception it raised, or ``None``.

        Raises :class:`~bridge.JobCancelled` for a cancelled job, as
        :mod:`concurrent.futures` does; returns :class:`~bridge.JobTimeout` for
        a job whose deadline expired. *timeout*, threads and the other errors
        are as for :meth:`result`.
        """
        if self._state != FINISHED:
            self._wait_for("exception", timeout)
        self._mark_retrieved()
        error = self._exception
        if isinstance(error, JobCancelled):
            raise error
        return error

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(job)`` when the job is done (at once if it is).

        The callback runs on the loop thread. It counts as somebody waiting
        for the outcome, so a failure is not logged as unobserved when it
        happens; but only :meth:`result`, :meth:`exception` or ``await``
        retrieve the failure (a failure nobody retrieves is logged when the
        job is garbage-collected, and fails a test under the pytest plugin).
        """
        self._observed = True
        super().add_done_callback(fn)

    def __await__(self) -> Generator[Any, None, T]:
        """Wait for the job from any asyncio event loop.

        **Cancellation:** cancelling the awaiting task stops the wait, not the
        job: the job belongs to the bridge (call :meth:`cancel` for that).
        """
        if not self.done():
            self._observed = True
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self.add_done_callback(_waker(loop, waiter))
            yield from waiter
        return self.result()

    # -- helpers -------------------------------------------------------------

    def _mark_retrieved(self) -> None:
        """Somebody has seen the outcome (called once the job is done)."""
        failure = self._failure
        if failure is not None:
            failure.retrieved = True

    def _wait_for(self, what: str, timeout: float | None) -> None:
        self._observed = True
        self._owner.check_wait(what)
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # math.inf: no limit (a lock cannot wait that long)
        if not self._wait(timeout):
            # The builtin TimeoutError on every Python (on 3.10, the one of
            # concurrent.futures is another class).
            raise TimeoutError(f"{self!r} did not finish within {timeout} s; it keeps running")


def one_line(error: BaseException) -> str:
    """``"Type: first line of the message"`` (just ``"Type"`` without one)."""
    lines = str(error).splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _waker(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]
) -> Callable[[object], None]:
    def wake(_: object) -> None:
        try:
            loop.call_soon_threadsafe(_set_waiter, waiter)
        except RuntimeError:  # the awaiting loop has closed: nobody to wake
            pass

    return wake


def _set_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
