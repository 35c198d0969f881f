"""Job: a concurrent.futures.Future that any thread or event loop can wait for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from typing import Any

import pytest

from bridge import (
    Bridge,
    Job,
    JobCancelled,
    JobInfo,
    JobState,
    JobTimeout,
    WrongThread,
)


class Boom(Exception):
    """The error the failing test jobs raise."""


async def value(x: Any) -> Any:
    return x


async def fail(message: str = "boom") -> None:
    raise Boom(message)


async def forever() -> None:
    await asyncio.sleep(3600)


async def open_gate(event: asyncio.Event) -> None:
    event.set()


def running_job(b: Bridge, **options: Any) -> tuple[Job[Any], asyncio.Event]:
    """Submit a job that runs until its gate opens (it then returns 42)."""
    started = threading.Event()
    gate = asyncio.Event()

    async def wait_for_gate() -> int:
        started.set()
        await gate.wait()
        return 42

    job = b.submit(wait_for_gate, **options)
    assert started.wait(10)
    return job, gate


def cancelled_job(b: Bridge) -> Job[Any]:
    job, _ = running_job(b)
    job.cancel()
    concurrent.futures.wait([job], timeout=10)
    return job


# -- concurrent.futures compatibility ------------------------------------------------


def test_job_works_with_concurrent_futures_wait(bridge: Bridge) -> None:
    jobs = [bridge.submit(value, i) for i in range(20)]
    done, not_done = concurrent.futures.wait(jobs, timeout=10)
    assert not_done == set()
    assert done == set(jobs)
    assert [job.result() for job in jobs] == list(range(20))


def test_job_works_with_as_completed(bridge: Bridge) -> None:
    ok = bridge.submit(value, "ok")
    failed = bridge.submit(fail)
    gone = cancelled_job(bridge)
    seen = set(concurrent.futures.as_completed([ok, failed, gone], timeout=10))
    assert seen == {ok, failed, gone}
    assert ok.result() == "ok"
    assert isinstance(failed.exception(), Boom)


def test_wait_first_completed_returns_the_finished_job(bridge: Bridge) -> None:
    slow, gate = running_job(bridge)
    fast = bridge.submit(value, 1)
    done, not_done = concurrent.futures.wait(
        [slow, fast], timeout=10, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {fast}
    assert not_done == {slow}
    bridge.submit(open_gate, gate)
    assert slow.result(timeout=10) == 42


def test_done_callback_runs_once_with_the_job(bridge: Bridge) -> None:
    job, gate = running_job(bridge)
    calls: list[Job[Any]] = []
    called = threading.Event()

    def callback(future: concurrent.futures.Future[Any]) -> None:
        calls.append(future)  # type: ignore[arg-type]
        called.set()

    job.add_done_callback(callback)
    assert calls == []
    bridge.submit(open_gate, gate)
    assert called.wait(10)
    assert calls == [job]
    late: list[object] = []
    job.add_done_callback(late.append)  # already done: called at once
    assert late == [job]


# -- await from any loop ---------------------------------------------------------------


def test_await_job_from_another_event_loop(bridge: Bridge) -> None:
    job, gate = running_job(bridge)

    async def main() -> Any:
        bridge.submit(open_gate, gate)
        return await job

    assert asyncio.run(main()) == 42


def test_await_finished_job_from_another_event_loop(bridge: Bridge) -> None:
    job = bridge.submit(value, "done")
    concurrent.futures.wait([job], timeout=10)

    async def main() -> Any:
        return await job

    assert asyncio.run(main()) == "done"


def test_await_reraises_the_jobs_outcome_in_another_loop(bridge: Bridge) -> None:
    failed = bridge.submit(fail, "the message")
    gone = cancelled_job(bridge)
    timed_out = bridge.submit(forever, timeout=0.05)

    async def outcome(job: Job[Any]) -> BaseException:
        with pytest.raises(BaseException) as info:
            await job
        return info.value

    error = asyncio.run(outcome(failed))
    assert isinstance(error, Boom)
    assert str(error) == "the message"
    assert isinstance(asyncio.run(outcome(gone)), JobCancelled)
    assert isinstance(asyncio.run(outcome(timed_out)), JobTimeout)


def test_await_job_from_inside_another_job(bridge: Bridge) -> None:
    inner, gate = running_job(bridge)

    async def outer() -> Any:
        bridge.submit(open_gate, gate)
        return (await inner) + 1

    assert bridge.call(outer) == 43


def test_await_from_inside_a_job_of_a_job_it_submitted(bridge: Bridge) -> None:
    async def outer() -> list[Any]:
        jobs = [bridge.submit(value, i) for i in range(5)]
        return [await job for job in jobs]

    assert bridge.call(outer) == [0, 1, 2, 3, 4]


def test_cancelling_the_awaiting_task_does_not_cancel_the_job(bridge: Bridge) -> None:
    job, gate = running_job(bridge)

    async def main() -> None:
        waiter = asyncio.ensure_future(job_awaiter(job))
        await asyncio.sleep(0)  # let the waiter start waiting
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    async def job_awaiter(j: Job[Any]) -> Any:
        return await j

    asyncio.run(main())
    assert job.state is JobState.RUNNING
    bridge.submit(open_gate, gate)
    assert job.result(timeout=10) == 42


# -- result() and exception() for every outcome ------------------------------------------


def test_succeeded(bridge: Bridge) -> None:
    job = bridge.submit(value, "v")
    assert job.result(timeout=10) == "v"
    assert job.exception() is None
    assert job.state is JobState.SUCCEEDED
    assert job.done()
    assert not job.cancelled()
    assert not job.running()


def test_succeeded_with_none(bridge: Bridge) -> None:
    job = bridge.submit(value, None)
    assert job.result(timeout=10) is None
    assert job.exception() is None


def test_failed_reraises_the_coroutines_own_exception(bridge: Bridge) -> None:
    job = bridge.submit(fail, "why")
    with pytest.raises(Boom, match="why") as info:
        job.result(timeout=10)
    assert job.exception() is info.value
    assert job.state is JobState.FAILED
    assert not job.cancelled()


def test_a_coroutines_own_timeout_error_is_a_failure_not_a_job_timeout(bridge: Bridge) -> None:
    async def own_timeout() -> None:
        raise TimeoutError("the TTS service timed out")

    job = bridge.submit(own_timeout)
    with pytest.raises(TimeoutError, match="TTS") as info:
        job.result(timeout=10)
    assert not isinstance(info.value, JobTimeout)
    assert job.exception() is info.value
    assert job.state is JobState.FAILED


def test_cancelled_raises_job_cancelled_from_result_and_exception(bridge: Bridge) -> None:
    job = cancelled_job(bridge)
    with pytest.raises(JobCancelled):
        job.result()
    with pytest.raises(JobCancelled):
        job.exception()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result()
    assert job.state is JobState.CANCELLED
    assert job.cancelled()
    assert job.done()


def test_timed_out_raises_job_timeout(bridge: Bridge) -> None:
    job = bridge.submit(forever, timeout=0.05)
    with pytest.raises(JobTimeout) as info:
        job.result(timeout=10)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(job.exception(), JobTimeout)
    assert job.state is JobState.TIMED_OUT
    assert not job.cancelled()


def test_result_timeout_raises_plain_timeout_error_and_leaves_job_running(
    bridge: Bridge,
) -> None:
    job, gate = running_job(bridge)
    with pytest.raises(TimeoutError) as info:
        job.result(timeout=0.01)
    assert not isinstance(info.value, JobTimeout)
    with pytest.raises(TimeoutError) as info:
        job.exception(timeout=0.01)
    assert not isinstance(info.value, JobTimeout)
    assert job.state is JobState.RUNNING
    assert not job.done()
    bridge.submit(open_gate, gate)
    assert job.result(timeout=10) == 42


def test_result_timeout_zero_on_unfinished_job(bridge: Bridge) -> None:
    job, gate = running_job(bridge)
    with pytest.raises(TimeoutError):
        job.result(timeout=0)
    bridge.submit(open_gate, gate)
    assert job.result(timeout=10) == 42


# -- the loop thread may not wait -----------------------------------------------------------


def test_result_on_loop_thread_of_unfinished_job_raises_wrong_thread(bridge: Bridge) -> None:
    other, gate = running_job(bridge)

    async def ask() -> list[str]:
        messages = []
        for method in (other.result, other.exception):
            try:
                method()
            except WrongThread as exc:
                messages.append(str(exc))
        return messages

    messages = bridge.call(ask)
    assert len(messages) == 2
    assert all("deadlock" in message for message in messages)
    assert "result()" in messages[0]
    assert "exception()" in messages[1]
    assert other.state is JobState.RUNNING
    bridge.submit(open_gate, gate)
    assert other.result(timeout=10) == 42


def test_result_on_loop_thread_of_finished_job_is_allowed(bridge: Bridge) -> None:
    done = bridge.submit(value, 7)
    assert done.result(timeout=10) == 7

    async def ask() -> tuple[Any, Any]:
        return done.result(), done.exception()

    assert bridge.call(ask) == (7, None)


def test_result_with_timeout_on_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    other, gate = running_job(bridge)

    async def ask() -> None:
        other.result(timeout=0)

    with pytest.raises(WrongThread):
        bridge.call(ask)
    bridge.submit(open_gate, gate)
    assert other.result(timeout=10) == 42


# -- state, repr and info() ------------------------------------------------------------------


def test_state_goes_pending_running_succeeded(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    job = bridge.submit(value, 1)
    assert job.state is JobState.PENDING
    assert not job.running()
    assert not job.done()
    loop_blocker.release()
    assert job.result(timeout=10) == 1
    assert job.state is JobState.SUCCEEDED


def test_running(bridge: Bridge) -> None:
    job, gate = running_job(bridge)
    assert job.state is JobState.RUNNING
    assert job.running()
    bridge.submit(open_gate, gate)
    job.result(timeout=10)
    assert not job.running()


def test_repr_shows_id_key_kind_and_state(bridge: Bridge) -> None:
    job, gate = running_job(bridge, key="call:42", kind="call")
    assert repr(job) == f"<Job {job.id} key='call:42' kind='call' RUNNING>"
    bridge.submit(open_gate, gate)
    job.result(timeout=10)
    assert repr(job) == f"<Job {job.id} key='call:42' kind='call' SUCCEEDED>"
    plain = bridge.submit(value, 1)
    plain.result(timeout=10)
    assert repr(plain) == f"<Job {plain.id} key=None kind='job' SUCCEEDED>"


def test_ids_are_unique_and_increasing(bridge: Bridge) -> None:
    jobs = [bridge.submit(value, i) for i in range(10)]
    ids = [job.id for job in jobs]
    assert ids == sorted(set(ids))


def test_info_of_pending_job(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    before = time.time()
    job = bridge.submit(value, 1, key="k", kind="tts", timeout=12.5)
    after = time.time()
    info = job.info()
    assert isinstance(info, JobInfo)
    assert info.id == job.id
    assert info.key == "k"
    assert info.kind == "tts"
    assert info.state is JobState.PENDING
    assert info.thread == threading.current_thread().name
    assert before <= info.submitted_at <= after
    assert info.started_at is None
    assert info.deadline == pytest.approx(info.submitted_at + 12.5, abs=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.state = JobState.RUNNING  # type: ignore[misc]
    loop_blocker.release()
    job.result(timeout=10)
    assert info.state is JobState.PENDING  # a snapshot does not change
    final = job.info()
    assert final.state is JobState.SUCCEEDED
    assert final.started_at is not None
    assert info.submitted_at <= final.started_at <= time.time()


def test_info_without_deadline_and_from_another_thread(bridge: Bridge) -> None:
    box: list[Job[Any]] = []
    thread = threading.Thread(
        target=lambda: box.append(bridge.submit(value, 1, timeout=None)), name="sip-callback"
    )
    thread.start()
    thread.join()
    info = box[0].info()
    assert info.deadline is None
    assert info.thread == "sip-callback"
    assert info.key is None
    assert info.kind == "job"


def test_cancel_of_a_finished_job_returns_false(bridge: Bridge) -> None:
    job = bridge.submit(value, 1)
    job.result(timeout=10)
    assert job.cancel() is False
    assert job.state is JobState.SUCCEEDED
    failed = bridge.submit(fail)
    concurrent.futures.wait([failed], timeout=10)
    assert failed.cancel() is False
    assert isinstance(failed.exception(), Boom)


def test_cancel_of_a_cancelled_job_returns_true(bridge: Bridge) -> None:
    job = cancelled_job(bridge)
    assert job.cancel() is True
    assert job.cancelled()


def test_job_cannot_be_resolved_by_hand(bridge: Bridge) -> None:
    """A finished job keeps its outcome; the bridge owns resolution."""
    job = bridge.submit(value, 1)
    job.result(timeout=10)
    with pytest.raises(concurrent.futures.InvalidStateError):
        job.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        job.set_exception(ValueError("by hand"))
    assert job.result() == 1


def test_a_running_job_cannot_be_resolved_by_hand(bridge: Bridge) -> None:
    release = threading.Event()

    async def wait_for_release() -> str:
        await asyncio.to_thread(release.wait, 10)
        return "by the bridge"

    job = bridge.submit(wait_for_release)
    with pytest.raises(concurrent.futures.InvalidStateError, match="resolved by its bridge"):
        job.set_result("by hand")
    release.set()
    assert job.result(timeout=10) == "by the bridge"


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt])
def test_job_raising_a_base_exception_fails_and_the_bridge_keeps_running(
    bridge: Bridge, error: type[BaseException]
) -> None:
    async def exits() -> None:
        raise error("from a coroutine")

    job = bridge.submit(exits)
    with pytest.raises(error, match="from a coroutine"):
        job.result(timeout=10)
    assert job.state is JobState.FAILED
    assert bridge.thread is not None
    assert bridge.call(value, "still serving") == "still serving"
    assert bridge.thread.is_alive()


# -- Bridge.jobs() and stats() -------------------------------------------------------------------


def test_jobs_lists_unfinished_jobs_oldest_first(bridge: Bridge) -> None:
    first, gate_1 = running_job(bridge, key="a", kind="call")
    second, gate_2 = running_job(bridge, key="b", kind="timer")
    done = bridge.submit(value, 1)
    done.result(timeout=10)
    assert [info.id for info in bridge.jobs()] == [first.id, second.id]
    assert [info.key for info in bridge.jobs(kind="timer")] == ["b"]
    assert bridge.jobs(kind="none") == []
    assert all(isinstance(info, JobInfo) for info in bridge.jobs())
    bridge.submit(open_gate, gate_1)
    bridge.submit(open_gate, gate_2)
    concurrent.futures.wait([first, second], timeout=10)
    assert bridge.jobs() == []


def test_stats_is_a_frozen_snapshot_of_every_outcome(bridge: Bridge, loop_blocker: Any) -> None:
    bridge.submit(value, 1).result(timeout=10)
    failed = bridge.submit(fail)
    assert isinstance(failed.exception(timeout=10), Boom)
    cancelled_job(bridge)
    with pytest.raises(JobTimeout):
        bridge.submit(forever, timeout=0).result(timeout=10)
    running_job(bridge, key="dup")
    with pytest.raises(Exception, match="dup"):
        bridge.submit(value, 1, key="dup")
    stats = bridge.stats()
    assert (stats.submitted, stats.succeeded, stats.failed) == (5, 1, 1)
    assert (stats.cancelled, stats.timed_out, stats.rejected, stats.active) == (1, 1, 1, 1)
    assert stats.running_by_kind == {"job": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.active = 0  # type: ignore[misc]
    loop_blocker.block(bridge)
    bridge.submit(value, 1, kind="tts")
    later = bridge.stats()
    assert later.pending_by_kind == {"tts": 1}
    assert later.active == 3
    assert stats.active == 1  # a snapshot does not change
