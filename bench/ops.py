"""Case 7: what the operations layer costs per job (issue 10).

The same ``Bridge.call`` of a trivial coroutine, one thread (latency) and 8
threads (throughput), on a plain bridge, on one with ``history=1000`` and
``register_metrics()``, and on one with ``instrument()`` on top: the
OpenTelemetry SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` whose
exporter counts the spans and drops them (what a production set-up pays on
the hot path, less the network).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge import Bridge

from ._approaches import make_bridge
from ._util import echo, percentile
from .throughput import measure

__all__ = ["APPROACHES", "MODES", "run"]

PLAIN = "plain"
METRICS = "history + metrics"
SPANS = "history + metrics + spans"
APPROACHES = (PLAIN, METRICS, SPANS)
MODES = ("latency", "throughput")


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """One thread's round trips (``mode="latency"``) or 8 threads' calls/s."""
    mode = params["mode"]
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    with _bridge(approach, loop_name) as (b, check):
        if mode == "latency":
            result, calls = _latency(b, params["n"], params["warmup"])
        else:
            threads, per_thread, warmup = params["threads"], params["per_thread"], params["warmup"]
            result = measure(lambda value: b.call(echo, value), threads, per_thread, warmup)
            calls = threads * (per_thread + warmup)
        check(calls)
    return result


def _latency(b: Bridge, n: int, warmup: int) -> tuple[dict[str, Any], int]:
    clock = time.perf_counter_ns
    samples = [0.0] * n
    for i in range(warmup):
        b.call(echo, i)
    for i in range(n):
        start = clock()
        value = b.call(echo, i)
        samples[i] = (clock() - start) / 1000.0
        if value != i:
            raise AssertionError(f"Bridge.call returned {value!r} for {i!r}")
    samples.sort()
    median = percentile(samples, 50)
    result = {"median_us": median, "p99_us": percentile(samples, 99), "calls_per_s": 1e6 / median}
    return result, n + warmup


@contextmanager
def _bridge(approach: str, loop_name: str) -> Iterator[tuple[Bridge, Any]]:
    """The bridge as *approach* sets it up, and a check of what was recorded."""
    if approach == PLAIN:
        with make_bridge(loop_name) as b:
            yield b, lambda calls: None
        return
    if approach not in (METRICS, SPANS):
        raise ValueError(f"unknown approach {approach!r}")
    from prometheus_client import CollectorRegistry

    from bridge.ops._metrics import register_metrics

    registry = CollectorRegistry()
    with make_bridge(loop_name, history=1000) as b:
        register_metrics(b, registry)
        spans = _spans(b) if approach == SPANS else None

        def check(calls: int) -> None:
            observed = registry.get_sample_value(
                "bridge_job_run_seconds_count", {"bridge": b.name, "kind": "job"}
            )
            if observed != calls or len(b.history()) != min(calls, 1000):
                raise AssertionError(f"{observed} jobs observed, {calls} calls made")
            if spans is not None:
                exported = spans()
                if exported != calls:
                    raise AssertionError(f"{exported} spans exported, {calls} calls made")

        yield b, check


def _spans(b: Bridge) -> Any:
    """Instrument *b*; return a function that flushes and counts the spans exported."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from bridge.ops._spans import instrument

    class Counting(SpanExporter):
        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.count += len(spans)  # a cheap sink: count them and drop them
            return SpanExportResult.SUCCESS

    exporter = Counting()
    provider = TracerProvider()
    # A queue that never drops a span (the default keeps 2,048): the count is checked.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))
    instrument(b, tracer_provider=provider)

    def exported() -> int:
        provider.force_flush()
        count = exporter.count
        provider.shutdown()
        return count

    return exported
