"""Batch puts and gets on a janus queue: one lock and one wake-up per batch.

This is the only module that reads janus's internals (``janus>=2.0,<2.1`` is
pinned for it; ``tests/test_channel_batch.py`` checks the attributes used).
It follows janus's own locking exactly: every change to the deque happens
under ``_sync_mutex``; the async side also holds ``_async_mutex`` (the lock
of janus's three ``asyncio.Condition``\\ s) for the whole operation, as
janus's ``async_q.put``/``get`` do. A thread wakes coroutines through
``_notify_async`` (with ``_sync_mutex`` held, as janus requires), a coroutine
wakes threads with ``threading.Condition.notify`` directly. The items go
into and out of the deque janus's FIFO ``Queue`` keeps (``_queue``) a batch at
a time (``extend``, ``list`` + ``clear``), with ``_unfinished_tasks`` counted
as janus's ``_put_internal`` would: a batch costs a few C calls, not two
Python calls per item.

Batches are never atomic: a put puts what fits, wakes the other side once,
and waits for room for the rest; a get takes what is there (at most
``max_items``), after waiting for at least one item. Every wake-up a waiter
receives therefore moves at least one item, so the one-waiter ``notify()`` of
janus's single-item calls is never wasted on a batch that still cannot move.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import janus

from ._exceptions import WrongThread

if TYPE_CHECKING:
    from ._channel import _Queue

__all__ = ["aget_many", "aput_many", "check_max_items", "check_timeout", "get_many", "put_many"]

T = TypeVar("T")

_REFUSAL = (
    "a blocking channel call on the bridge's loop thread would stop the loop that "
    "serves the other side: use await aput_many()/aget_many() there"
)


def check_max_items(max_items: int | None) -> None:
    """Refuse a ``max_items`` that is not None or a positive int."""
    if max_items is None:
        return
    if not isinstance(max_items, int) or isinstance(max_items, bool):
        raise TypeError(f"max_items must be an int or None, not {type(max_items).__name__}")
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}")


def check_timeout(timeout: float | None) -> None:
    """Refuse a negative or non-numeric ``timeout``."""
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number, got {timeout}")


def _check_not_loop(q: _Queue[T]) -> None:
    """Refuse to block on the loop the queue is bound to."""
    if q._loop is not None and asyncio._get_running_loop() is q._loop:
        raise WrongThread(_REFUSAL)


def _room(q: _Queue[T]) -> int:
    """How many items fit now (a large number when unbounded). Needs ``_sync_mutex``."""
    if q._maxsize <= 0:
        return 1 << 62
    return q._maxsize - q._qsize()


def _put_fitting(q: _Queue[T], items: Sequence[T], done: int, wake_async: bool) -> int:
    """Put what fits of ``items[done:]``; wake the getters once. Needs ``_sync_mutex``."""
    n = min(_room(q), len(items) - done)
    q._queue.extend(items if n == len(items) else items[done : done + n])  # _Queue is FIFO
    q._unfinished_tasks += n  # what janus's _put_internal counts, per item
    if n:
        if q._sync_not_empty_waiting:
            q._sync_not_empty.notify(n)
        if q._async_not_empty_waiting:
            notify = functools.partial(q._async_not_empty.notify, n)
            if wake_async:
                q._notify_async(notify)  # from a thread: a call_soon_threadsafe
            else:
                notify()  # on the loop, with _async_mutex held
    return done + n


def _take(q: _Queue[T], max_items: int | None, wake_async: bool) -> list[T]:
    """Take up to ``max_items`` items; wake the putters once. Needs ``_sync_mutex``."""
    queue = q._queue  # _Queue is FIFO: janus's _get is popleft()
    n = len(queue) if max_items is None else min(max_items, len(queue))
    if n == len(queue):
        got = list(queue)
        queue.clear()
    else:
        popleft = queue.popleft
        got = [popleft() for _ in range(n)]
    if q._sync_not_full_waiting:
        q._sync_not_full.notify(n)
    if q._async_not_full_waiting:
        notify = functools.partial(q._async_not_full.notify, n)
        if wake_async:
            q._notify_async(notify)
        else:
            notify()
    return got


def put_many(q: _Queue[T], items: Sequence[T], timeout: float | None) -> None:
    """Put every item, in order, from a thread (see :meth:`Channel.put_many`)."""
    _check_not_loop(q)
    deadline = None if timeout is None else time.monotonic() + timeout
    with q._sync_mutex:
        if q._is_shutdown:
            raise janus.SyncQueueShutDown(0)
        done = _put_fitting(q, items, 0, wake_async=True)
        while done < len(items):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise janus.SyncQueueFull(done)
            q._sync_not_full_waiting += 1
            try:
                q._sync_not_full.wait(remaining)
            finally:
                q._sync_not_full_waiting -= 1
            if q._is_shutdown:
                raise janus.SyncQueueShutDown(done)
            done = _put_fitting(q, items, done, wake_async=True)


def get_many(q: _Queue[T], max_items: int | None, timeout: float | None) -> list[T]:
    """Wait for one item, take up to ``max_items`` from a thread (see :meth:`Channel.get_many`)."""
    _check_not_loop(q)
    deadline = None if timeout is None else time.monotonic() + timeout
    with q._sync_mutex:
        while not q._qsize():
            if q._is_shutdown:
                raise janus.SyncQueueShutDown
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise janus.SyncQueueEmpty
            q._sync_not_empty_waiting += 1
            try:
                q._sync_not_empty.wait(remaining)
            finally:
                q._sync_not_empty_waiting -= 1
        return _take(q, max_items, wake_async=True)


async def aput_many(q: _Queue[T], items: Sequence[T]) -> None:
    """Put every item, in order, on the loop (see :meth:`Channel.aput_many`)."""
    async with q._async_not_full:
        with q._sync_mutex:
            if q._is_shutdown:
                raise janus.AsyncQueueShutDown(0)
            q._get_loop()  # binds the loop, or refuses another one
            done = _put_fitting(q, items, 0, wake_async=False)
            while done < len(items):
                q._async_not_full_waiting += 1
                q._sync_mutex.release()
                try:
                    await q._async_not_full.wait()
                finally:
                    q._sync_mutex.acquire()
                    q._async_not_full_waiting -= 1
                if q._is_shutdown:
                    raise janus.AsyncQueueShutDown(done)
                done = _put_fitting(q, items, done, wake_async=False)


async def aget_many(q: _Queue[T], max_items: int | None) -> list[T]:
    """Wait for one item, take up to ``max_items`` on the loop (see :meth:`Channel.aget_many`)."""
    async with q._async_not_empty:
        with q._sync_mutex:
            q._get_loop()
            while not q._qsize():
                if q._is_shutdown:
                    raise janus.AsyncQueueShutDown
                q._async_not_empty_waiting += 1
                q._sync_mutex.release()
                try:
                    await q._async_not_empty.wait()
                finally:
                    q._sync_mutex.acquire()
                    q._async_not_empty_waiting -= 1
            return _take(q, max_items, wake_async=False)
