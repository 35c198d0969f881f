"""Worker threads: a bounded pool for blocking code, with a per-thread initializer.

The pool is our own rather than :class:`concurrent.futures.ThreadPoolExecutor`
because the executor marks itself broken for good when an initializer raises
(every queued and later task fails with ``BrokenThreadPool``), whereas here a
failed initializer must fail only the one task its thread takes, and a fresh
thread must take over the queue at once.

One lock (the pool's :class:`threading.Condition`) guards the queue and the
counters; no user code (initializer, task, a future's done callbacks) runs
while it is held.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ._exceptions import BridgeClosed

__all__ = ["WorkerPool", "run_call"]

T = TypeVar("T")

_Task = tuple[
    concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], contextvars.Context
]


class WorkerPool:
    """Up to ``size`` daemon threads, started on demand.

    Each thread runs ``initializer()`` once, before its first task (where an
    application registers the thread with a native library). If the
    initializer raises, the thread takes one task (the oldest queued one that
    has not been cancelled, or the next one to come), fails it with that error
    and ends; if tasks are still waiting for a thread, a replacement starts at
    once and tries the initializer again. A replacement whose initializer
    fails again fails the next task in the same way, so an initializer that
    always fails costs one task per attempt and never loops on its own.

    Shutting down is :meth:`close` (no more tasks; queued ones are cancelled)
    then :meth:`join` against a deadline, or :meth:`shutdown` for both. None of
    them waits for the calling thread, so a task may shut its own pool down.
    """

    def __init__(self, name: str, size: int, initializer: Callable[[], object] | None) -> None:
        self._name = name
        self._size = size
        self._initializer = initializer
        # Guards every field below; its waiters are idle threads.
        self._cond = threading.Condition(threading.Lock())
        self._tasks: deque[_Task] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting in _take() for a task
        self._starting = 0  # threads that have not reached _take() yet
        self._serial = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` (run in a copy of this context). Any thread.

        Raises:
            BridgeClosed: the pool has been closed.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:  # queue and thread accounting, no user code
            if self._closed:
                raise BridgeClosed("the bridge's worker threads have been shut down")
            self._tasks.append((future, fn, args, contextvars.copy_context()))
            try:
                self._provide_thread()
            except BaseException:
                self._tasks.pop()  # no thread to run it: refuse it
                raise
        return future

    def close(self) -> None:
        """Refuse new tasks, cancel the queued ones, let idle threads end. Any thread.

        Running tasks finish; their threads end after them. Idempotent.
        """
        with self._cond:  # flips _closed and empties the queue atomically
            self._closed = True
            queued = list(self._tasks)
            self._tasks.clear()
            self._cond.notify_all()
        for future, _, _, _ in queued:  # outside the lock: runs done callbacks
            future.cancel()

    def join(self, deadline: float | None = None) -> tuple[str, ...]:
        """Wait until the worker threads end or *deadline* passes. Any thread.

        The calling thread is never waited for (a task may call this).

        Args:
            deadline: a :func:`time.monotonic` value; ``None`` (or one too far
                away for a wait to express, ``math.inf`` included) waits
                without a limit.

        Returns:
            The names of the worker threads still alive, the caller's excluded.
        """
        for thread in self._others():
            thread.join(_remaining(deadline))
        return self.threads_left()

    def shutdown(
        self, timeout: float | None = None, *, deadline: float | None = None
    ) -> tuple[str, ...]:
        """:meth:`close`, then :meth:`join` for *timeout* seconds or until *deadline*.

        Args:
            timeout: seconds to wait for the threads; ``None`` or ``math.inf``
                waits without a limit (unless *deadline* is given).
            deadline: a :func:`time.monotonic` value; the earlier of the two
                ends the wait.

        Returns:
            The names of the worker threads still alive (blocked in a task),
            the calling thread's excluded.
        """
        self.close()
        if timeout is not None:
            until = time.monotonic() + timeout  # math.inf stays inf: no limit
            deadline = until if deadline is None else min(deadline, until)
        return self.join(deadline)

    def threads(self) -> list[threading.Thread]:
        """The pool's threads that have not ended yet. Any thread."""
        with self._cond:  # a consistent copy of _threads
            return list(self._threads)

    def counts(self) -> tuple[int, int, int]:
        """``(size, threads, idle)``: the bound, the live threads, those waiting. Any thread."""
        with self._cond:  # one consistent reading
            return self._size, len(self._threads), self._idle

    def threads_left(self) -> tuple[str, ...]:
        """The names of the live worker threads, the calling thread's excluded."""
        return tuple(thread.name for thread in self._others() if thread.is_alive())

    def owns_current_thread(self) -> bool:
        """Whether the calling thread is one of this pool's workers."""
        with self._cond:  # a consistent view of _threads
            return threading.current_thread() in self._threads

    # -- internals ---------------------------------------------------------------

    def _others(self) -> list[threading.Thread]:
        current = threading.current_thread()
        with self._cond:  # a consistent view of _threads
            return [thread for thread in self._threads if thread is not current]

    # Called with self._cond held.
    def _provide_thread(self) -> None:
        """Wake an idle thread; start one if more tasks wait than threads will take."""
        if self._idle:
            self._cond.notify()
        if len(self._tasks) <= self._idle + self._starting:
            return
        if len(self._threads) >= self._size:
            return  # a busy thread takes it when it is done
        self._serial += 1
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-worker-{self._serial}", daemon=True
        )
        self._threads.append(thread)
        self._starting += 1
        try:
            thread.start()
        except BaseException:
            self._threads.remove(thread)
            self._starting -= 1
            raise

    def _take(self) -> _Task | None:
        """The next task, waiting for one; ``None`` once the pool is closed."""
        with self._cond:  # waits on it; pops under it
            while not self._tasks:
                if self._closed:
                    return None
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
            return self._tasks.popleft()

    def _work(self) -> None:
        started = False
        try:
            error = self._initialize()
            with self._cond:  # from starting to taking, in one step
                self._starting -= 1
                started = True
            if error is None:
                while (task := self._take()) is not None:
                    run_call(*task)
            else:
                self._fail_one(error)
        finally:
            self._retire(started)

    def _fail_one(self, error: BaseException) -> None:
        """Hand *error* to the first task taken that has not been cancelled."""
        while (task := self._take()) is not None:
            future = task[0]
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
                return

    def _retire(self, started: bool) -> None:
        """This thread ends: start a replacement if tasks wait for a thread."""
        with self._cond:  # thread accounting, no user code
            self._threads.remove(threading.current_thread())
            if not started:
                self._starting -= 1
            if self._closed:
                return
            try:
                self._provide_thread()
            except RuntimeError:  # "can't start new thread": tasks wait for the next submit
                pass

    def _initialize(self) -> BaseException | None:
        if self._initializer is None:
            return None
        try:
            self._initializer()
        except BaseException as exc:  # noqa: BLE001 - handed to the task this thread takes
            return exc
        return None


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until *deadline* (never negative); ``None`` for no limit."""
    if deadline is None:
        return None
    remaining = max(0.0, deadline - time.monotonic())
    return None if remaining > threading.TIMEOUT_MAX else remaining


def run_call(
    future: concurrent.futures.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    ctx: contextvars.Context,
) -> None:
    """Run ``fn(*args)`` in *ctx* on this thread; its outcome goes to *future*.

    Shared by the worker threads and pinned threads. A future cancelled while
    it was queued is skipped.
    """
    if not future.set_running_or_notify_cancel():
        return  # cancelled while it waited for a thread
    try:
        result = ctx.run(fn, *args)
    except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting coroutine
        future.set_exception(exc)
    else:
        future.set_result(result)
