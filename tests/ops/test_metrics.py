"""Prometheus metrics (issue 10): counters match ``stats()``, histograms, labels, lifecycle.

Every check parses the exposition text with ``prometheus_client.parser``, as
a Prometheus server would read it; one scrapes it over real HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import Watched
from prometheus_client import REGISTRY, CollectorRegistry, Counter, start_http_server
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bridge import Bridge, BridgeClosed, DuplicateJob, JobTimeout, Overloaded
from bridge.ops import asgi_app, register_metrics
from bridge.ops._metrics import Metrics, close_registry, expose, new_registry

Families = dict[str, Any]

#: Every label the metrics may carry (``le``: the histograms' buckets).
ALLOWED_LABELS = {"bridge", "kind", "outcome", "reason", "state", "le"}


async def answer(value: int) -> int:
    return value


async def boom() -> None:
    raise ValueError("boom")


def scrape_text(text: str) -> Families:
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(registry: CollectorRegistry) -> Families:
    return scrape_text(generate_latest(registry).decode())


def sample(families: Families, name: str, **labels: str) -> float:
    """The value of the one sample *name* with exactly these labels (besides ``bridge``)."""
    found = [
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == name and {k: v for k, v in s.labels.items() if k != "bridge"} == labels
    ]
    assert len(found) == 1, f"{len(found)} samples {name}{labels}"
    return float(found[0])


def bridge_samples(families: Families, bridge_name: str) -> list[Any]:
    return [
        s
        for family in families.values()
        for s in family.samples
        if s.labels.get("bridge") == bridge_name
    ]


def wait_done(*jobs: Any) -> None:
    _, pending = concurrent.futures.wait(jobs, timeout=10)
    assert not pending, f"{pending} did not finish"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def every_outcome(b: Bridge) -> list[str]:
    """Two succeeded, one failed, one cancelled, one timed out, one duplicate, one
    overloaded (``max_pending=3``); two jobs keep running. Return the keys used."""
    assert b.call(answer, 1, kind="tts") == 1
    assert b.call(answer, 2, kind="tts", key="tts:secret-key") == 2
    with pytest.raises(ValueError, match="boom"):
        b.call(boom, kind="http")
    body = Watched()
    cancelled = b.submit(body, kind="call", key="call:1/leg a")
    assert body.started.wait(10)
    cancelled.cancel()
    wait_done(cancelled)
    timed_out = b.submit(Watched(), kind="http", timeout=0.05)
    assert isinstance(timed_out.exception(timeout=10), JobTimeout)
    first, second = Watched(), Watched()
    b.submit(first, kind="call", key="call:2")
    b.submit(second, kind="call", key="call:3")
    assert first.started.wait(10)
    assert second.started.wait(10)
    with pytest.raises(DuplicateJob):
        b.submit(Watched(), kind="call", key="call:2")
    third = Watched()
    b.submit(third, kind="call")  # the third place of max_pending=3
    assert third.started.wait(10)  # all three running: the scrape and stats() agree
    with pytest.raises(Overloaded):
        b.submit(Watched(), kind="call")
    return ["tts:secret-key", "call:1/leg a", "call:2", "call:3"]


# -- counters and gauges ------------------------------------------------------------------


def test_counters_match_stats_after_every_outcome(
    make_bridge: Callable[..., Bridge],
    registry: CollectorRegistry,
) -> None:
    b = make_bridge(name="ops-counters", max_pending=3, when_full="reject", history=100)
    register_metrics(b, registry)
    every_outcome(b)
    families = scrape(registry)
    stats = b.stats()

    assert sample(families, "bridge_jobs_submitted_total") == stats.submitted == 8
    finished = {o: sample(families, "bridge_jobs_finished_total", outcome=o) for o in OUTCOMES}
    assert finished == {
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "timed_out": stats.timed_out,
    }
    assert finished == {"succeeded": 2, "failed": 1, "cancelled": 1, "timed_out": 1}
    rejected = {r: sample(families, "bridge_jobs_rejected_total", reason=r) for r in REASONS}
    assert rejected == {"overloaded": 1, "duplicate": 1, "closed": 0}
    assert sum(rejected.values()) == stats.rejected
    active = {s: sample(families, "bridge_jobs_active", state=s) for s in ("pending", "running")}
    assert sum(active.values()) == stats.active == 3
    assert active["running"] == sum(stats.running_by_kind.values())
    assert sample(families, "bridge_worker_threads_busy") == 0
    assert sample(families, "bridge_jobs_submitted_total") == b.stats().submitted


OUTCOMES = ("succeeded", "failed", "cancelled", "timed_out")
REASONS = ("overloaded", "duplicate", "closed")


def test_closed_refusals_are_counted_while_shutdown_begins(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    """Refusals for a closing bridge happen once shutdown began, so does the
    unregistering: a closer that runs before the metrics' own sees both."""
    b = make_bridge(name="ops-closing")
    seen: list[Families] = []
    refused: list[BaseException] = []

    def during_shutdown() -> None:
        try:
            b.submit(answer, 1)
        except BridgeClosed as exc:
            refused.append(exc)
        seen.append(scrape(registry))

    b._at_shutdown(during_shutdown)  # added first, so it runs before the metrics' closer
    register_metrics(b, registry)
    b.call(answer, 1)
    b.shutdown(timeout=5)
    assert len(refused) == 1
    assert sample(seen[0], "bridge_jobs_rejected_total", reason="closed") == 1
    assert b.stats().closed == 1
    assert bridge_samples(scrape(registry), "ops-closing") == []


def test_histograms_count_started_and_finished_jobs_by_kind(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    b = make_bridge(name="ops-histograms", limits={"tts": 1})
    register_metrics(b, registry)
    for i in range(5):
        b.call(answer, i, kind="tts")
    for i in range(3):
        b.call(answer, i, kind="http")
    holder = Watched()
    running = b.submit(holder, kind="tts")
    assert holder.started.wait(10)
    queued = b.submit(answer, 99, kind="tts")  # waits behind the lane's one place
    # The loop takes jobs in order: once a later job has run, `queued` is in its lane.
    b.call(answer, 0, kind="probe")

    families = scrape(registry)
    assert sample(families, "bridge_lane_waiting", kind="tts") == 1
    assert sample(families, "bridge_jobs_active", state="pending") == 1
    assert sample(families, "bridge_jobs_active", state="running") == 1
    # The running job has started (queue time observed) but not finished.
    assert sample(families, "bridge_job_queue_seconds_count", kind="tts") == 6
    assert sample(families, "bridge_job_run_seconds_count", kind="tts") == 5
    assert sample(families, "bridge_job_queue_seconds_count", kind="http") == 3
    assert sample(families, "bridge_job_run_seconds_count", kind="http") == 3

    queued.cancel()  # it never starts: in neither histogram
    running.cancel()
    wait_done(queued, running)
    families = scrape(registry)
    assert sample(families, "bridge_job_queue_seconds_count", kind="tts") == 6
    assert sample(families, "bridge_job_run_seconds_count", kind="tts") == 6
    assert sample(families, "bridge_lane_waiting", kind="tts") == 0
    for name in ("bridge_job_queue_seconds", "bridge_job_run_seconds"):
        for kind in ("tts", "http"):
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in families[name].samples
                if s.name == name + "_bucket" and s.labels["kind"] == kind
            ]
            counts = [count for _, count in sorted(buckets)]
            assert counts == sorted(counts), "buckets must be cumulative"
            assert buckets[-1][0] == float("inf")
            assert counts[-1] == sample(families, name + "_count", kind=kind)
            assert sample(families, name + "_sum", kind=kind) >= 0


def test_no_label_is_a_key_or_an_id(
    make_bridge: Callable[..., Bridge],
    registry: CollectorRegistry,
) -> None:
    b = make_bridge(name="ops-labels", max_pending=3, when_full="reject")
    register_metrics(b, registry)
    keys = every_outcome(b)
    ids = {str(info.id) for info in b.jobs()}
    samples = bridge_samples(scrape(registry), "ops-labels")
    assert samples
    for s in samples:
        assert set(s.labels) <= ALLOWED_LABELS, s
        for value in s.labels.values():
            assert value not in keys
            assert not any(key in value for key in keys)
            if s.name.endswith("_bucket"):
                continue  # le="5.0" and such
            assert value not in ids


# -- over HTTP ----------------------------------------------------------------------------


def test_scrape_over_http_matches_stats(
    make_bridge: Callable[..., Bridge],
    registry: CollectorRegistry,
) -> None:
    b = make_bridge(name="ops-http", max_pending=3, when_full="reject")
    register_metrics(b, registry)
    every_outcome(b)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = scrape_text(response.text)
    stats = b.stats()
    assert sample(families, "bridge_jobs_submitted_total") == stats.submitted
    for outcome in OUTCOMES:
        assert sample(families, "bridge_jobs_finished_total", outcome=outcome) == getattr(
            stats, outcome
        )
    for reason in REASONS:
        assert sample(families, "bridge_jobs_rejected_total", reason=reason) == getattr(
            stats, reason
        )


def test_expose_and_the_lag_source(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="ops-lag")
    readings: list[float | None] = [0.25]
    registry = new_registry(b, lambda: readings[-1])
    body, content_type = expose(registry)
    assert content_type.startswith("text/plain")
    assert sample(scrape_text(body.decode()), "bridge_loop_lag_seconds") == 0.25
    readings.append(None)  # no reading: the family, but no sample
    assert scrape(registry)["bridge_loop_lag_seconds"].samples == []

    plain = CollectorRegistry()
    register_metrics(b, plain)  # no lag source at all
    assert scrape(plain)["bridge_loop_lag_seconds"].samples == []


# -- registering and unregistering --------------------------------------------------------


def test_two_live_bridges_of_one_name_in_one_registry(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    first = make_bridge(name="twin")
    second = make_bridge(name="twin")
    register_metrics(first, registry)
    with pytest.raises(ValueError, match="'twin'"):
        register_metrics(second, registry)
    assert second._scheduler.observers.all == ()  # nothing left behind
    register_metrics(second, CollectorRegistry())  # another registry: fine
    first.shutdown(timeout=5)
    register_metrics(second, registry)  # the first one's metrics left with it
    second.call(answer, 1)
    assert sample(scrape(registry), "bridge_jobs_submitted_total") == 1


def test_bridges_of_different_names_share_a_registry(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    one = make_bridge(name="one")
    two = make_bridge(name="two")
    register_metrics(one, registry)
    metrics_two = register_metrics(two, registry)
    one.call(answer, 1)
    for i in range(3):
        two.call(answer, i)
    families = scrape(registry)
    submitted = {s.labels["bridge"]: s.value for s in families["bridge_jobs_submitted"].samples}
    assert submitted == {"one": 1, "two": 3}
    metrics_two.close()
    metrics_two.close()  # idempotent
    assert bridge_samples(scrape(registry), "two") == []
    assert bridge_samples(scrape(registry), "one") != []
    assert "closed" in repr(metrics_two)


def test_unregistered_at_shutdown(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    b = make_bridge(name="ops-shutdown")
    metrics = register_metrics(b, registry)
    assert isinstance(metrics, Metrics)
    assert metrics.registry is registry
    b.call(answer, 1)
    assert bridge_samples(scrape(registry), "ops-shutdown") != []
    assert b._scheduler.observers.all != ()
    b.shutdown(timeout=5)
    assert scrape(registry) == {}  # the registry is left as it was found
    assert b._scheduler.observers.all == ()
    # Registering on a bridge that has shut down leaves nothing registered.
    register_metrics(b, registry)
    assert scrape(registry) == {}


def test_default_registry(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="ops-default-registry")
    metrics = register_metrics(b)
    try:
        assert metrics.registry is REGISTRY
        b.call(answer, 1)
        assert sample(scrape(REGISTRY), "bridge_jobs_submitted_total") == 1
    finally:
        b.shutdown(timeout=5)
    assert bridge_samples(scrape(REGISTRY), "ops-default-registry") == []
    assert "bridge_jobs_submitted" not in scrape(REGISTRY)


def test_close_registry(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="ops-close-registry")
    registry = new_registry(b, None)
    assert bridge_samples(scrape(registry), "ops-close-registry") != []
    close_registry(registry)
    close_registry(registry)
    assert scrape(registry) == {}
    assert b._scheduler.observers.all == ()


def test_a_clash_with_other_collectors_is_a_value_error(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    Counter("bridge_jobs_submitted", "somebody else's", registry=registry)
    b = make_bridge(name="ops-clash")
    with pytest.raises(ValueError, match="bridge_jobs_submitted"):
        register_metrics(b, registry)
    assert b._scheduler.observers.all == ()


def test_observing_is_safe_from_many_threads(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    """8 threads submit while another scrapes: every job counted once."""
    b = make_bridge(name="ops-threads")
    register_metrics(b, registry)
    per_thread = 200

    def caller(n: int) -> None:
        for i in range(per_thread):
            assert b.call(answer, i, kind=f"k{n % 2}") == i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(caller, n) for n in range(8)]
        while not all(f.done() for f in futures):
            scrape(registry)
        for f in futures:
            f.result()
    families = scrape(registry)
    for kind in ("k0", "k1"):
        assert sample(families, "bridge_job_queue_seconds_count", kind=kind) == 4 * per_thread
        assert sample(families, "bridge_job_run_seconds_count", kind=kind) == 4 * per_thread


def test_pending_jobs_of_a_new_bridge(registry: CollectorRegistry) -> None:
    """Metrics may be registered before start: jobs queue as pending."""
    b = Bridge(name="ops-new")
    started, gate = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:  # so that the next job stays pending
        started.set()
        gate.wait(10)

    try:
        register_metrics(b, registry)
        blocker = b.submit(hold_the_loop, kind="blocker")  # submit() starts the bridge
        assert started.wait(10)
        job = b.submit(answer, 7)
        assert sample(scrape(registry), "bridge_jobs_active", state="pending") == 1
        gate.set()
        blocker.result(timeout=10)
        assert job.result(timeout=10) == 7
        families = scrape(registry)
        assert sample(families, "bridge_job_queue_seconds_count", kind="job") == 1
    finally:
        b.shutdown(timeout=5)


def test_run_seconds_are_observed_when_the_job_ends(
    make_bridge: Callable[..., Bridge], registry: CollectorRegistry
) -> None:
    """A job that awaits something: run seconds cover the await."""
    b = make_bridge(name="ops-await")
    register_metrics(b, registry)
    gate = concurrent.futures.Future[None]()
    started = threading.Event()

    async def waits() -> None:
        started.set()
        await asyncio.wrap_future(gate)

    job = b.submit(waits)
    assert started.wait(10)
    assert sample(scrape(registry), "bridge_job_queue_seconds_count", kind="job") == 1
    assert sample(scrape(registry), "bridge_job_run_seconds_count", kind="job") == 0
    gate.set_result(None)
    job.result(timeout=10)
    assert sample(scrape(registry), "bridge_job_run_seconds_count", kind="job") == 1


def test_the_ops_apps_metrics_route(make_bridge: Callable[..., Bridge]) -> None:
    """``/metrics`` of the ops app: a registry of its own, with the loop lag."""
    b = make_bridge(name="ops-route")
    app = asgi_app(b, token="metrics-test-token")
    b.call(answer, 1, kind="tts")
    with TestClient(app) as client:
        response = client.get("/metrics", headers={"Authorization": "Bearer metrics-test-token"})
    assert response.status_code == 200
    families = scrape_text(response.text)
    assert sample(families, "bridge_jobs_submitted_total") == b.stats().submitted == 1
    assert sample(families, "bridge_job_run_seconds_count", kind="tts") == 1
    assert sample(families, "bridge_loop_lag_seconds") >= 0
    assert "bridge_jobs_submitted" not in scrape(REGISTRY)  # not the default registry
