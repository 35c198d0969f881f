"""Timeouts: per job, per kind, the default, or none; counted from submit()."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import Watched

from bridge import Bridge, BridgeError, Job, JobCancelled, JobState, JobTimeout


async def value(x: Any) -> Any:
    return x


def timeout_of(job: Job[Any]) -> float | None:
    info = job.info()
    if info.deadline is None:
        return None
    return info.deadline - info.submitted_at


def test_job_timeout_is_a_timeout_error() -> None:
    assert issubclass(JobTimeout, TimeoutError)
    assert issubclass(JobTimeout, BridgeError)


def test_per_job_timeout_cancels_the_coroutine_and_ends_timed_out(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched, key="hangup:1", timeout=0.05)
    with pytest.raises(JobTimeout, match="deadline") as info:
        job.result(timeout=10)
    assert isinstance(info.value, TimeoutError)
    assert watched.got_cancelled.is_set()
    assert watched.unwound.is_set()
    assert job.state is JobState.TIMED_OUT
    assert not job.cancelled()
    assert bridge.get("hangup:1") is None
    stats = bridge.stats()
    assert (stats.timed_out, stats.cancelled, stats.failed, stats.active) == (1, 0, 0, 0)


def test_timed_out_job_is_done_only_after_unwinding(bridge: Bridge) -> None:
    unwinding = threading.Event()
    gate = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            unwinding.set()
            await gate.wait()

    async def open_gate() -> None:
        gate.set()

    job = bridge.submit(slow_cleanup, timeout=0.01)
    assert unwinding.wait(10)
    assert bridge.call(value, "loop is alive") == "loop is alive"
    assert not job.done()
    assert job.state is JobState.RUNNING
    bridge.submit(open_gate)
    with pytest.raises(JobTimeout):
        job.result(timeout=10)
    assert job.state is JobState.TIMED_OUT


def test_call_raises_job_timeout(bridge: Bridge) -> None:
    watched = Watched()
    with pytest.raises(JobTimeout):
        bridge.call(watched, timeout=0.01)
    assert watched.got_cancelled.is_set()


def test_per_kind_timeout(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=60.0, timeouts={"hangup": 0.05, "media": None})
    watched = Watched()
    hangup = b.submit(watched, kind="hangup")
    assert timeout_of(hangup) == pytest.approx(0.05, abs=0.005)
    with pytest.raises(JobTimeout):
        hangup.result(timeout=10)
    assert watched.got_cancelled.is_set()
    other = b.submit(value, 1, kind="tts")
    assert timeout_of(other) == pytest.approx(60.0, abs=0.005)
    media = b.submit(value, 1, kind="media")
    assert timeout_of(media) is None


def test_default_timeout(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=0.05)
    watched = Watched()
    job = b.submit(watched)
    assert timeout_of(job) == pytest.approx(0.05, abs=0.005)
    with pytest.raises(JobTimeout):
        job.result(timeout=10)
    assert watched.got_cancelled.is_set()


def test_default_timeout_is_thirty_seconds(bridge: Bridge) -> None:
    assert timeout_of(bridge.submit(value, 1)) == pytest.approx(30.0, abs=0.005)


def test_no_default_timeout(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=None)
    assert timeout_of(b.submit(value, 1)) is None


def test_per_job_timeout_wins_over_kind_and_default(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=60.0, timeouts={"hangup": 5.0})
    assert timeout_of(b.submit(value, 1, kind="hangup", timeout=2.0)) == pytest.approx(
        2.0, abs=0.005
    )
    assert timeout_of(b.submit(value, 1, timeout=3)) == pytest.approx(3.0, abs=0.005)
    assert timeout_of(b.submit(value, 1, kind="hangup")) == pytest.approx(5.0, abs=0.005)


def test_timeout_none_means_no_deadline(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=0.01, timeouts={"hangup": 0.01})
    gate = asyncio.Event()
    started = threading.Event()

    async def wait_for_gate() -> str:
        started.set()
        await gate.wait()
        return "no deadline"

    async def open_gate() -> None:
        gate.set()

    job = b.submit(wait_for_gate, kind="hangup", timeout=None)
    assert timeout_of(job) is None
    assert started.wait(10)
    # A job with a short deadline, submitted later, expires first; ours keeps going.
    short = b.submit(Watched(), kind="hangup")
    with pytest.raises(JobTimeout):
        short.result(timeout=10)
    assert job.state is JobState.RUNNING
    b.submit(open_gate, timeout=None)
    assert job.result(timeout=10) == "no deadline"


def test_deadline_is_fixed_at_submit(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    before = time.time()
    job = bridge.submit(value, 1, timeout=20.0)
    after = time.time()
    info = job.info()
    assert info.state is JobState.PENDING
    assert info.deadline is not None
    assert before + 20.0 <= info.deadline <= after + 20.0
    loop_blocker.release()
    assert job.result(timeout=10) == 1
    assert job.info().deadline == info.deadline


def test_deadline_counts_from_submit_not_from_start(bridge: Bridge) -> None:
    """A job queued behind a callback that blocks the loop past its deadline never starts."""
    entered = threading.Event()
    submitted = threading.Event()
    queued: list[Job[Any]] = []

    async def blocking_callback() -> None:
        entered.set()
        assert submitted.wait(10)
        deadline = queued[0].info().deadline
        assert deadline is not None
        # Models a callback that blocks the loop longer than the next job may take.
        time.sleep(max(0.0, deadline - time.time()) + 0.02)

    started = threading.Event()

    async def late() -> None:
        started.set()

    bridge.submit(blocking_callback)
    assert entered.wait(10)
    queued.append(bridge.submit(late, timeout=0.05))
    submitted.set()
    with pytest.raises(JobTimeout):
        queued[0].result(timeout=10)
    assert not started.is_set()
    assert queued[0].state is JobState.TIMED_OUT
    assert queued[0].info().started_at is None


def test_timeout_zero_never_starts_the_coroutine(bridge: Bridge) -> None:
    started = threading.Event()

    async def never() -> None:
        started.set()

    for _ in range(20):
        job = bridge.submit(never, timeout=0)
        with pytest.raises(JobTimeout):
            job.result(timeout=10)
    assert not started.is_set()
    assert bridge.stats().timed_out == 20


def test_timeout_zero_with_coroutine_object_closes_it(bridge: Bridge) -> None:
    coro = value(1)
    job = bridge.submit(coro, timeout=0)
    with pytest.raises(JobTimeout):
        job.result(timeout=10)
    assert coro.cr_frame is None  # closed, never awaited


def test_job_finishing_before_its_deadline_succeeds(bridge: Bridge) -> None:
    job = bridge.submit(value, "quick", timeout=5.0)
    assert job.result(timeout=10) == "quick"
    assert job.state is JobState.SUCCEEDED
    assert bridge.stats().timed_out == 0


def test_cancelled_before_deadline_is_cancelled_not_timed_out(bridge: Bridge) -> None:
    watched = Watched()
    job = bridge.submit(watched, timeout=30.0)
    assert watched.started.wait(10)
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert job.state is JobState.CANCELLED
    assert bridge.stats().timed_out == 0


def test_blocking_uses_its_timeout(bridge: Bridge) -> None:
    watched = Watched()
    with pytest.raises(JobTimeout):
        bridge.blocking(watched, timeout=0.02)()
    assert watched.got_cancelled.is_set()


def test_many_timeouts_at_once(bridge: Bridge) -> None:
    jobs = [bridge.submit(Watched(), timeout=0.02 + i * 0.001) for i in range(50)]
    for job in jobs:
        with pytest.raises(JobTimeout):
            job.result(timeout=10)
    stats = bridge.stats()
    assert (stats.timed_out, stats.active) == (50, 0)


def test_deadline_wins_even_if_the_coroutine_swallows_the_cancellation(bridge: Bridge) -> None:
    caught = threading.Event()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            caught.set()
            return "partial audio"  # misbehaving: swallows the deadline's cancellation
        return "full audio"

    job = bridge.submit(stubborn, timeout=0.05)
    with pytest.raises(JobTimeout):
        job.result(timeout=10)
    assert caught.is_set()
    assert job.state is JobState.TIMED_OUT
    assert bridge.stats().timed_out == 1


def test_error_raised_while_unwinding_a_timeout_is_the_cause(bridge: Bridge) -> None:
    async def messy() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise OSError("hangup failed during cleanup")

    job = bridge.submit(messy, timeout=0.05)
    error = job.exception(timeout=10)
    assert isinstance(error, JobTimeout)
    assert isinstance(error.__cause__, OSError)


def test_deadline_during_a_cancel_cleanup_does_not_interrupt_it(bridge: Bridge) -> None:
    started = threading.Event()
    cleanup_done = threading.Event()

    async def call_flow() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.7)  # an async goodbye that outlives the deadline
            cleanup_done.set()

    job = bridge.submit(call_flow, timeout=0.5)
    assert started.wait(10)
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert cleanup_done.is_set()
    assert job.state is JobState.CANCELLED
