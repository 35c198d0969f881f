"""OpenTelemetry spans (issue 10): one per job, parented by the submitting thread's span.

The SDK's in-memory exporter behind a ``SimpleSpanProcessor`` on a local
``TracerProvider`` (the global provider is never set): a job's span ends
before anyone waiting for the job sees its outcome, so it is exported by the
time ``call()`` returns.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import Watched
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bridge import Bridge, JobTimeout
from bridge.ops import instrument
from bridge.ops._spans import Instrumentation


class Spans:
    """A local tracer provider and what it exported."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        found = [s for s in self.finished() if s.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.finished()}"
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.provider.shutdown()


async def answer(value: int) -> int:
    return value


async def boom() -> None:
    raise ValueError("bad input\nsecond line")


def in_thread(fn: Callable[[], Any], name: str) -> Any:
    """Run *fn* on a new plain thread called *name*; return its result."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
        return pool.submit(fn).result(timeout=30)


def test_the_submitting_threads_span_is_the_parent(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge(name="ops-spans")
    instrument(b, tracer_provider=spans.provider)

    def sip_call() -> tuple[Any, str, int]:
        with spans.tracer.start_as_current_span("sip call") as parent:
            job = b.submit(answer, 7, kind="tts", key="call:7/tts")
            # The job's span is current inside the job only, never here.
            assert trace.get_current_span() is parent
            assert job.result(timeout=10) == 7
            return parent.get_span_context(), threading.current_thread().name, job.id

    parent_context, thread_name, job_id = in_thread(sip_call, "sip-media")
    span = spans.named("bridge tts")
    assert span.parent is not None
    assert span.parent.span_id == parent_context.span_id
    assert span.context.trace_id == parent_context.trace_id
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "bridge.name": "ops-spans",
        "bridge.job.id": job_id,
        "bridge.job.kind": "tts",
        "bridge.job.key": "call:7/tts",
        "thread.name": thread_name,
        "bridge.job.outcome": "succeeded",
        "bridge.job.queue_seconds": span.attributes["bridge.job.queue_seconds"],
        "bridge.job.run_seconds": span.attributes["bridge.job.run_seconds"],
    }
    assert thread_name.startswith("sip-media")
    queue = span.attributes["bridge.job.queue_seconds"]
    run = span.attributes["bridge.job.run_seconds"]
    assert isinstance(queue, float)
    assert isinstance(run, float)
    assert queue >= 0
    assert run >= 0
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= span.end_time


def test_a_span_started_inside_the_job_is_its_child(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge()
    instrument(b, tracer_provider=spans.provider)
    seen: list[Any] = []

    async def synthesize() -> None:
        seen.append(trace.get_current_span().get_span_context())
        with spans.tracer.start_as_current_span("POST /synthesize"):
            pass

    b.call(synthesize, kind="tts")
    job_span = spans.named("bridge tts")
    child = spans.named("POST /synthesize")
    assert seen == [job_span.context]
    assert child.parent is not None
    assert child.parent.span_id == job_span.context.span_id
    assert child.context.trace_id == job_span.context.trace_id
    assert job_span.parent is None  # nothing was active on the submitting thread


def test_jobs_submitted_inside_a_job_are_its_children(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge()
    instrument(b, tracer_provider=spans.provider)

    async def call_flow() -> int:
        return await b.submit(answer, 3, kind="http")

    assert b.call(call_flow, kind="call") == 3
    outer = spans.named("bridge call")
    inner = spans.named("bridge http")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id


def test_a_failure_sets_error_status_and_records_the_exception(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge()
    instrument(b, tracer_provider=spans.provider)
    with pytest.raises(ValueError, match="bad input"):
        b.call(boom, kind="http")
    span = spans.named("bridge http")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad input"
    assert span.attributes is not None
    assert span.attributes["bridge.job.outcome"] == "failed"
    assert "bridge.job.key" not in span.attributes  # the job had no key
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes is not None
    assert events[0].attributes["exception.type"] == "ValueError"


def test_timed_out_and_cancelled_jobs(make_bridge: Callable[..., Bridge], spans: Spans) -> None:
    b = make_bridge(limits={"call": 1})
    instrument(b, tracer_provider=spans.provider)
    timed_out = b.submit(Watched(), kind="http", timeout=0.05)
    assert isinstance(timed_out.exception(timeout=10), JobTimeout)
    body = Watched()
    running = b.submit(body, kind="call", key="running")
    assert body.started.wait(10)
    queued = b.submit(answer, 1, kind="call", key="queued")  # behind the lane: never starts
    queued.cancel()
    running.cancel()
    concurrent.futures.wait([queued, running], timeout=10)

    span = spans.named("bridge http")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["bridge.job.outcome"] == "timed_out"
    assert [e.name for e in span.events] == ["exception"]

    by_key = {
        s.attributes["bridge.job.key"]: s
        for s in spans.finished()
        if s.attributes and "bridge.job.key" in s.attributes
    }
    for key in ("running", "queued"):
        attributes = by_key[key].attributes
        assert attributes is not None
        assert attributes["bridge.job.outcome"] == "cancelled"
        assert by_key[key].status.status_code is StatusCode.UNSET
    assert "bridge.job.run_seconds" in by_key["running"].attributes  # type: ignore[operator]
    assert "bridge.job.run_seconds" not in by_key["queued"].attributes  # type: ignore[operator]


def test_close_stops_new_spans_and_ends_those_in_flight(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge()
    instrumentation = instrument(b, tracer_provider=spans.provider)
    assert isinstance(instrumentation, Instrumentation)
    body = Watched()
    in_flight = b.submit(body, kind="call")
    assert body.started.wait(10)
    instrumentation.close()
    instrumentation.close()  # idempotent
    assert instrumentation.closed
    assert "1 spans open" in repr(instrumentation)
    b.call(answer, 1, kind="after")  # no span: closed
    assert b._scheduler.observers.all != ()  # still waiting for the job in flight
    in_flight.cancel()
    concurrent.futures.wait([in_flight], timeout=10)
    assert [s.name for s in spans.finished()] == ["bridge call"]
    assert b._scheduler.observers.all == ()


def test_shutdown_ends_every_span_and_removes_the_observer(
    make_bridge: Callable[..., Bridge], spans: Spans
) -> None:
    b = make_bridge()
    instrumentation = instrument(b, tracer_provider=spans.provider)
    bodies = [Watched() for _ in range(3)]
    for n, body in enumerate(bodies):
        b.submit(body, kind="call", key=f"call:{n}")
        assert body.started.wait(10)
    b.shutdown(timeout=0)
    assert instrumentation.closed
    assert b._scheduler.observers.all == ()
    outcomes = {s.attributes["bridge.job.outcome"] for s in spans.finished() if s.attributes}
    assert len(spans.finished()) == 3
    assert outcomes == {"cancelled"}
    # Instrumenting a bridge that has shut down does nothing.
    assert instrument(b, tracer_provider=spans.provider).closed
    assert b._scheduler.observers.all == ()


def test_many_threads(make_bridge: Callable[..., Bridge], spans: Spans) -> None:
    b = make_bridge()
    instrument(b, tracer_provider=spans.provider)

    def caller(n: int) -> None:
        with spans.tracer.start_as_current_span(f"caller {n}"):
            for i in range(50):
                assert b.call(answer, i, kind="echo") == i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(caller, n) for n in range(8)]:
            future.result(timeout=30)
    finished = spans.finished()
    callers = {s.context.span_id: s.name for s in finished if s.name.startswith("caller")}
    jobs = [s for s in finished if s.name == "bridge echo"]
    assert len(jobs) == 400
    per_parent: dict[str, int] = {}
    for span in jobs:
        assert span.parent is not None
        name = callers[span.parent.span_id]
        per_parent[name] = per_parent.get(name, 0) + 1
    assert per_parent == {f"caller {n}": 50 for n in range(8)}


def test_the_global_provider_by_default(
    make_bridge: Callable[..., Bridge], spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a provider argument the global one is used (stood in for here:
    the test never sets the process-wide provider)."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: spans.provider)
    b = make_bridge()
    instrument(b)
    assert b.call(answer, 5, kind="global") == 5
    assert spans.named("bridge global").attributes is not None


def test_without_an_sdk_spans_are_no_ops(make_bridge: Callable[..., Bridge]) -> None:
    """The API alone gives non-recording spans; jobs run as before."""
    b = make_bridge()
    instrument(b, tracer_provider=trace.NoOpTracerProvider())
    seen: list[bool] = []

    async def job() -> int:
        seen.append(trace.get_current_span().is_recording())
        return 5

    assert b.call(job) == 5
    assert seen == [False]


def test_without_opentelemetry_the_error_names_the_extra(
    make_bridge: Callable[..., Bridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # "not installed"
    b = make_bridge()
    with pytest.raises(ImportError, match=r'pip install "bridge\[ops\]"'):
        instrument(b)
    assert b._scheduler.observers.all == ()
