"""Helpers shared by the cases: clocks, percentiles, memory, loops."""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import threading
from collections.abc import Iterator, Sequence

__all__ = [
    "LOOPS",
    "echo",
    "loop_thread",
    "new_loop",
    "peak_rss_kib",
    "percentile",
]

#: The event loops a case may run on.
LOOPS = ("asyncio", "uvloop")


async def echo(value: object) -> object:
    """The trivial coroutine every round trip runs: no work, one hop each way."""
    return value


def percentile(ordered: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0..100) of an already sorted sequence (nearest rank)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def peak_rss_kib() -> int:
    """The process's peak resident set size so far, in KiB (Linux ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    """User plus system CPU time the process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def new_loop(loop_name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the named kind."""
    if loop_name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if loop_name != "asyncio":
        raise ValueError(f"unknown loop {loop_name!r}")
    return asyncio.new_event_loop()


@contextlib.contextmanager
def loop_thread(loop_name: str) -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running forever on a daemon thread: the stdlib baseline's set-up."""
    loop = new_loop(loop_name)
    thread = threading.Thread(target=loop.run_forever, name="stdlib-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: what a loop really is (checked, not assumed)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
