"""Channels: janus queues between threads and the bridge's loop.

Single items go through janus's public API: the queue binds the loop of its
first async operation, which is always early enough. Batches
(:meth:`Channel.put_many` and friends) are in :mod:`bridge._batch`, the one
module that uses janus's internals. A thread's ``put`` wakes
the async side only when a coroutine is already waiting, and a coroutine binds
the loop before it waits; an item put before any coroutine looked stays in the
queue, where the next ``get`` finds it without waiting.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar, final

import janus

from . import _batch

__all__ = ["Channel", "ChannelSet", "new_channel"]

T = TypeVar("T")


class _Queue(janus.Queue[T]):
    """A janus queue that keeps its :class:`Channel` alive and knows it was shut down.

    The reference back to the channel is what lets the bridge hold channels
    weakly: a media thread that kept only ``sync_q`` keeps the proxy, the proxy
    keeps this queue, and this queue keeps the channel, which therefore is still
    in the bridge's :class:`ChannelSet` to be closed at shutdown.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.bridge_channel: Channel[T] | None = None
        self.bridge_shut_down = False

    def shutdown(self, immediate: bool = False) -> None:
        """janus's ``shutdown``, whichever side it was called on, remembered."""
        self.bridge_shut_down = True  # before anyone is woken, so they see it closed
        super().shutdown(immediate)


@final
class Channel(Generic[T]):
    """A queue with a blocking side for threads and an async side for the loop.

    Created by :meth:`Bridge.channel`. A media thread ``put``\\ s frames on
    :attr:`sync_q`; a coroutine on the bridge ``await``\\ s them from
    :attr:`async_q` (and the other way round for replies).

    Iterable on both sides: ``async for item in channel`` on the loop and
    ``for item in channel.sync_iter()`` on a thread take the items until the
    channel is closed and drained, then end cleanly.

    :meth:`close` (also done by the bridge when it shuts down, even when only
    one side of the channel is still referenced) wakes every ``put``/``get``
    blocked on either side: they raise ``janus.SyncQueueShutDown`` (threads)
    or ``janus.AsyncQueueShutDown`` (coroutines). Items already put are not
    dropped: ``get`` returns them until the queue is empty, then raises.

    Batches: :meth:`put_many` and :meth:`get_many` (threads),
    :meth:`aput_many` and :meth:`aget_many` (the loop) move many items with
    one lock acquisition and one wake-up of the other side, and mix freely
    with the single-item calls. Each item stays one item: a batch put is
    the same as putting its items one by one, in order, and a batch get the
    same as getting them one by one.
    """

    __slots__ = ("__weakref__", "_queue")

    def __init__(self, queue: _Queue[T]) -> None:
        self._queue = queue
        queue.bridge_channel = self  # a cycle, collected once neither side is kept

    @property
    def sync_q(self) -> janus.SyncQueue[T]:
        """The side for threads (blocking ``put``/``get``). Any thread but the loop's."""
        return self._queue.sync_q

    @property
    def async_q(self) -> janus.AsyncQueue[T]:
        """The side for coroutines running on the bridge's loop."""
        return self._queue.async_q

    @property
    def maxsize(self) -> int:
        """The capacity (0: unbounded)."""
        return self._queue.maxsize

    @property
    def closed(self) -> bool:
        """Whether the channel was closed (:meth:`close`, or ``shutdown()`` on a side)."""
        return self._queue.bridge_shut_down

    def close(self) -> None:
        """Refuse new items and wake every blocked ``put``/``get``. Any thread; idempotent."""
        self._queue.shutdown(immediate=False)

    def put_many(self, items: Iterable[T], *, timeout: float | None = None) -> None:
        """Put every item of *items*, in order, with one wake-up of the consumers.

        Puts what fits, wakes the waiting consumers once, and on a bounded
        channel waits for room for the rest (so a batch may be larger than
        :attr:`maxsize`, and items of other producers may come between two
        parts of it). The items are taken from *items* before anything is put.

        Args:
            items: the items (any iterable but ``str``/``bytes``, which would
                put characters or ints; an empty one puts nothing).
            timeout: seconds to wait for room in all (None: as long as it takes).

        Raises:
            janus.SyncQueueShutDown: the channel is or gets closed.
            janus.SyncQueueFull: *timeout* passed before every item fit.
            WrongThread: called on the bridge's loop thread (once the channel
                was used there: it binds the loop at its first async call).

        In both of the first two cases ``exc.args[0]`` is how many items were
        put (the first ones of *items*; they will be delivered) and the rest
        were not.

        **Thread safety:** any thread but the loop's. **Cancellation and
        timeouts:** see *timeout*; nothing else interrupts the wait but
        :meth:`close`.
        """
        _batch.check_timeout(timeout)
        _batch.put_many(self._queue, _as_sequence(items), timeout)

    def get_many(self, max_items: int | None = None, *, timeout: float | None = None) -> list[T]:
        """Wait for an item, then take every item there (at most *max_items*) at once.

        Never returns an empty list: it waits for the first item, then takes
        what is in the channel without waiting for more, and wakes the
        producers waiting for room once.

        Args:
            max_items: the most items to take (None: all there are).
            timeout: seconds to wait for the first item (None: as long as it takes).

        Returns:
            The items, oldest first.

        Raises:
            janus.SyncQueueShutDown: the channel is closed and empty.
            janus.SyncQueueEmpty: *timeout* passed with the channel empty.
            WrongThread: called on the bridge's loop thread (once the channel
                was used there: it binds the loop at its first async call).

        **Thread safety:** any thread but the loop's. **Cancellation and
        timeouts:** an item is taken only when the call returns it.
        """
        _batch.check_max_items(max_items)
        _batch.check_timeout(timeout)
        return _batch.get_many(self._queue, max_items, timeout)

    async def aput_many(self, items: Iterable[T]) -> None:
        """Put every item of *items*, in order, with one wake-up of the consumers.

        The loop's :meth:`put_many`: puts what fits, wakes the waiting
        consumers once (a thread blocked in ``get``/:meth:`get_many` wakes
        once per call, not per item), and waits for room for the rest.

        Raises:
            janus.AsyncQueueShutDown: the channel is or gets closed;
                ``exc.args[0]`` is how many items were put (the first ones).

        **Thread safety:** coroutines on the bridge's loop. **Cancellation:**
        cancelling the waiting coroutine stops the put: the items put so far
        stay in the channel (the first ones, in order), the rest are not put.
        """
        await _batch.aput_many(self._queue, _as_sequence(items))

    async def aget_many(self, max_items: int | None = None) -> list[T]:
        """Wait for an item, then take every item there (at most *max_items*) at once.

        The loop's :meth:`get_many`; never returns an empty list.

        Raises:
            janus.AsyncQueueShutDown: the channel is closed and empty.

        **Thread safety:** coroutines on the bridge's loop. **Cancellation:**
        cancelling the waiting coroutine takes nothing: no item is lost.
        """
        _batch.check_max_items(max_items)
        return await _batch.aget_many(self._queue, max_items)

    def __aiter__(self) -> AsyncIterator[T]:
        """``async for item in channel``: the items, until the channel is closed and empty.

        **Thread safety:** coroutines on the bridge's loop. **Cancellation:**
        cancelling the consuming task ends the wait; no item is lost.
        """
        return _AsyncItems(self._queue.async_q)

    def sync_iter(self) -> Iterator[T]:
        """``for item in channel.sync_iter()``: the items, until closed and empty.

        Each step blocks while the channel is open and empty. **Thread
        safety:** any thread but the loop's (where a blocking ``get`` would
        stop the loop that puts the items).
        """
        get = self._queue.sync_q.get
        while True:
            try:
                item = get()
            except janus.SyncQueueShutDown:
                return
            yield item

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Channel maxsize={self.maxsize} size={self._queue.sync_q.qsize()} {state}>"


@final
class _AsyncItems(AsyncIterator[T]):
    """The async iterator of one ``async for`` over a channel."""

    __slots__ = ("_get",)

    def __init__(self, async_q: janus.AsyncQueue[T]) -> None:
        self._get = async_q.get

    async def __anext__(self) -> T:
        try:
            return await self._get()
        except janus.AsyncQueueShutDown:
            raise StopAsyncIteration from None


@final
class ChannelSet:
    """The channels of one bridge, held weakly, closed together when it shuts down.

    A channel stays in the set while anything keeps it or either of its sides.
    Once :meth:`close_all` has run, a channel added later (a job may create one
    while shutdown waits for it) is closed at once: no channel outlives the
    bridge open, with a thread blocked on it for ever.

    **Thread safety:** any thread. Its lock guards the set only: no channel is
    closed, and no other lock taken, while it is held.
    """

    __slots__ = ("_channels", "_closing", "_lock")

    def __init__(self) -> None:
        # Guards _channels (a WeakSet cannot be added to while another thread
        # copies it) and _closing, so that a channel is either in close_all()'s
        # copy or added after it and closed by add().
        self._lock = threading.Lock()
        self._channels: weakref.WeakSet[Channel[Any]] = weakref.WeakSet()
        self._closing = False

    def add(self, channel: Channel[Any]) -> None:
        """Hold *channel* until :meth:`close_all`; close it now if that has run."""
        with self._lock:
            if not self._closing:
                self._channels.add(channel)
                return
        channel.close()

    def close_all(self) -> None:
        """Close every channel held, and every channel added from now on. Idempotent."""
        with self._lock:
            self._closing = True
            channels = list(self._channels)
            self._channels.clear()
        for channel in channels:  # wakes producers and consumers alike
            channel.close()

    def __len__(self) -> int:
        """How many channels are held (open ones, until :meth:`close_all`)."""
        with self._lock:
            return len(self._channels)


def _as_sequence(items: Iterable[T]) -> Sequence[T]:
    """*items* as a tuple or a list of its own, taken before any lock is."""
    if isinstance(items, tuple):
        return items
    if not isinstance(items, (str, bytes, bytearray)):
        try:
            return list(items)
        except TypeError:
            if hasattr(items, "__iter__"):
                raise  # the iterable itself failed: its own error
    raise TypeError(f"items must be an iterable of items, not {type(items).__name__}")


def new_channel(maxsize: int) -> Channel[Any]:
    """Create a channel; its queue binds a loop at its first async operation."""
    return Channel(_Queue(maxsize))
