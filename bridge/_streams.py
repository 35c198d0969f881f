"""Streams and scopes across the thread boundary: :meth:`iterate` and :meth:`enter`.

:class:`BridgeStreams` is one base of :class:`~bridge.Bridge`. ``iterate``
runs an async generator as one job and hands its items to a thread
(``_iterate.py``); ``enter`` runs an async context manager's enter and exit
in one job around a thread's ``with`` body (``_scope.py``). Each is a thin
layer over the bridge's intake.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from ._arguments import check_async_function, check_count, check_kind, check_timeout
from ._exceptions import WrongThread
from ._intake import Intake
from ._iterate import JobIterator, Pipe, produce
from ._job import Job
from ._scope import Handoff, Scope, run_scope

if TYPE_CHECKING:
    from ._registry import Registry
    from ._scheduler import Scheduler

__all__ = ["BridgeStreams"]

T = TypeVar("T")

_SOURCE = "agen_fn_or_async_iterable"


class BridgeStreams:
    """Streams and scoped context managers; :class:`~bridge.Bridge` inherits them."""

    if TYPE_CHECKING:  # provided by Bridge
        _intake: Intake
        _scheduler: Scheduler
        _registry: Registry

        def _on_loop_thread(self) -> bool: ...

        def start(self) -> Any: ...

    def iterate(
        self,
        agen_fn_or_async_iterable: Callable[..., AsyncIterator[T]] | AsyncIterable[T],
        /,
        *args: Any,
        key: str | None = None,
        kind: str = "job",
        timeout: float | None = None,
        buffer: int = 1,
    ) -> JobIterator[T]:
        """Run an async generator on the loop as one job; iterate its items here.

        ``for frame in bridge.iterate(tts.stream, call_id, text, buffer=4)``
        hands each frame the generator yields on the loop to this thread. The
        generator runs at most *buffer* items ahead of the consumer (items
        yielded and not yet taken, not counting the one being computed):
        backpressure both ways.

        Args:
            agen_fn_or_async_iterable: an async generator function (called on
                the loop with *args*) or an async iterable (no *args*).
            key: a name unique among unfinished jobs (as for :meth:`submit`).
            kind: the job's kind (``limits`` apply; ``timeouts`` do not).
            timeout: seconds the whole stream may take from now; ``None``
                (the default) for no deadline: a stream lives as long as its
                consumer.
            buffer: how many items the generator may run ahead (>= 1).

        Returns:
            A :class:`JobIterator`: a sync iterator and context manager whose
            ``job`` runs the generator.

        Raises:
            TypeError: the first argument is neither, or an async iterable
                came with *args* (nothing is left behind).
            ValueError: *buffer* < 1, or *timeout* negative or NaN.
            WrongThread: called on the loop thread.
            DuplicateJob, Overloaded, BridgeClosed: as for :meth:`submit`.

        **Thread safety:** any thread but the loop thread, where iterating
        would block the loop the generator needs; there use ``async for``.

        **Cancellation and timeouts:** the generator's exception is raised by
        the ``next()`` after the items it yielded before it. ``cancel()`` on
        the job, or its deadline, makes the very next ``next()`` raise
        :class:`JobCancelled` or :class:`JobTimeout` (buffered items are
        dropped). Leaving the ``with``, ``close()``, or the iterator being
        garbage-collected closes the generator on the loop (its ``finally``
        runs there, once) and ends the job.
        """
        open_stream = _opener(agen_fn_or_async_iterable, args)
        check_count("buffer", buffer, allow_none=False)
        _check_job_options(key, kind, timeout)
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.iterate() on the bridge's loop thread would block the loop "
                "that must produce the items: a deadlock. Use 'async for' there."
            )
        self.start()
        loop = self._scheduler.loop
        assert loop is not None
        pipe: Pipe[T] = Pipe(loop, buffer)
        job: Job[None] = self._intake.submit(
            produce, (pipe, open_stream), key, kind, timeout, "reject", True
        )
        return JobIterator(job, pipe, self._on_loop_thread)

    def enter(
        self,
        cm_factory: Callable[[], AbstractAsyncContextManager[T]],
        /,
        *,
        key: str | None = None,
        kind: str = "context",
        timeout: float | None = None,
    ) -> Scope[T]:
        """A sync context manager around an async one entered and exited on the loop.

        ``with bridge.enter(lambda: client.stream("GET", url)) as response:``
        is one job whose single task calls ``__aenter__`` (its value is what
        the ``with`` gets), waits for the body to end and calls ``__aexit__``:
        both in the same task, so cancel scopes, task groups and context
        variables inside the manager work. The job is submitted when the
        ``with`` is entered.

        Args:
            cm_factory: called on the loop; returns the async context manager.
            key: a name unique among unfinished jobs (as for :meth:`submit`).
            kind: the job's kind.
            timeout: seconds the whole scope (enter, body, exit) may take from
                entering; ``None`` for no deadline.

        Returns:
            The context manager (usable once).

        Raises:
            TypeError: *cm_factory* is not callable (or, from ``with``, does
                not return an async context manager).
            WrongThread: called on the loop thread.

        **Thread safety:** any thread but the loop thread (where waiting for
        ``__aenter__`` would block the loop that runs it).

        **Cancellation and timeouts:** an exception in the body is passed to
        ``__aexit__``, which may suppress it as in ``async with``. The exit
        runs even if this thread is interrupted (Ctrl+C) while it waits. When
        the deadline expires, the job is cancelled or shutdown cancels it, the
        manager exits with the ``CancelledError`` on the loop and leaving the
        ``with`` raises :class:`JobTimeout` or :class:`JobCancelled`.
        """
        check_async_function(
            "cm_factory", cm_factory, expected="a callable that returns an async context manager"
        )
        _check_job_options(key, kind, timeout)
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.enter() on the bridge's loop thread would block the loop that "
                "must enter the context manager: a deadlock. Use 'async with' there."
            )

        def submit(handoff: Handoff[Any]) -> Job[bool]:
            return self._intake.submit(run_scope, (handoff,), key, kind, timeout, "reject", True)

        return Scope(submit, cm_factory, self._job_of_task)

    def _job_of_task(self, task: asyncio.Task[Any]) -> Job[Any] | None:
        """The unfinished job whose task is *task* (a rare path: it scans them all)."""
        for job in self._registry.unfinished():
            if job._task is task:
                return job
        return None


def _opener(source: object, args: tuple[Any, ...]) -> Callable[[], AsyncIterator[Any]]:
    """What the producer calls on the loop to start the stream; TypeError if neither."""
    if asyncio.iscoroutine(source):
        source.close()
        raise TypeError(
            f"{_SOURCE} must be an async generator function or an async iterable, "
            f"not a coroutine object (it has been closed)"
        )
    if inspect.isasyncgenfunction(source):
        return functools.partial(source, *args)
    if isinstance(source, AsyncIterable):
        if args:
            raise TypeError(
                f"{_SOURCE} is an async iterable: it takes no positional arguments "
                f"(got {len(args)})"
            )
        return source.__aiter__
    raise TypeError(
        f"{_SOURCE} must be an async generator function or an async iterable, "
        f"not {type(source).__name__}"
    )


def _check_job_options(key: object, kind: object, timeout: object) -> None:
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a str or None, not {type(key).__name__}")
    check_kind(kind)
    check_timeout("timeout", timeout)
