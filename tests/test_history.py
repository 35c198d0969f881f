"""Bridge(history=N): the latest finished jobs, as JobInfo snapshots, newest first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from bridge import Bridge, DuplicateJob, JobInfo, JobState, JobTimeout


class Refused(Exception):
    pass


async def value(x: int) -> int:
    return x


async def fail(number: int) -> None:
    raise Refused(f"apartment {number}\nsecond line never shown")


async def forever() -> None:
    await asyncio.Event().wait()


def test_history_is_off_by_default(bridge: Bridge) -> None:
    assert bridge.call(value, 1) == 1
    assert bridge.history() == []


def test_history_keeps_the_latest_newest_first(make_bridge: Any) -> None:
    b = make_bridge(history=3)
    for i in range(5):
        b.call(value, i, kind="even" if i % 2 == 0 else "odd")
    ids = [info.id for info in b.history()]
    assert ids == [5, 4, 3]
    assert [info.id for info in b.history(kind="even")] == [5, 3]
    newest = b.history()[0]
    assert newest.state is JobState.SUCCEEDED
    assert newest.outcome == "succeeded"
    assert newest.finished_at is not None
    assert newest.finished_at >= newest.submitted_at
    assert newest.error is None


def test_failed_timed_out_and_cancelled_jobs_carry_a_one_line_error(make_bridge: Any) -> None:
    b = make_bridge(history=10)
    failed = b.submit(fail, 46, key="door:46")
    with pytest.raises(Refused):
        failed.result(timeout=10)
    late = b.submit(forever, kind="hangup", timeout=0)
    with pytest.raises(JobTimeout):
        late.result(timeout=10)
    gone = b.submit(forever, key="ring:1")
    gone.cancel()
    concurrent.futures.wait([gone], timeout=10)
    by_id = {info.id: info for info in b.history()}
    assert by_id[failed.id].outcome == "failed"
    assert by_id[failed.id].error == "Refused: apartment 46"
    assert by_id[late.id].outcome == "timed_out"
    assert (by_id[late.id].error or "").startswith("JobTimeout: ")
    assert by_id[gone.id].outcome == "cancelled"
    assert by_id[gone.id].key == "ring:1"


def test_a_job_is_in_the_history_before_its_outcome_is_delivered(make_bridge: Any) -> None:
    b = make_bridge(history=5)
    seen: list[list[JobInfo]] = []
    done = threading.Event()
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def wait_then(x: int) -> int:
        await asyncio.wrap_future(gate)
        return x

    job = b.submit(wait_then, 7)
    job.add_done_callback(lambda j: (seen.append(b.history()), done.set()))
    gate.set_result(None)
    assert done.wait(10)
    assert [info.id for info in seen[0]] == [job.id]
    assert job.result() == 7


def test_an_unfinished_job_has_no_outcome(bridge: Bridge) -> None:
    job = bridge.submit(forever, key="call:1")
    info = job.info()
    assert (info.outcome, info.finished_at, info.error) == (None, None, None)
    job.cancel()
    concurrent.futures.wait([job], timeout=10)


@pytest.mark.parametrize("history", [-1, 1.5, True, "10"])
def test_history_must_be_a_positive_count(history: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="history"):
        Bridge(history=history)


def test_stats_count_refusals_by_reason(bridge: Bridge) -> None:
    job = bridge.submit(forever, key="k")
    with pytest.raises(DuplicateJob):
        bridge.submit(forever, key="k")
    job.cancel()
    concurrent.futures.wait([job], timeout=10)
    stats = bridge.stats()
    assert (stats.duplicate, stats.closed, stats.overloaded, stats.rejected) == (1, 0, 0, 1)


def test_an_errors_str_runs_outside_the_registry_lock(make_bridge: Any) -> None:
    """str(error) is user code: it must never run under the bridge's lock."""
    b = make_bridge(history=5)
    answered_in_time: list[bool] = []

    class Chatty(Exception):
        def __str__(self) -> str:
            # Another thread asks the bridge for its stats while this runs;
            # under the registry's lock it would wait for this very call.
            asker = threading.Thread(target=b.stats)
            asker.start()
            asker.join(5)
            answered_in_time.append(not asker.is_alive())
            return "chatty"

    async def fail_chatty() -> None:
        raise Chatty

    job = b.submit(fail_chatty)
    with pytest.raises(Chatty):
        job.result(timeout=30)
    assert answered_in_time, "str() of the error was never called"
    assert all(answered_in_time), "the other thread was blocked: str() ran under the lock"
    assert b.history()[0].error == "Chatty: chatty"
