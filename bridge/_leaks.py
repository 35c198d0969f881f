"""Leak checks: what one test left behind that outlives it.

A :class:`LeakWatch` is started before a test's setup and stopped after its
teardown. It finds three process-wide leaks:

- coroutines that were never awaited (the ``RuntimeWarning`` their finalizer
  raises reaches ``sys.unraisablehook``);
- threads started during the test and still running after its teardown;
- asyncio tasks destroyed while pending (reported by the event loop's default
  exception handler to the ``asyncio`` logger).

The bridge fixture adds its own findings with :meth:`LeakWatch.add`.

Which threads count. Every thread that runs Python code, not only the
``threading.Thread`` objects: a thread started with ``_thread.start_new_thread``
or by a native library is invisible to ``threading.enumerate()`` until it calls
``threading.current_thread()`` (it then shows as ``Dummy-N``), so threads are
taken from ``sys._current_frames()``, which lists them all. A
:class:`Threads` set holds threading's threads by object and the others by
ident (an ident the system reuses for a new thread is taken for the old one:
the one blind spot).

Which threads are the test's. Those running after its teardown, once they have
had :data:`JOIN_GRACE` seconds in all to end, that were not running when it
started and that do not outlive it by design: the watch's owner says which do
(``outliving``, asked once the test's own fixtures are torn down). The pytest
plugin names the default bridge's threads and those of fixtures of wider scope;
:func:`threads_held_by` finds what an object holds. A thread that threading did
not start cannot be joined: the watch looks for it until the grace runs out.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final, cast, final

from ._bridge import Bridge

__all__ = ["JOIN_GRACE", "LeakWatch", "Threads", "default_bridge_threads", "threads_held_by"]

#: How long, in all, the threads a test started get to end after its teardown.
JOIN_GRACE: Final = 1.0

#: How often the threads that threading cannot join are looked for meanwhile.
_POLL_INTERVAL: Final = 0.005

#: How many objects :func:`threads_held_by` looks at, at most, from one root.
_SEARCH_LIMIT: Final = 10_000

#: Objects :func:`threads_held_by` does not look into: what they refer to is
#: shared by the whole process (a module, a class), not held by the object.
_NOT_HELD: Final = (
    type,
    types.ModuleType,
    types.CodeType,
    types.FrameType,
    types.BuiltinFunctionType,
    str,
    bytes,
    int,
    float,
)

_NEVER_AWAITED: Final = r"coroutine .* was never awaited"
_TASK_DESTROYED: Final = "Task was destroyed but it is pending"


@final
@dataclass(frozen=True)
class Threads:
    """A set of threads: threading's own by object, the others by ident."""

    objects: frozenset[threading.Thread] = frozenset()
    #: Threads that threading did not start (``Dummy-N`` or unknown to it).
    idents: frozenset[int] = frozenset()

    @classmethod
    def running(cls) -> Threads:
        """Every thread running Python code now."""
        # Idents first: a thread that starts in between is then only an object.
        idents = set(sys._current_frames())
        objects = frozenset(t for t in threading.enumerate() if not _is_dummy(t))
        idents.difference_update(t.ident for t in objects)
        return cls(objects, frozenset(idents))

    @classmethod
    def of(cls, threads: Iterable[threading.Thread]) -> Threads:
        """*threads*, a ``Dummy-N`` one by its ident."""
        objects = frozenset(threads)
        dummies = {t for t in objects if _is_dummy(t)}
        idents = frozenset(t.ident for t in dummies if t.ident is not None)
        return cls(objects - dummies, idents)

    def __or__(self, other: Threads) -> Threads:
        return Threads(self.objects | other.objects, self.idents | other.idents)

    def __sub__(self, other: Threads) -> Threads:
        return Threads(self.objects - other.objects, self.idents - other.idents)

    def __bool__(self) -> bool:
        return bool(self.objects or self.idents)

    def still_running(self, deadline: float) -> Threads:
        """Those still running at *deadline* (``time.monotonic()``), or once all ended."""
        for thread in self.objects:
            try:
                thread.join(max(0.0, deadline - time.monotonic()))
            except RuntimeError:  # starting right now: not joinable yet, and so running
                pass
        objects = frozenset(t for t in self.objects if t.is_alive())
        idents = self.idents.intersection(sys._current_frames())
        while idents and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)  # nothing to join: look again
            idents = idents.intersection(sys._current_frames())
        # An ident that now belongs to a threading.Thread was one starting up.
        idents = idents.difference(t.ident for t in threading.enumerate() if not _is_dummy(t))
        return Threads(objects, idents)


@final
class LeakWatch:
    """Watches one test, from before its setup until after its teardown.

    :meth:`start` and :meth:`stop` are called on the test's thread; the
    findings may arrive from any thread (finalizers run wherever the last
    reference goes).

    Args:
        outliving: returns the threads meant to outlive the test (asked when
            the test's threads are checked, after its own fixtures' teardown).
    """

    __slots__ = (
        "_expected_ended",
        "_handler",
        "_leftover",
        "_lock",
        "_outliving",
        "_previous_hook",
        "_problems",
        "_threads_before",
        "_warnings",
    )

    def __init__(self, outliving: Callable[[], Threads] = Threads) -> None:
        self._lock = threading.Lock()  # guards _problems
        self._problems: list[str] = []
        self._outliving = outliving
        self._threads_before = Threads()
        self._expected_ended: list[tuple[Threads, str]] = []
        self._handler = _TaskDestroyedHandler(self.add)
        self._previous_hook: Callable[[sys.UnraisableHookArgs], object] | None = None
        self._warnings: warnings.catch_warnings | None = None
        self._leftover: Threads | None = None  # set by flush()

    def start(self) -> None:
        """Take the thread snapshot and install the hooks."""
        self._threads_before = Threads.running()
        # Make the finalizer's warning an exception whatever the filters say, so
        # that it always reaches sys.unraisablehook, with the coroutine.
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("error", message=_NEVER_AWAITED, category=RuntimeWarning)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        logging.getLogger("asyncio").addHandler(self._handler)

    def add(self, problem: str) -> None:
        """Record a leak. Any thread."""
        with self._lock:
            self._problems.append(problem)

    def expect_ended(self, threads: Threads, owner: str) -> None:
        """Report those of *threads* still running at :meth:`stop` as *owner*'s.

        For the threads of something that outlived the test until its
        teardown ended it (*owner* is e.g. "the module-scoped fixture 'pool'").
        """
        self._expected_ended.append((threads, owner))

    def flush(self) -> None:
        """Give the test's threads their grace, then run pending finalizers.

        Called once the test's fixtures are torn down; :meth:`stop` calls it
        if nobody did. The threads still running afterwards are leaks.
        """
        if self._leftover is not None:
            return
        mine = Threads.running() - self._threads_before - self._outliving()
        mine -= Threads.of([threading.current_thread()])
        self._leftover = mine.still_running(time.monotonic() + JOIN_GRACE)
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
        started = "was started during the test and is still alive after its teardown"
        for line in _describe_threads(self._leftover or Threads(), started):
            self.add(line)
        deadline = time.monotonic() + JOIN_GRACE
        for threads, owner in self._expected_ended:
            outlived = f"belongs to {owner} and is still alive after its teardown"
            for line in _describe_threads(threads.still_running(deadline), outlived):
                self.add(line)
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


# -- who owns which thread ----------------------------------------------------------------


def default_bridge_threads() -> Threads:
    """The default bridge's threads: it lives until the interpreter exits."""
    from . import _default

    default = _default._state.bridge
    return Threads() if default is None else threads_held_by(default)


def threads_held_by(root: object, *, opaque: tuple[type, ...] = ()) -> Threads:
    """The threads *root* holds: in its attributes and containers, and its bridges'.

    Follows what the garbage collector sees (instance attributes, containers,
    closures, bound methods' instances), up to ``_SEARCH_LIMIT`` objects; not
    into modules, classes, code, frames, nor instances of *opaque*. A
    :class:`~bridge.Bridge` is asked for its own threads. No user code runs.
    """
    found: set[threading.Thread] = set()
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < _SEARCH_LIMIT:
        obj = stack.pop()
        kind = type(obj)  # not isinstance(): a proxy's __class__ would be user code
        if id(obj) in seen or issubclass(kind, _NOT_HELD) or issubclass(kind, opaque):
            continue
        seen.add(id(obj))
        if issubclass(kind, threading.Thread):
            found.add(cast(threading.Thread, obj))
        elif issubclass(kind, Bridge):
            found.update(_bridge_threads(cast(Bridge, obj)))
        else:
            stack.extend(_held(obj))
    return Threads.of(found)


def _held(obj: object) -> Iterable[object]:
    if type(obj) is types.FunctionType:  # its closure, not its module's globals
        return [cell.cell_contents for cell in obj.__closure__ or () if _has_contents(cell)]
    if type(obj) is types.MethodType:
        return [obj.__self__]
    return gc.get_referents(obj)


def _has_contents(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _bridge_threads(bridge: Bridge) -> Collection[threading.Thread]:
    """The threads *bridge* started (loop thread, workers, watchdog), by its own account."""
    return bridge._owned_threads()


# -- descriptions -------------------------------------------------------------------------


def _is_dummy(thread: threading.Thread) -> bool:
    return isinstance(thread, threading._DummyThread)


def _describe_coroutine(message: str, coroutine: object) -> str:
    code = getattr(coroutine, "cr_code", None)
    where = "" if code is None else f" (defined at {code.co_filename}:{code.co_firstlineno})"
    return f"{message}{where}"


def _describe_threads(threads: Threads, what: str) -> list[str]:
    lines = [_describe_thread(thread, what) for thread in threads.objects]
    lines.extend(_describe_foreign(ident, what) for ident in threads.idents)
    return sorted(lines)


def _describe_thread(thread: threading.Thread, what: str) -> str:
    kind = "daemon thread" if thread.daemon else "thread"
    return _with_stack(f"{kind} {thread.name!r} (ident {thread.ident}) {what}", thread.ident)


def _describe_foreign(ident: int, what: str) -> str:
    dummy = next((t for t in threading.enumerate() if t.ident == ident), None)
    name = "a thread unknown to threading" if dummy is None else f"thread {dummy.name!r}"
    how = "not started by threading: _thread.start_new_thread() or native code"
    return _with_stack(f"{name} (ident {ident}, {how}) {what}", ident)


def _with_stack(line: str, ident: int | None) -> str:
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return line
    return line + "; its stack:\n" + "".join(traceback.format_stack(frame)).rstrip()
