"""Child programs: ``Bridge.run_process(["true"])`` vs ``subprocess.run(["true"])``.

One measurement runs both, alternating call by call in the same process, so
that drift on a shared machine hits both alike: a thread calls
``run_process(["true"]).result()``, then hands ``subprocess.run(["true"])`` to
a one-thread executor and waits for it. Figures: each side's median and p99
round trip, and the ratio of the medians.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections.abc import Callable
from typing import Any

from ._approaches import make_bridge
from ._util import percentile

__all__ = ["APPROACH", "run"]

APPROACH = "run_process vs subprocess.run"
_ARGV = ["true"]


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Median and p99 of both round trips (us) and the ratio of the medians."""
    if approach != APPROACH:
        raise ValueError(f"unknown approach {approach!r}")
    with (
        make_bridge(loop_name) as b,
        concurrent.futures.ThreadPoolExecutor(1) as thread,
    ):

        def bridge_side() -> None:
            if b.run_process(_ARGV).result().returncode != 0:
                raise AssertionError("run_process(['true']) failed")

        def stdlib_side() -> None:
            if thread.submit(subprocess.run, _ARGV).result().returncode != 0:
                raise AssertionError("subprocess.run(['true']) failed")

        sides = (bridge_side, stdlib_side)
        for _ in range(params["warmup"]):
            for side in sides:
                side()
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(params["n"]):
            for side, kept in zip(sides, samples, strict=True):
                kept.append(_time(side))
    bridge_us, stdlib_us = (sorted(kept) for kept in samples)
    return {
        "n": params["n"],
        "bridge_median_us": percentile(bridge_us, 50),
        "bridge_p99_us": percentile(bridge_us, 99),
        "stdlib_median_us": percentile(stdlib_us, 50),
        "stdlib_p99_us": percentile(stdlib_us, 99),
        "ratio": percentile(bridge_us, 50) / percentile(stdlib_us, 50),
    }


def _time(side: Callable[[], None]) -> float:
    start = time.perf_counter()
    side()
    return (time.perf_counter() - start) * 1e6
