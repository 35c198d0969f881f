"""Worker processes for CPU-bound Python: a lazily fed ``ProcessPoolExecutor``.

This module knows nothing of the bridge. :class:`ProcessPool` owns one
:class:`concurrent.futures.ProcessPoolExecutor` at a time, made at first use
with the ``forkserver`` start method (never ``fork``: a bridge's process always
has threads), whose workers ignore SIGINT (Ctrl+C is the parent's to handle).
:func:`process_map` feeds it chunks of items, a bounded number at a time.

Closing a pool cancels the work still queued and terminates the workers
(SIGTERM, then SIGKILL after :data:`TERMINATE_GRACE`): nothing ever waits for a
running worker. Besides the bridge's own shutdown, an interpreter-exit hook
closes every live pool *before* :mod:`concurrent.futures`' own exit hook,
which would otherwise wait for the workers' current calls to finish. The
hook and the set of live pools (weak references) are the module's only global
state.

multiprocessing's helper processes (the forkserver and the
``resource_tracker``) live while the interpreter runs and end after it exits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sized
from typing import Any, Final, Generic, TypeVar, final

from ._exceptions import BridgeClosed
from ._map import MapIterator

__all__ = ["KILL_GRACE", "ProcessPool", "kill_all_now", "process_map"]

T = TypeVar("T")
R = TypeVar("R")

#: How long a worker may overrun its job's deadline before it is killed.
KILL_GRACE: Final = 2.0
#: How long closed workers get to end after SIGTERM before SIGKILL.
TERMINATE_GRACE: Final = 1.0

_live: Final[weakref.WeakSet[ProcessPool]] = weakref.WeakSet()
_hook_lock: Final = threading.Lock()
_hook_registered = False


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl+C goes to the whole process group; the parent handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_chunk(fn: Callable[[Any], R], items: list[Any]) -> list[R]:
    """In a worker: apply *fn* to one chunk of items."""
    return [fn(item) for item in items]


@final
class ProcessPool:
    """One bridge's worker processes: started at first use, replaced when broken."""

    __slots__ = ("__weakref__", "_closed", "_executor", "_lock", "_name", "_workers")

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = workers
        self._lock = threading.Lock()  # guards _executor and _closed: swapped together
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._closed = False

    @property
    def workers(self) -> int:
        """How many worker processes the pool runs at most."""
        return self._workers

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def pids(self) -> list[int]:
        """The pids of the current executor's worker processes. Any thread."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return list(processes)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("idle" if self._executor is None else "running")
        return f"<ProcessPool {self._name!r} workers={self._workers} {state}>"

    def submit(
        self, fn: Callable[..., R], args: tuple[Any, ...]
    ) -> tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future[R]]:
        """Queue ``fn(*args)``; return the executor it went to and its future. Any thread."""
        executor = self._current()
        try:
            return executor, executor.submit(fn, *args)
        except RuntimeError:  # closed, or broken meanwhile
            if self._closed:
                raise BridgeClosed(
                    f"bridge {self._name!r} has shut down its process pool"
                ) from None
            self.replace(executor)
            executor = self._current()
            return executor, executor.submit(fn, *args)

    def _current(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:  # make one executor at most, never after close()
            if self._closed:
                raise BridgeClosed(f"bridge {self._name!r} has shut down its process pool")
            executor = self._executor
            if executor is None or getattr(executor, "_broken", False):
                if executor is not None:
                    _spawn_reaper(executor, kill=False)
                executor = self._executor = self._make()
            return executor

    def _make(self) -> concurrent.futures.ProcessPoolExecutor:
        # Called with _lock held. concurrent.futures.process registers its exit
        # hook when imported: the one registered after it runs first.
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_ignore_sigint,
        )
        _register_exit_hook()
        _live.add(self)
        return executor

    def replace(self, executor: concurrent.futures.ProcessPoolExecutor, kill: bool = False) -> None:
        """Retire *executor* if it is still the current one; the next call makes a new one.

        With *kill*, its workers are killed at once (the calls they run fail
        with ``BrokenProcessPool``). The old workers are reaped on a thread of
        their own, so this never blocks. Any thread.
        """
        with self._lock:  # retire exactly the executor the caller saw
            if self._executor is not executor:
                return
            self._executor = None
        _spawn_reaper(executor, kill=kill)

    def close(self) -> None:
        """Cancel queued work, terminate the workers and wait for them (bounded). Idempotent."""
        with self._lock:  # no new executor after this
            self._closed = True
            executor, self._executor = self._executor, None
        _live.discard(self)
        if executor is not None:
            _terminate(executor, kill=False)


def _spawn_reaper(executor: concurrent.futures.ProcessPoolExecutor, kill: bool) -> None:
    threading.Thread(
        target=_terminate, args=(executor, kill), name="bridge-process-reaper", daemon=True
    ).start()


def _terminate(executor: concurrent.futures.ProcessPoolExecutor, kill: bool) -> None:
    """Cancel pending work, end the workers (SIGTERM, then SIGKILL), join everything.

    Uses the executor's private ``_processes`` and ``_executor_manager_thread``:
    the public API (before 3.14's ``terminate_workers``) can only wait for
    running calls, which is what this must never do.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill() if kill else process.terminate()
    for process in processes:
        with contextlib.suppress(ValueError, AssertionError, AttributeError):
            process.join(TERMINATE_GRACE)
            if process.is_alive():
                process.kill()
                process.join(TERMINATE_GRACE)
    if manager is not None and manager is not threading.current_thread():
        manager.join(TERMINATE_GRACE)


def kill_all_now() -> None:
    """SIGKILL every live pool's workers, taking no lock (a forced exit's last act)."""
    for pool in list(_live):
        for number in pool.pids():
            with contextlib.suppress(OSError):
                os.kill(number, signal.SIGKILL)


def _register_exit_hook() -> None:
    global _hook_registered
    with _hook_lock:  # once per process
        if _hook_registered:
            return
        with contextlib.suppress(RuntimeError):  # the interpreter is already exiting
            threading._register_atexit(_close_live_pools)  # type: ignore[attr-defined]
        _hook_registered = True


def _close_live_pools() -> None:
    """Interpreter exit: close every pool before concurrent.futures waits for workers."""
    for pool in list(_live):
        pool.close()


def _reset_after_fork() -> None:
    global _hook_registered
    _live.clear()  # the parent's pools are the parent's
    _hook_registered = False


os.register_at_fork(after_in_child=_reset_after_fork)


# -- process_map ---------------------------------------------------------------------


def process_map(
    pool: ProcessPool,
    on_loop_thread: Callable[[], bool],
    fn: Callable[[T], R],
    items: Iterable[T],
    concurrency: int,
    chunksize: int,
    ordered: bool,
    on_progress: Callable[[int, int | None], object] | None,
) -> MapIterator[R]:
    """The iterator behind ``Bridge.process_map`` (arguments already checked).

    At most *concurrency* chunks of *chunksize* items are in flight (counting
    finished chunks not yet yielded), so at most ``concurrency * chunksize``
    items have been pulled from *items* and not yet yielded.
    """
    total = len(items) if isinstance(items, Sized) else None
    results = _chunked(pool, fn, items, concurrency, chunksize, ordered, on_progress, total)
    return MapIterator(results, on_loop_thread, _REFUSAL)


_REFUSAL: Final = (
    "iterating a Bridge.process_map() iterator on the bridge's loop thread "
    "would block the loop while it waits for worker processes: iterate it on "
    "another thread; inside coroutines use 'await bridge.to_process(...)'."
)


def _chunked(
    pool: ProcessPool,
    fn: Callable[[T], R],
    items: Iterable[T],
    concurrency: int,
    chunksize: int,
    ordered: bool,
    on_progress: Callable[[int, int | None], object] | None,
    total: int | None,
) -> Generator[R, None, None]:
    """Keep the window of chunks full; yield each chunk's results when it is due."""
    iterator = iter(items)
    window: _ChunkWindow[R] = _ChunkWindow(ordered)
    exhausted = False
    done = 0
    try:
        while True:
            while not exhausted and len(window) < concurrency:
                chunk = list(_take(iterator, chunksize))
                exhausted = len(chunk) < chunksize
                if chunk:
                    window.add(pool.submit(_run_chunk, (fn, chunk))[1])
            if not window:
                return
            for value in window.take().result():  # a failure raises here
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                yield value
    finally:
        window.cancel()


def _take(iterator: Iterator[T], n: int) -> Iterator[T]:
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


class _ChunkWindow(Generic[R]):
    """The chunks in flight, in input order; used by the iterating thread only."""

    __slots__ = ("_finished", "_futures", "_ordered")

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._futures: deque[concurrent.futures.Future[list[R]]] = deque()
        self._finished: queue.SimpleQueue[concurrent.futures.Future[list[R]]] = queue.SimpleQueue()

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, future: concurrent.futures.Future[list[R]]) -> None:
        self._futures.append(future)
        future.add_done_callback(self._finished.put)

    def take(self) -> concurrent.futures.Future[list[R]]:
        """Wait for the next chunk that is due: the head (ordered), any failure, or any."""
        futures = self._futures
        while True:
            if self._ordered and futures[0].done():
                return futures.popleft()
            future = self._finished.get()  # each future in the window is put here once
            if self._ordered and not future.cancelled() and future.exception() is None:
                continue  # its turn comes when it reaches the head
            try:
                futures.remove(future)
            except ValueError:  # ordered: already taken from the head
                continue
            return future

    def cancel(self) -> None:
        """Cancel the queued chunks; running ones finish in their worker, unread."""
        for future in self._futures:
            future.cancel()
        self._futures.clear()
