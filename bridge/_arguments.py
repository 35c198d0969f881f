"""Checking and normalising what callers pass: callables, timeouts, counts, kinds.

Every check raises ``TypeError`` or ``ValueError`` naming the argument, before
anything is created. A coroutine object refused on the way is closed first, so
a refusal never adds a "coroutine ... was never awaited" warning to the error.

Timeouts: a number of seconds >= 0, or ``None`` for no limit. ``math.inf`` is
accepted everywhere a timeout is and means no limit too: :func:`check_timeout`
turns it into ``None``, as it does any value above ``threading.TIMEOUT_MAX``
(about 292 years), the longest wait the platform can express, so no caller
ever hands an infinite or overflowing timeout to a lock or a condition.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = [
    "check_async_function",
    "check_blocking_function",
    "check_count",
    "check_kind",
    "check_limits",
    "check_timeout",
    "check_timeouts",
    "close_if_coroutine",
    "split_callable",
]

T = TypeVar("T")


def split_callable(
    fn: object, args: tuple[Any, ...]
) -> tuple[Callable[..., Any] | None, Coroutine[Any, Any, Any] | None]:
    """Return ``(async_fn, None)`` or ``(None, coroutine)``; TypeError otherwise."""
    if type(fn) is types.FunctionType and fn.__code__.co_flags & inspect.CO_COROUTINE:
        return fn, None  # the common case, decided without the generic checks below
    if asyncio.iscoroutine(fn):
        if args:
            fn.close()
            raise TypeError(
                "submit() got a coroutine object and positional arguments; pass either "
                "a coroutine object, or an async function and its arguments"
            )
        return None, fn
    if not callable(fn):
        raise TypeError(
            f"fn must be an async function or a coroutine object, not {type(fn).__name__}"
        )
    if _is_async_function(fn):
        return fn, None
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"fn must be an async function, not a generator function: {fn!r}")
    result = fn(*args)  # a plain callable: it builds the awaitable here and now
    if asyncio.iscoroutine(result):
        return None, result
    if inspect.isawaitable(result):
        return None, _await_awaitable(result)
    raise TypeError(
        f"fn must be an async function; {getattr(fn, '__qualname__', fn)!r} returned "
        f"{type(result).__name__}, not an awaitable"
    )


def _is_async_function(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - an async __call__ method
    return call is not None and inspect.iscoroutinefunction(call)


async def _await_awaitable(awaitable: Awaitable[T]) -> T:
    return await awaitable


def close_if_coroutine(fn: object) -> None:
    if asyncio.iscoroutine(fn):
        fn.close()


def check_async_function(name: str, fn: object, *, expected: str = "an async function") -> None:
    """Refuse a *fn* that is not callable, with a ``TypeError`` naming *name*.

    A coroutine object (``greet()`` passed where ``greet`` was meant) is closed
    before the error is raised: it will never run, and closing it now keeps
    Python from adding "coroutine ... was never awaited" to the error.

    Args:
        name: the argument's name, as the caller wrote it (``"fn"``).
        fn: what the caller passed.
        expected: what the argument should be, for the message.
    """
    if isinstance(fn, Coroutine):
        what = getattr(fn, "__qualname__", None) or type(fn).__name__
        fn.close()
        raise TypeError(
            f"{name} must be {expected}, not the coroutine object that {what}() "
            f"returned (it has been closed)"
        )
    if not callable(fn):
        raise TypeError(f"{name} must be {expected}, not {type(fn).__name__}")


def check_blocking_function(name: str, fn: object) -> None:
    """Refuse a *fn* that is not a plain callable, with a ``TypeError`` naming *name*.

    A coroutine object or an async function is refused (a worker thread could
    only create the coroutine, never run it); a coroutine object is closed first.
    """
    if isinstance(fn, Coroutine):
        fn.close()
        raise TypeError(f"{name} must be a plain (blocking) callable, not a coroutine object")
    if not callable(fn):
        raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
    if _is_async_function(fn):
        raise TypeError(
            f"{name} must be a plain (blocking) callable, not an async function; "
            f"submit() runs async functions"
        )


def check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty str, not {kind!r}")


def check_timeout(name: str, value: object) -> float | None:
    """Return *value* in seconds, or ``None`` for no limit (``None``, ``math.inf``).

    Raises:
        TypeError: *value* is not a number (``bool`` included) or ``None``.
        ValueError: *value* is negative or NaN.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if (isinstance(value, float) and math.isnan(value)) or value < 0:
        raise ValueError(
            f"{name} must be >= 0 seconds (or None or math.inf for no limit), not {value!r}"
        )
    if value > threading.TIMEOUT_MAX:
        return None  # math.inf, or too long for any wait to express: no limit
    return float(value)


def check_timeouts(timeouts: Mapping[str, float | None] | None) -> dict[str, float | None]:
    if timeouts is None:
        return {}
    if not isinstance(timeouts, Mapping):
        raise TypeError(f"timeouts must be a mapping of kind to seconds, not {timeouts!r}")
    checked: dict[str, float | None] = {}
    for kind, value in timeouts.items():
        check_kind(kind)
        checked[kind] = check_timeout(f"timeouts[{kind!r}]", value)
    return checked


def check_count(name: str, value: object, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value}")
    return value


def check_limits(limits: Mapping[str, int] | None) -> dict[str, int]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"limits must be a mapping of kind to a count, not {limits!r}")
    checked: dict[str, int] = {}
    for kind, limit in limits.items():
        check_kind(kind)
        count = check_count(f"limits[{kind!r}]", limit, allow_none=False)
        assert count is not None
        checked[kind] = count
    return checked
