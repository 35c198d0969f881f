"""The conveniences a bridge builds on ``submit()`` and ``call()``.

:class:`BridgeTools` is one base of :class:`~bridge.Bridge`: sync wrappers of
async functions (``blocking``), a bounded lazy ``map``, resources that live
on the loop, channels, and worker threads. Each is a thin layer over the
core calls and the parts the bridge wires (its resources, channels and
worker pool); nothing here touches the registry or the scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._arguments import (
    check_async_function,
    check_blocking_function,
    check_count,
    check_kind,
    check_timeout,
)
from ._channel import Channel, ChannelSet, new_channel
from ._exceptions import WrongThread
from ._intake import Intake
from ._iterate import JobIterator
from ._job import Job
from ._map import map_jobs
from ._pinned import PinnedThread, PinnedThreads
from ._procpool import ProcessPool
from ._resources import ResourceStack
from ._typing import USE_DEFAULT, DefaultType, TypeVarTuple, Unpack
from ._workers import WorkerPool

if TYPE_CHECKING:
    from . import _log
    from ._shutdown import Shutdown

__all__ = ["BridgeTools"]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")


class BridgeTools:
    """Conveniences over the core calls; :class:`~bridge.Bridge` inherits them."""

    if TYPE_CHECKING:  # provided by Bridge
        _intake: Intake
        _resources: ResourceStack
        _channels: ChannelSet
        _workers: WorkerPool
        _shutdown: Shutdown
        _procpool: ProcessPool
        _events: _log.EventLog
        _pinned: PinnedThreads

        @property
        def name(self) -> str: ...

        def start(self) -> Any: ...

        def _current_deadline(self) -> float | None: ...

        def call(
            self,
            fn: Callable[..., Awaitable[T]] | Coroutine[Any, Any, T],
            /,
            *args: Any,
            key: str | None = ...,
            kind: str = ...,
            timeout: float | DefaultType | None = ...,
        ) -> T: ...

        def _on_loop_thread(self) -> bool: ...

        def iterate(
            self,
            agen_fn_or_async_iterable: Callable[..., AsyncIterator[T]] | AsyncIterable[T],
            /,
            *args: Any,
            key: str | None = ...,
            kind: str = ...,
            timeout: float | None = ...,
            buffer: int = ...,
        ) -> JobIterator[T]: ...

    def _check_on_loop(self, what: str) -> None:
        if not self._on_loop_thread():
            raise WrongThread(
                f"Bridge.{what}() must be awaited on the bridge's own loop (inside a job); "
                f"from other threads use the blocking form"
            )

    @overload
    def blocking(
        self,
        fn: Callable[[Unpack[PosArgsT]], AsyncIterator[T]],
        /,
        *,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
    ) -> Callable[[Unpack[PosArgsT]], JobIterator[T]]: ...

    @overload
    def blocking(
        self,
        fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
        /,
        *,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
    ) -> Callable[[Unpack[PosArgsT]], T]: ...

    def blocking(
        self,
        fn: Callable[..., Any],
        /,
        *,
        kind: str = "job",
        timeout: float | DefaultType | None = USE_DEFAULT,
    ) -> Callable[..., Any]:
        """Return a sync function with *fn*'s positional signature that calls it.

        ``greet = bridge.blocking(tts.greet)`` then ``greet(call_id)`` from a
        callback thread is ``bridge.call(tts.greet, call_id)``. *kind* and
        *timeout* apply to every call.

        When *fn* is an async generator function, ``stream = bridge.blocking(tts.stream)``
        then ``stream(call_id, text)`` is ``bridge.iterate(tts.stream, call_id, text)``:
        it returns a :class:`JobIterator`. Its *timeout* is the whole stream's
        deadline; by default it has none (as for :meth:`iterate`).
        """
        check_async_function("fn", fn)
        check_kind(kind)
        if timeout is not USE_DEFAULT:
            check_timeout("timeout", timeout)
        if inspect.isasyncgenfunction(fn):
            return self._blocking_stream(fn, kind, None if timeout is USE_DEFAULT else timeout)

        @functools.wraps(fn)
        def blocking_fn(*args: Any) -> Any:
            return self.call(fn, *args, kind=kind, timeout=timeout)

        return blocking_fn

    def _blocking_stream(
        self, fn: Callable[..., AsyncIterator[Any]], kind: str, timeout: float | None
    ) -> Callable[..., JobIterator[Any]]:
        @functools.wraps(fn)
        def stream_fn(*args: Any) -> JobIterator[Any]:
            return self.iterate(fn, *args, kind=kind, timeout=timeout)

        return stream_fn

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
        *concurrency*, not on the length of the input. A result that is
        ready is yielded before another item is pulled, so a slow iterable
        never holds back results that are done.

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
            WrongThread: called, or the iterator advanced, on the loop thread
                (waiting for a result there would block the loop the jobs need).

        **Cancellation and timeouts:** the first failure (an exception, a
        timeout, a cancellation) is raised from the iterator and cancels the
        jobs in flight; so does closing the iterator early (``break``,
        ``close()``, garbage collection).
        """
        check_async_function("fn", fn)
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

        def submit(f: Callable[[T], Awaitable[R]], item: T) -> Job[R]:
            return self._intake.submit(f, (item,), None, kind, timeout, "reject", True)

        return map_jobs(
            submit, self._on_loop_thread, fn, iterable, concurrency, ordered, on_progress
        )

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
        check_async_function(
            "factory", factory, expected="a callable that returns an async context manager"
        )
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.resource() on the bridge's loop thread would block the loop "
                "that must enter the resource: a deadlock. Use 'await bridge.aresource(...)'."
            )
        value: T = self.call(self.aresource, factory, kind="resource")
        return value

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
        check_blocking_function("fn", fn)
        future = self._workers.submit(fn, args)
        return await asyncio.wrap_future(future)

    def pinned_thread(
        self,
        name: str,
        initializer: Callable[[], object] | None = None,
        idle: Callable[[], object] | None = None,
        idle_interval: float = 0.01,
        finalizer: Callable[[], object] | None = None,
        max_queue: int = 1000,
    ) -> PinnedThread:
        """Start one thread, owned by the bridge, for a library that wants one thread.

        The thread, named ``"<bridge name>-<name>"``, runs ``initializer()``,
        then the functions sent with :meth:`PinnedThread.call` (any thread) and
        :meth:`PinnedThread.run` (jobs), one at a time in order, calling
        ``idle()`` at least every *idle_interval* seconds between them, and
        ``finalizer()`` when it closes. For pjsua2: ``libRegisterThread`` (or
        create the endpoint) in *initializer*, ``lambda: ep.libHandleEvents(10)``
        as *idle*, hang up and ``libDestroy`` in *finalizer*.

        Args:
            name: the thread's name after the bridge's.
            initializer: called first, on the thread; if it raises, every call
                raises :class:`BridgeClosed` chained to its error, the
                finalizer is not called and the thread ends.
            idle: called on the thread whenever *idle_interval* seconds have
                passed since its last call (it may block for a few ms);
                ``None`` for none.
            idle_interval: seconds between two ``idle()`` calls, > 0.
            finalizer: called last, on the thread, after the calls queued.
            max_queue: how many calls may wait; beyond, ``call()`` blocks and
                ``run()`` waits.

        Returns:
            The :class:`PinnedThread`; the bridge closes it at shutdown, after
            the jobs and before the resources.

        Raises:
            TypeError: *name* is not a str, or a function is not a plain
                callable.
            ValueError: *name* is empty, *idle_interval* <= 0 (or not
                finite), *max_queue* < 1.
            BridgeClosed: the bridge is shutting down or shut down.

        Nothing is started when it raises. **Thread safety:** any thread (it
        starts the bridge if needed); it does not wait for the initializer.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        pinned = PinnedThread(
            f"{self.name}-{name}",
            initializer=initializer,
            idle=idle,
            idle_interval=idle_interval,
            finalizer=finalizer,
            max_queue=max_queue,
            on_loop_thread=self._on_loop_thread,
            events=self._events,
        )
        self.start()
        self._pinned.start(pinned)
        return pinned


async def _anew_channel(maxsize: int) -> Channel[Any]:
    return new_channel(maxsize)
