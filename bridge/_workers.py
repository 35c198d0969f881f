"""Worker threads: a bounded pool for blocking code, with a per-thread initializer."""

from __future__ import annotations

import concurrent.futures
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._exceptions import BridgeClosed

__all__ = ["WorkerPool"]

T = TypeVar("T")

_Task = tuple[
    concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], contextvars.Context
]


class WorkerPool:
    """Up to ``size`` daemon threads, started on demand.

    Each thread runs ``initializer()`` once, before its first task (where an
    application registers the thread with a native library). If the
    initializer raises, the task that thread took fails with that error, the
    thread ends, and the next task starts a fresh thread that tries again.
    """

    def __init__(self, name: str, size: int, initializer: Callable[[], object] | None) -> None:
        self._name = name
        self._size = size
        self._initializer = initializer
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._serial = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` (run in a copy of this context). Any thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise BridgeClosed("the bridge's worker threads have been shut down")
            self._tasks.put((future, fn, args, contextvars.copy_context()))
            if self._idle:
                self._idle -= 1  # an idle thread will take it
            elif len(self._threads) < self._size:
                self._spawn()
        return future

    def shutdown(self, timeout: float) -> list[str]:
        """Cancel queued tasks, stop the threads, join them for at most *timeout* s.

        Returns:
            The names of the threads still running (blocked in a task).
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        self._cancel_queued()
        for _ in threads:
            self._tasks.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    # Called with self._lock held.
    def _spawn(self) -> None:
        self._serial += 1
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-worker-{self._serial}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _cancel_queued(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                task[0].cancel()

    def _work(self) -> None:
        try:
            error = self._initialize()
            while (task := self._tasks.get()) is not None:
                future, fn, args, ctx = task
                if error is not None:
                    if future.set_running_or_notify_cancel():
                        future.set_exception(error)
                    return
                _run(future, fn, args, ctx)
                with self._lock:
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.remove(threading.current_thread())

    def _initialize(self) -> BaseException | None:
        if self._initializer is None:
            return None
        try:
            self._initializer()
        except Exception as exc:  # noqa: BLE001 - handed to the task this thread takes
            return exc
        return None


def _run(
    future: concurrent.futures.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    ctx: contextvars.Context,
) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while it waited for a thread
    try:
        result = ctx.run(fn, *args)
    except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting coroutine
        future.set_exception(exc)
    else:
        future.set_result(result)
