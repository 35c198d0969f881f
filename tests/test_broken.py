"""A loop that stops, or whose thread dies, breaks the bridge (issue 9, symptoms 7 and 15).

Nobody asked for it, so the bridge must notice: its state becomes
``BridgeState.BROKEN``, every unfinished job fails with a ``BridgeError`` that
says what happened, their coroutines are closed (no "Task was destroyed but it
is pending": the suite's strict mode fails the test on one), ``submit()``
raises ``BridgeClosed``, a ``loop.died`` error is logged, and ``shutdown()``
still returns a report and leaves the bridge ``CLOSED``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import Watched

from bridge import Bridge, BridgeClosed, BridgeError, BridgeState, Job, ShutdownReport

Events = list[dict[str, Any]]


async def nothing() -> None:
    return None


async def never_started() -> None:
    raise AssertionError("queued behind the lane: must never start")


async def stop_the_loop() -> None:
    asyncio.get_running_loop().stop()  # a job must never do this; one did
    await asyncio.sleep(3600)


def failure_within(job: Job[Any], timeout: float = 10.0) -> BaseException | None:
    """The exception *job* ended with; fail the test if it has not ended in time."""
    done, _ = concurrent.futures.wait([job], timeout=timeout)
    if not done:
        pytest.fail(
            f"{job!r} is still unresolved {timeout} s after its bridge's loop died",
            pytrace=False,
        )
    try:
        job.result()
    except BaseException as exc:
        return exc
    return None


@pytest.fixture
def children() -> Iterator[list[asyncio.Task[Any]]]:
    """Tasks the jobs create; their exceptions are retrieved at teardown."""
    tasks: list[asyncio.Task[Any]] = []
    yield tasks
    for task in tasks:
        with contextlib.suppress(BaseException):
            task.exception()  # so no "exception was never retrieved" at collection


def assert_broken(b: Bridge, jobs: list[Job[Any]], bodies: list[Watched]) -> None:
    """The bridge noticed its dead loop; what every caller then sees."""
    for job in jobs:
        error = failure_within(job)
        assert isinstance(error, BridgeError), f"{job!r} ended with {error!r}"
        assert b.name in str(error), f"the error does not name the bridge: {error}"
        assert "loop" in str(error).lower(), f"the error does not say what happened: {error}"
    # The state changes before the jobs are failed (a submit() in between would be lost).
    assert b.state is BridgeState.BROKEN
    for body in bodies:
        assert body.unwound.wait(10), "a running job's coroutine was not closed"
    with pytest.raises(BridgeClosed):
        b.submit(nothing)
    assert b.stats().active == 0


def assert_closed_and_logged(b: Bridge, bridge_events: Events, reason_mentions: str) -> None:
    report = b.shutdown(timeout=1.0)
    assert isinstance(report, ShutdownReport)
    assert b.state is BridgeState.CLOSED
    assert b.shutdown() == report
    died = [e for e in bridge_events if e["event"] == "loop.died"]
    assert len(died) == 1, f"expected one loop.died event, got {died}"
    assert died[0]["log_level"] == "error"
    assert died[0]["bridge"] == b.name
    reason = died[0]["reason"]
    assert isinstance(reason, str)
    assert "\n" not in reason.strip()
    assert reason_mentions.lower() in reason.lower(), reason


def test_a_job_that_stops_the_loop_breaks_the_bridge(
    make_bridge: Callable[..., Bridge], bridge_events: Events
) -> None:
    b = make_bridge(limits={"lane": 1})
    running, lane_holder = Watched(), Watched()
    jobs = [b.submit(running, timeout=None), b.submit(lane_holder, kind="lane", timeout=None)]
    assert running.started.wait(10)
    assert lane_holder.started.wait(10)
    queued_coro = never_started()
    jobs.append(b.submit(queued_coro, kind="lane"))  # waits for the lane
    b.call(nothing, timeout=10)  # the loop has seen it

    jobs.append(b.submit(stop_the_loop))

    assert_broken(b, jobs, [running, lane_holder])
    assert inspect.getcoroutinestate(queued_coro) == inspect.CORO_CLOSED
    assert_closed_and_logged(b, bridge_events, "stop")


def test_system_exit_in_a_task_a_job_created_breaks_the_bridge(
    make_bridge: Callable[..., Bridge],
    bridge_events: Events,
    children: list[asyncio.Task[Any]],
) -> None:
    b = make_bridge()
    running = Watched()
    jobs = [b.submit(running, timeout=None)]
    assert running.started.wait(10)

    async def exit_the_process() -> None:
        raise SystemExit(3)

    async def spawn_a_child_that_exits() -> None:
        children.append(asyncio.create_task(exit_the_process()))
        await asyncio.sleep(3600)

    jobs.append(b.submit(spawn_a_child_that_exits, timeout=None))

    assert_broken(b, jobs, [running])
    assert_closed_and_logged(b, bridge_events, "SystemExit")
