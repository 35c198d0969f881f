"""Loop lag: how late the bridge's event loop runs a callback handed to it.

A ping is a plain callback given to the bridge's loop with
``call_soon_threadsafe``; it is not a job, so it never shows in ``jobs()``,
the history, ``stats()`` or the metrics. Its lag is the time from the hand-over
to the moment the loop runs it: near zero on an idle loop, and growing without
bound while a job blocks the loop thread.

At most one ping is in flight at a time: however often ``/healthz`` is polled
while the loop is blocked, one callback waits in the loop's queue, not one per
request. Waiters on other event loops (the ops server's, or the host
application's for a mounted app) are woken through their own loop's
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import final

from ._target import OpsTarget

__all__ = ["LoopLag"]


@final
class _Ping:
    """One callback handed to the bridge's loop, and who waits for its answer."""

    __slots__ = ("loop", "sent", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent = time.monotonic()
        self.waiters: list[asyncio.Future[float | None]] = []


@final
class LoopLag:
    """Pings one bridge's loop and remembers the answers. Any thread.

    :meth:`measure` is a coroutine for whichever event loop serves the request;
    :meth:`ping`, :meth:`current` and :meth:`sample` never block and may be
    called from any thread (a Prometheus collector calls :meth:`sample` at
    scrape time).
    """

    __slots__ = ("_last", "_lock", "_ping", "_target")

    def __init__(self, target: OpsTarget) -> None:
        self._target = target
        self._lock = threading.Lock()  # guards _ping, _last and each ping's waiters
        self._ping: _Ping | None = None
        self._last: float | None = None

    def __repr__(self) -> str:
        return f"<LoopLag of bridge {self._target.name!r}: {self.current()!r}>"

    def current(self) -> float | None:
        """Seconds of lag: the last answer's, or the unanswered ping's age if larger.

        ``None`` before the first answer (or ping).
        """
        with self._lock:  # read both at once: an answer moves one into the other
            ping, last = self._ping, self._last
        if ping is None:
            return last
        waited = time.monotonic() - ping.sent
        return waited if last is None else max(last, waited)

    def sample(self) -> float | None:
        """:meth:`current`, after a :meth:`ping` so that the next reading is fresh.

        ``None`` while the bridge has no running loop (not started, or shut down).
        """
        return self.current() if self.ping() else None

    def ping(self) -> bool:
        """Hand the loop a ping unless one is in flight; whether one is in flight now."""
        with self._lock:  # held while sending: a ping and its bookkeeping appear together
            return self._send() is not None

    async def measure(self, limit: float) -> float | None:
        """The lag of a ping, or ``None`` when the loop does not answer within *limit*.

        Joins the ping in flight, if any (the limit then counts from when it was
        sent), else sends one. ``None`` at once when the bridge has no running
        loop. :meth:`release` ends the wait early, with ``None``.
        """
        waiter: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        with self._lock:  # the answer takes the waiters under this lock
            ping = self._send()
            if ping is None:
                return None
            ping.waiters.append(waiter)
        try:
            remaining = max(0.0, ping.sent + limit - time.monotonic())
            return await asyncio.wait_for(waiter, remaining)
        except asyncio.TimeoutError:
            return None
        finally:
            with self._lock:
                if waiter in ping.waiters:
                    ping.waiters.remove(waiter)

    def release(self) -> None:
        """Wake every :meth:`measure` waiting, with ``None`` (the server is closing)."""
        with self._lock:
            ping = self._ping
            waiters = [] if ping is None else ping.waiters
            if ping is not None:
                ping.waiters = []
        _wake(waiters, None)

    def _send(self) -> _Ping | None:
        """The ping in flight, or a new one; ``None`` if the loop cannot take it.

        Called with ``_lock`` held.
        """
        loop = self._target._loop
        if loop is None or loop.is_closed():
            self._ping = None  # it will never be answered
            return None
        if self._ping is not None and self._ping.loop is loop:
            return self._ping
        ping = _Ping(loop)
        try:
            loop.call_soon_threadsafe(self._answer, ping)
        except RuntimeError:  # the loop is closed
            return None
        self._ping = ping
        return ping

    def _answer(self, ping: _Ping) -> None:
        """Runs on the bridge's loop: record the lag and wake the waiters."""
        lag = time.monotonic() - ping.sent
        with self._lock:
            self._last = lag
            if self._ping is ping:
                self._ping = None
            waiters, ping.waiters = ping.waiters, []
        _wake(waiters, lag)


def _wake(waiters: list[asyncio.Future[float | None]], lag: float | None) -> None:
    """Resolve each waiter on its own loop (any thread)."""
    for waiter in waiters:
        try:
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter, lag)
        except RuntimeError:  # its loop has closed: nobody waits there any more
            pass


def _resolve(waiter: asyncio.Future[float | None], lag: float | None) -> None:
    if not waiter.done():
        waiter.set_result(lag)
