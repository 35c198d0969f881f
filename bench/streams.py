"""Case 9: a stream loop -> thread through ``Bridge.iterate``.

Throughput: an async generator yields ``n`` small ints and one thread takes
them, through ``Bridge.iterate(..., buffer=64)`` and through the hand-built
way (a ``Bridge.channel(maxsize=64)``, a job that puts every item and then
an end marker, a thread that gets until the marker). Latency: with
``buffer=1``, the time one ``next()`` takes, item by item, against the round
trip of ``Bridge.call`` of a trivial coroutine on the same bridge set-up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ._approaches import make_bridge
from ._util import percentile

__all__ = ["PLAN", "run", "section"]

#: (approach, variant) pairs, each one measurement per repetition (asyncio).
PLAN = (
    ("Bridge.iterate", "throughput"),
    ("channel+job", "throughput"),
    ("Bridge.iterate", "latency"),
    ("Bridge.call", "latency"),
)

_END = object()


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def echo(value: int) -> int:
    return value


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Items per second (throughput) or per-item microseconds (latency)."""
    with make_bridge(loop_name) as b:
        if params["measure"] == "throughput":
            n = params["n"]
            wall = _iterate(b, n, 64) if approach == "Bridge.iterate" else _channel(b, n, 64)
            return {"n": n, "wall_s": wall, "items_per_s": n / wall}
        n = params["latency_n"]
        samples = _iterate_latency(b, n) if approach == "Bridge.iterate" else _call_latency(b, n)
        samples.sort()
        return {
            "n": n,
            "median_us": percentile(samples, 50),
            "p99_us": percentile(samples, 99),
        }


def _iterate(b: Any, n: int, buffer: int) -> float:
    start = time.perf_counter()
    expected = 0
    with b.iterate(numbers, n, buffer=buffer) as items:
        for item in items:
            if item != expected:
                raise AssertionError("items out of order")
            expected += 1
    end = time.perf_counter()
    if expected != n:
        raise AssertionError(f"{expected} items of {n}")
    return end - start


def _channel(b: Any, n: int, maxsize: int) -> float:
    start = time.perf_counter()
    channel = b.channel(maxsize)

    async def produce() -> None:
        put = channel.async_q.put
        for i in range(n):
            await put(i)
        await put(_END)

    job = b.submit(produce, timeout=None)
    get = channel.sync_q.get
    expected = 0
    while (item := get()) is not _END:
        if item != expected:
            raise AssertionError("items out of order")
        expected += 1
    end = time.perf_counter()
    job.result()
    if expected != n:
        raise AssertionError(f"{expected} items of {n}")
    return end - start


def _iterate_latency(b: Any, n: int) -> list[float]:
    samples = []
    clock = time.perf_counter
    with b.iterate(numbers, n + 1, buffer=1) as items:
        next(items)  # the first item waits for the job to start: not a step
        for i in range(1, n + 1):
            t0 = clock()
            item = next(items)
            samples.append((clock() - t0) * 1e6)
            if item != i:
                raise AssertionError("items out of order")
    return samples


def _call_latency(b: Any, n: int) -> list[float]:
    samples = []
    clock = time.perf_counter
    b.call(echo, 0)
    for i in range(n):
        t0 = clock()
        if b.call(echo, i) != i:
            raise AssertionError("wrong value")
        samples.append((clock() - t0) * 1e6)
    return samples


def section(summary: dict[str, Any]) -> list[str]:
    """The report's section for this case (empty figures if it did not run)."""

    def get(approach: str, variant: str) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = summary.get(f"streams/{approach}/asyncio/{variant}")
        return entry

    lines = [
        "An async generator yielding small ints on the loop, consumed by one thread. "
        "Throughput: `Bridge.iterate(buffer=64)` against a hand-built "
        "`Bridge.channel(maxsize=64)` + producer job + end marker. Latency: one "
        "`next()` with `buffer=1` against one `Bridge.call` round trip.",
        "",
        "| measure | approach | items | figure | vs baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    it, ch = get("Bridge.iterate", "throughput"), get("channel+job", "throughput")
    if it is not None and ch is not None:
        ratio = it["items_per_s"] / ch["items_per_s"]
        lines.append(
            f"| throughput | Bridge.iterate | {it['n']:,} | {it['items_per_s']:,.0f} items/s "
            f"| {ratio:.2f}x |"
        )
        lines.append(
            f"| throughput | channel+job | {ch['n']:,} | {ch['items_per_s']:,.0f} items/s | 1.00x |"
        )
    il, cl = get("Bridge.iterate", "latency"), get("Bridge.call", "latency")
    if il is not None and cl is not None:
        for name, s in (("Bridge.iterate buffer=1", il), ("Bridge.call", cl)):
            ratio = s["median_us"] / cl["median_us"]
            lines.append(
                f"| per item, median / p99 | {name} | {s['n']:,} | "
                f"{s['median_us']:.1f} / {s['p99_us']:.1f} µs | {ratio:.2f}x |"
            )
    lines.append("")
    return lines
