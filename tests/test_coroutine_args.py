"""A coroutine object where an async function is expected: refused, named, and closed."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any

import pytest

import bridge as bridge_pkg
from bridge import Bridge
from bridge._arguments import check_async_function

NeverAwaitedCheck = Callable[[], contextlib.AbstractContextManager[None]]


async def greet(call_id: int = 0) -> str:
    return f"hello {call_id}"


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[str]:
    yield "client"


async def open_client() -> contextlib.AbstractAsyncContextManager[str]:
    return client()


def closed(coro: Coroutine[Any, Any, Any]) -> bool:
    return inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


CALL_SITES: dict[str, Callable[[Bridge, Any], object]] = {
    "Bridge.blocking": lambda b, fn: b.blocking(fn),
    "Bridge.map": lambda b, fn: b.map(fn, [1, 2]),
    "Bridge.resource": lambda b, fn: b.resource(fn),
    "bridge.blocking": lambda _, fn: bridge_pkg.blocking(fn),
}
ARGUMENT = {
    "Bridge.blocking": "fn",
    "Bridge.map": "fn",
    "Bridge.resource": "factory",
    "bridge.blocking": "fn",
}


@pytest.mark.parametrize("site", list(CALL_SITES))
def test_a_coroutine_object_is_closed_and_the_argument_named(
    bridge: Bridge, site: str, no_never_awaited: NeverAwaitedCheck
) -> None:
    with no_never_awaited():
        coro = open_client() if site == "Bridge.resource" else greet(1)
        with pytest.raises(TypeError) as caught:
            CALL_SITES[site](bridge, coro)
        assert closed(coro), "the refused coroutine was left to warn 'never awaited'"
        del coro
    message = str(caught.value)
    assert message.startswith(f"{ARGUMENT[site]} must be ")
    assert "coroutine object" in message
    assert bridge.stats().submitted == 0


@pytest.mark.parametrize("site", list(CALL_SITES))
def test_a_non_callable_is_refused_naming_the_argument(bridge: Bridge, site: str) -> None:
    with pytest.raises(TypeError, match=rf"^{ARGUMENT[site]} must be .*, not int$"):
        CALL_SITES[site](bridge, 42)
    assert bridge.stats().submitted == 0


def test_the_functions_themselves_are_still_accepted(bridge: Bridge) -> None:
    assert bridge.blocking(greet)(7) == "hello 7"
    assert list(bridge.map(greet, [1, 2])) == ["hello 1", "hello 2"]
    assert bridge.resource(client) == "client"


def test_check_async_function_messages() -> None:
    coro = greet()
    with pytest.raises(TypeError) as caught:
        check_async_function("handler", coro)
    assert closed(coro)
    assert str(caught.value) == (
        "handler must be an async function, not the coroutine object that greet() "
        "returned (it has been closed)"
    )
    with pytest.raises(TypeError, match=r"^factory must be a factory, not NoneType$"):
        check_async_function("factory", None, expected="a factory")
    check_async_function("fn", greet)  # accepted: nothing raised
    check_async_function("fn", len)  # any callable passes this check


class HandMadeCoroutine(Coroutine[Any, Any, None]):
    """A coroutine that is not a native one: closed all the same."""

    def __init__(self) -> None:
        self.closed = False

    def send(self, value: Any) -> Any:
        raise StopIteration

    def throw(self, *args: Any) -> Any:
        raise StopIteration

    def close(self) -> None:
        self.closed = True

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


def test_a_coroutine_that_is_not_native_is_closed_too() -> None:
    coro = HandMadeCoroutine()
    with pytest.raises(TypeError, match=r"^fn must be an async function, not the coroutine"):
        check_async_function("fn", coro)
    assert coro.closed
