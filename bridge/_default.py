"""The process-wide default bridge: the only global state bridge keeps.

It is created and started on first use, shut down at interpreter exit, and
created anew in a child process after ``os.fork()`` (the parent's loop thread
does not exist there). Once the exit hook has begun, the module-level
functions raise :class:`~bridge.BridgeClosed`: a job submitted then would
have no bridge to run it to the end.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

from ._arguments import check_async_function
from ._bridge import Bridge, OnConflict
from ._exceptions import BridgeClosed
from ._job import Job
from ._state import BridgeState
from ._typing import USE_DEFAULT, DefaultType, TypeVarTuple, Unpack

__all__ = ["blocking", "call", "default", "submit"]

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

DEFAULT_NAME: Final = "bridge-default"
_EXIT_TIMEOUT: Final = 5.0


class _Default:
    """Holder of the default bridge, reset in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bridge: Bridge | None = None
        self.atexit_registered = False
        self.exiting = False  # the exit hook has begun: no new default bridge

    def reset_after_fork(self) -> None:
        self.lock = threading.Lock()  # another thread may have held it at fork
        self.bridge = None
        self.exiting = False


_state: Final = _Default()
os.register_at_fork(after_in_child=_state.reset_after_fork)


def default() -> Bridge:
    """Return the process-wide default bridge, creating and starting it if needed.

    It is named ``"bridge-default"``, uses the :class:`Bridge` defaults and is
    shut down at interpreter exit. If it has been shut down (or broke), a new
    one is made. Any thread but its own loop thread may call this.

    Raises:
        BridgeClosed: the interpreter is exiting (the exit hook has begun).
    """
    bridge = _state.bridge
    if bridge is not None and bridge.state is BridgeState.RUNNING and not _state.exiting:
        return bridge
    with _state.lock:
        if _state.exiting:
            raise BridgeClosed(
                f"the interpreter is exiting: the default bridge {DEFAULT_NAME!r} "
                f"has been shut down and accepts no new jobs"
            )
        bridge = _state.bridge
        if bridge is None or bridge.state is not BridgeState.RUNNING:
            bridge = Bridge(DEFAULT_NAME)
            _state.bridge = bridge
        bridge.start()
        if not _state.atexit_registered:
            atexit.register(_shutdown_at_exit)
            _state.atexit_registered = True
        return bridge


def _shutdown_at_exit() -> None:
    with _state.lock:  # no default() creates a bridge after this
        _state.exiting = True
        bridge = _state.bridge
    if bridge is not None:  # reset_after_fork: it is this process's own
        bridge.shutdown(_EXIT_TIMEOUT)


def submit(
    fn: Callable[[Unpack[PosArgsT]], Awaitable[T]] | Coroutine[Any, Any, T],
    /,
    *args: Unpack[PosArgsT],
    key: str | None = None,
    kind: str = "job",
    timeout: float | DefaultType | None = USE_DEFAULT,
    on_conflict: OnConflict = "reject",
) -> Job[T]:
    """:meth:`Bridge.submit` on the default bridge."""
    return default().submit(fn, *args, key=key, kind=kind, timeout=timeout, on_conflict=on_conflict)


def call(
    fn: Callable[[Unpack[PosArgsT]], Awaitable[T]] | Coroutine[Any, Any, T],
    /,
    *args: Unpack[PosArgsT],
    key: str | None = None,
    kind: str = "job",
    timeout: float | DefaultType | None = USE_DEFAULT,
) -> T:
    """:meth:`Bridge.call` on the default bridge."""
    return default().call(fn, *args, key=key, kind=kind, timeout=timeout)


def blocking(
    fn: Callable[[Unpack[PosArgsT]], Awaitable[T]],
    /,
    *,
    kind: str = "job",
    timeout: float | DefaultType | None = USE_DEFAULT,
) -> Callable[[Unpack[PosArgsT]], T]:
    """:meth:`Bridge.blocking` on the default bridge, resolved at each call.

    The default bridge is looked up when the returned function is called, not
    now, so it stays valid across ``os.fork()`` and a shutdown.
    """
    check_async_function("fn", fn)

    def call_default(*args: Unpack[PosArgsT]) -> T:
        return default().call(fn, *args, kind=kind, timeout=timeout)

    call_default.__wrapped__ = fn  # type: ignore[attr-defined]
    call_default.__name__ = getattr(fn, "__name__", "call_default")
    call_default.__doc__ = getattr(fn, "__doc__", None)
    return call_default
