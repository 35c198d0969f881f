"""Per-kind concurrency limits: Bridge(limits=...)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from bridge import Bridge, JobCancelled, JobState, JobTimeout


class Gate:
    """An asyncio.Event living on a bridge's loop, opened from any thread."""

    def __init__(self, b: Bridge) -> None:
        async def make() -> asyncio.Event:
            return asyncio.Event()

        self._bridge = b
        self.event = b.call(make)

    async def wait(self) -> None:
        await self.event.wait()

    def open(self) -> None:
        async def set_event() -> None:
            self.event.set()

        self._bridge.call(set_event)


def test_lane_runs_at_most_limit_jobs_in_fifo_order(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(limits={"tts": 2})
    gate = Gate(b)
    running = 0
    peak = 0
    order: list[int] = []
    two_running = threading.Event()

    async def tts(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(i)
        if running == 2:
            two_running.set()
        try:
            await gate.wait()
        finally:
            running -= 1
        return i

    jobs = [b.submit(tts, i, kind="tts") for i in range(10)]
    assert two_running.wait(10)
    stats = b.stats()
    assert stats.running_by_kind == {"tts": 2}
    assert stats.pending_by_kind == {"tts": 8}
    assert [j.state for j in jobs[2:]] == [JobState.PENDING] * 8
    gate.open()
    assert [j.result(timeout=10) for j in jobs] == list(range(10))
    assert peak == 2
    assert order == list(range(10))


def test_unlimited_kinds_are_not_held_back_by_a_full_lane(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(limits={"tts": 1})
    gate = Gate(b)

    async def wait_gate() -> None:
        await gate.wait()

    async def quick() -> str:
        return "done"

    blocked = [b.submit(wait_gate, kind="tts") for _ in range(3)]
    assert b.call(quick, kind="http") == "done"
    gate.open()
    for job in blocked:
        job.result(timeout=10)


def test_deadline_counts_while_waiting_in_the_lane(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(limits={"tts": 1})
    gate = Gate(b)

    async def wait_gate() -> None:
        await gate.wait()

    holder = b.submit(wait_gate, kind="tts", timeout=None)
    waiter = b.submit(wait_gate, kind="tts", timeout=0.05)
    with pytest.raises(JobTimeout):
        waiter.result(timeout=10)
    assert waiter.state is JobState.TIMED_OUT
    assert waiter.info().started_at is None  # it never got a place
    assert holder.state is JobState.RUNNING
    gate.open()
    holder.result(timeout=10)


def test_cancelled_waiting_job_never_starts_and_frees_no_place(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(limits={"tts": 1})
    gate = Gate(b)
    started: list[str] = []
    first_started = threading.Event()

    async def job(name: str) -> str:
        started.append(name)
        first_started.set()
        await gate.wait()
        return name

    first = b.submit(job, "first", kind="tts")
    second = b.submit(job, "second", kind="tts")
    third = b.submit(job, "third", kind="tts")
    assert first_started.wait(10)
    assert second.cancel()
    with pytest.raises(JobCancelled):
        second.result(timeout=10)
    assert b.stats().running_by_kind == {"tts": 1}
    gate.open()
    assert first.result(timeout=10) == "first"
    assert third.result(timeout=10) == "third"
    assert started == ["first", "third"]


def test_cancelling_a_running_lane_job_starts_the_next(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(limits={"tts": 1})
    gate = Gate(b)
    first_running = threading.Event()

    async def hold() -> None:
        first_running.set()
        await gate.wait()

    async def after() -> str:
        return "next"

    first = b.submit(hold, kind="tts")
    queued = b.submit(after, kind="tts")
    assert first_running.wait(10)
    first.cancel()
    assert queued.result(timeout=10) == "next"
    assert first.state is JobState.CANCELLED
    gate.open()


@pytest.mark.stress
def test_lane_limit_holds_under_many_submitting_threads(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(limits={"tts": 3})
    running = 0
    peak = 0
    threads, per_thread = 16, 50
    barrier = threading.Barrier(threads)

    async def tts(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        return i

    results: list[list[int]] = [[] for _ in range(threads)]

    def submitter(t: int) -> None:
        barrier.wait()
        jobs = [b.submit(tts, t * per_thread + i, kind="tts") for i in range(per_thread)]
        results[t] = [j.result(timeout=30) for j in jobs]

    workers = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sorted(v for r in results for v in r) == list(range(threads * per_thread))
    assert peak == 3
    assert b.stats().succeeded >= threads * per_thread


@pytest.mark.parametrize(
    ("limits", "error", "match"),
    [
        ({"tts": 0}, ValueError, r"limits\['tts'\]"),
        ({"tts": -1}, ValueError, r"limits\['tts'\]"),
        ({"tts": 1.5}, TypeError, r"limits\['tts'\]"),
        ({"": 1}, TypeError, "kind"),
        ([("tts", 1)], TypeError, "limits"),
    ],
)
def test_bad_limits_are_refused(limits: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Bridge(limits=limits)  # type: ignore[arg-type]
