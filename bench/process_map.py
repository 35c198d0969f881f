"""Bridge.process_map vs ProcessPoolExecutor.map(chunksize=64): throughput and parent RSS.

Each side runs in a fresh interpreter (``python -m bench.process_map one <side>``),
so its peak RSS growth is its own: ``ru_maxrss`` after the run minus the RSS
before it. Run ``python -m bench.process_map`` for both and the ratio.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time

N_ITEMS = 128_319
CHUNKSIZE = 64


def small_cpu(x: int) -> int:
    """A small CPU-bound function (a few microseconds)."""
    total = 0
    for i in range(40):
        total += (x * i) % 7
    return total


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _run_one(side: str) -> dict[str, float]:
    workers = os.cpu_count() or 1
    items = (i for i in range(N_ITEMS))
    expected = sum(small_cpu(i) for i in range(1000))
    if side == "bridge":
        from bridge import Bridge

        b = Bridge("bench", process_workers=workers)
        list(b.process_map(small_cpu, range(workers * 4)))  # start the pool
        before = _rss_kib()
        start = time.perf_counter()
        total = 0
        first = 0
        for n, value in enumerate(b.process_map(small_cpu, items, chunksize=CHUNKSIZE)):
            total += value
            if n < 1000:
                first += value
        elapsed = time.perf_counter() - start
        b.shutdown()
    else:
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as ex:
            list(ex.map(small_cpu, range(workers * 4)))
            before = _rss_kib()
            start = time.perf_counter()
            total = 0
            first = 0
            for n, value in enumerate(ex.map(small_cpu, items, chunksize=CHUNKSIZE)):
                total += value
                if n < 1000:
                    first += value
            elapsed = time.perf_counter() - start
    assert first == expected
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": elapsed, "items_per_s": N_ITEMS / elapsed, "rss_growth_kib": peak - before}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "one":
        print(json.dumps(_run_one(sys.argv[2])))
        return
    results = {}
    for side in ("executor", "bridge"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.process_map", "one", side],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[side] = json.loads(out.strip().splitlines()[-1])
    ratio = results["bridge"]["items_per_s"] / results["executor"]["items_per_s"]
    print(json.dumps({"items": N_ITEMS, **results, "throughput_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
