"""Resources: async context managers the bridge enters and exits on its loop."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from . import _log

__all__ = ["ResourceStack"]

T = TypeVar("T")


class ResourceStack:
    """The resources entered so far, exited in reverse order at shutdown.

    Only the loop thread touches it.
    """

    __slots__ = ("_entered",)

    def __init__(self) -> None:
        self._entered: list[AbstractAsyncContextManager[Any]] = []

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

    async def aclose(self) -> tuple[int, tuple[tuple[str, BaseException], ...]]:
        """Exit every resource, newest first; an error never stops the others.

        Returns:
            How many were exited, and ``(repr, exception)`` for each that raised.
        """
        closed = 0
        errors: list[tuple[str, BaseException]] = []
        while self._entered:
            manager = self._entered.pop()
            closed += 1
            try:
                await manager.__aexit__(None, None, None)
            except Exception as exc:  # noqa: BLE001 - recorded in the report
                errors.append((repr(manager), exc))
                _log.emit(
                    "error", _log.RESOURCE_ERROR, {"resource": repr(manager), "exc_info": exc}
                )
        return closed, tuple(errors)


def _close_quietly(obj: object) -> None:
    """Close a coroutine a factory returned by mistake, so it is not "never awaited"."""
    close = getattr(obj, "close", None)
    if callable(close) and hasattr(obj, "cr_frame"):
        close()
