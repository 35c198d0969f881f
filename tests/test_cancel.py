"""Cancellation: from any thread, of pending and running jobs, delivered to the coroutine."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from helpers import Watched

from bridge import Bridge, Job, JobCancelled, JobState

NeverAwaitedCheck = Callable[[], contextlib.AbstractContextManager[None]]


async def value(x: Any) -> Any:
    return x


async def forever() -> None:
    await asyncio.sleep(3600)


def assert_cancelled(job: Job[Any]) -> None:
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert job.cancelled()
    assert job.state is JobState.CANCELLED


# -- pending and running jobs, from any thread ---------------------------------------------


def test_cancel_pending_job_it_never_starts(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    watched = Watched()
    coro = value(1)
    by_function = bridge.submit(watched, key="a")
    by_coroutine = bridge.submit(coro, key="b")
    assert by_function.cancel() is True
    assert by_coroutine.cancel() is True
    loop_blocker.release()
    assert_cancelled(by_function)
    assert_cancelled(by_coroutine)
    assert not watched.started.is_set()
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert by_function.info().started_at is None
    assert bridge.get("a") is None
    assert bridge.get("b") is None


def test_cancel_running_job_delivers_cancelled_error(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched)
    assert watched.started.wait(10)
    assert job.cancel() is True
    assert_cancelled(job)
    assert watched.got_cancelled.is_set()


def test_cancel_from_another_thread(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched)
    assert watched.started.wait(10)
    thread = threading.Thread(target=job.cancel, name="hangup-callback")
    thread.start()
    thread.join()
    assert_cancelled(job)
    assert watched.got_cancelled.is_set()


def test_cancel_from_a_thread_not_created_by_threading(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched)
    assert watched.started.wait(10)
    answers: queue.Queue[object] = queue.Queue()
    _thread.start_new_thread(lambda: answers.put(job.cancel()), ())
    assert answers.get(timeout=10) is True
    assert_cancelled(job)


def test_cancel_from_the_loop_thread(bridge: Bridge) -> None:
    watched = Watched()
    victim = bridge.submit(watched)
    assert watched.started.wait(10)

    async def cancel_it() -> bool:
        return victim.cancel()

    assert bridge.call(cancel_it) is True
    assert_cancelled(victim)
    assert watched.got_cancelled.is_set()


def test_cancel_from_inside_the_job_itself(bridge: Bridge) -> None:
    box: list[Job[Any]] = []
    ready = threading.Event()

    async def cancel_myself() -> None:
        ready.wait(10)
        box[0].cancel()
        await asyncio.sleep(3600)

    box.append(bridge.submit(cancel_myself))
    ready.set()
    assert_cancelled(box[0])


def test_call_cancelled_by_another_thread_raises_job_cancelled(bridge: Bridge) -> None:
    watched = Watched()

    def canceller() -> None:
        assert watched.started.wait(10)
        bridge.cancel("call:9")

    thread = threading.Thread(target=canceller)
    thread.start()
    with pytest.raises(JobCancelled):
        bridge.call(watched, key="call:9")
    thread.join()
    assert watched.got_cancelled.is_set()


# -- done only once the coroutine has unwound --------------------------------------------------


def test_job_is_done_only_after_the_coroutine_finished_unwinding(bridge: Bridge) -> None:
    started = threading.Event()
    unwinding = threading.Event()
    release = threading.Event()
    unwound = threading.Event()

    async def slow_cleanup() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            unwinding.set()
            # The loop keeps running while this cleanup waits for the test.
            await asyncio.to_thread(release.wait, 10)
            unwound.set()

    job = bridge.submit(slow_cleanup)
    assert started.wait(10)
    assert job.cancel() is True
    assert unwinding.wait(10)
    assert bridge.call(value, "loop alive") == "loop alive"
    assert not job.done()
    assert not job.cancelled()
    assert job.state is JobState.RUNNING
    _, not_done = concurrent.futures.wait([job], timeout=0.01)
    assert not_done == {job}
    with pytest.raises(TimeoutError):
        job.result(timeout=0.01)
    release.set()
    assert_cancelled(job)
    assert unwound.is_set()


def test_done_callback_runs_after_unwinding(bridge: Bridge) -> None:
    events: list[str] = []
    called = threading.Event()
    started = threading.Event()

    async def records() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)
            events.append("unwound")

    job = bridge.submit(records)

    def callback(_: object) -> None:
        events.append("done")
        called.set()

    job.add_done_callback(callback)
    assert started.wait(10)
    job.cancel()
    assert called.wait(10)
    assert events == ["unwound", "done"]


# -- cancel in the same loop tick as the start ------------------------------------------------


def test_cancel_right_after_submit_from_a_thread(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    with no_never_awaited():
        jobs = []
        for i in range(300):
            job = bridge.submit(value(i)) if i % 2 else bridge.submit(value, i)
            job.cancel()
            jobs.append(job)
        _, not_done = concurrent.futures.wait(jobs, timeout=10)
        assert not_done == set()
        for job in jobs:
            assert job.state in (JobState.CANCELLED, JobState.SUCCEEDED)
        del jobs, job
    stats = bridge.stats()
    assert stats.active == 0
    assert stats.submitted == stats.cancelled + stats.succeeded == 300


def test_cancel_in_the_same_loop_tick_as_the_start(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    """Submit and cancel on the loop thread, before the loop runs anything else."""

    async def storm() -> list[Job[Any]]:
        jobs = []
        for i in range(300):
            job = bridge.submit(value(i)) if i % 2 else bridge.submit(value, i)
            job.cancel()
            jobs.append(job)
        return jobs

    with no_never_awaited():
        jobs = bridge.call(storm)
        _, not_done = concurrent.futures.wait(jobs, timeout=10)
        assert not_done == set()
        assert all(job.state is JobState.CANCELLED for job in jobs)
        del jobs
    assert bridge.stats().active == 0


def test_replace_in_the_same_loop_tick_as_the_start(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    async def storm() -> list[Job[Any]]:
        return [bridge.submit(value(i), key="hangup", on_conflict="replace") for i in range(300)]

    with no_never_awaited():
        jobs = bridge.call(storm)
        _, not_done = concurrent.futures.wait(jobs, timeout=10)
        assert not_done == set()
        assert all(job.state is JobState.CANCELLED for job in jobs[:-1])
        assert jobs[-1].result() == 299
        del jobs
    stats = bridge.stats()
    # The storm job itself succeeded too.
    assert (stats.active, stats.cancelled, stats.succeeded) == (0, 299, 2)


def test_replace_right_after_submit_from_a_thread(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    with no_never_awaited():
        jobs = [bridge.submit(value(i), key="hangup", on_conflict="replace") for i in range(300)]
        _, not_done = concurrent.futures.wait(jobs, timeout=10)
        assert not_done == set()
        assert jobs[-1].result() == 299
        assert all(job.state in (JobState.CANCELLED, JobState.SUCCEEDED) for job in jobs)
        del jobs
    assert bridge.stats().active == 0
    assert bridge.get("hangup") is None


# -- Bridge.cancel(key) and cancel_all(kind) -----------------------------------------------------


def test_bridge_cancel_by_key(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched, key="hangup:3")
    other = bridge.submit(forever, key="hangup:4")
    assert watched.started.wait(10)
    assert bridge.cancel("hangup:3") is True
    assert_cancelled(job)
    assert watched.got_cancelled.is_set()
    assert bridge.cancel("hangup:3") is False  # no unfinished job has that key now
    assert bridge.cancel("no-such-key") is False
    assert not other.done()
    assert bridge.get("hangup:4") is other


def test_bridge_cancel_all_of_a_kind(bridge: Bridge) -> None:
    timers = [bridge.submit(forever, kind="timer") for _ in range(5)]
    calls = [bridge.submit(forever, kind="call") for _ in range(3)]
    assert bridge.cancel_all("timer") == 5
    for job in timers:
        assert_cancelled(job)
    assert not any(job.done() for job in calls)
    assert bridge.cancel_all("timer") == 0
    assert bridge.cancel_all("nothing") == 0
    assert bridge.cancel_all() == 3
    for job in calls:
        assert_cancelled(job)
    stats = bridge.stats()
    assert (stats.cancelled, stats.active) == (8, 0)


def test_cancel_all_includes_pending_jobs(bridge: Bridge, loop_blocker: Any) -> None:
    blocker = loop_blocker.block(bridge)
    pending = [bridge.submit(value, i, kind="tts") for i in range(10)]
    assert bridge.cancel_all("tts") == 10
    loop_blocker.release()
    for job in pending:
        assert_cancelled(job)
    assert blocker.result(timeout=10) is None


def test_cancel_of_finished_jobs_returns_false(bridge: Bridge) -> None:
    job = bridge.submit(value, 1, key="k")
    assert job.result(timeout=10) == 1
    assert job.cancel() is False
    assert bridge.cancel("k") is False
    assert bridge.cancel_all() == 0


def test_cancelled_counts_and_frees_the_key(bridge: Bridge) -> None:
    job = bridge.submit(forever, key="call:1")
    job.cancel()
    assert_cancelled(job)
    assert bridge.submit(value, 2, key="call:1").result(timeout=10) == 2
    stats = bridge.stats()
    assert (stats.cancelled, stats.succeeded, stats.active) == (1, 1, 0)


def test_a_second_cancel_does_not_interrupt_the_cleanup(bridge: Bridge) -> None:
    started = threading.Event()
    in_cleanup = threading.Event()
    second_cancel_sent = threading.Event()
    cleanup_done = threading.Event()

    async def call_flow() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            in_cleanup.set()
            # e.g. a retransmitted BYE cancels again while we say goodbye
            await asyncio.to_thread(second_cancel_sent.wait, 10)
            await asyncio.sleep(0)
            cleanup_done.set()

    job = bridge.submit(call_flow)
    assert started.wait(10)
    assert job.cancel()
    assert in_cleanup.wait(10)
    assert job.cancel()  # still True: the job is being cancelled
    second_cancel_sent.set()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert cleanup_done.is_set()
