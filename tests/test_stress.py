"""Stress: many threads at once, shutdown under load, and stats under random operations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import Bridge, BridgeClosed, DuplicateJob, Job, JobState

pytestmark = pytest.mark.stress

NeverAwaitedCheck = Callable[[], contextlib.AbstractContextManager[None]]


async def double(x: int) -> int:
    return 2 * x


async def forever() -> None:
    await asyncio.sleep(3600)


async def fail() -> None:
    raise ValueError("failed")


def test_32_threads_x_300_calls_nothing_lost(bridge: Bridge) -> None:
    threads_n, calls_n = 32, 300
    barrier = threading.Barrier(threads_n)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            barrier.wait(30)
            results[t] = [bridge.call(double, t * calls_n + i) for i in range(calls_n)]
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for t in range(threads_n):
        assert results[t] == [2 * (t * calls_n + i) for i in range(calls_n)]
    stats = bridge.stats()
    assert stats.submitted == stats.succeeded == threads_n * calls_n
    assert (stats.failed, stats.cancelled, stats.timed_out, stats.active) == (0, 0, 0, 0)


def test_shutdown_while_8_threads_keep_submitting(no_never_awaited: NeverAwaitedCheck) -> None:
    b = Bridge(name="under-load")
    b.start()
    threads_n = 8
    barrier = threading.Barrier(threads_n + 1)
    enough = threading.Event()
    lock = threading.Lock()
    accepted: list[tuple[Job[Any], int | None]] = []
    refused = [0] * threads_n
    unexpected: list[BaseException] = []

    def submitter(t: int) -> None:
        rng = random.Random(t)
        barrier.wait(30)
        i = 0
        while True:
            i += 1
            n = t * 1_000_000 + i
            choice = rng.randrange(5)
            try:
                if choice == 0:
                    entry = (b.submit(double(n)), n)  # a coroutine object
                elif choice == 1:
                    entry = (b.submit(double, n), n)
                elif choice == 2:
                    entry = (b.submit(forever), None)
                elif choice == 3:
                    key = f"call:{t}:{rng.randrange(3)}"
                    entry = (b.submit(forever(), key=key, on_conflict="replace"), None)
                else:
                    entry = (b.submit(double(n), key=f"k:{t}", on_conflict="join"), None)
            except BridgeClosed:
                refused[t] += 1
                return
            except BaseException as exc:
                unexpected.append(exc)
                raise
            with lock:
                accepted.append(entry)
                if len(accepted) >= 2000:
                    enough.set()

    with no_never_awaited():
        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        barrier.wait(30)
        assert enough.wait(30)
        report = b.shutdown(timeout=0.05)
        for thread in threads:
            thread.join()
        assert unexpected == []
        assert refused == [1] * threads_n  # every thread saw BridgeClosed, then stopped
        jobs = {id(job): job for job, _ in accepted}
        _, not_done = concurrent.futures.wait(list(jobs.values()), timeout=10)
        assert not_done == set()
        for job, expected in accepted:
            assert job.state.finished
            if expected is not None and job.state is JobState.SUCCEEDED:
                assert job.result() == 2 * expected
        accepted.clear()
        del jobs, job
    stats = b.stats()
    assert stats.active == 0
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled + stats.timed_out
    assert report.stuck == ()


def test_many_threads_replace_cancel_and_join_on_shared_keys(bridge: Bridge) -> None:
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    lock = threading.Lock()
    jobs: list[Job[Any]] = []

    def worker(t: int) -> None:
        rng = random.Random(100 + t)
        barrier.wait(30)
        for _ in range(200):
            key = f"shared:{rng.randrange(4)}"
            action = rng.randrange(4)
            if action == 0:
                job = bridge.submit(forever, key=key, kind="forever", on_conflict="replace")
            elif action == 1:
                job = bridge.submit(forever(), key=key, kind="forever", on_conflict="join")
            elif action == 2:
                bridge.cancel(key)
                continue
            else:
                try:
                    job = bridge.submit(double, 1, key=key, kind="quick")
                except DuplicateJob:
                    continue
            with lock:
                jobs.append(job)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One round trip through the loop delivers the cancellations requested before it
    # (forever() unwinds in one step), so the keys' owners are settled afterwards.
    assert bridge.call(double, 0) == 0
    owners = {key: bridge.get(key) for key in (f"shared:{i}" for i in range(4))}
    # Every job but the forever-running owners of the keys ends by itself: the
    # others were replaced or cancelled (and are unwinding), or return at once.
    others = [job for job in jobs if job.kind == "quick" or owners[job.key or ""] is not job]
    _, not_done = concurrent.futures.wait(others, timeout=10)
    assert not_done == set()
    live = {owner.id for owner in owners.values() if owner is not None and owner.kind == "forever"}
    # Every unfinished job owns its key (so one per key at most); an owner that a
    # cancel() reached may have finished meanwhile, hence a subset.
    assert {info.id for info in bridge.jobs()} <= live
    bridge.cancel_all()
    _, not_done = concurrent.futures.wait(jobs, timeout=10)
    assert not_done == set()
    stats = bridge.stats()
    assert stats.active == 0
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled + stats.timed_out


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("value"), st.sampled_from([None, "a", "b", "c"])),
        st.tuples(st.just("forever"), st.sampled_from([None, "a", "b", "c"])),
        st.tuples(st.just("replace"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("join"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("fail"), st.none()),
        st.tuples(st.just("timeout"), st.none()),
        st.tuples(st.just("cancel_job"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("cancel_key"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("cancel_all"), st.none()),
    ),
    max_size=40,
)


def assert_consistent(b: Bridge) -> None:
    s = b.stats()
    assert s.submitted == s.succeeded + s.failed + s.cancelled + s.timed_out + s.active


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_random_operations_keep_stats_consistent(operations: list[tuple[str, Any]]) -> None:
    b = Bridge(name="property")
    b.start()
    jobs: list[Job[Any]] = []
    rejected = 0
    try:
        for op, arg in operations:
            try:
                if op == "value":
                    jobs.append(b.submit(double, 1, key=arg))
                elif op == "forever":
                    jobs.append(b.submit(forever, key=arg))
                elif op == "replace":
                    jobs.append(b.submit(forever(), key=arg, on_conflict="replace"))
                elif op == "join":
                    joined = b.submit(forever, key=arg, on_conflict="join")
                    if all(joined is not job for job in jobs):
                        jobs.append(joined)
                elif op == "fail":
                    job = b.submit(fail)
                    job.add_done_callback(lambda j: j.exception())  # observed: not logged
                    jobs.append(job)
                elif op == "timeout":
                    jobs.append(b.submit(forever, timeout=0))
                elif op == "cancel_job" and jobs:
                    jobs[arg % len(jobs)].cancel()
                elif op == "cancel_key":
                    b.cancel(arg)
                elif op == "cancel_all":
                    b.cancel_all()
            except DuplicateJob:
                rejected += 1
            assert_consistent(b)
            assert b.stats().active == len(b.jobs())
    finally:
        b.shutdown(timeout=0)
    assert all(job.done() for job in jobs)
    stats = b.stats()
    assert stats.active == 0
    assert stats.submitted == len(jobs)
    assert stats.rejected == rejected
    by_state = {state: sum(job.state is state for job in jobs) for state in JobState}
    assert stats.succeeded == by_state[JobState.SUCCEEDED]
    assert stats.failed == by_state[JobState.FAILED]
    assert stats.cancelled == by_state[JobState.CANCELLED]
    assert stats.timed_out == by_state[JobState.TIMED_OUT]
