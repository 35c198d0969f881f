"""Case 3b: Bridge.map over a generator of many items: time and peak memory."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from ._approaches import make_bridge
from ._util import echo, peak_rss_kib

__all__ = ["run"]


def _items(n: int) -> Iterator[int]:
    yield from range(n)


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Wall time and peak RSS growth of mapping ``echo`` over *n* generated items."""
    if approach != "Bridge.map":
        raise ValueError(f"unknown approach {approach!r}")
    n = params["n"]
    with make_bridge(loop_name) as b:
        for _ in b.map(echo, _items(1000)):  # warm up the path
            pass
        gc.collect()
        rss_before = peak_rss_kib()
        start = time.perf_counter()
        total = 0
        count = 0
        for value in b.map(echo, _items(n), concurrency=params["concurrency"]):
            total += value
            count += 1
        wall = time.perf_counter() - start
        rss_after = peak_rss_kib()
    if count != n or total != n * (n - 1) // 2:
        raise AssertionError("lost or wrong results")
    return {
        "n": n,
        "wall_s": wall,
        "rss_growth_mib": (rss_after - rss_before) / 1024.0,
    }
