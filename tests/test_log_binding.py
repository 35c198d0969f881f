"""Each bridge binds structlog's logger once per configuration, and again after any change."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from bridge import _log


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


def _collecting(into: list[str]) -> Any:
    def collect(_logger: Any, _method: str, event_dict: Any) -> Any:
        into.append(event_dict["event"])
        raise structlog.DropEvent

    return collect


def _configure(into: list[str]) -> None:
    structlog.configure(
        processors=[_collecting(into)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


@pytest.mark.usefixtures("restore_structlog")
def test_the_bound_logger_is_reused_while_the_configuration_stays() -> None:
    seen: list[str] = []
    _configure(seen)
    events = _log.EventLog("b")
    events.emit("debug", "one", {})
    first = events._current().logger
    events.emit("debug", "two", {})
    assert events._current().logger is first
    assert seen == ["one", "two"]


@pytest.mark.usefixtures("restore_structlog")
def test_capture_logs_sees_the_events_and_the_old_configuration_comes_back() -> None:
    seen: list[str] = []
    _configure(seen)
    events = _log.EventLog("b")
    events.emit("debug", "before", {"job_id": 1})
    with capture_logs() as captured:
        events.emit("debug", "during", {"job_id": 2})
    events.emit("debug", "after", {"job_id": 3})
    assert [(e["event"], e["job_id"]) for e in captured] == [("during", 2)]
    assert seen == ["before", "after"]


@pytest.mark.usefixtures("restore_structlog")
def test_a_new_configuration_is_seen_by_the_next_event() -> None:
    first: list[str] = []
    second: list[str] = []
    _configure(first)
    events = _log.EventLog("b")
    events.emit("debug", "a", {})
    _configure(second)
    events.emit("debug", "b", {})
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    events.emit("debug", "filtered out", {})  # the new level is in force at once
    events.emit("info", "c", {})
    assert first == ["a"]
    assert second == ["b", "c"]
