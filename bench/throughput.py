"""Case 2: throughput of several threads doing submit-and-wait at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._approaches import blocking_call

__all__ = ["measure", "run"]


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Round trips per second with ``params["threads"]`` threads."""
    with blocking_call(approach, loop_name) as fn:
        return measure(fn, params["threads"], params["per_thread"], params["warmup"])


def measure(fn: Callable[[Any], Any], threads: int, per_thread: int, warmup: int) -> dict[str, Any]:
    """Start *threads* threads at a barrier, each doing *per_thread* calls of *fn*."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(warmup):
                fn(i)
            barrier.wait()
            for i in range(per_thread):
                if fn(i) != i:
                    raise AssertionError("wrong value")
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)
            barrier.abort()

    pool = [threading.Thread(target=worker, name=f"caller-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    calls = threads * per_thread
    return {"calls": calls, "wall_s": wall, "calls_per_s": calls / wall}
