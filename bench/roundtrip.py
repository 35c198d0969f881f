"""Case 1: round-trip latency of one sync thread doing submit-and-wait."""

from __future__ import annotations

import time
from typing import Any

from ._approaches import blocking_call

__all__ = ["run"]


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Time *n* round trips (after *warmup*); return every sample in microseconds."""
    n = params["n"]
    if approach == "thread + asyncio.run":
        n = max(1, n // params.get("slow_divisor", 10))  # ~300 us each: fewer samples
    clock = time.perf_counter_ns
    samples = [0.0] * n
    with blocking_call(approach, loop_name) as fn:
        for i in range(params["warmup"]):
            fn(i)
        for i in range(n):
            start = clock()
            value = fn(i)
            samples[i] = (clock() - start) / 1000.0
            if value != i:
                raise AssertionError(f"{approach} returned {value!r} for {i!r}")
    return {"samples_us": samples}
