"""The loop-block watchdog: Bridge(loop_block_warning=...)."""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from bridge import Bridge


def _capture_events(
    wanted: str,
) -> tuple[list[MutableMapping[str, Any]], threading.Event]:
    """Configure structlog to record events; return them and an Event set on *wanted*."""
    events: list[MutableMapping[str, Any]] = []
    seen = threading.Event()
    lock = threading.Lock()

    def record(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        with lock:
            events.append({**event_dict, "level": method})
        if event_dict.get("event") == wanted:
            seen.set()
        raise structlog.DropEvent

    structlog.configure(processors=[record])  # the autouse fixture resets it
    return events, seen


def test_a_blocked_loop_is_reported_with_the_job_and_its_stack(
    make_bridge: Callable[..., Bridge],
) -> None:
    events, reported = _capture_events("loop.blocked")
    b = make_bridge(loop_block_warning=0.05)

    async def greedy_tts() -> bool:
        # A blocking call inside a coroutine: the bug the watchdog is for.
        # It blocks until the watchdog has reported it (or 10 s).
        return reported.wait(10)

    assert b.call(greedy_tts, key="tts:call-7", kind="tts")
    [warning] = [e for e in events if e["event"] == "loop.blocked"]
    assert warning["level"] == "warning"
    assert warning["key"] == "tts:call-7"
    assert warning["kind"] == "tts"
    assert isinstance(warning["job_id"], int)
    assert warning["blocked_ms"] >= 50
    assert "greedy_tts" in warning["stack"]


def test_a_turning_loop_is_not_reported(make_bridge: Callable[..., Bridge]) -> None:
    events, _ = _capture_events("loop.blocked")
    b = make_bridge(loop_block_warning=0.25)  # generous: this machine is shared

    async def fine() -> int:
        return 1

    for _ in range(50):
        assert b.call(fine) == 1
    b.shutdown(timeout=1)
    assert [e for e in events if e["event"] == "loop.blocked"] == []


def test_no_watchdog_thread_unless_asked(make_bridge: Callable[..., Bridge]) -> None:
    make_bridge(name="quiet")
    make_bridge(name="watched", loop_block_warning=1.0)
    names = {t.name for t in threading.enumerate()}
    assert "watched-watchdog" in names
    assert "quiet-watchdog" not in names
