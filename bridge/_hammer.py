"""The hammer: call one function from many threads at once, and report deadlocks."""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, final

from ._exceptions import BridgeError

__all__ = ["HammerResult", "HammerTimeout", "hammer"]

T = TypeVar("T")

#: ``(thread index, call index, exception)`` of one call that raised.
CallError = tuple[int, int, BaseException]

#: How long hammer() waits for its threads to give up once a run has failed.
_ABORT_GRACE: Final = 1.0


class HammerTimeout(BridgeError, TimeoutError):
    """Raised when a :func:`hammer` run did not finish within its timeout.

    The message holds the stack of every hammer thread still running: where a
    deadlock or a call that never returns is waiting.
    """


@final
@dataclass(frozen=True, repr=False)
class HammerResult(Generic[T]):
    """What a :func:`hammer` run produced."""

    #: The values the calls returned, by thread index then call index; the
    #: calls that raised are left out (they are in :attr:`errors`).
    results: tuple[T, ...]
    #: ``(thread index, call index, exception)`` for every call that raised,
    #: in the order the exceptions happened.
    errors: tuple[CallError, ...]
    #: Seconds from the release of the threads until the last one finished.
    duration: float

    def raise_first(self) -> None:
        """Raise the first exception any call raised; do nothing if none did."""
        if self.errors:
            raise self.errors[0][2]

    def __repr__(self) -> str:
        return (
            f"<HammerResult {len(self.results)} results, {len(self.errors)} errors "
            f"in {self.duration:.3f} s>"
        )


def hammer(
    fn: Callable[[int, int], T],
    *,
    threads: int = 16,
    calls: int = 100,
    timeout: float = 30.0,
) -> HammerResult[T]:
    """Call ``fn(thread_index, call_index)`` from many threads at the same time.

    Each of *threads* new threads makes *calls* calls, one after the other. The
    threads are released together by a barrier, so their first calls collide
    as much as the machine allows. An exception does not stop a thread: it is
    recorded in :attr:`HammerResult.errors` and the thread goes on with its
    next call.

    Args:
        fn: the function under test; it receives the thread's index
            (``0 <= thread_index < threads``) and the call's index
            (``0 <= call_index < calls``).
        threads: how many threads call *fn*; at least 1.
        calls: how many calls each thread makes; at least 1.
        timeout: seconds the whole run may take; more than 0.

    Returns:
        The values, the exceptions and the duration of the run.

    Raises:
        HammerTimeout: the run did not finish within *timeout*; the message has
            the stack of every thread still running (a deadlock report).
        TypeError: *fn* is not callable, or an argument is not a number.
        ValueError: *threads*, *calls* or *timeout* is out of range.

    **Thread safety:** any thread may call it; it blocks until the run ends.

    **Cancellation and timeouts:** raises :class:`HammerTimeout` within about
    *timeout* seconds. The hammer threads are daemon threads, so threads stuck
    in a real deadlock cannot keep the process alive; they are left running (a
    thread cannot be killed), while those that did finish are joined.
    """
    _check_arguments(fn, threads, calls, timeout)
    return _Run(fn, threads, calls).run(timeout)


def _check_arguments(fn: object, threads: object, calls: object, timeout: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(thread_index, call_index), not {fn!r}")
    for name, value in (("threads", threads), ("calls", calls)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, not {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")


@final
class _Run(Generic[T]):
    """One hammer run: its threads, and what they recorded."""

    __slots__ = (
        "_barrier",
        "_calls",
        "_current",
        "_errors",
        "_fn",
        "_lock",
        "_results",
        "_threads",
    )

    def __init__(self, fn: Callable[[int, int], T], threads: int, calls: int) -> None:
        self._fn = fn
        self._calls = calls
        self._barrier = threading.Barrier(threads + 1)  # the threads and this one
        self._lock = threading.Lock()  # guards _errors
        self._errors: list[CallError] = []
        self._results: list[list[T]] = [[] for _ in range(threads)]  # one list per thread
        self._current = [0] * threads  # the call each thread is making
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"hammer-{i}", daemon=True)
            for i in range(threads)
        ]

    def run(self, timeout: float) -> HammerResult[T]:
        deadline = time.monotonic() + timeout
        self._start_threads()
        try:
            self._barrier.wait(timeout)
        except threading.BrokenBarrierError:
            self._abort()
            raise HammerTimeout(
                f"hammer(): the {len(self._threads)} threads were not all ready within {timeout} s"
            ) from None
        released = time.monotonic()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        duration = time.monotonic() - released
        running = [thread for thread in self._threads if thread.is_alive()]
        if running:
            raise HammerTimeout(self._deadlock_report(running, timeout))
        results = tuple(value for values in self._results for value in values)
        return HammerResult(results=results, errors=tuple(self._errors), duration=duration)

    def _start_threads(self) -> None:
        """Start every thread; if one cannot start, stop those that did."""
        try:
            for thread in self._threads:
                thread.start()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        """Release the threads waiting at the barrier without a call, join them."""
        self._barrier.abort()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(_ABORT_GRACE)

    def _work(self, index: int) -> None:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:  # the run was abandoned before it began
            return
        fn, results, current = self._fn, self._results[index], self._current
        for call in range(self._calls):
            current[index] = call
            try:
                results.append(fn(index, call))
            except BaseException as exc:  # noqa: BLE001 - recorded for the caller
                with self._lock:
                    self._errors.append((index, call, exc))

    def _deadlock_report(self, running: list[threading.Thread], timeout: float) -> str:
        frames = sys._current_frames()
        lines = [
            f"hammer(): {len(running)} of {len(self._threads)} threads still running after "
            f"{timeout} s (a deadlock, or a call that never returns). Their stacks:"
        ]
        for thread in running:
            index = self._threads.index(thread)
            lines.append("")
            lines.append(
                f"Thread {thread.name!r} (thread index {index}, call index "
                f"{self._current[index]}), most recent call last:"
            )
            frame = frames.get(thread.ident) if thread.ident is not None else None
            if frame is None:
                lines.append("  (the thread ended while the report was written)")
            else:
                lines.append("".join(traceback.format_stack(frame)).rstrip())
        return "\n".join(lines)
