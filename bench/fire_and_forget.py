"""Case 3a: submit a burst of jobs from one thread, then wait for them all."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import time
from collections.abc import Callable
from typing import Any

from ._approaches import FLOOR, floor_submit, make_bridge
from ._util import echo, loop_thread, peak_rss_kib

__all__ = ["run"]

APPROACHES = ("Bridge.submit", "run_coroutine_threadsafe", FLOOR)


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Wall time and peak RSS growth of *n* submissions plus the wait for all."""
    if approach == "Bridge.submit":
        with make_bridge(loop_name) as b:
            return _burst(lambda i: b.submit(echo, i), params)
    if approach == "run_coroutine_threadsafe":
        with loop_thread(loop_name) as loop:
            rcts = asyncio.run_coroutine_threadsafe
            return _burst(lambda i: rcts(echo(i), loop), params)
    if approach == FLOOR:
        with loop_thread(loop_name) as loop:
            submit = floor_submit(loop)
            return _burst(lambda i: submit(echo(i)), params)
    raise ValueError(f"unknown approach {approach!r}")


def _burst(submit: Callable[[int], concurrent.futures.Future[Any]], params: dict[str, Any]):
    n = params["n"]
    concurrent.futures.wait([submit(i) for i in range(1000)])  # warm up the path
    gc.collect()
    rss_before = peak_rss_kib()
    start = time.perf_counter()
    futures = [submit(i) for i in range(n)]
    submitted = time.perf_counter()
    concurrent.futures.wait(futures)
    wall = time.perf_counter() - start
    rss_after = peak_rss_kib()
    total = sum(f.result() for f in futures)
    if total != n * (n - 1) // 2:
        raise AssertionError("lost or wrong results")
    return {
        "n": n,
        "wall_s": wall,
        "submit_s": submitted - start,
        "rss_growth_mib": (rss_after - rss_before) / 1024.0,
        "bytes_per_job": (rss_after - rss_before) * 1024.0 / n,
    }
