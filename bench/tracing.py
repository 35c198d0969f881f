"""Case 5: what the bridge's structlog events cost, captured vs not configured."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from ._approaches import make_bridge
from ._util import echo
from .throughput import measure

__all__ = ["run"]

APPROACHES = ("tracing off", "events captured", "events captured, cached logger")


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """8-thread Bridge.call throughput with structlog unconfigured or capturing events."""
    structlog.reset_defaults()
    captured = [0]
    if approach.startswith("events captured"):

        def capture(_logger: Any, _method: str, event_dict: Any) -> Any:
            captured[0] += 1  # a cheap sink: count it and drop it
            raise structlog.DropEvent

        structlog.configure(
            processors=[capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            # structlog's advice for production: build each logger once. Without
            # it, every event re-binds the bridge's lazy logger proxy.
            cache_logger_on_first_use=approach.endswith("cached logger"),
        )
    elif approach != "tracing off":
        raise ValueError(f"unknown approach {approach!r}")
    threads, per_thread, warmup = params["threads"], params["per_thread"], params["warmup"]
    with make_bridge(loop_name) as b:
        result = measure(lambda value: b.call(echo, value), threads, per_thread, warmup)
    expected = 3 * threads * (per_thread + warmup) if approach != "tracing off" else 0
    if captured[0] != expected:  # prove the events were (or were not) emitted
        raise AssertionError(f"captured {captured[0]} events, expected {expected}")
    result["events"] = captured[0]
    return result
