"""The call queue of a pinned thread: bounded, FIFO, one consumer thread.

Threads and coroutines put calls (a function, its arguments, the caller's
context and a :class:`concurrent.futures.Future` for the outcome); one thread
takes them in order, and is told when its periodic ``idle()`` is due.

One lock guards the queue, the ``accepting`` flag and the coroutines waiting
for room; two conditions share it: ``_work`` (the consumer waits for a call or
for its next ``idle()``) and ``_room`` (threads wait for room in a full
queue). A coroutine waits for room on an asyncio future that the consumer
completes on the coroutine's own loop with ``call_soon_threadsafe``. Every
waiter for room is woken when a slot frees (a woken waiter that has gone away
cannot swallow the only wake-up). No user code runs while the lock is held:
the futures' outcomes are set, and waiters woken, after it is released.

Like trio's entry queue, ``accepting`` is cleared under the lock and the
consumer stops only when it sees the queue empty under that lock, so every
call that was accepted is either run or failed, never lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import math
import time
from collections import deque
from collections.abc import Callable
from threading import Condition, Lock
from typing import Any, final

__all__ = ["Call", "CallQueue", "IdleDue"]

#: A queued call: the future of its outcome, the function, its args, the caller's context.
Call = tuple[
    concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], contextvars.Context
]
_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


class IdleDue(enum.Enum):
    """What :meth:`CallQueue.take` returns when ``idle()`` is due."""

    DUE = enum.auto()


@final
class CallQueue:
    """At most *max_queue* calls waiting for one consumer thread.

    *refusal* makes the exception raised to a caller once the queue no longer
    accepts calls (and set on the calls :meth:`fail` drops).
    """

    __slots__ = (
        "_accepting",
        "_async_room",
        "_calls",
        "_lock",
        "_max",
        "_refusal",
        "_room",
        "_work",
    )

    def __init__(self, max_queue: int, refusal: Callable[[], BaseException]) -> None:
        self._max = max_queue
        self._refusal = refusal
        self._lock = Lock()  # guards the three fields below
        self._work = Condition(self._lock)  # the consumer waits on it
        self._room = Condition(self._lock)  # threads waiting for room wait on it
        self._calls: deque[Call] = deque()
        self._async_room: list[_Waiter] = []
        self._accepting = True

    def __len__(self) -> int:
        with self._lock:  # a consistent reading
            return len(self._calls)

    @property
    def accepting(self) -> bool:
        """Whether calls are still accepted."""
        return self._accepting

    # -- producers ----------------------------------------------------------------

    def put(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> concurrent.futures.Future[Any]:
        """Queue ``fn(*args)``, waiting while the queue is full. Not the consumer thread.

        Raises:
            BaseException: what *refusal* makes, once calls are no longer accepted.
        """
        with self._lock:  # check, wait for room and append in one hold
            while True:
                self._check_accepting()
                if len(self._calls) < self._max:
                    return self._append(fn, args)
                self._room.wait()

    async def aput(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        """:meth:`put` for coroutines: waits for room without blocking the loop.

        **Cancellation:** while it waits for room, nothing has been queued.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:  # check and append, or register as a waiter, in one hold
                self._check_accepting()
                if len(self._calls) < self._max:
                    return self._append(fn, args)
                waiter: asyncio.Future[None] = loop.create_future()
                self._async_room.append((loop, waiter))
            try:
                await waiter
            finally:
                with self._lock:  # gone already if woken; still there if cancelled
                    if (loop, waiter) in self._async_room:
                        self._async_room.remove((loop, waiter))

    # Called with self._lock held.
    def _check_accepting(self) -> None:
        if not self._accepting:
            raise self._refusal()

    # Called with self._lock held.
    def _append(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.append((future, fn, args, contextvars.copy_context()))
        self._work.notify()
        return future

    # -- the consumer ---------------------------------------------------------------

    def take(self, idle_at: float) -> Call | IdleDue | None:
        """The next call; DUE once ``time.monotonic()`` reaches *idle_at*.

        Returns ``None`` when calls are no longer accepted and none is left.
        Waits for whichever comes first (*idle_at* may be ``math.inf``).
        """
        with self._lock:  # waits on _work; pops under it
            while True:
                if not self._calls and not self._accepting:
                    return None
                now = time.monotonic()
                if now >= idle_at:
                    return IdleDue.DUE
                if self._calls:
                    call = self._calls.popleft()
                    self._room.notify_all()
                    waiters = self._take_waiters()
                    break
                self._work.wait(None if math.isinf(idle_at) else idle_at - now)
        _wake(waiters)
        return call

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more calls; the queued ones stay for the consumer. Any thread."""
        with self._lock:  # the flag and the wake-ups together
            self._accepting = False
            self._work.notify()
            self._room.notify_all()
            waiters = self._take_waiters()
        _wake(waiters)

    def fail(self) -> None:
        """Accept no more calls and fail the queued ones with *refusal*. Any thread."""
        with self._lock:  # the flag and the queue together
            self._accepting = False
            self._room.notify_all()
            calls = list(self._calls)
            self._calls.clear()
            waiters = self._take_waiters()
        for future, _, _, _ in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._refusal())
        _wake(waiters)

    # Called with self._lock held.
    def _take_waiters(self) -> list[_Waiter]:
        waiters, self._async_room = self._async_room, []
        return waiters


def _wake(waiters: list[_Waiter]) -> None:
    """Wake coroutines waiting for room, each on its own loop (any thread)."""
    for loop, waiter in waiters:
        try:
            loop.call_soon_threadsafe(_set_woken, waiter)
        except RuntimeError:  # its loop is closed: nobody waits any more
            pass


def _set_woken(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
