"""Jobs: the handle a submitter gets for one coroutine the bridge runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import threading
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures._base import FINISHED, PENDING
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

from ._exceptions import JobCancelled, WrongThread

if TYPE_CHECKING:
    from ._bridge import Bridge

__all__ = ["Job", "JobInfo", "JobState"]

T = TypeVar("T")

# Guards the creation of a job's Condition, which is made on first use.
_CONDITION_LOCK: Final = threading.Lock()


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
    # (C speed; Enum's own __hash__ is Python code, and the loop hashes states
    # for every job it finishes).
    __hash__ = object.__hash__

    @property
    def finished(self) -> bool:
        """Whether the state is final."""
        return self in _FINAL

    def __repr__(self) -> str:
        return f"JobState.{self.name}"


_FINAL: Final = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)


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


@final
class Job(concurrent.futures.Future[T], Generic[T]):
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
    :class:`~bridge.JobTimeout`.
    """

    # The base class's own fields are slots here too (its __init__ is replaced,
    # see there), so a job has no __dict__; the names keep their base meaning.
    __slots__ = (
        "_args",
        "_bridge",
        "_cancel_requested",
        "_coro",
        "_ctx",
        "_deadline_at",
        "_done_callbacks",
        "_error",
        "_exception",
        "_fn",
        "_job_state",
        "_lazy_condition",
        "_observed",
        "_result",
        "_retrieved",
        "_started_at",
        "_started_mono",
        "_state",
        "_submitted_at",
        "_submitted_mono",
        "_task",
        "_thread_name",
        "_timed_out",
        "_waiters",
        "id",
        "key",
        "kind",
    )

    def __init__(
        self,
        bridge: Bridge,
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
        # concurrent.futures.Future.__init__, but without its Condition: most
        # jobs are never waited for by a blocked thread, and a Condition is half
        # a dozen objects for the garbage collector to track. _condition makes
        # it on first use, and _settle() resolves without it when none exists.
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[T]], object]] = []
        self._lazy_condition: threading.Condition | None = None
        self._bridge = bridge
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
        self._thread_name = thread_name
        self._submitted_at = submitted_at
        self._submitted_mono = submitted_mono
        self._deadline_at = deadline_at  # time.monotonic() value or None
        self._job_state = JobState.PENDING  # guarded by the bridge's lock
        self._started_at: float | None = None
        self._started_mono = 0.0
        self._task: asyncio.Task[None] | None = None
        self._cancel_requested = False
        self._timed_out = False
        self._observed = observed  # somebody waits for the outcome
        self._retrieved = False  # somebody has seen the outcome
        self._error: BaseException | None = None

    # -- the Future machinery -------------------------------------------------

    @property
    def _condition(self) -> threading.Condition:
        """The base class's Condition, made when something first needs it."""
        condition = self._lazy_condition
        if condition is None:
            with _CONDITION_LOCK:
                condition = self._lazy_condition
                if condition is None:
                    condition = self._lazy_condition = threading.Condition()
        return condition

    @_condition.setter
    def _condition(self, condition: threading.Condition) -> None:
        self._lazy_condition = condition

    def done(self) -> bool:
        """Whether the job has finished (and its outcome can be read)."""
        return self._state == FINISHED

    def _settle(self, value: Any, error: BaseException | None) -> None:
        """Resolve the job, once; the bridge's only way to do it. Any thread.

        Without a Condition nobody can be waiting: the state is set, and the
        Condition looked up again, in that order, so a waiter that makes one
        meanwhile either sees the job finished or is notified under its lock.
        """
        self._result = value
        self._exception = error
        condition = self._lazy_condition
        if condition is None:
            self._state = FINISHED
            condition = self._lazy_condition
        if condition is not None:
            with condition:
                self._state = FINISHED
                for waiter in self._waiters:
                    if error is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]

    def set_result(self, result: T) -> None:
        """Not for jobs: the bridge resolves them (raises ``InvalidStateError``)."""
        raise concurrent.futures.InvalidStateError(
            "a Job is resolved by its bridge, not by set_result()"
        )

    def set_exception(self, exception: BaseException | None) -> None:
        """Not for jobs: the bridge resolves them (raises ``InvalidStateError``)."""
        raise concurrent.futures.InvalidStateError(
            "a Job is resolved by its bridge, not by set_exception()"
        )

    def _outcome(self) -> T:
        """The value, or raise the exception, of a finished job."""
        error = self._exception
        if error is not None:
            try:
                raise error
            finally:
                del error  # no frame -> exception -> traceback -> frame cycle
        return self._result  # type: ignore[return-value]

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> JobState:
        """The job's current state."""
        return self._job_state

    def info(self) -> JobInfo:
        """Return a frozen snapshot of the job."""
        deadline = None
        if self._deadline_at is not None:
            deadline = self._submitted_at + (self._deadline_at - self._submitted_mono)
        return JobInfo(
            id=self.id,
            key=self.key,
            kind=self.kind,
            state=self._job_state,
            thread=self._thread_name,
            submitted_at=self._submitted_at,
            started_at=self._started_at,
            deadline=deadline,
        )

    def __repr__(self) -> str:
        return f"<Job {self.id} key={self.key!r} kind={self.kind!r} {self._job_state.name}>"

    # -- cancellation --------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the job to stop; any thread may call this.

        A pending job ends without starting. A running job's coroutine receives
        the cancellation at its next ``await``; the job is done (and
        :meth:`cancelled` true) only once the coroutine has finished unwinding.
        The cancellation is delivered once: calling again does not interrupt
        the coroutine's cleanup.

        Returns:
            ``True`` if the job had not finished (the cancellation is
            delivered; a coroutine that catches it and returns still ends
            ``SUCCEEDED``) or had ended cancelled; ``False`` if it had already
            finished otherwise.
        """
        state = self._job_state
        if state is JobState.CANCELLED:
            return True
        if state in _FINAL:
            return False
        if self._cancel_requested:
            return True  # delivered once: a second one would interrupt its cleanup
        self._cancel_requested = True
        self._bridge._request_cancel(self)
        return True

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
            timeout: seconds to wait; ``None`` waits until the job ends.

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
        self._retrieved = True
        if self._state == FINISHED:
            return self._outcome()
        self._observed = True
        self._check_may_wait("result")
        try:
            return super().result(timeout)
        except TimeoutError as exc:
            if exc is self._error:
                raise
            raise self._wait_expired(timeout) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the job and return the exception it raised, or ``None``.

        Raises :class:`~bridge.JobCancelled` for a cancelled job, as
        :mod:`concurrent.futures` does; returns :class:`~bridge.JobTimeout` for
        a job whose deadline expired. *timeout*, threads and the other errors
        are as for :meth:`result`.
        """
        self._retrieved = True
        if self._state == FINISHED:
            error = self._exception
        else:
            self._observed = True
            self._check_may_wait("exception")
            try:
                error = super().exception(timeout)
            except TimeoutError:
                raise self._wait_expired(timeout) from None
        if isinstance(error, JobCancelled):
            raise error
        return error

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        """Call ``fn(job)`` when the job is done (at once if it is).

        The callback runs on the loop thread; it counts as somebody waiting for
        the outcome, so a failure is not logged as unobserved.
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

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._bridge._task_done(self, task)

    def _check_may_wait(self, what: str) -> None:
        self._bridge._check_forked()
        if threading.get_ident() == self._bridge._loop_ident:
            raise WrongThread(
                f"Job.{what}() on the bridge's loop thread would block the loop that "
                f"must run the job: a deadlock. Use 'await job' inside a coroutine."
            )

    def _wait_expired(self, timeout: float | None) -> TimeoutError:
        return TimeoutError(f"{self!r} did not finish within {timeout} s; it keeps running")


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
