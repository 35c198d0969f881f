"""Logging never breaks the bridge and never fails silently; bindings never collide."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from helpers import Recorder
from structlog.contextvars import bound_contextvars, merge_contextvars

from bridge import Bridge, Job, JobTimeout
from bridge._log import EventLog, LoggingFailure, bindings, safe_fields

JOB_EVENTS = ["job.submitted", "job.started", "job.finished"]
WAIT = 10.0


class Boom(Exception):
    """What the failing jobs raise."""


class ProcessorError(Exception):
    """What the broken processors raise."""


async def value(x: Any) -> Any:
    return x


async def fail() -> None:
    raise Boom("boom")


async def forever() -> None:
    await asyncio.sleep(3600)


@pytest.fixture
def unraisables() -> Iterator[list[Any]]:
    """What reaches ``sys.unraisablehook`` during the test (the hook is put back after)."""
    seen: list[Any] = []
    lock = threading.Lock()
    previous = sys.unraisablehook

    def hook(args: Any) -> None:
        with lock:
            seen.append(args)

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


def configure(*processors: Callable[..., Any]) -> None:
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def broken(_: object, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    raise ProcessorError(f"broken processor at {event_dict.get('event')}")


def reports_of(unraisables: list[Any], b: Bridge) -> list[Any]:
    return [u for u in unraisables if getattr(u.object, "bridge", None) == b.name]


# -- a processor that raises --------------------------------------------------------------


def test_processor_error_is_reported_once_per_bridge(
    make_bridge: Callable[..., Bridge], unraisables: list[Any]
) -> None:
    first, second = make_bridge(name="first"), make_bridge(name="second")
    configure(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert first.call(value, 5) == 5  # every event fails: the jobs do not
        assert second.call(value, 6) == 6
        with pytest.raises(JobTimeout):
            first.call(forever, timeout=0.01)
    assert caught == [], "reported as a warning"
    (report,) = reports_of(unraisables, first)
    (other,) = reports_of(unraisables, second)
    assert len(unraisables) == 2
    assert isinstance(report.object, LoggingFailure)
    assert (report.object.bridge, report.object.event) == ("first", "job.submitted")
    assert "bridge 'first' logging 'job.submitted'" in repr(report.object)
    assert isinstance(report.exc_value, ProcessorError)  # the processor's own error ...
    assert str(report.exc_value) == "broken processor at job.submitted"
    frames = [frame.name for frame in traceback.extract_tb(report.exc_traceback)]
    assert "broken" in frames  # ... with the processor's frames
    assert other.object.bridge == "second"


def test_an_unobserved_failure_that_cannot_be_logged_is_still_reported(
    bridge: Bridge, unraisables: list[Any]
) -> None:
    def breaks_on_errors(_: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        if method == "error":
            raise ProcessorError("the error sink is down")
        raise structlog.DropEvent

    configure(breaks_on_errors)
    job = bridge.submit(fail)
    concurrent.futures.wait([job], timeout=WAIT)  # job.failed is logged before it resolves
    assert isinstance(job.exception(), Boom)
    (report,) = unraisables
    assert (report.object.bridge, report.object.event) == (bridge.name, "job.failed")
    assert str(report.exc_value) == "the error sink is down"


def test_reports_from_many_threads_at_once_are_one(bridge: Bridge, unraisables: list[Any]) -> None:
    configure(broken)
    start = threading.Barrier(6)
    jobs: list[Job[Any]] = []
    lock = threading.Lock()

    def submitter() -> None:
        start.wait(WAIT)
        for i in range(20):
            job = bridge.submit(value, i)
            with lock:
                jobs.append(job)

    threads = [threading.Thread(target=submitter) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job.result(timeout=WAIT) for job in jobs) == sorted(list(range(20)) * 6)
    assert len(unraisables) == 1


def test_the_default_hook_accepts_the_report(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Any] = []

    def hook(args: Any) -> None:
        seen.append(args)
        sys.__unraisablehook__(args)  # the interpreter's own hook: UnraisableHookArgs only

    previous = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        configure(broken)
        assert bridge.call(value, 1) == 1
    finally:
        sys.unraisablehook = previous
    assert len(seen) == 1
    err = capsys.readouterr().err
    assert f"Exception ignored in: <bridge {bridge.name!r} logging 'job.submitted'" in err
    assert "ProcessorError: broken processor at job.submitted" in err
    assert "in broken" in err  # the processor's frame
    assert "sys.unraisablehook" not in err  # the default hook did not refuse its argument


def test_a_hook_that_raises_does_not_break_the_bridge(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    def raising_hook(args: Any) -> None:
        raise ValueError("the hook is broken too")

    previous = sys.unraisablehook
    sys.unraisablehook = raising_hook
    try:
        configure(broken)
        assert bridge.call(value, 2) == 2
        assert bridge.call(value, 3) == 3
    finally:
        sys.unraisablehook = previous
    assert "the hook is broken too" in capsys.readouterr().err  # the interpreter reported it


def test_event_log_reports_nothing_when_logging_works(unraisables: list[Any]) -> None:
    recorder = Recorder()
    configure(recorder)
    log = EventLog("quiet")
    log.emit("warning", "loop.blocked", {"blocked_ms": 1.0})
    assert [e["event"] for e in recorder.events] == ["loop.blocked"]
    assert unraisables == []
    assert "no error" in repr(log)


# -- bindings that collide with the logger's own arguments -----------------------------------


def test_a_binding_named_event_is_kept_as_event_(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)
    with bound_contextvars(event="INVITE", call_id="c-1"):
        job = bridge.submit(value, 1)
        assert job.result(timeout=WAIT) == 1
    entries = recorder.of(job)
    assert [e["event"] for e in entries] == JOB_EVENTS
    for entry in entries:
        assert entry["event_"] == "INVITE"
        assert entry["call_id"] == "c-1"


def test_a_binding_named_event_does_not_hide_an_unobserved_failure(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)
    with bound_contextvars(event="BYE"):
        job = bridge.submit(fail)
        concurrent.futures.wait([job], timeout=WAIT)
    assert isinstance(job.exception(), Boom)
    errors = [e for e in recorder.of(job) if e["log_level"] == "error"]
    assert [(e["event"], e["event_"]) for e in errors] == [("job.failed", "BYE")]


def test_bindings_named_self_and_a_taken_underscore_name(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)
    with bound_contextvars(self="me", event="INFO", event_="already bound"):
        job = bridge.submit(value, 1)
        assert job.result(timeout=WAIT) == 1
    entries = recorder.of(job)
    assert [e["event"] for e in entries] == JOB_EVENTS
    for entry in entries:
        assert (entry["self_"], entry["event__"], entry["event_"]) == (
            "me",
            "INFO",
            "already bound",
        )


def test_merge_contextvars_in_the_chain_keeps_the_bridges_event_name(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(merge_contextvars, recorder)  # the chain the README shows
    with bound_contextvars(event="REGISTER"):
        job = bridge.submit(value, 1)
        assert job.result(timeout=WAIT) == 1
    entries = recorder.of(job)
    assert [e["event"] for e in entries] == JOB_EVENTS
    assert {e["event_"] for e in entries} == {"REGISTER"}


def test_safe_fields_renames_only_what_collides() -> None:
    plain = {"call_id": "c-1", "events": 3}
    assert safe_fields(plain) is plain
    assert safe_fields({"a": 1, "event": "x", "self": "y", "self_": "z"}) == {
        "a": 1,
        "event_": "x",
        "self__": "y",
        "self_": "z",
    }
    with bound_contextvars(event="INVITE"):
        assert bindings() == {"event_": "INVITE"}


def test_emit_renames_a_colliding_field_itself(unraisables: list[Any]) -> None:
    recorder = Recorder()
    configure(recorder)
    EventLog("direct").emit("info", "resource.error", {"event": "clash", "resource": "r"})
    assert recorder.events == [
        {"event": "resource.error", "event_": "clash", "resource": "r", "log_level": "info"}
    ]
    assert unraisables == []
