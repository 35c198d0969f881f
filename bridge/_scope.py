"""Bridge.enter: an async context manager entered and exited by one job.

The job's single task calls ``__aenter__``, hands the value to the thread,
waits for the thread's ``with`` body to end, and calls ``__aexit__`` with
the body's exception: both halves run in the same task, so cancel scopes,
task groups and context variables inside the manager work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

from ._job import Job

__all__ = ["Handoff", "Scope", "SubmitScope", "run_scope"]

T = TypeVar("T")

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

#: ``submit(handoff)`` submits ``run_scope(handoff)`` as the scope's job (observed).
SubmitScope = Callable[["Handoff[Any]"], Job[bool]]


@final
class Handoff(Generic[T]):
    """What the scope's task and the thread exchange.

    ``entered`` (a concurrent future) carries ``__aenter__``'s value to the
    thread, or the reason there is none; ``body_done`` (an asyncio future of
    the loop, created by the task before it resolves ``entered``) carries the
    body's exception to the task.
    """

    __slots__ = (
        "_lock",
        "abandoned",
        "body_done",
        "entered",
        "factory",
        "find_job",
        "job",
        "loop",
        "task",
    )

    def __init__(
        self,
        factory: Callable[[], AbstractAsyncContextManager[T]],
        find_job: Callable[[asyncio.Task[Any]], Job[bool] | None],
    ) -> None:
        self.factory: Final = factory
        self.find_job: Final = find_job  # the job whose task it is (loop thread)
        self.entered: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.body_done: asyncio.Future[ExcInfo] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # Guards abandoned, task and job: the thread that gives up and the task
        # that starts agree on which of them ends the scope.
        self._lock = threading.Lock()
        self.abandoned = False  # the thread gave up waiting to enter (an interrupt)
        self.task: asyncio.Task[Any] | None = None  # the scope's task, once started
        self.job: Job[bool] | None = None  # the scope's job, once known

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The task starts (loop thread); raises CancelledError if the thread gave up."""
        with self._lock:
            self.loop = loop
            self.task = asyncio.current_task()
            abandoned = self.abandoned
        if abandoned:
            raise asyncio.CancelledError("the thread stopped waiting to enter the scope")

    def set_job(self, job: Job[bool]) -> None:
        """Record the job (the thread, once ``submit()`` returned it)."""
        with self._lock:
            self.job = job

    def abandon(self) -> None:
        """The thread gives up waiting to enter (an error or an interrupt). Any thread.

        The job is cancelled; if ``submit()`` never returned it (an interrupt
        inside it), the task finds it on the loop, or never enters at all.
        """
        with self._lock:
            self.abandoned = True
            job, task, loop = self.job, self.task, self.loop
        if job is not None:
            job.add_done_callback(_retrieve)  # the thread raises the error itself
            job.cancel()
        elif task is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutdown ended it
                loop.call_soon_threadsafe(self._cancel_own_job, task)

    def _cancel_own_job(self, task: asyncio.Task[Any]) -> None:
        job = self.find_job(task)
        if job is not None:
            self.set_job(job)
            job.add_done_callback(_retrieve)
            job.cancel()

    def job_done(self, job: concurrent.futures.Future[bool]) -> None:
        """The job ended (a done callback): release a thread still waiting to enter."""
        if self.entered.done():
            return
        try:
            error = job.exception()
        except concurrent.futures.CancelledError as cancelled:  # JobCancelled
            error = cancelled
        if error is None:  # pragma: no cover - the task resolves entered before it returns
            error = RuntimeError("the scope's job ended before it entered the manager")
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.entered.set_exception(error)

    def end_body(self, exc_info: ExcInfo) -> None:
        """The thread's body ended: hand its exception to the task. Any thread."""
        loop, body_done = self.loop, self.body_done
        assert loop is not None
        assert body_done is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: shutdown ended it
            loop.call_soon_threadsafe(_set_body_done, body_done, exc_info)


def _set_body_done(body_done: asyncio.Future[ExcInfo], exc_info: ExcInfo) -> None:
    if not body_done.done():
        body_done.set_result(exc_info)


async def run_scope(handoff: Handoff[Any]) -> bool:
    """The scope's job: enter, wait for the body, exit; return whether it suppressed.

    The return value is ``True`` only if ``__aexit__`` suppressed the body's
    own exception.

    **Cancellation and timeouts:** cancelled while entering, ``__aenter__``
    decides what to undo; cancelled while the body runs (``cancel()``, the
    deadline, shutdown), ``__aexit__`` runs with the ``CancelledError`` and
    the job ends cancelled (or timed out) unless the manager suppresses it.
    """
    loop = asyncio.get_running_loop()
    handoff.start(loop)
    cm = handoff.factory()
    kind = type(cm)
    if not (hasattr(kind, "__aenter__") and hasattr(kind, "__aexit__")):
        raise TypeError(f"cm_factory must return an async context manager, not {kind.__name__}")
    aexit = kind.__aexit__
    value = await kind.__aenter__(cm)
    body_done = handoff.body_done = loop.create_future()
    try:
        handoff.entered.set_result(value)
        exc_type, exc, tb = await body_done
    except BaseException as error:  # cancelled while the body ran
        if not await aexit(cm, type(error), error, error.__traceback__):
            raise
        return False  # it suppressed the cancellation, not the body's exception
    return bool(await aexit(cm, exc_type, exc, tb))


@final
class Scope(Generic[T]):
    """The sync context manager :meth:`Bridge.enter` returns; usable once.

    ``__enter__`` submits the job and waits for ``__aenter__``'s value;
    ``__exit__`` hands the body's exception to the job and waits for
    ``__aexit__``.

    **Thread safety:** any thread but the loop thread (checked by
    :meth:`Bridge.enter`).

    **Cancellation and timeouts:** interrupted while waiting to enter
    (Ctrl+C), the job is cancelled and the manager is exited on the loop if
    it was entered; interrupted while waiting to exit, the exit goes on on
    the loop all the same. The job's deadline bounds the whole scope.
    """

    __slots__ = ("_handoff", "_submit", "_used")

    def __init__(
        self,
        submit: SubmitScope,
        factory: Callable[[], AbstractAsyncContextManager[T]],
        find_job: Callable[[asyncio.Task[Any]], Job[bool] | None],
    ) -> None:
        self._submit: Final = submit
        self._handoff: Final = Handoff(factory, find_job)
        self._used = False

    @property
    def job(self) -> Job[bool] | None:
        """The scope's job once entered, else ``None``."""
        return self._handoff.job

    def __enter__(self) -> T:
        if self._used:
            raise RuntimeError("a Bridge.enter() scope can be entered only once")
        self._used = True
        handoff = self._handoff
        try:
            job = self._submit(handoff)
            handoff.set_job(job)
            job.add_done_callback(handoff.job_done)
            return handoff.entered.result()
        except BaseException:
            handoff.abandon()  # also on KeyboardInterrupt: exits on the loop if it entered
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        job = self._handoff.job
        assert job is not None
        self._handoff.end_body((exc_type, exc, tb))
        error = job.exception()  # waits; an interrupt here leaves the exit running
        if error is None:
            return job.result()
        if error is exc:
            return False  # __aexit__ re-raised the body's exception: let it propagate
        raise error


def _retrieve(job: concurrent.futures.Future[Any]) -> None:
    """Mark the failure of a scope that was never entered as retrieved."""
    with contextlib.suppress(concurrent.futures.CancelledError):
        job.exception()
