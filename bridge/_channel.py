"""Channels: janus queues between threads and the bridge's loop."""

from __future__ import annotations

from typing import Any, Generic, TypeVar, final

import janus

__all__ = ["Channel", "new_channel"]

T = TypeVar("T")


@final
class Channel(Generic[T]):
    """A queue with a blocking side for threads and an async side for the loop.

    Created by :meth:`Bridge.channel`. A media thread ``put``\\ s frames on
    :attr:`sync_q`; a coroutine on the bridge ``await``\\ s them from
    :attr:`async_q` (and the other way round for replies).

    :meth:`close` (also done by the bridge when it shuts down) wakes every
    ``put``/``get`` blocked on either side: they raise
    ``janus.SyncQueueShutDown`` (threads) or ``janus.AsyncQueueShutDown``
    (coroutines). Items already put are not dropped: ``get`` returns them
    until the queue is empty, then raises.
    """

    __slots__ = ("__weakref__", "_closed", "_queue")

    def __init__(self, queue: janus.Queue[T]) -> None:
        self._queue = queue
        self._closed = False

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
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Refuse new items and wake every blocked ``put``/``get``. Any thread; idempotent."""
        self._closed = True
        self._queue.shutdown(immediate=False)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Channel maxsize={self.maxsize} size={self._queue.sync_q.qsize()} {state}>"


def new_channel(maxsize: int) -> Channel[Any]:
    """Create a channel on the loop thread and bind its queue to this loop."""
    queue: janus.Queue[Any] = janus.Queue(maxsize)
    # janus binds its loop lazily, at the first async operation; bind it now to
    # the bridge's loop, so a thread's put() before any get() still wakes it.
    with queue._sync_mutex:
        queue._get_loop()
    return Channel(queue)
