"""What one run measures: every case, approach and loop, with its sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import channel, fire_and_forget, ops, process_map, process_run, streams, telephony, tracing
from ._approaches import APPROACHES

__all__ = ["FULL", "SMOKE", "Measurement", "build_plan"]

#: Sizes for ``make bench``: the issue's numbers.
FULL: dict[str, dict[str, Any]] = {
    "roundtrip": {"n": 20_000, "warmup": 1_000, "slow_divisor": 10},
    "throughput": {"threads": 8, "per_thread": 3_000, "warmup": 200},
    "fire_and_forget": {"n": 128_319},
    "map_case": {"n": 128_319, "concurrency": 16},
    "channel": {"n": 1_000_000, "maxsize": 0},
    "tracing": {"threads": 8, "per_thread": 3_000, "warmup": 200},
    "telephony": {
        "calls": 1_000,
        "media_threads": 4,
        "duration": 10.0,
        "tick_ms": 20.0,
        "frame_bytes": 160,
    },
    "ops": {"n": 20_000, "warmup": 1_000, "threads": 8, "per_thread": 3_000},
    "process_map": {"n": 128_319, "chunksize": 64},
    "process_run": {"n": 1_000, "warmup": 50},
    "streams": {"n": 500_000, "latency_n": 20_000},
}

#: Sizes for ``make bench-smoke``: every code path, in a few seconds.
SMOKE: dict[str, dict[str, Any]] = {
    "roundtrip": {"n": 200, "warmup": 20, "slow_divisor": 10},
    "throughput": {"threads": 8, "per_thread": 30, "warmup": 5},
    "fire_and_forget": {"n": 2_000},
    "map_case": {"n": 2_000, "concurrency": 16},
    "channel": {"n": 5_000, "maxsize": 0},
    "tracing": {"threads": 8, "per_thread": 30, "warmup": 5},
    "telephony": {
        "calls": 40,
        "media_threads": 2,
        "duration": 0.3,
        "tick_ms": 20.0,
        "frame_bytes": 160,
    },
    "ops": {"n": 200, "warmup": 20, "threads": 8, "per_thread": 30},
    "process_map": {"n": 2_000, "chunksize": 64},
    "process_run": {"n": 20, "warmup": 2},
    "streams": {"n": 2_000, "latency_n": 200},
}


@dataclass(frozen=True)
class Measurement:
    """One thing a fresh subprocess measures."""

    case: str
    approach: str
    loop: str
    params: dict[str, Any] = field(hash=False)
    variant: str = ""  # what else tells it apart (the channel's direction)

    @property
    def id(self) -> str:
        parts = [self.case, self.approach, self.loop] + ([self.variant] if self.variant else [])
        return "/".join(parts)


def build_plan(
    sizes: dict[str, dict[str, Any]], cases: set[str] | None = None
) -> list[Measurement]:
    """Every measurement of one repetition, in the order they run."""
    plan: list[Measurement] = []

    def add(case: str, approach: str, loop: str, variant: str = "", **extra: Any) -> None:
        if cases is None or case in cases:
            plan.append(Measurement(case, approach, loop, {**sizes[case], **extra}, variant))

    for approach, loops in APPROACHES.items():
        for loop in loops:
            add("roundtrip", approach, loop)
    for approach in ("Bridge.call", "run_coroutine_threadsafe"):
        for loop in ("asyncio", "uvloop"):
            add("throughput", approach, loop)
    add("throughput", "anyio BlockingPortal.call", "asyncio")
    for approach in fire_and_forget.APPROACHES:
        for loop in ("asyncio", "uvloop"):
            add("fire_and_forget", approach, loop)
    for loop in ("asyncio", "uvloop"):
        add("map_case", "Bridge.map", loop)
    for direction in channel.DIRECTIONS:
        for approach in channel.APPROACHES:
            add("channel", approach, "asyncio", direction, direction=direction)
    for approach in tracing.APPROACHES:
        add("tracing", approach, "asyncio")
    for approach in telephony.APPROACHES:
        add("telephony", approach, "asyncio")
    add("telephony", "frame", "uvloop")
    for mode in ops.MODES:
        for approach in ops.APPROACHES:
            add("ops", approach, "asyncio", mode, mode=mode)
    for approach in process_map.APPROACHES:
        add("process_map", approach, "asyncio")
    add("process_run", process_run.APPROACH, "asyncio")
    for approach, variant in streams.PLAN:
        add("streams", approach, "asyncio", variant, measure=variant)
    return plan
