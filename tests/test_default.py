"""The process-wide default bridge: bridge.submit/call/blocking/default."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import bridge as bridge_pkg
from bridge import Bridge, BridgeClosed


async def where(x: Any) -> tuple[Any, str]:
    return x, threading.current_thread().name


@pytest.fixture(autouse=True)
def _shut_down_the_default_bridge() -> Iterator[None]:
    yield
    bridge_pkg.default().shutdown(timeout=0.2)


def test_default_is_a_started_bridge_named_bridge_default() -> None:
    b = bridge_pkg.default()
    assert isinstance(b, Bridge)
    assert b.name == "bridge-default"
    assert b.thread is not None
    assert b.thread.is_alive()
    assert b.thread.daemon
    assert bridge_pkg.default() is b


def test_module_level_submit_call_and_blocking_use_the_default() -> None:
    b = bridge_pkg.default()
    job = bridge_pkg.submit(where, 1, key="k", kind="tts")
    assert job.result(timeout=10) == (1, "bridge-default")
    assert (job.key, job.kind) == ("k", "tts")
    assert bridge_pkg.call(where, 2) == (2, "bridge-default")
    assert bridge_pkg.call(where(3)) == (3, "bridge-default")
    where_sync = bridge_pkg.blocking(where)
    assert where_sync(4) == (4, "bridge-default")
    assert where_sync.__name__ == "where"
    assert b.stats().submitted == 4


def test_module_level_functions_accept_the_options() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(bridge_pkg.JobTimeout):
        bridge_pkg.call(forever, timeout=0.01)
    with pytest.raises(bridge_pkg.JobTimeout):
        bridge_pkg.blocking(forever, timeout=0.01)()
    first = bridge_pkg.submit(forever, key="k")
    assert bridge_pkg.submit(forever, key="k", on_conflict="join") is first
    first.cancel()


def test_default_is_one_bridge_for_all_threads() -> None:
    barrier = threading.Barrier(8)
    seen: list[Bridge] = []

    def get() -> None:
        barrier.wait(10)
        seen.append(bridge_pkg.default())

    threads = [threading.Thread(target=get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(b is seen[0] for b in seen)


def test_default_is_recreated_after_shutdown() -> None:
    old = bridge_pkg.default()
    where_sync = bridge_pkg.blocking(where)
    assert where_sync(1) == (1, "bridge-default")
    old.shutdown(timeout=1)
    with pytest.raises(BridgeClosed):
        old.submit(where, 1)
    new = bridge_pkg.default()
    assert new is not old
    assert new.thread is not None
    assert new.thread.is_alive()
    assert bridge_pkg.call(where, 2) == (2, "bridge-default")
    assert where_sync(3) == (3, "bridge-default")  # resolved at each call
    assert bridge_pkg.default() is new


def test_blocking_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match=r"\bfn\b"):
        bridge_pkg.blocking(42)  # type: ignore[arg-type]
