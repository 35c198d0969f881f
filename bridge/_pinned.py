"""Pinned threads: one bridge-owned thread that runs a native library's calls.

Some native libraries (pjsua2 first) must be called from one registered
thread, which must also pump the library's events between calls. A
:class:`PinnedThread` is that thread: it runs an initializer, then the
functions other threads send it through its :class:`~._callqueue.CallQueue`,
in order, with an ``idle()`` pump between them, and a finalizer when it
closes. The queue owns the only lock. Of the fields here, ``_init_error`` is
written once, by the thread, before the queue's lock publishes the refusal
that reads it; ``_started`` and ``_idle_failing`` are the thread's own
(``repr()`` only peeks at ``_started``).

The bridge keeps its pinned threads in a :class:`PinnedThreads` set, closed by
its shutdown after the jobs have ended and before the resources exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar, final

from . import _log
from ._arguments import check_blocking_function, check_count, check_timeout
from ._callqueue import CallQueue, IdleDue
from ._exceptions import BridgeClosed, WrongThread
from ._typing import TypeVarTuple, Unpack
from ._workers import run_call

__all__ = ["CLOSE_GRACE", "PinnedThread", "PinnedThreads"]

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

#: How long, in all, the bridge's shutdown waits for its pinned threads to end.
CLOSE_GRACE: Final = 1.0


@final
class PinnedThread:
    """One thread owned by the bridge on which a native library is called.

    Made by :meth:`Bridge.pinned_thread`. The thread runs ``initializer()``
    first, then every function sent with :meth:`call` or :meth:`run`, one at
    a time in the order they were queued (each in a copy of its caller's
    context), and calls ``idle()`` whenever ``idle_interval`` seconds have
    passed since the last one: while no call waits, and between two calls
    when calls keep coming. When it closes it runs the calls already queued,
    then ``finalizer()``, and ends.

    **Errors:** an exception raised by a function goes to its caller. One
    raised by ``idle()`` is logged as ``pinned.error`` (the first of a run of
    failures only) and ``idle()`` is called again at the next interval; one
    raised by the finalizer is logged and the thread ends. If the initializer
    raises, it is logged, every call queued and every later call raises
    :class:`BridgeClosed` whose ``__cause__`` is the initializer's exception,
    the finalizer is *not* called (like a failed ``__enter__``, the
    initializer undoes its own partial work) and the thread ends.

    **Closing:** :meth:`close` (or :meth:`shutdown`), or the bridge's
    shutdown, which closes its pinned threads after the jobs have ended and
    before its resources exit, and names one that does not end within
    :data:`CLOSE_GRACE` in :attr:`ShutdownReport.threads_left`. Once closing,
    calls from other threads raise :class:`BridgeClosed`.

    **Thread safety:** :meth:`call` and :meth:`close` from any thread but the
    loop thread, :meth:`run` in jobs; :attr:`name`, :attr:`thread` and
    ``repr()`` anywhere. Code on the pinned thread must never wait for a job
    that itself awaits :meth:`run` (``bridge.call()`` in a native callback,
    say): the call it waits for is queued behind the one waiting.
    """

    __slots__ = (
        "_calls",
        "_events",
        "_finalizer",
        "_idle",
        "_idle_failing",
        "_init_error",
        "_initializer",
        "_interval",
        "_on_loop_thread",
        "_started",
        "_thread",
    )

    def __init__(
        self,
        name: str,
        *,
        initializer: Callable[[], object] | None,
        idle: Callable[[], object] | None,
        idle_interval: float,
        finalizer: Callable[[], object] | None,
        max_queue: int,
        on_loop_thread: Callable[[], bool],
        events: _log.EventLog,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        for arg, fn in (("initializer", initializer), ("idle", idle), ("finalizer", finalizer)):
            if fn is not None:
                check_blocking_function(arg, fn)
        self._interval = _check_interval(idle_interval)
        check_count("max_queue", max_queue, allow_none=False)
        self._initializer = initializer
        self._idle = idle
        self._finalizer = finalizer
        self._on_loop_thread = on_loop_thread
        self._events = events
        self._calls = CallQueue(max_queue, self._closed_error)
        self._init_error: BaseException | None = None  # set by the thread before it fails calls
        self._started = False  # the initializer has returned
        self._idle_failing = False  # the pinned thread's own
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def name(self) -> str:
        """The thread's name (``"<bridge name>-<name>"``)."""
        return self._thread.name

    @property
    def thread(self) -> threading.Thread:
        """The pinned thread itself."""
        return self._thread

    def __repr__(self) -> str:
        if self._init_error is not None:
            state = "FAILED"
        elif not self._calls.accepting:
            state = "CLOSING" if self._thread.is_alive() else "CLOSED"
        else:
            state = "RUNNING" if self._started else "STARTING"
        return f"<PinnedThread {self.name!r} {state} queued={len(self._calls)}>"

    # -- calls --------------------------------------------------------------------

    def call(self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]) -> T:
        """Run ``fn(*args)`` on the pinned thread; wait for it and return its value.

        Raises:
            TypeError: *fn* is not a plain callable (an async function is refused).
            WrongThread: called on the bridge's loop thread (use :meth:`run`).
            BridgeClosed: the thread is closing or closed, or its initializer
                raised (then chained as ``__cause__``).
            Exception: whatever *fn* raised.

        **Thread safety:** any thread but the loop thread, where waiting would
        block the loop. On the pinned thread itself (a native callback) *fn*
        runs at once. Blocks while ``max_queue`` calls are waiting.

        **Cancellation and timeouts:** no timeout. If the wait is interrupted
        (``KeyboardInterrupt``), a call still queued is dropped and one already
        running finishes, its result discarded.
        """
        check_blocking_function("fn", fn)
        if threading.current_thread() is self._thread:
            return fn(*args)
        if self._on_loop_thread():
            raise WrongThread(
                f"PinnedThread.call() on the bridge's loop thread would block the loop "
                f"until {self.name!r} runs the call; inside a job use 'await pinned.run(...)'"
            )
        future = self._calls.put(fn, args)
        try:
            result: T = future.result()
        except BaseException:
            future.cancel()  # queued: dropped; running or done: nothing happens
            raise
        return result

    async def run(self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]) -> T:
        """Run ``fn(*args)`` on the pinned thread; await it without blocking the loop.

        Raises:
            TypeError: *fn* is not a plain callable (an async function is refused).
            BridgeClosed: the thread is closing or closed, or its initializer
                raised (then chained as ``__cause__``).
            Exception: whatever *fn* raised.

        **Thread safety:** awaited in a job on the bridge's loop (or any event
        loop). Waits, without blocking the loop, while ``max_queue`` calls are
        waiting.

        **Cancellation and timeouts:** if the awaiting task is cancelled (its
        job cancelled or timed out), a call still waiting for room or still
        queued is dropped, never run; one already running cannot be
        interrupted: it finishes on the pinned thread and its result (or
        exception) is discarded, while the await ends at once with
        ``CancelledError``.
        """
        check_blocking_function("fn", fn)
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: concurrent.futures.Future[T] = await self._calls.aput(fn, args)
        return await asyncio.wrap_future(future)  # cancelling it cancels *future*

    # -- closing ------------------------------------------------------------------

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop the thread: run the calls queued, then the finalizer; wait for it.

        Later calls from other threads, and callers still waiting for room,
        raise :class:`BridgeClosed`. Idempotent.

        Args:
            timeout: seconds to wait for the thread to end; ``None`` (or
                ``math.inf``) waits without a limit.

        Returns:
            Whether the thread has ended (``False`` on the pinned thread itself,
            which ends once the function it is running returns).

        **Thread safety:** any thread but the loop thread, where waiting would
        block the loop (:class:`WrongThread`).
        """
        checked = check_timeout("timeout", timeout)
        if self._on_loop_thread():
            raise WrongThread(
                f"PinnedThread.close() on the bridge's loop thread would block the loop "
                f"while {self.name!r} ends; call it from another thread"
            )
        self._calls.close()
        return self._join(None if checked is None else time.monotonic() + checked)

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Same as :meth:`close`."""
        return self.close(timeout)

    # -- for PinnedThreads --------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()

    def _request_close(self) -> None:
        """Accept no more calls (the thread drains the queue, then ends). Any thread."""
        self._calls.close()

    def _join(self, deadline: float | None) -> bool:
        """Wait for the thread until *deadline* (monotonic); return whether it ended."""
        if threading.current_thread() is self._thread:
            return False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(remaining)
        return not self._thread.is_alive()

    def _closed_error(self) -> BridgeClosed:
        """The error of a call refused, or dropped by a failed initializer."""
        if self._init_error is not None:
            error = BridgeClosed(
                f"pinned thread {self.name!r} is not running: its initializer raised "
                f"{self._init_error!r}; no call runs on it"
            )
            error.__cause__ = self._init_error  # also suppresses the context
            return error
        return BridgeClosed(f"pinned thread {self.name!r} has been closed: it takes no more calls")

    # -- the pinned thread ----------------------------------------------------------

    def _main(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except BaseException as exc:  # noqa: BLE001 - handed to every call, chained
                self._log("initializer", exc)
                self._init_error = exc  # before fail(): the refusals read it
                self._calls.fail()
                return
        self._started = True
        try:
            self._serve()
        finally:
            self._finish()

    def _serve(self) -> None:
        """Run calls and ``idle()`` until closing with nothing left queued."""
        idle_at = self._next_idle()
        while (call := self._calls.take(idle_at)) is not None:
            if call is IdleDue.DUE:
                self._run_idle()
                idle_at = self._next_idle()
            else:
                run_call(*call)

    def _next_idle(self) -> float:
        return math.inf if self._idle is None else time.monotonic() + self._interval

    def _run_idle(self) -> None:
        idle = self._idle
        assert idle is not None
        try:
            idle()
        except Exception as exc:  # noqa: BLE001 - logged; idle() runs again next interval
            if not self._idle_failing:
                self._log("idle", exc)
            self._idle_failing = True
        else:
            self._idle_failing = False

    def _finish(self) -> None:
        """Run the finalizer; fail what is left (only after a BaseException in idle())."""
        try:
            if self._finalizer is not None:
                self._finalizer()
        except Exception as exc:  # noqa: BLE001 - logged; the thread ends anyway
            self._log("finalizer", exc)
        finally:
            self._calls.fail()

    def _log(self, stage: str, exc: BaseException) -> None:
        fields = {"thread": self.name, "stage": stage, "exc_info": exc}
        self._events.emit("error", _log.PINNED_ERROR, fields)


@final
class PinnedThreads:
    """The pinned threads of one bridge, closed together by its shutdown."""

    __slots__ = ("_closed", "_lock", "_pinned")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two fields below
        self._pinned: list[PinnedThread] = []
        self._closed = False

    def start(self, pinned: PinnedThread) -> None:
        """Start *pinned*'s thread and keep it, to be closed with the others. Any thread.

        Raises:
            BridgeClosed: :meth:`close_all` has run; no thread is started.
        """
        with self._lock:  # closing and starting exclude each other; no user code runs
            if self._closed:
                raise BridgeClosed("the bridge is shutting down: no pinned thread is started")
            pinned._start()
            self._pinned.append(pinned)

    def close_all(self) -> None:
        """Close every pinned thread; wait :data:`CLOSE_GRACE` in all for them to end.

        Refuses later :meth:`start` calls. Not the loop thread. Repeatable.
        """
        with self._lock:  # the flag, and the list as it is then
            self._closed = True
            pinned = list(self._pinned)
        for one in pinned:
            one._request_close()
        deadline = time.monotonic() + CLOSE_GRACE
        for one in pinned:
            one._join(deadline)

    def threads(self) -> list[threading.Thread]:
        """The threads of the pinned threads started so far. Any thread."""
        with self._lock:  # a consistent copy
            return [one.thread for one in self._pinned]


def _check_interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"idle_interval must be a number of seconds, not {type(value).__name__}")
    if not (0 < value < math.inf):  # NaN fails too
        raise ValueError(f"idle_interval must be a finite number of seconds > 0, not {value!r}")
    return float(value)
