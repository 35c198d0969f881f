"""The per-event path: configuration read cheaply, levels checked once, bindings read once a job."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import pytest
import structlog
from helpers import Recorder
from structlog.contextvars import bind_contextvars, bound_contextvars
from structlog.testing import capture_logs

from bridge import Bridge, JobTimeout, _log, _logconfig
from bridge._scheduler import Scheduler

JOB_EVENTS = ["job.submitted", "job.started", "job.finished"]
WAIT = 10.0


def configure(recorder: Recorder, level: int = logging.NOTSET, **options: Any) -> None:
    structlog.configure(
        processors=[recorder],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
        **options,
    )


async def value(x: Any) -> Any:
    return x


async def forever() -> None:
    await asyncio.sleep(3600)


@pytest.fixture
def unraisables() -> Iterator[list[Any]]:
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


@pytest.fixture
def counted_fields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many event field dicts the scheduler built (one entry per call)."""
    calls: list[int] = []
    original = Scheduler.fields

    def fields(self: Scheduler, job: Any, **extra: Any) -> dict[str, Any]:
        calls.append(job.id)
        return original(self, job, **extra)

    monkeypatch.setattr(Scheduler, "fields", fields)
    return calls


# -- the configuration, read per event -------------------------------------------------------


def test_structlogs_own_configuration_object_is_read() -> None:
    assert _logconfig.CONFIG is structlog._config._CONFIG  # the fast path is in use


def test_the_public_view_agrees_with_get_config() -> None:
    public = _logconfig.PublicConfig()
    recorder = Recorder()
    steps: list[Callable[[], None]] = [
        lambda: None,
        lambda: configure(recorder),
        structlog.reset_defaults,
    ]
    for step in steps:
        step()
        config = structlog.get_config()
        assert public.is_configured is structlog.is_configured()
        assert public.default_processors is config["processors"]
        assert public.default_context_class is config["context_class"]
        assert public.default_wrapper_class is config["wrapper_class"]
        assert public.logger_factory is config["logger_factory"]


@pytest.mark.parametrize("view", ["structlog's object", "get_config()"])
def test_every_change_is_seen_by_the_next_event(monkeypatch: pytest.MonkeyPatch, view: str) -> None:
    if view == "get_config()":  # what another structlog would get
        monkeypatch.setattr(_log, "CONFIG", _logconfig.PublicConfig())
    first, second = Recorder(), Recorder()
    events = _log.EventLog("b")
    assert events.debug() is None
    configure(first)
    assert events.debug() is not None
    events.emit("debug", "a", {})
    configure(second)
    events.emit("debug", "b", {})
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    assert events.debug() is None
    events.emit("debug", "filtered out", {})
    events.emit("info", "c", {})
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    with capture_logs() as captured:
        events.emit("info", "captured", {})
    events.emit("warning", "d", {})
    assert first.names() == ["a"]
    assert second.names() == ["b", "c", "d"]
    assert [e["event"] for e in captured] == ["captured"]


def test_configuration_changed_between_two_events_of_one_job(bridge: Bridge) -> None:
    before, after = Recorder(), Recorder()
    configure(before)
    running = threading.Event()
    go: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def gated() -> str:
        running.set()  # job.started is logged before the coroutine runs
        await asyncio.wrap_future(go)
        return "done"

    job = bridge.submit(gated)
    assert running.wait(WAIT)
    configure(after)
    go.set_result(None)
    assert job.result(timeout=WAIT) == "done"
    assert before.names(job.id) == ["job.submitted", "job.started"]
    assert after.names(job.id) == ["job.finished"]


def test_capture_logs_nested(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)
    with capture_logs() as outer:
        one = bridge.submit(value, 1)
        assert one.result(timeout=WAIT) == 1
        with capture_logs() as inner:
            two = bridge.submit(value, 2)
            assert two.result(timeout=WAIT) == 2
        three = bridge.submit(value, 3)
        assert three.result(timeout=WAIT) == 3
    four = bridge.submit(value, 4)
    assert four.result(timeout=WAIT) == 4
    assert [(e["job_id"], e["event"]) for e in outer] == [
        (job.id, name) for job in (one, three) for name in JOB_EVENTS
    ]
    assert [(e["job_id"], e["event"]) for e in inner] == [(two.id, name) for name in JOB_EVENTS]
    assert recorder.names() == JOB_EVENTS
    assert recorder.names(four.id) == JOB_EVENTS


def kept(events: _log.EventLog) -> bool:
    return events._binding is not None


def test_a_logger_bound_while_the_configuration_changed_is_not_kept() -> None:
    first, second = Recorder(), Recorder()
    configure(first)
    switched: list[bool] = []

    def switching_factory(*_: Any) -> Any:
        if not switched:  # the configuration changes while the logger is bound
            switched.append(True)
            configure(second)
        return structlog.ReturnLogger()

    structlog.configure(logger_factory=switching_factory)
    events = _log.EventLog("b")
    events.emit("info", "while switching", {})
    assert not kept(events)  # used once, not kept
    events.emit("info", "after", {})
    assert kept(events)
    assert first.names() == []
    assert second.names() == ["while switching", "after"]


# -- levels: the check done once per configuration -------------------------------------------


def test_structlogs_no_op_method_is_known() -> None:
    nop = _logconfig.NOP
    assert nop is not None
    assert structlog.make_filtering_bound_logger(logging.INFO).debug is nop
    assert structlog.make_filtering_bound_logger(logging.DEBUG).debug is not nop


def test_a_filtered_out_level_builds_no_fields(bridge: Bridge, counted_fields: list[int]) -> None:
    recorder = Recorder()
    configure(recorder, logging.INFO)
    assert bridge.call(value, 1) == 1
    assert counted_fields == []  # no debug event: nothing built for one
    job = bridge.submit(forever, timeout=0.01)
    with pytest.raises(JobTimeout):
        job.result(timeout=WAIT)
    assert counted_fields == [job.id]  # the warning is built and logged
    assert recorder.names() == ["job.timed_out"]
    configure(recorder, logging.DEBUG)  # seen by the next job
    later = bridge.submit(value, 2)
    assert later.result(timeout=WAIT) == 2
    assert recorder.names(later.id) == JOB_EVENTS


def test_a_wrapper_with_its_own_level_logic_is_always_called() -> None:
    recorder = Recorder()
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, recorder],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    std = logging.getLogger("bridge")
    previous = std.level
    std.setLevel(logging.DEBUG)
    try:
        events = _log.EventLog("b")
        assert events.debug() is not None  # the standard library decides, event by event
        events.emit("debug", "seen", {})
        std.setLevel(logging.INFO)  # no structlog.configure(): still decided per event
        events.emit("debug", "filtered by the standard library", {})
    finally:
        std.setLevel(previous)
    assert recorder.names() == ["seen"]


class OnlyDebug(structlog.BoundLoggerBase):
    """A wrapper class with one level method."""

    def debug(self, event: str, **kw: Any) -> Any:
        return self._proxy_to_logger("debug", event, **kw)


def test_a_level_the_wrapper_lacks_is_reported_not_raised(unraisables: list[Any]) -> None:
    recorder = Recorder()
    structlog.configure(processors=[recorder], wrapper_class=OnlyDebug)
    events = _log.EventLog("b")
    assert events.debug() is not None
    events.emit("debug", "seen", {})
    events.emit("warning", "lost", {})
    events.emit("warning", "lost again", {})
    assert recorder.names() == ["seen"]
    (report,) = unraisables
    assert (report.object.event, type(report.exc_value)) == ("lost", AttributeError)


class OnlyWarning(structlog.BoundLoggerBase):
    """A wrapper class without a debug method."""

    def warning(self, event: str, **kw: Any) -> Any:
        return self._proxy_to_logger("warning", event, **kw)


def test_a_wrapper_without_debug_is_reported_not_raised(unraisables: list[Any]) -> None:
    recorder = Recorder()
    structlog.configure(processors=[recorder], wrapper_class=OnlyWarning)
    events = _log.EventLog("b")
    log = events.debug()
    assert log is not None  # so that the missing method is reported, not ignored
    events.send(log, "job.started", {})
    events.emit("warning", "loop.blocked", {})
    assert recorder.names() == ["loop.blocked"]
    (report,) = unraisables
    assert (report.object.event, type(report.exc_value)) == ("job.started", AttributeError)


def test_a_logger_that_cannot_be_bound_is_reported_once(unraisables: list[Any]) -> None:
    def broken_factory(*_: Any) -> Any:
        raise RuntimeError("no logger today")

    structlog.configure(processors=[Recorder()], logger_factory=broken_factory)
    events = _log.EventLog("b")
    log = events.debug()
    assert log is not None  # the answer that lets send() report it
    events.send(log, "job.started", {})
    events.emit("error", "job.failed", {})
    (report,) = unraisables
    assert (report.object.event, str(report.exc_value)) == ("job.started", "no logger today")


# -- the submit-time bindings, read once per job --------------------------------------------


def test_bindings_are_read_once_per_job(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[dict[str, Any]] = []
    original = _log.bindings

    def bindings() -> dict[str, Any]:
        reads.append(original())
        return reads[-1]

    monkeypatch.setattr(_log, "bindings", bindings)
    recorder = Recorder()
    configure(recorder)
    with bound_contextvars(call_id="c-1"):
        jobs = [bridge.submit(value, i) for i in range(5)]
    assert [job.result(timeout=WAIT) for job in jobs] == list(range(5))
    assert reads == [{"call_id": "c-1"}] * 5
    assert len(recorder.events) == 15
    assert {e["call_id"] for e in recorder.events} == {"c-1"}


def test_the_job_changes_nothing_in_its_events_bindings(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)

    async def rebinds() -> None:
        bind_contextvars(call_id="inside", extra="inside")

    with bound_contextvars(call_id="c-2", job_id="not the job's", kind="not the job's"):
        job = bridge.submit(rebinds, kind="sip")
        job.result(timeout=WAIT)
    entries = [e for e in recorder.events if e.get("job_id") == job.id]
    assert [e["event"] for e in entries] == JOB_EVENTS
    for entry in entries:
        assert (entry["call_id"], entry["kind"]) == ("c-2", "sip")  # the job's own fields win
        assert "extra" not in entry


def test_no_bindings_no_read(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def bindings() -> dict[str, Any]:
        reads.append(1)
        return {}

    monkeypatch.setattr(_log, "bindings", bindings)
    recorder = Recorder()
    configure(recorder)
    done: list[Any] = []

    def submit_from_a_fresh_thread() -> None:  # a new thread's context is empty
        done.append(bridge.call(value, 7))

    thread = threading.Thread(target=submit_from_a_fresh_thread)
    thread.start()
    thread.join()
    assert done == [7]
    assert reads == []
    assert len(recorder.events) == 3


def test_events_keep_every_field(bridge: Bridge) -> None:
    recorder = Recorder()
    configure(recorder)
    job = bridge.submit(value, 1, key="call:1", kind="sip")
    job.result(timeout=WAIT)
    submitted, started, finished = recorder.events
    common = {"job_id": job.id, "key": "call:1", "kind": "sip"}
    assert submitted.items() >= common.items()
    assert set(submitted) == {*common, "thread", "event", "log_level"}
    assert set(started) == {*common, "thread", "queue_ms", "event", "log_level"}
    assert set(finished) == {*common, "thread", "run_ms", "outcome", "event", "log_level"}
    assert finished["outcome"] == "succeeded"


# -- structlog's own filtering loggers, called past their level method ----------------------


def test_structlogs_filtering_loggers_pass_events_on_unchanged() -> None:
    assert structlog.make_filtering_bound_logger(logging.DEBUG) in _logconfig.NATIVE
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(_: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        seen.append((method, dict(event_dict)))
        raise structlog.DropEvent

    structlog.configure(
        processors=[record], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    events = _log.EventLog("b")
    log = events.debug()
    assert log is not None
    events.send(log, "job.started", {"job_id": 1, "event": "INVITE"})
    events.emit("warning", "loop.blocked", {"blocked_ms": 2.0})
    direct = structlog.get_logger("bridge")
    direct.debug("job.started", job_id=1, event_="INVITE")
    direct.warning("loop.blocked", blocked_ms=2.0)
    assert seen[:2] == seen[2:]
    assert seen[0] == ("debug", {"job_id": 1, "event_": "INVITE", "event": "job.started"})


class Counting(structlog.make_filtering_bound_logger(logging.DEBUG)):  # type: ignore[misc]
    """A subclass of a filtering logger: its own level methods must run."""

    calls: ClassVar[list[str]] = []

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        Counting.calls.append(event)
        return super().debug(event, *args, **kw)


def test_a_subclass_of_a_filtering_logger_keeps_its_methods() -> None:
    recorder = Recorder()
    structlog.configure(processors=[recorder], wrapper_class=Counting)
    Counting.calls.clear()
    events = _log.EventLog("b")
    log = events.debug()
    assert log is not None
    events.send(log, "job.started", {"job_id": 1})
    events.emit("debug", "job.finished", {"job_id": 1})
    assert Counting.calls == ["job.started", "job.finished"]
    assert recorder.names() == ["job.started", "job.finished"]
