"""Bridge.iterate: an async generator on the loop, consumed as a sync iterator.

The generator runs on the loop thread as one job (the *producer*); a thread
takes its items through a :class:`JobIterator`. Between them is a
:class:`_Pipe`: a deque, a small lock of its own (never the bridge's), one
parked consumer and one parked producer at most. Wake-ups are batched: the
producer wakes the consumer only when it is parked, and the consumer wakes the
producer only when it is parked and the buffer has drained to half, so a fast
stream crosses the boundary in runs of items rather than one wake-up per item.

This module knows nothing of the bridge: :meth:`Bridge.iterate` submits
:func:`produce` as the job and wraps it in a :class:`JobIterator`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

from ._exceptions import JobCancelled, WrongThread
from ._job import Job, JobState

__all__ = ["JobIterator", "Pipe", "produce"]

T = TypeVar("T")

_CANCELLED: Final = JobState.CANCELLED
_TIMED_OUT: Final = JobState.TIMED_OUT

_REFUSAL: Final = (
    "iterating a Bridge.iterate() iterator on the bridge's loop thread would block "
    "the loop that must produce the items: a deadlock. Use 'async for' on the "
    "async iterable itself inside coroutines."
)


@final
class Pipe(Generic[T]):
    """The hand-off between one producer (loop thread) and one consumer (a thread).

    Everything below ``_lock`` is guarded by it: the lock is held only to move
    an item, or to park or unpark one side, never while waiting or calling
    out (waking is a ``release()`` or a ``call_soon_threadsafe``).
    """

    __slots__ = ("_buffer", "_items", "_lock", "_loop", "_low", "_room", "_waiter", "ended")

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int) -> None:
        self._loop: Final = loop
        self._buffer: Final = buffer
        self._low: Final = buffer // 2  # the producer is woken at this many items
        # Guards _items, _waiter, _room and ended (see the class docstring).
        self._lock = threading.Lock()
        self._items: deque[T] = deque()
        self._waiter: threading.Lock | None = None  # the parked consumer's gate
        self._room: asyncio.Future[None] | None = None  # the parked producer's
        self.ended = False  # the job is done: nothing more will be pushed

    # -- loop thread (the producer) ---------------------------------------------------

    def push(self, item: T) -> None:
        """Add one item; wake the consumer if it is parked."""
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    async def wait_room(self) -> None:
        """Return once fewer than ``buffer`` items wait (at once if so).

        **Cancellation:** the wait ends with ``CancelledError``; nothing is lost.
        """
        with self._lock:
            if len(self._items) < self._buffer:
                return
            room = self._room = self._loop.create_future()
        await room

    def end(self, _: object = None) -> None:
        """The job is done (its done callback): wake the consumer for good."""
        with self._lock:
            self.ended = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.release()

    # -- the consumer's thread ----------------------------------------------------------

    def take(self) -> tuple[bool, T | None]:
        """``(True, item)``, or ``(False, None)`` once the job is done and all is taken.

        Blocks while nothing is there; never on the loop thread.
        """
        while True:
            room = None
            with self._lock:
                items = self._items
                if not items:
                    if self.ended:
                        return False, None
                    waiter = self._waiter = threading.Lock()
                    waiter.acquire()
                else:
                    item = items.popleft()
                    if self._room is not None and len(items) <= self._low:
                        room, self._room = self._room, None
                    waiter = None
            if waiter is not None:  # parked: wait outside the lock, then look again
                waiter.acquire()
                continue
            if room is not None:
                self.wake_producer(room)
            return True, item

    def wake_producer(self, room: asyncio.Future[None]) -> None:
        """Resolve the parked producer's future on the loop. Any thread."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            self._loop.call_soon_threadsafe(_set_room, room)

    def drop(self) -> None:
        """Forget the items not taken (a cancelled stream's)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _set_room(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)


async def produce(pipe: Pipe[T], open_stream: Callable[[], AsyncIterator[T]]) -> None:
    """The job of one stream: pull items into *pipe*, at most ``buffer`` ahead.

    ``open_stream()`` is called here, on the loop: it calls the async generator
    function with its arguments, or the async iterable's ``__aiter__``. The
    generator's exception fails the job; the items it yielded before are in
    the pipe already.

    **Cancellation:** the generator is closed (``aclose()``) here, on the
    loop, whether the stream ended, failed or was cancelled: its ``finally``
    runs once, in this task.
    """
    iterator = open_stream()
    try:
        anext = iterator.__anext__
        while True:
            if len(pipe) >= pipe._buffer:
                await pipe.wait_room()
            try:
                item = await anext()
            except StopAsyncIteration:
                return
            pipe.push(item)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


@final
class JobIterator(Iterator[T], Generic[T]):
    """The items of an async generator running as a job, for a thread to iterate.

    Made by :meth:`Bridge.iterate` (and by functions made by
    :meth:`Bridge.blocking` from an async generator function). A sync
    iterator and a context manager: leaving the ``with`` closes it.

    Items arrive in the order the generator yielded them. If the generator
    raises, the items it yielded before are delivered first, then ``next()``
    raises its exception. If the job is cancelled (:meth:`Job.cancel`, its
    key, shutdown) or its deadline expires, the very next ``next()`` raises
    :class:`JobCancelled` or :class:`JobTimeout`, and items not yet taken are
    dropped.

    **Thread safety:** one thread iterates it (any thread but the loop thread,
    where ``next()`` raises :class:`WrongThread`); :meth:`close` and
    :attr:`job` work from any thread.

    **Cancellation and timeouts:** :meth:`close` (also done by leaving the
    ``with`` and, from the loop, by garbage collection) cancels the job: the
    generator's ``finally`` runs on the loop, once, and the job ends.
    """

    __slots__ = ("__weakref__", "_done", "_job", "_late_cancel", "_on_loop_thread", "_pipe")

    def __init__(self, job: Job[None], pipe: Pipe[T], on_loop_thread: Callable[[], bool]) -> None:
        self._job: Final = job
        self._pipe: Final = pipe
        self._on_loop_thread: Final = on_loop_thread
        self._done = False  # ended for this iterator: next() raises StopIteration
        self._late_cancel = False  # a cancel() that came after the stream had ended
        job.add_done_callback(pipe.end)

    @property
    def job(self) -> Job[None]:
        """The job that runs the generator (cancel it to stop the stream)."""
        return self._job

    def __iter__(self) -> JobIterator[T]:
        return self

    def __next__(self) -> T:
        """The next item; see the class docstring for how the stream ends.

        Raises:
            StopIteration: the generator ended (or the iterator was closed).
            JobCancelled: the job was cancelled.
            JobTimeout: the job's deadline expired.
            WrongThread: called on the loop thread (the iterator is unchanged).
            Exception: what the generator raised, after the items before it.
        """
        if self._on_loop_thread():
            raise WrongThread(_REFUSAL)
        if self._done:
            raise StopIteration
        if self._job._cancel is not None and not self._late_cancel:
            self._cancelled()
        ok, item = self._pipe.take()
        if ok:
            return item  # type: ignore[return-value]
        if self._done:  # closed by another thread while this one waited
            raise StopIteration
        self._done = True
        self._job.result()  # the job is done: raises its failure, if any
        raise StopIteration

    def _cancelled(self) -> None:
        """The job's cancellation was decided: wait for it to unwind, then raise."""
        job = self._job
        job._wait(None)
        if job._job_state in (_CANCELLED, _TIMED_OUT):
            self._done = True
            self._pipe.drop()
            job.result()  # raises JobCancelled or JobTimeout
            raise JobCancelled(f"{job!r} was cancelled")  # pragma: no cover - result() raised
        self._late_cancel = True  # it had finished by itself: deliver what it made

    def close(self) -> None:
        """Stop the stream: cancel the job and wait until the generator is closed.

        Idempotent. On the loop thread it does not wait (the loop must run the
        generator's ``finally``).

        **Thread safety:** any thread.
        """
        self._done = True
        job = self._job
        job.add_done_callback(_retrieve)  # a failure not reached is the closer's to drop
        if job.done():
            return
        job.cancel()
        if not self._on_loop_thread():
            job._wait(None)
        self._pipe.drop()

    def __enter__(self) -> JobIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A finalizer may run on any thread, also one holding the bridge's lock:
        # it only hands the work to the loop, which takes that lock there.
        job = getattr(self, "_job", None)
        if job is None or self._done:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: shutdown ended it
            self._pipe._loop.call_soon_threadsafe(_abandon, job)

    def __repr__(self) -> str:
        return f"<JobIterator job={self._job.id} buffered={len(self._pipe)}>"


def _abandon(job: Job[Any]) -> None:
    """End the job of an iterator nobody holds any more (loop thread)."""
    job.add_done_callback(_retrieve)
    job.cancel()


def _retrieve(job: concurrent.futures.Future[Any]) -> None:
    """Mark a dropped stream's failure as retrieved (a done callback)."""
    with contextlib.suppress(concurrent.futures.CancelledError):
        job.exception()
