"""Bridge.map iterators: never iterated on the loop thread (#19); results before items."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from bridge import Bridge, WrongThread


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def noop() -> None:
    pass


@pytest.mark.parametrize("started", [False, True], ids=["unstarted", "after-a-result"])
def test_iterating_on_the_loop_thread_raises_wrong_thread(bridge: Bridge, started: bool) -> None:
    """The check runs at every next(), not only when map() is called.

    Before the fix the job's next() waited on the loop thread for jobs that
    need that loop: the job never returned (here: TimeoutError after 10 s).
    """
    release = threading.Event()

    async def gated(x: int) -> int:
        if x > 0:
            await bridge.to_thread(release.wait)
        return 2 * x

    results = bridge.map(gated, range(4), concurrency=2)
    if started:
        assert next(results) == 0  # the generator now waits at a yield, jobs in flight

    async def iterate_on_the_loop() -> str:
        try:
            next(results)
        except WrongThread as exc:
            return str(exc)
        return "no error"

    job = bridge.submit(iterate_on_the_loop, timeout=None)
    try:
        message = job.result(timeout=10)
    finally:
        release.set()  # let a blocked old core unwind at teardown
    assert "loop thread" in message
    assert "deadlock" in message
    # The loop was not blocked, and the iterator is intact on its own thread.
    assert bridge.call(double, 5, timeout=10) == 10
    remaining = list(results)
    assert remaining == ([2, 4, 6] if started else [0, 2, 4, 6])


def test_close_on_the_loop_thread_cancels_the_jobs_in_flight(
    make_bridge: Callable[..., Bridge],
) -> None:
    """close() is not iteration: it never waits, so the loop thread may call it."""
    b = make_bridge()
    others_running = asyncio.Event()  # bound to the bridge's loop when first awaited
    running: list[int] = []

    async def first_only(x: int) -> int:
        if x == 0:  # item 0 ends only once items 1 and 2 run: they are in flight
            await others_running.wait()
            return x
        running.append(x)
        if len(running) == 2:
            others_running.set()
        await asyncio.sleep(3600)
        return x

    results = b.map(first_only, range(10), concurrency=3)
    assert next(results) == 0  # the other jobs are in flight

    async def close_it() -> None:
        results.close()  # type: ignore[attr-defined]

    b.call(close_it, timeout=10)
    with pytest.raises(StopIteration):
        next(results)
    report = b.shutdown(timeout=10)  # waits for the cancelled jobs to unwind
    assert report.cancelled == ()  # closing the map had cancelled them already
    assert report.stuck == ()
    stats = b.stats()
    assert stats.cancelled >= 2  # items 1 and 2 at least
    assert stats.submitted == stats.succeeded + stats.cancelled  # item 0 and close_it


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_ready_result_is_yielded_before_more_items_are_pulled(
    bridge: Bridge, ordered: bool
) -> None:
    """A slow iterable does not hold back a result that is ready.

    Before the fix, map() pulled ``concurrency`` items before it yielded
    anything: "asked 1", "asked 2", "asked 3", then "result 0".
    """
    asked_for_1 = threading.Event()
    first_returned = threading.Event()
    events: list[str] = []

    async def work(x: int) -> int:
        if x == 0:
            await bridge.to_thread(asked_for_1.wait)  # not ready before item 1 is asked
            first_returned.set()
        else:
            await asyncio.sleep(3600)  # the others stay in flight: the map is not done
        return x

    def slow_items() -> Iterator[int]:
        events.append("asked 0")
        yield 0
        events.append("asked 1")
        asked_for_1.set()
        # Item 1 comes only once job 0 has finished: its coroutine has returned,
        # and a loop round trip later the job has been resolved.
        assert first_returned.wait(10)
        bridge.call(noop, timeout=10)
        for i in range(1, 8):
            if i > 1:
                events.append(f"asked {i}")
            yield i

    results = bridge.map(work, slow_items(), concurrency=4, ordered=ordered)
    assert next(results) == 0
    events.append("result 0")
    results.close()  # type: ignore[attr-defined]
    # Item 1 was already being produced when job 0's result became due;
    # nothing was pulled after that, and the window was far from full.
    assert events == ["asked 0", "asked 1", "result 0"]


def test_failure_of_a_later_item_is_raised_before_more_items(bridge: Bridge) -> None:
    """Ordered mode: a failure is due at once, even while an earlier item runs."""
    failed = threading.Event()
    release = threading.Event()
    pulled: list[int] = []

    async def work(x: int) -> int:
        if x == 0:
            await bridge.to_thread(release.wait)
        if x == 1:
            failed.set()
            raise ValueError("item 1")
        return x

    def items() -> Iterator[int]:
        for i in range(100):
            pulled.append(i)
            yield i
            if i == 1:
                assert failed.wait(10)
                bridge.call(noop, timeout=10)  # job 1 has been resolved by now

    try:
        with pytest.raises(ValueError, match="item 1"):
            list(bridge.map(work, items(), concurrency=8))
    finally:
        release.set()
    assert pulled == [0, 1, 2]  # item 2 was in production when the failure came
