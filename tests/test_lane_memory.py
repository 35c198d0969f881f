"""Jobs that end while queued in a lane are dropped from it at once (issue 9, symptom 5).

With a lane blocked by a long job, every job of that kind that times out or is
cancelled while it waits must become unreachable as soon as it has resolved,
not when the lane next moves: a long call must not make memory grow with every
expired job.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from bridge import Bridge, Job, JobCancelled, JobTimeout

#: How many jobs end while queued behind the blocked lane.
QUEUED = 50


async def nothing() -> None:
    return None


async def never_runs() -> None:
    raise AssertionError("a job queued behind the blocked lane must never start")


def error_of(job: Job[Any]) -> BaseException | None:
    """The exception *job* ended with, within 10 s (retrieved: nobody must look again)."""
    try:
        job.result(timeout=10)
    except BaseException as exc:
        return exc
    return None


def end_while_queued(b: Bridge, how: str) -> list[weakref.ref[Job[Any]]]:
    """Queue QUEUED jobs of kind ``x`` behind the lane, end them there; weak references.

    A function of its own so that no strong reference outlives it.
    """
    timeout = 0.5 if how == "timed out" else None
    jobs = [b.submit(never_runs, kind="x", timeout=timeout) for _ in range(QUEUED)]
    if how == "cancelled":
        b.call(nothing, timeout=10)  # the loop has seen them: they wait in the lane
        assert b.stats().pending_by_kind == {"x": QUEUED}
        for job in jobs:
            assert job.cancel()
    expected = JobTimeout if how == "timed out" else JobCancelled
    errors = [error_of(job) for job in jobs]
    assert all(isinstance(error, expected) for error in errors), errors[:3]
    assert all(job.info().started_at is None for job in jobs)
    return [weakref.ref(job) for job in jobs]


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_jobs_that_end_waiting_in_a_lane_are_not_kept(
    make_bridge: Callable[..., Bridge], how: str
) -> None:
    b = make_bridge(limits={"x": 1})
    started = threading.Event()
    release = threading.Event()

    async def long_call() -> None:
        started.set()
        await b.to_thread(release.wait, 30)

    try:
        blocker = b.submit(long_call, kind="x", timeout=None)
        assert started.wait(10)
        refs = end_while_queued(b, how)
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        assert alive == 0, (
            f"{alive} of {QUEUED} jobs {how} while waiting in the lane are still reachable "
            f"although they have resolved"
        )
        assert blocker.running()  # the lane never moved meanwhile
        assert b.stats().pending_by_kind.get("x", 0) == 0
    finally:
        release.set()
    blocker.result(timeout=10)
    # The lane still works: its place goes to the next job.
    assert b.submit(asyncio.sleep, 0, kind="x").result(timeout=10) is None
