"""Resources: async context managers the bridge enters and exits on its loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import anyio

from . import _log

__all__ = ["ResourceStack"]

T = TypeVar("T")


class ResourceStack:
    """The resources entered so far, exited in reverse order at shutdown.

    Only the loop thread touches it; :attr:`closed` and :attr:`errors` may be
    read from any thread once :meth:`aclose` has run (or while it runs).
    """

    __slots__ = ("_entered", "closed", "errors")

    def __init__(self) -> None:
        self._entered: list[AbstractAsyncContextManager[Any]] = []
        #: How many resources have been exited, errors included.
        self.closed = 0
        #: ``(repr, exception)`` for each resource whose exit raised.
        self.errors: tuple[tuple[str, BaseException], ...] = ()

    async def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Call *factory*, enter what it returns, and remember to exit it."""
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        manager = factory()
        if not (hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")):
            _close_quietly(manager)
            raise TypeError(
                f"factory must return an async context manager (with __aenter__ and "
                f"__aexit__), not {type(manager).__name__}"
            )
        value = await manager.__aenter__()
        self._entered.append(manager)
        return value

    async def aclose(self, budget: float) -> None:
        """Exit every resource, newest first, within *budget* seconds in all.

        An error, or an exit still running when the budget is spent (recorded
        as a ``TimeoutError``), never stops the others from being exited. Each
        exit is shielded from cancellation.
        """
        deadline = time.monotonic() + budget
        while self._entered:
            manager = self._entered.pop()
            remaining = max(0.0, deadline - time.monotonic())
            try:
                with anyio.fail_after(remaining, shield=True):
                    await manager.__aexit__(None, None, None)
            except Exception as exc:  # noqa: BLE001 - recorded in the report
                self.errors = (*self.errors, (repr(manager), exc))
                _log.emit(
                    "error", _log.RESOURCE_ERROR, {"resource": repr(manager), "exc_info": exc}
                )
            self.closed += 1


def _close_quietly(obj: object) -> None:
    """Close a coroutine a factory returned by mistake, so it is not "never awaited"."""
    close = getattr(obj, "close", None)
    if callable(close) and hasattr(obj, "cr_frame"):
        close()
