"""Leak checks: what one test left behind that outlives it.

A :class:`LeakWatch` is started before a test's setup and stopped after its
teardown. It finds three process-wide leaks:

- coroutines that were never awaited (the ``RuntimeWarning`` their finalizer
  raises reaches ``sys.unraisablehook``);
- threads started during the test and still alive after its teardown;
- asyncio tasks destroyed while pending (reported by the event loop's default
  exception handler to the ``asyncio`` logger).

The bridge fixture adds its own findings with :meth:`LeakWatch.add`.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Final, final

__all__ = ["LeakWatch"]

#: How long, in all, the threads a test started get to end after its teardown.
JOIN_GRACE: Final = 1.0

_NEVER_AWAITED: Final = r"coroutine .* was never awaited"
_TASK_DESTROYED: Final = "Task was destroyed but it is pending"


@final
class LeakWatch:
    """Watches one test, from before its setup until after its teardown.

    :meth:`start` and :meth:`stop` are called on the test's thread; the
    findings may arrive from any thread (finalizers run wherever the last
    reference goes).
    """

    __slots__ = (
        "_excused",
        "_handler",
        "_leftover",
        "_lock",
        "_previous_hook",
        "_problems",
        "_threads_before",
        "_warnings",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _problems and _excused
        self._problems: list[str] = []
        self._excused: set[threading.Thread] = set()
        self._threads_before: set[threading.Thread] = set()
        self._handler = _TaskDestroyedHandler(self.add)
        self._previous_hook: Callable[[sys.UnraisableHookArgs], object] | None = None
        self._warnings: warnings.catch_warnings | None = None
        self._leftover: list[threading.Thread] | None = None  # set by flush()

    def start(self) -> None:
        """Take the thread snapshot and install the hooks."""
        self._threads_before = set(threading.enumerate())
        # Make the finalizer's warning an exception whatever the filters say, so
        # that it always reaches sys.unraisablehook, with the coroutine.
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("error", message=_NEVER_AWAITED, category=RuntimeWarning)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        logging.getLogger("asyncio").addHandler(self._handler)

    def excuse(self, threads: Iterable[threading.Thread]) -> None:
        """Do not report *threads* (started by a fixture that outlives the test)."""
        with self._lock:
            self._excused.update(threads)

    def add(self, problem: str) -> None:
        """Record a leak. Any thread."""
        with self._lock:
            self._problems.append(problem)

    def flush(self) -> None:
        """Give the test's threads their grace, then run pending finalizers.

        Called once the test's fixtures are torn down; :meth:`stop` calls it
        if nobody did. The threads still alive afterwards are leaks.
        """
        if self._leftover is not None:
            return
        self._leftover = self._leftover_threads()
        gc.collect()  # run the finalizers of the coroutines and tasks the test dropped

    def stop(self) -> list[str]:
        """Flush, remove the hooks and return what leaked.

        Returns:
            One line (or paragraph) per leak found, in the order found.
        """
        try:
            self.flush()
        finally:
            self._uninstall()
        for thread in self._leftover or ():
            self.add(_describe_thread(thread))
        with self._lock:
            return list(self._problems)

    def _uninstall(self) -> None:
        logging.getLogger("asyncio").removeHandler(self._handler)
        if self._previous_hook is not None:
            sys.unraisablehook = self._previous_hook
            self._previous_hook = None
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None

    def _leftover_threads(self) -> list[threading.Thread]:
        """The test's threads still alive once each had its share of the grace."""
        with self._lock:
            ignored = self._threads_before | self._excused
        ignored.add(threading.current_thread())
        ignored.update(_process_lifetime_threads())
        deadline = time.monotonic() + JOIN_GRACE
        leftover = []
        for thread in threading.enumerate():
            if thread in ignored or isinstance(thread, threading._DummyThread):
                continue  # a _DummyThread was not started by threading: cannot join
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                leftover.append(thread)
        return leftover

    def _unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeWarning) and "was never awaited" in str(error):
            self.add(_describe_coroutine(str(error), unraisable.object))
            return
        assert self._previous_hook is not None
        self._previous_hook(unraisable)


class _TaskDestroyedHandler(logging.Handler):
    """Picks "Task was destroyed but it is pending!" out of the asyncio logger."""

    def __init__(self, found: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self._found = found

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return
        if message.startswith(_TASK_DESTROYED):
            self._found(f"an asyncio task was destroyed while pending: {message}")


def _process_lifetime_threads() -> list[threading.Thread]:
    """Threads meant to live until exit: the default bridge's loop thread."""
    from . import _default

    default = _default._state.bridge
    thread = None if default is None else default.thread
    return [] if thread is None else [thread]


def _describe_coroutine(message: str, coroutine: object) -> str:
    code = getattr(coroutine, "cr_code", None)
    where = "" if code is None else f" (defined at {code.co_filename}:{code.co_firstlineno})"
    return f"{message}{where}"


def _describe_thread(thread: threading.Thread) -> str:
    kind = "daemon thread" if thread.daemon else "thread"
    line = (
        f"{kind} {thread.name!r} (ident {thread.ident}) was started during the test "
        f"and is still alive after its teardown"
    )
    frame = sys._current_frames().get(thread.ident) if thread.ident is not None else None
    if frame is None:
        return line
    return line + "; its stack:\n" + "".join(traceback.format_stack(frame)).rstrip()
