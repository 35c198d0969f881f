"""shutdown(): intake stops, drain, cancel, report; never hangs; every job resolves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge import (
    Bridge,
    BridgeClosed,
    Job,
    JobCancelled,
    JobInfo,
    JobState,
    ShutdownReport,
    WrongThread,
)

NeverAwaitedCheck = Callable[[], contextlib.AbstractContextManager[None]]


async def value(x: Any) -> Any:
    return x


async def forever() -> None:
    await asyncio.sleep(3600)


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """Fail if the test leaves a thread behind."""
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) - before == set()


@pytest.fixture
def fresh() -> Iterator[Bridge]:
    """A started bridge that the test shuts down itself (shut down again at teardown)."""
    b = Bridge(name="shutdown-test")
    b.start()
    yield b
    b.shutdown(timeout=0.1)


def running(b: Bridge, fn: Callable[[threading.Event], Any], **options: Any) -> Job[Any]:
    started = threading.Event()
    job = b.submit(fn, started, **options)
    assert started.wait(10)
    return job


async def until_cancelled(started: threading.Event) -> None:
    started.set()
    await asyncio.sleep(3600)


# -- the report ----------------------------------------------------------------------------------


def test_shutdown_of_an_idle_bridge(no_thread_left: None) -> None:
    b = Bridge(name="idle")
    b.start()
    thread = b.thread
    assert thread is not None
    report = b.shutdown()
    assert isinstance(report, ShutdownReport)
    assert (report.finished, report.cancelled, report.stuck) == (0, (), ())
    assert 0 <= report.duration < 1
    assert report.clean
    assert not thread.is_alive()


def test_shutdown_of_a_never_started_bridge(no_thread_left: None) -> None:
    b = Bridge(name="never")
    report = b.shutdown()
    assert (report.finished, report.cancelled, report.stuck) == (0, (), ())
    assert b.thread is None
    with pytest.raises(BridgeClosed):
        b.submit(value, 1)


def test_report_is_frozen(fresh: Bridge) -> None:
    report = fresh.shutdown()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.finished = 3  # type: ignore[misc]


def test_drain_lets_jobs_finish_by_themselves(fresh: Bridge, no_thread_left: None) -> None:
    async def short_call(started: threading.Event) -> str:
        started.set()
        await asyncio.sleep(0.02)  # the work takes a moment; shutdown must wait for it
        return "finished"

    jobs = [running(fresh, short_call) for _ in range(3)]
    report = fresh.shutdown(timeout=10)
    assert report.finished == 3
    assert report.cancelled == ()
    assert report.stuck == ()
    assert report.clean
    assert [job.result() for job in jobs] == ["finished"] * 3


def test_drain_then_cancel(fresh: Bridge, no_thread_left: None) -> None:
    got_cancelled = threading.Event()

    async def long_call(started: threading.Event) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            got_cancelled.set()
            raise

    quick = fresh.submit(value, "quick")
    quick.result(timeout=10)
    long_job = running(fresh, long_call, key="call:1", kind="call")
    started_at = time.monotonic()
    report = fresh.shutdown(timeout=0.1)
    elapsed = time.monotonic() - started_at
    assert elapsed >= 0.1  # the drain waited for the job ...
    assert elapsed < 0.1 + 2.0  # ... and shutdown did not hang
    assert got_cancelled.is_set()
    assert report.finished == 0
    assert report.stuck == ()
    assert not report.clean
    (info,) = report.cancelled
    assert isinstance(info, JobInfo)
    assert (info.id, info.key, info.kind, info.state) == (
        long_job.id,
        "call:1",
        "call",
        JobState.CANCELLED,
    )
    with pytest.raises(JobCancelled):
        long_job.result()
    assert report.duration == pytest.approx(elapsed, abs=0.1)


def test_shutdown_timeout_zero_cancels_at_once(fresh: Bridge) -> None:
    jobs = [running(fresh, until_cancelled) for _ in range(5)]
    report = fresh.shutdown(timeout=0)
    assert [info.id for info in report.cancelled] == [job.id for job in jobs]
    assert all(job.cancelled() for job in jobs)


# -- idempotent, intake stops ---------------------------------------------------------------------


def test_shutdown_is_idempotent(fresh: Bridge) -> None:
    running(fresh, until_cancelled)
    first = fresh.shutdown(timeout=0)
    assert len(first.cancelled) == 1
    assert fresh.shutdown() is first
    assert fresh.shutdown(timeout=0) is first


def test_concurrent_shutdowns_share_one_report(fresh: Bridge, no_thread_left: None) -> None:
    running(fresh, until_cancelled)
    barrier = threading.Barrier(4)
    reports: list[ShutdownReport] = []

    def stop() -> None:
        barrier.wait(10)
        reports.append(fresh.shutdown(timeout=0.05))

    threads = [threading.Thread(target=stop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 4
    assert all(report is reports[0] for report in reports)
    assert len(reports[0].cancelled) == 1


def test_intake_stops_at_once(fresh: Bridge, no_never_awaited: NeverAwaitedCheck) -> None:
    gate = threading.Event()

    async def draining(started: threading.Event) -> str:
        started.set()
        await asyncio.to_thread(gate.wait, 10)
        return "drained"

    job = running(fresh, draining)
    reports: list[ShutdownReport] = []
    stopper = threading.Thread(target=lambda: reports.append(fresh.shutdown(timeout=10)))
    accepted: list[Job[Any]] = []
    with no_never_awaited():
        stopper.start()
        while True:  # submit until the shutdown has closed intake
            try:
                accepted.append(fresh.submit(value(len(accepted))))
            except BridgeClosed:
                break
        # Intake is closed while the drain is still waiting for the job.
        assert not job.done()
        assert reports == []
        with pytest.raises(BridgeClosed):
            fresh.submit(value, 1)
        with pytest.raises(BridgeClosed):
            fresh.call(value, 1)
        gate.set()
        stopper.join()
    assert job.result() == "drained"
    assert [j.result() for j in accepted] == list(range(len(accepted)))
    # The drain counts the jobs it found unfinished: at least the one that was waiting.
    assert 1 <= reports[0].finished <= 1 + len(accepted)
    assert reports[0].cancelled == ()


def test_submit_from_a_job_during_drain_is_refused(fresh: Bridge) -> None:
    outcome: list[str] = []
    gate = threading.Event()

    async def submits_later(started: threading.Event) -> None:
        started.set()
        await asyncio.to_thread(gate.wait, 10)
        try:
            fresh.submit(value, 1)
        except BridgeClosed:
            outcome.append("refused")

    job = running(fresh, submits_later)
    stopper = threading.Thread(target=lambda: fresh.shutdown(timeout=10))
    stopper.start()
    while True:  # until the shutdown has closed intake (no sleep: each try is a submit)
        try:
            fresh.submit(value, 0)
        except BridgeClosed:
            break
    gate.set()
    stopper.join()
    assert job.result() is None
    assert outcome == ["refused"]


def test_inspection_still_works_after_shutdown(fresh: Bridge) -> None:
    running(fresh, until_cancelled, key="k")
    fresh.shutdown(timeout=0)
    assert fresh.jobs() == []
    assert fresh.get("k") is None
    assert fresh.cancel("k") is False
    assert fresh.cancel_all() == 0
    stats = fresh.stats()
    assert (stats.active, stats.cancelled, stats.submitted) == (0, 1, 1)


# -- never hangs ----------------------------------------------------------------------------------


def test_job_blocking_the_loop_is_stuck_and_shutdown_returns(
    no_thread_left: None, no_never_awaited: NeverAwaitedCheck
) -> None:
    b = Bridge(name="blocked")
    b.start()
    release = threading.Event()
    entered = threading.Event()

    async def blocks_the_loop() -> str:
        entered.set()
        release.wait()  # a synchronous call on the loop thread: blocks the loop
        await asyncio.sleep(0)
        return "too late"

    try:
        blocker = b.submit(blocks_the_loop, key="blocker")
        assert entered.wait(10)
        with no_never_awaited():
            queued_coro = value("queued")
            queued = b.submit(queued_coro, key="queued")
            queued_fn = b.submit(value, "queued-fn")
            timeout = 0.05
            started_at = time.monotonic()
            report = b.shutdown(timeout=timeout)
            elapsed = time.monotonic() - started_at
            assert elapsed < timeout + 2.0
            assert [(i.id, i.state) for i in report.stuck] == [
                (blocker.id, JobState.RUNNING),
                (queued.id, JobState.PENDING),
                (queued_fn.id, JobState.PENDING),
            ]
            assert report.cancelled == ()
            assert not report.clean
            for job in (blocker, queued, queued_fn):
                assert job.done()
                with pytest.raises(JobCancelled):
                    job.result()
            assert inspect.getcoroutinestate(queued_coro) == inspect.CORO_CLOSED
            assert b.get("blocker") is None
            assert b.stats().active == 0
            del queued_coro
    finally:
        release.set()
    thread = b.thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert blocker.state is JobState.CANCELLED  # the late return changed nothing


def test_job_ignoring_cancellation_is_stuck(fresh: Bridge, no_thread_left: None) -> None:
    cancellations = []

    async def stubborn(started: threading.Event) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancellations.append("ignored")  # swallows the shutdown's cancellation
        await asyncio.sleep(3600)  # until the loop itself is closed

    job = running(fresh, stubborn)
    timeout = 0.1
    started_at = time.monotonic()
    report = fresh.shutdown(timeout=timeout)
    assert time.monotonic() - started_at < timeout + 2.0
    assert [info.id for info in report.stuck] == [job.id]
    assert report.cancelled == ()
    assert cancellations == ["ignored"]
    with pytest.raises(JobCancelled, match="did not end"):
        job.result()


def test_every_accepted_job_resolves(fresh: Bridge, no_never_awaited: NeverAwaitedCheck) -> None:
    with no_never_awaited():
        finishing = [fresh.submit(value, i) for i in range(20)]
        endless = [fresh.submit(forever) for _ in range(20)]
        coros = [fresh.submit(value(i)) for i in range(20)]
        timed = [fresh.submit(forever, timeout=0.01) for _ in range(5)]
        fresh.shutdown(timeout=0.05)
        jobs = finishing + endless + coros + timed
        assert all(job.done() for job in jobs)
        for job in jobs:
            assert job.state.finished
        del jobs, finishing, endless, coros, timed
    stats = fresh.stats()
    assert stats.active == 0
    assert stats.submitted == 65
    assert stats.submitted == (
        stats.succeeded + stats.failed + stats.cancelled + stats.timed_out + stats.active
    )


def test_shutdown_on_the_loop_thread_raises_wrong_thread(fresh: Bridge) -> None:
    async def inner() -> str:
        try:
            fresh.shutdown()
        except WrongThread as exc:
            return str(exc)
        return ""

    assert "deadlock" in fresh.call(inner)
    assert fresh.call(value, "still running") == "still running"


def test_loop_thread_is_joined_and_no_thread_is_left(no_thread_left: None) -> None:
    b = Bridge(name="joined")

    async def uses_executor() -> int:
        return await asyncio.to_thread(lambda: 7)

    assert b.call(uses_executor) == 7
    thread = b.thread
    assert thread is not None
    assert thread.is_alive()
    assert thread in threading.enumerate()
    b.shutdown()
    assert not thread.is_alive()


def test_context_manager_shuts_down_on_error(no_thread_left: None) -> None:
    with pytest.raises(LookupError), Bridge(name="ctx") as b:
        job = b.submit(value, "drained")
        raise LookupError
    assert job.result() == "drained"
    assert b.thread is not None
    assert not b.thread.is_alive()
    with pytest.raises(BridgeClosed):
        b.submit(value, 1)


def test_wait_on_jobs_across_shutdown(fresh: Bridge) -> None:
    """A thread blocked in result() is woken by the shutdown."""
    job = running(fresh, until_cancelled)
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            job.result()
        except JobCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    fresh.shutdown(timeout=0)
    thread.join(10)
    assert len(outcome) == 1
    done, _ = concurrent.futures.wait([job], timeout=0)
    assert done == {job}
