"""Resources: entered on the loop, exited in reverse order at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from bridge import Bridge, BridgeClosed, WrongThread


def _recording(log: list[str]) -> Callable[..., contextlib.AbstractAsyncContextManager[str]]:
    @contextlib.asynccontextmanager
    async def resource(name: str, *, fail: bool = False) -> AsyncIterator[str]:
        log.append(f"enter {name}")
        yield name
        log.append(f"exit {name}")
        if fail:
            raise RuntimeError(f"{name} failed to close")

    return resource


def test_resources_exit_in_reverse_order_after_the_jobs(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    log: list[str] = []
    resource = _recording(log)
    assert b.resource(lambda: resource("directory")) == "directory"
    assert b.resource(lambda: resource("tts")) == "tts"

    async def last_job() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            log.append("job unwound")

    b.submit(last_job)
    report = b.shutdown(timeout=0.05)
    assert log == ["enter directory", "enter tts", "job unwound", "exit tts", "exit directory"]
    assert report.resources_closed == 2
    assert report.resource_errors == ()


def test_an_exit_error_is_recorded_and_the_others_still_close(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    resource = _recording(log)
    b.resource(lambda: resource("first"))
    b.resource(lambda: resource("broken", fail=True))
    b.resource(lambda: resource("last"))
    report = b.shutdown(timeout=1)
    assert log[-3:] == ["exit last", "exit broken", "exit first"]
    assert report.resources_closed == 3
    [(what, error)] = report.resource_errors
    assert "AsyncGeneratorContextManager" in what
    assert isinstance(error, RuntimeError)
    assert str(error) == "broken failed to close"


def test_an_httpx_client_is_closed_at_shutdown(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    client = b.resource(lambda: httpx.AsyncClient(timeout=5))
    assert isinstance(client, httpx.AsyncClient)
    assert not client.is_closed
    b.shutdown(timeout=1)
    assert client.is_closed


def test_aresource_inside_a_job(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    log: list[str] = []
    resource = _recording(log)

    async def job() -> str:
        return await b.aresource(lambda: resource("lazy"))

    assert b.call(job) == "lazy"
    assert b.shutdown(timeout=1).resources_closed == 1
    assert log == ["enter lazy", "exit lazy"]


def test_factory_that_returns_no_async_context_manager(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    with pytest.raises(TypeError, match="async context manager"):
        b.resource(lambda: open)  # type: ignore[arg-type, return-value]

    async def not_a_manager() -> None:
        return None

    with pytest.raises(TypeError, match="async context manager"):
        b.resource(not_a_manager)  # type: ignore[arg-type]  # the coroutine is closed
    with pytest.raises(TypeError, match="factory"):
        b.resource(42)  # type: ignore[arg-type]
    assert b.shutdown(timeout=1).resources_closed == 0


def test_failing_enter_leaves_nothing_to_close(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()

    class Refuses:
        async def __aenter__(self) -> None:
            raise ConnectionRefusedError("directory down")

        async def __aexit__(self, *exc: object) -> None:
            raise AssertionError("never entered, so never exited")

    with pytest.raises(ConnectionRefusedError):
        b.resource(Refuses)
    report = b.shutdown(timeout=1)
    assert report.resources_closed == 0
    assert report.resource_errors == ()


def test_resource_on_the_loop_thread_is_refused(bridge: Bridge) -> None:
    log: list[str] = []
    resource = _recording(log)

    async def job() -> str:
        try:
            bridge.resource(lambda: resource("x"))
        except WrongThread as exc:
            return str(exc)
        return "no error"

    assert "aresource" in bridge.call(job)
    assert log == []


def test_aresource_off_the_loop_is_refused(bridge: Bridge) -> None:
    log: list[str] = []
    resource = _recording(log)
    with pytest.raises(WrongThread, match="own loop"):
        asyncio.run(bridge.aresource(lambda: resource("x")))
    assert log == []


def test_resource_after_shutdown_is_refused(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    b.shutdown(timeout=1)
    log: list[str] = []
    resource = _recording(log)
    with pytest.raises(BridgeClosed):
        b.resource(lambda: resource("late"))
    assert log == []


def test_an_exit_that_hangs_is_bounded_and_the_others_still_close(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    resource = _recording(log)

    class Hangs:
        async def __aenter__(self) -> str:
            return "hangs"

        async def __aexit__(self, *exc: object) -> None:
            await asyncio.Event().wait()  # never set: a pool that never drains

    b.resource(lambda: resource("first"))
    b.resource(Hangs)
    report = b.shutdown(timeout=1)
    assert log == ["enter first", "exit first"]  # closed after the hanging one gave up
    assert report.resources_closed == 2
    [(what, error)] = report.resource_errors
    assert "Hangs" in what
    assert isinstance(error, TimeoutError)
    assert report.duration < 1 + 0.5 + 1.0 + 1.0  # drain, cancel grace, resource grace, slack
