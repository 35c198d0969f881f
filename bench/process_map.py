"""Worker processes: ``Bridge.process_map`` vs ``ProcessPoolExecutor.map(chunksize=64)``.

Both map a small CPU-bound function over 128,319 items from a generator, on
as many forkserver workers as there are cores. ``Executor.map`` submits every
chunk at once (each future holding its arguments); ``process_map`` pulls items
only as workers free up. Figures: items/s and the parent's peak RSS growth
(after a warm-up that starts the workers).
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._approaches import make_bridge
from ._util import peak_rss_kib

__all__ = ["APPROACHES", "run", "small_cpu"]

APPROACHES = ("Bridge.process_map", "ProcessPoolExecutor.map")

Mapper = Callable[[Iterable[int]], Iterable[int]]


def small_cpu(x: int) -> int:
    """A small CPU-bound function (a few microseconds); workers import it by name."""
    total = 0
    for i in range(40):
        total += (x * i) % 7
    return total


def _items(n: int) -> Iterator[int]:
    yield from range(n)


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Items/s and peak RSS growth of mapping :func:`small_cpu` over *n* generated items."""
    workers = os.cpu_count() or 1
    chunksize = params["chunksize"]
    if approach == "Bridge.process_map":
        with make_bridge(loop_name, process_workers=workers) as b:
            return _measure(
                lambda items: b.process_map(small_cpu, items, chunksize=chunksize), params
            )
    if approach == "ProcessPoolExecutor.map":
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as executor:
            return _measure(
                lambda items: executor.map(small_cpu, items, chunksize=chunksize), params
            )
    raise ValueError(f"unknown approach {approach!r}")


def _measure(mapper: Mapper, params: dict[str, Any]) -> dict[str, Any]:
    n = params["n"]
    expected = [small_cpu(i) for i in range(1000)]
    if list(mapper(_items(1000))) != expected:  # warm-up: the workers start here
        raise AssertionError("wrong results in the warm-up")
    gc.collect()
    rss_before = peak_rss_kib()
    start = time.perf_counter()
    count = 0
    for value in mapper(_items(n)):
        if count < 1000 and value != expected[count]:
            raise AssertionError(f"wrong or out-of-order result at item {count}")
        count += 1
    wall = time.perf_counter() - start
    rss_after = peak_rss_kib()
    if count != n:
        raise AssertionError(f"{count} results for {n} items")
    return {
        "n": n,
        "wall_s": wall,
        "items_per_s": n / wall,
        "rss_growth_mib": (rss_after - rss_before) / 1024.0,
    }
