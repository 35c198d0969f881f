"""Bridge.map: lazy, bounded, ordered or not; failures and early exit cancel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from bridge import Bridge, JobTimeout, WrongThread


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_ordered_results_in_input_order(bridge: Bridge) -> None:
    assert list(bridge.map(double, range(100), concurrency=7)) == [2 * i for i in range(100)]


def test_unordered_yields_every_result(bridge: Bridge) -> None:
    got = list(bridge.map(double, range(100), concurrency=7, ordered=False))
    assert sorted(got) == [2 * i for i in range(100)]


def test_unordered_yields_as_completed(bridge: Bridge) -> None:
    release_first = threading.Event()

    async def slow_first(x: int) -> int:
        if x == 0:
            await bridge.to_thread(release_first.wait)
        return x

    results = bridge.map(slow_first, range(5), concurrency=5, ordered=False)
    early = [next(results) for _ in range(4)]
    assert sorted(early) == [1, 2, 3, 4]
    release_first.set()
    assert list(results) == [0]


def test_progress_reports_total_when_known(bridge: Bridge) -> None:
    seen: list[tuple[int, int | None]] = []
    list(bridge.map(double, [1, 2, 3], on_progress=lambda d, t: seen.append((d, t))))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    seen.clear()
    list(bridge.map(double, (i for i in range(3)), on_progress=lambda d, t: seen.append((d, t))))
    assert seen == [(1, None), (2, None), (3, None)]


def test_items_are_pulled_lazily_within_the_bound(bridge: Bridge) -> None:
    pulled = 0
    release = threading.Event()
    four_running = threading.Barrier(5)

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield i

    async def hold(x: int) -> int:
        if x < 4:
            await bridge.to_thread(four_running.wait)
            await bridge.to_thread(release.wait)
        return x

    results = bridge.map(hold, items(), concurrency=4)
    consumer = threading.Thread(target=lambda: sum(results))
    consumer.start()
    four_running.wait(10)
    assert pulled == 4  # not one item more than the bound
    release.set()
    consumer.join(30)
    assert pulled == 1000


def test_first_failure_is_raised_and_cancels_in_flight(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    started: list[int] = []
    unwound: list[int] = []

    async def item(x: int) -> int:
        started.append(x)
        if x == 3:
            raise ValueError("bad apartment 3")
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.append(x)
        return x

    with pytest.raises(ValueError, match="bad apartment 3"):
        list(b.map(item, range(100), concurrency=8))
    report = b.shutdown(timeout=10)  # waits for the cancelled jobs to end
    assert report.cancelled == ()  # map had cancelled them all already
    assert report.stuck == ()
    assert max(started) < 8  # nothing past the first eight items was pulled
    assert sorted(unwound) == sorted(set(started) - {3})
    stats = b.stats()
    assert stats.failed == 1
    assert stats.cancelled == stats.submitted - 1  # every other one, started or not


def test_item_timeout_is_raised(bridge: Bridge) -> None:
    async def never(x: int) -> int:
        await asyncio.sleep(3600)
        return x

    with pytest.raises(JobTimeout):
        list(bridge.map(never, range(3), timeout=0.05))


@pytest.mark.parametrize("how", ["break", "close", "gc"])
def test_closing_early_cancels_the_rest(make_bridge: Callable[..., Bridge], how: str) -> None:
    b = make_bridge()
    started: list[int] = []
    unwound: list[int] = []

    async def item(x: int) -> int:
        started.append(x)
        if x == 0:
            return x
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.append(x)
        return x

    if how == "break":
        for value in b.map(item, range(10), concurrency=4):
            assert value == 0
            break
    else:
        results = b.map(item, range(10), concurrency=4)
        assert next(results) == 0
        if how == "close":
            results.close()
        else:
            del results  # CPython finalizes the generator at once
    report = b.shutdown(timeout=10)  # waits for the cancelled jobs to end
    assert report.cancelled == ()  # closing the map had cancelled them already
    stats = b.stats()
    assert stats.succeeded == 1  # item 0
    assert stats.cancelled == stats.submitted - 1  # those in flight, started or not
    assert sorted(unwound) == sorted(set(started) - {0})
    assert max(started) <= 3


def test_map_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    async def inside() -> str:
        try:
            bridge.map(double, [1])
        except WrongThread as exc:
            return str(exc)
        return "no error"

    assert "deadlock" in bridge.call(inside)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "concurrency"),
        ({"concurrency": 1.5}, TypeError, "concurrency"),
        ({"kind": ""}, TypeError, "kind"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"on_progress": 5}, TypeError, "on_progress"),
    ],
)
def test_bad_arguments(
    make_bridge: Callable[..., Bridge],
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    b = make_bridge()
    with pytest.raises(error, match=match):
        b.map(double, range(3), **kwargs)  # type: ignore[arg-type]
    assert b.stats().submitted == 0


def test_not_iterable_is_refused(bridge: Bridge) -> None:
    with pytest.raises(TypeError, match="iterable"):
        bridge.map(double, 42)  # type: ignore[call-overload]


MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    import bridge

    async def work(x):
        await asyncio.sleep(0)
        return x

    def rss_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with bridge.Bridge() as b:
        assert sum(b.map(work, range(2000))) == sum(range(2000))  # warm up
        before = rss_kib()
        total = sum(b.map(work, (i for i in range(128_319)), concurrency=16))
        after = rss_kib()
    print(json.dumps({"total": total, "growth_kib": after - before}))
    """
)


@pytest.mark.stress
def test_map_of_128319_generator_items_has_bounded_memory() -> None:
    """Peak RSS growth of a fresh process; a generous bound (the benchmark is stricter)."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["total"] == sum(range(128_319))
    assert result["growth_kib"] < 32 * 1024, result
