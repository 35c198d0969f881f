"""Prometheus metrics of a bridge: :func:`register_metrics` and the ops app's registry.

Almost everything is read at scrape time: the counters from
``bridge.stats()``, the gauges from ``bridge._capacity()`` and the loop lag
from a callable the caller supplies. Only the two histograms must be observed
per job, by a job observer that does one ``bisect`` and two increments under a
lock for each job start and each job end.

A registry can hold the metrics of several bridges, told apart by their
``bridge`` label. ``prometheus_client`` refuses two collectors that produce
the same metric names, so each registry gets one :class:`_Hub` collector, and
each bridge registered in it one :class:`Metrics` source. The hub is added to
the registry with its first source and removed with its last, so a registry
whose bridges have all shut down is left as it was found. ``_hubs`` is this
module's one piece of state: which registries have a hub (weakly: an entry
goes with its registry).

Labels are ``bridge`` plus one of ``kind``, ``outcome``, ``reason``,
``state`` (and ``le`` of the histograms); never a job's key or id, whose
numbers have no bound.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bridge._job import Job

from ._target import OpsTarget

__all__ = [
    "QUEUE_BUCKETS",
    "RUN_BUCKETS",
    "LagSource",
    "Metrics",
    "close_registry",
    "expose",
    "new_registry",
    "register_metrics",
]

#: Seconds since the last loop ping, or ``None`` while there is no reading.
LagSource = Callable[[], float | None]

#: Upper bounds of ``bridge_job_queue_seconds``: a job usually waits for the
#: loop for microseconds, behind a lane or a busy loop for much longer.
QUEUE_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Upper bounds of ``bridge_job_run_seconds``: from an HTTP request to a call
#: that lasts an hour.
RUN_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

_OUTCOMES: Final = ("succeeded", "failed", "cancelled", "timed_out")
_REASONS: Final = ("overloaded", "duplicate", "closed")


def register_metrics(
    bridge: OpsTarget,
    registry: CollectorRegistry | None = None,
    *,
    lag: LagSource | None = None,
) -> Metrics:
    """Export *bridge*'s metrics through a ``prometheus_client`` registry.

    For an application that already serves a registry (``/metrics`` of its
    own); :meth:`Bridge.serve_ops` keeps a registry of its own instead. The
    metrics (all labelled ``bridge=<bridge.name>``):

    - ``bridge_jobs_submitted_total``; ``bridge_jobs_finished_total{outcome}``;
      ``bridge_jobs_rejected_total{reason}`` (``overloaded``, ``duplicate``,
      ``closed``): counters, read from ``bridge.stats()`` at scrape time.
    - ``bridge_jobs_active{state}`` (``pending``, ``running``),
      ``bridge_lane_waiting{kind}`` (kinds with a lane),
      ``bridge_worker_threads_busy``: gauges, read at scrape time.
    - ``bridge_loop_lag_seconds``: what *lag* returns at scrape time (no
      sample without *lag*, or while it returns ``None``).
    - ``bridge_job_queue_seconds{kind}`` (submit to start) and
      ``bridge_job_run_seconds{kind}`` (start to end, whatever the outcome):
      histograms, observed per job from now on; a job that never started
      counts in neither.

    The metrics leave the registry, and the per-job observer the bridge, when
    the bridge's shutdown begins or :meth:`Metrics.close` is called.

    Args:
        bridge: the bridge.
        registry: where to register; ``prometheus_client.REGISTRY`` by default.
        lag: returns the loop lag in seconds, or ``None`` while unknown.

    Returns:
        The handle that unregisters them.

    Raises:
        ValueError: another live bridge of the same name has metrics in
            *registry* (give each bridge its own ``name``), or the registry
            already has other collectors with these metric names.

    **Thread safety:** any thread; scrapes may run on any thread too.
    """
    metrics = Metrics(bridge, REGISTRY if registry is None else registry, lag)
    bridge._observe(metrics._timings)  # first: a close() from now on removes it
    try:
        _attach(metrics)
    except BaseException:
        bridge._unobserve(metrics._timings)
        raise
    bridge._at_shutdown(metrics.close)
    return metrics


def new_registry(bridge: OpsTarget, lag: LagSource | None) -> CollectorRegistry:
    """A registry of its own holding *bridge*'s metrics (the ops app's ``/metrics``).

    Serve it with :func:`expose`. The metrics leave it at the bridge's
    shutdown; call :func:`close_registry` to drop them sooner (the server
    closing while the bridge goes on).
    """
    registry = CollectorRegistry(auto_describe=True)
    register_metrics(bridge, registry, lag=lag)
    return registry


def close_registry(registry: CollectorRegistry) -> None:
    """:meth:`Metrics.close` every bridge's metrics in *registry*. Any thread."""
    with _hubs_lock:  # the hub's sources, as they are now
        hub = _hubs.get(registry)
        sources = [] if hub is None else list(hub.sources.values())
    for metrics in sources:
        metrics.close()


def expose(registry: CollectorRegistry) -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape of *registry*, in the text format. Any thread."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


@final
class Metrics:
    """One bridge's metrics in one registry (what :func:`register_metrics` returns).

    **Thread safety:** every method may be called from any thread.
    """

    __slots__ = ("_bridge", "_closed", "_lag", "_timings", "registry")

    def __init__(
        self, bridge: OpsTarget, registry: CollectorRegistry, lag: LagSource | None
    ) -> None:
        self._bridge = bridge
        #: The registry the metrics are (or were) registered in.
        self.registry: Final = registry
        self._lag = lag
        self._timings = _Timings()
        self._closed = False  # written under _hubs_lock

    @property
    def bridge_name(self) -> str:
        """The ``bridge`` label."""
        return self._bridge.name

    def close(self) -> None:
        """Unregister the metrics and stop observing jobs; idempotent."""
        if _detach(self):
            self._bridge._unobserve(self._timings)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "registered"
        return f"<Metrics bridge={self._bridge.name!r} {state}>"

    def _add_to(self, families: _Families) -> None:
        """Add this bridge's samples (read now) to *families*."""
        b = self._bridge
        name = b.name
        stats = b.stats()
        capacity = b._capacity()
        families.submitted.add_metric([name], stats.submitted)
        for outcome in _OUTCOMES:
            families.finished.add_metric([name, outcome], getattr(stats, outcome))
        for reason in _REASONS:
            families.rejected.add_metric([name, reason], getattr(stats, reason))
        families.active.add_metric([name, "pending"], sum(stats.pending_by_kind.values()))
        families.active.add_metric([name, "running"], sum(stats.running_by_kind.values()))
        for kind, lane in sorted(capacity.lanes.items()):
            families.lane_waiting.add_metric([name, kind], lane.waiting)
        families.workers_busy.add_metric([name], capacity.workers_busy)
        lag = None if self._lag is None else self._lag()
        if lag is not None:
            families.loop_lag.add_metric([name], lag)
        # A kind whose first job runs has its run series, at zero, at once.
        kinds = self._timings.queue.add_to(families.queue_seconds, name)
        self._timings.run.add_to(families.run_seconds, name, kinds)


# -- per job: the histograms -------------------------------------------------------------


@final
class _Histogram:
    """Durations by kind, as bucket counts and a sum. Any thread."""

    __slots__ = ("_bounds", "_labels", "_lock", "_series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._labels = [*(_le(bound) for bound in self._bounds), "+Inf"]
        # Guards _series and the lists in it: the loop thread observes, the
        # shutdown thread may too (a stuck job), and a scrape copies them.
        self._lock = threading.Lock()
        # kind -> [count in each bucket (not cumulative), count above the last, sum]
        self._series: dict[str, list[float]] = {}

    def observe(self, kind: str, seconds: float) -> None:
        index = bisect.bisect_left(self._bounds, seconds)  # first bound >= seconds
        with self._lock:  # one observation at a time (see __init__)
            series = self._series.get(kind)
            if series is None:
                series = self._series[kind] = [0] * (len(self._bounds) + 2)
            series[index] += 1
            series[-1] += seconds

    def add_to(
        self, family: HistogramMetricFamily, bridge_name: str, kinds: Iterable[str] = ()
    ) -> set[str]:
        """Add a series per kind (zeros for *kinds* not observed yet); return the kinds."""
        with self._lock:  # a consistent copy; the scrape formats it unlocked
            copies = {kind: series.copy() for kind, series in self._series.items()}
        for kind in kinds:
            copies.setdefault(kind, [0] * (len(self._bounds) + 2))
        for kind, series in sorted(copies.items()):
            total = 0
            buckets = []
            for label, count in zip(self._labels, series[:-1], strict=True):
                total += int(count)
                buckets.append((label, float(total)))
            family.add_metric([bridge_name, kind], buckets, series[-1])
        return set(copies)


def _le(bound: float) -> str:
    return repr(float(bound))


@final
class _Timings:
    """The job observer behind the histograms (see ``bridge._observers``)."""

    __slots__ = ("queue", "run")

    def __init__(self) -> None:
        self.queue = _Histogram(QUEUE_BUCKETS)
        self.run = _Histogram(RUN_BUCKETS)

    def job_submitted(self, job: Job[Any]) -> None:
        pass

    def job_started(self, job: Job[Any]) -> None:
        self.queue.observe(job.kind, job._started_mono - job._submitted_mono)

    def job_finished(self, job: Job[Any]) -> None:
        started = job._started_mono
        if started:  # 0.0: it never ran
            self.run.observe(job.kind, time.monotonic() - started)


# -- the registry's side: one hub per registry ---------------------------------------------


@final
class _Families:
    """The metric families of one scrape, every bridge's samples in them."""

    __slots__ = (
        "active",
        "finished",
        "lane_waiting",
        "loop_lag",
        "queue_seconds",
        "rejected",
        "run_seconds",
        "submitted",
        "workers_busy",
    )

    def __init__(self) -> None:
        b = ["bridge"]
        self.submitted = CounterMetricFamily(
            "bridge_jobs_submitted", "Jobs the bridge accepted.", labels=b
        )
        self.finished = CounterMetricFamily(
            "bridge_jobs_finished", "Jobs that ended, by outcome.", labels=[*b, "outcome"]
        )
        self.rejected = CounterMetricFamily(
            "bridge_jobs_rejected", "Submissions refused, by reason.", labels=[*b, "reason"]
        )
        self.active = GaugeMetricFamily(
            "bridge_jobs_active", "Unfinished jobs, pending or running.", labels=[*b, "state"]
        )
        self.queue_seconds = HistogramMetricFamily(
            "bridge_job_queue_seconds",
            "Seconds from a job's submission to its start, by kind.",
            labels=[*b, "kind"],
        )
        self.run_seconds = HistogramMetricFamily(
            "bridge_job_run_seconds",
            "Seconds from a job's start to its end, by kind.",
            labels=[*b, "kind"],
        )
        self.lane_waiting = GaugeMetricFamily(
            "bridge_lane_waiting",
            "Jobs waiting for a place in their kind's lane.",
            labels=[*b, "kind"],
        )
        self.loop_lag = GaugeMetricFamily(
            "bridge_loop_lag_seconds",
            "How late the bridge's event loop ran its latest ping, or how long the "
            "unanswered one has waited if longer, in seconds.",
            labels=b,
        )
        self.workers_busy = GaugeMetricFamily(
            "bridge_worker_threads_busy", "Worker threads running a task now.", labels=b
        )

    def all(self) -> list[Metric]:
        return [
            self.submitted,
            self.finished,
            self.rejected,
            self.active,
            self.queue_seconds,
            self.run_seconds,
            self.lane_waiting,
            self.loop_lag,
            self.workers_busy,
        ]


@final
class _Hub:
    """The one collector of a registry: every bridge's metrics in it."""

    __slots__ = ("sources",)

    def __init__(self) -> None:
        #: The bridges' sources by bridge name (guarded by ``_hubs_lock``).
        self.sources: dict[str, Metrics] = {}

    def describe(self) -> Iterable[Metric]:
        """The metric names (empty families), for the registry's clash check."""
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        with _hubs_lock:  # the sources as they are now; read each outside the lock
            sources = list(self.sources.values())
        families = _Families()
        for metrics in sources:
            metrics._add_to(families)
        return families.all()


_hubs: weakref.WeakKeyDictionary[CollectorRegistry, _Hub] = weakref.WeakKeyDictionary()
#: Guards _hubs, every hub's sources and every Metrics' _closed: registering
#: and closing are rare, so one lock for all is enough.
_hubs_lock = threading.Lock()


def _attach(metrics: Metrics) -> None:
    """Add *metrics* to its registry's hub (creating and registering the hub)."""
    registry = metrics.registry
    name = metrics.bridge_name
    with _hubs_lock:  # the check for a clash and the registration together
        hub = _hubs.get(registry)
        if hub is None:
            hub = _Hub()
            registry.register(hub)  # ValueError if other collectors use our names
            _hubs[registry] = hub
        elif name in hub.sources:
            raise ValueError(
                f"a bridge named {name!r} already has metrics in this registry "
                f"({hub.sources[name]!r}); give each bridge its own name, "
                f"Bridge(name=...), or use another registry"
            )
        hub.sources[name] = metrics


def _detach(metrics: Metrics) -> bool:
    """Remove *metrics* from its hub (the hub too, if it was the last); whether it was in."""
    registry = metrics.registry
    with _hubs_lock:  # _closed, the sources and the hub's registration together
        if metrics._closed:
            return False
        metrics._closed = True
        hub = _hubs.get(registry)
        if hub is None or hub.sources.get(metrics.bridge_name) is not metrics:
            return True
        del hub.sources[metrics.bridge_name]
        if not hub.sources:
            del _hubs[registry]
            registry.unregister(hub)
        return True
