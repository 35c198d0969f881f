"""Keys: unique among unfinished jobs; reject, replace or join on conflict."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from bridge import Bridge, DuplicateJob, Job, JobCancelled, JobState


async def value(x: Any) -> Any:
    return x


async def forever() -> None:
    await asyncio.sleep(3600)


async def fail() -> None:
    raise RuntimeError("failed")


async def open_gate(event: asyncio.Event) -> None:
    event.set()


def test_get_returns_the_unfinished_job_with_the_key(bridge: Bridge) -> None:
    job = bridge.submit(forever, key="call:1")
    assert bridge.get("call:1") is job
    assert bridge.get("call:2") is None
    job.cancel()
    concurrent.futures.wait([job], timeout=10)
    assert bridge.get("call:1") is None


def test_reject_is_the_default(bridge: Bridge) -> None:
    first = bridge.submit(forever, key="call:1")
    with pytest.raises(DuplicateJob, match="call:1"):
        bridge.submit(value, 2, key="call:1")
    with pytest.raises(DuplicateJob):
        bridge.submit(value, 2, key="call:1", on_conflict="reject")
    assert bridge.get("call:1") is first
    assert not first.done()
    assert bridge.stats().rejected == 2


def test_different_keys_and_no_keys_do_not_conflict(bridge: Bridge) -> None:
    jobs = [bridge.submit(value, i, key=f"k{i}") for i in range(5)]
    jobs += [bridge.submit(value, i) for i in range(5)]
    assert [job.result(timeout=10) for job in jobs] == [0, 1, 2, 3, 4] * 2


def test_replace_cancels_the_old_job_and_runs_the_new_one(bridge: Bridge) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def old_timer() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    old = bridge.submit(old_timer, key="hangup:1")
    assert started.wait(10)
    new = bridge.submit(value, "new", key="hangup:1", on_conflict="replace")
    assert new is not old
    assert new.result(timeout=10) == "new"
    with pytest.raises(JobCancelled):
        old.result(timeout=10)
    assert cancelled.is_set()
    assert old.state is JobState.CANCELLED


def test_replace_old_job_finishing_late_keeps_the_new_jobs_key(bridge: Bridge) -> None:
    """The old job unwinds after the new one took its key: the key stays the new job's."""
    started = threading.Event()
    unwinding = threading.Event()
    finish_unwinding = asyncio.Event()

    async def slow_to_unwind() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            unwinding.set()
            await finish_unwinding.wait()

    old = bridge.submit(slow_to_unwind, key="k")
    assert started.wait(10)
    new = bridge.submit(forever, key="k", on_conflict="replace")
    assert unwinding.wait(10)
    assert bridge.get("k") is new
    assert not old.done()
    bridge.submit(open_gate, finish_unwinding)
    with pytest.raises(JobCancelled):
        old.result(timeout=10)
    assert bridge.get("k") is new
    assert new.state is JobState.RUNNING
    with pytest.raises(DuplicateJob):
        bridge.submit(value, 1, key="k")
    new.cancel()
    concurrent.futures.wait([new], timeout=10)
    assert bridge.get("k") is None


def test_replace_without_an_existing_job_just_submits(bridge: Bridge) -> None:
    job = bridge.submit(value, 1, key="fresh", on_conflict="replace")
    assert job.result(timeout=10) == 1


def test_replace_of_a_pending_job(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    ran: list[str] = []

    async def record(name: str) -> str:
        ran.append(name)
        return name

    old = bridge.submit(record, "old", key="k")
    new = bridge.submit(record, "new", key="k", on_conflict="replace")
    loop_blocker.release()
    assert new.result(timeout=10) == "new"
    with pytest.raises(JobCancelled):
        old.result(timeout=10)
    assert ran == ["new"]


def test_join_returns_the_existing_job_and_closes_the_coroutine(bridge: Bridge) -> None:
    first = bridge.submit(forever, key="call:1")
    coro = value("never runs")
    joined = bridge.submit(coro, key="call:1", on_conflict="join")
    assert joined is first
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    called: list[int] = []

    async def not_called() -> None:
        called.append(1)

    assert bridge.submit(not_called, key="call:1", on_conflict="join") is first
    stats = bridge.stats()
    assert stats.submitted == 1
    assert stats.active == 1
    assert stats.rejected == 0
    first.cancel()
    concurrent.futures.wait([first], timeout=10)
    assert called == []


def test_join_without_an_existing_job_just_submits(bridge: Bridge) -> None:
    job = bridge.submit(value, 3, key="fresh", on_conflict="join")
    assert job.result(timeout=10) == 3


def test_join_from_many_threads_yields_one_job(bridge: Bridge) -> None:
    barrier = threading.Barrier(8)
    jobs: list[Job[Any]] = []
    lock = threading.Lock()

    def joiner() -> None:
        barrier.wait(10)
        job = bridge.submit(forever, key="shared", on_conflict="join")
        with lock:
            jobs.append(job)

    threads = [threading.Thread(target=joiner) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(job) for job in jobs}) == 1
    assert bridge.stats().submitted == 1


def test_replace_from_many_threads_leaves_exactly_one_job(bridge: Bridge) -> None:
    barrier = threading.Barrier(8)
    jobs: list[Job[Any]] = []
    lock = threading.Lock()

    def replacer() -> None:
        barrier.wait(10)
        for _ in range(20):
            job = bridge.submit(forever, key="shared", on_conflict="replace")
            with lock:
                jobs.append(job)

    threads = [threading.Thread(target=replacer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    survivor = bridge.get("shared")
    assert survivor is not None
    others = [job for job in jobs if job is not survivor]
    assert len(others) == len(jobs) - 1
    _, not_done = concurrent.futures.wait(others, timeout=10)
    assert not_done == set()
    assert all(job.cancelled() for job in others)
    assert bridge.stats().active == 1
    assert [info.key for info in bridge.jobs()] == ["shared"]


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled", "timed_out"])
def test_key_is_free_the_moment_result_returns(bridge: Bridge, outcome: str) -> None:
    """A caller may reuse the key right after result() returns (any outcome)."""
    for i in range(100):
        key = f"call:{i % 3}"
        job = _finished_job(bridge, outcome, key)
        assert job.done()
        assert bridge.get(key) is None
        again = bridge.submit(value, i, key=key)  # must not raise DuplicateJob
        assert again.result(timeout=10) == i


def _finished_job(bridge: Bridge, outcome: str, key: str) -> Job[Any]:
    if outcome == "succeeded":
        job = bridge.submit(value, 1, key=key)
    elif outcome == "failed":
        job = bridge.submit(fail, key=key)
    elif outcome == "cancelled":
        job = bridge.submit(forever, key=key)
        job.cancel()
    else:
        job = bridge.submit(forever, key=key, timeout=0)
    try:
        job.result(timeout=10)
    except (RuntimeError, JobCancelled, TimeoutError):
        pass
    return job


def test_key_is_free_inside_the_done_callback(bridge: Bridge) -> None:
    seen: list[object] = []
    called = threading.Event()

    def callback(_: object) -> None:
        seen.append(bridge.get("k"))
        called.set()

    job = bridge.submit(forever, key="k")
    job.add_done_callback(callback)
    job.cancel()
    assert called.wait(10)
    assert seen == [None]


def test_key_is_free_for_an_awaiting_coroutine(bridge: Bridge) -> None:
    async def reuse() -> Any:
        first = bridge.submit(value, 1, key="k")
        await first
        second = bridge.submit(value, 2, key="k")
        return await second

    assert bridge.call(reuse) == 2


def test_join_of_a_coroutine_from_a_plain_callable_closes_it(bridge: Bridge) -> None:
    made: list[Coroutine[Any, Any, Any]] = []

    def factory() -> Coroutine[Any, Any, Any]:
        made.append(value(1))
        return made[-1]

    first = bridge.submit(forever, key="k")
    assert bridge.submit(factory, key="k", on_conflict="join") is first
    assert [inspect.getcoroutinestate(c) for c in made] == [inspect.CORO_CLOSED]
    first.cancel()
