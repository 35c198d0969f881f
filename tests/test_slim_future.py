"""The second round's hot-path changes: the slim Condition, contexts, eager start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from typing import Any

import pytest

from bridge import Bridge, Job
from bridge._future import SETTLED, SlimCondition

VAR: contextvars.ContextVar[int] = contextvars.ContextVar("VAR")


def test_slim_condition_wait_times_out_without_a_notification() -> None:
    condition = SlimCondition()
    with condition:
        assert condition.wait(0.01) is False
        assert condition.wait(0) is False
    assert condition.acquire(blocking=False)  # the lock was given back
    condition.release()


def test_slim_condition_wait_needs_the_lock() -> None:
    with pytest.raises(RuntimeError, match="un-acquired"):
        SlimCondition().wait(0)


def test_slim_condition_notify_all_wakes_a_waiter_holding_the_lock_twice() -> None:
    condition = SlimCondition()
    waiting = threading.Event()
    outcome: list[bool] = []

    def waiter() -> None:
        with condition, condition:  # re-entrant: wait() releases every level
            waiting.set()
            outcome.append(condition.wait(10))
            condition.release()  # still held once more: this must not raise
            condition.acquire()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(10)
    with condition:  # acquirable: the waiter released both levels
        condition.notify_all()
    thread.join(10)
    assert outcome == [True]


def test_slim_condition_notify_wakes_one_waiter() -> None:
    condition = SlimCondition()
    waiting = threading.Event()
    outcome: list[bool] = []

    def waiter() -> None:
        with condition:
            waiting.set()
            outcome.append(condition.wait(10))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(10)
    with condition:  # the waiter is inside wait(): it holds the lock until then
        condition.notify()
        condition.notify()  # nobody left: does nothing
    thread.join(10)
    assert outcome == [True]


def test_a_job_resolved_before_anyone_waits_never_makes_a_condition(bridge: Bridge) -> None:
    async def value() -> int:
        return 7

    jobs: list[Job[int]] = [bridge.submit(value) for _ in range(20)]
    assert bridge.call(value) == 7  # starts after the 20, which end at their first step
    assert all(job.done() for job in jobs)
    done, not_done = concurrent.futures.wait(jobs, timeout=10)
    assert not not_done
    assert len(done) == 20
    assert all(job._lazy_condition is None for job in jobs)
    assert all(job._condition is SETTLED for job in jobs)
    assert [job.result(10) for job in jobs] == [7] * 20


def test_a_job_waited_for_while_pending_gets_a_slim_condition(bridge: Bridge) -> None:
    gate = threading.Event()

    async def gated() -> int:
        await asyncio.to_thread(gate.wait, 10)
        return 1

    job = bridge.submit(gated)
    waiter = threading.Thread(target=lambda: concurrent.futures.wait([job], timeout=10))
    waiter.start()
    while job._lazy_condition is None:  # the waiter made it under wait()'s lock
        assert waiter.is_alive()
    assert isinstance(job._lazy_condition, SlimCondition)
    gate.set()
    waiter.join(10)
    assert not waiter.is_alive()
    assert job.result(10) == 1


def test_jobs_from_an_empty_context_never_share_one(bridge: Bridge) -> None:
    assert len(contextvars.copy_context()) == 0 or VAR not in contextvars.copy_context()
    both = threading.Barrier(2)

    async def own(n: int) -> int:
        VAR.set(n)
        await asyncio.to_thread(both.wait, 10)  # both jobs have set it now
        return VAR.get()

    result = contextvars.Context().run(lambda: [bridge.submit(own, n) for n in (1, 2)])
    assert [job.result(10) for job in result] == [1, 2]


def test_a_job_does_not_change_its_submitters_context(bridge: Bridge) -> None:
    async def change() -> int:
        VAR.set(99)
        return VAR.get()

    token = VAR.set(5)
    try:
        assert bridge.call(change) == 99
        assert VAR.get() == 5
    finally:
        VAR.reset(token)


def test_submit_on_the_loop_thread_never_runs_the_new_job_inside_it(bridge: Bridge) -> None:
    ran: list[str] = []

    async def inner() -> None:
        ran.append("inner")

    async def outer() -> list[str]:
        job = bridge.submit(inner)
        seen = list(ran)  # inner must not have run inside submit()
        await job
        return seen

    assert bridge.call(outer) == []
    assert ran == ["inner"]


def test_current_task_is_the_jobs_task_from_its_first_step(bridge: Bridge) -> None:
    async def mine() -> bool:
        task = asyncio.current_task()
        return task is not None and any(job._task is task for job in bridge._registry.unfinished())

    assert bridge.call(mine) is True


def test_a_burst_larger_than_a_slice_starts_in_submission_order(bridge: Bridge) -> None:
    from bridge._scheduler import SLICE

    started: list[int] = []

    async def record(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0)
        return n

    count = 3 * SLICE + 17
    jobs = [bridge.submit(record, n) for n in range(count)]
    _, not_done = concurrent.futures.wait(jobs, timeout=30)
    assert not not_done
    assert started == list(range(count))
    assert [job.result() for job in jobs] == list(range(count))


def test_shutdown_resolves_jobs_still_in_the_backlog(make_bridge: Any) -> None:
    from bridge import JobCancelled
    from bridge._scheduler import SLICE

    b = make_bridge()
    gate = threading.Event()

    async def first() -> None:
        await asyncio.to_thread(gate.wait, 10)

    async def later() -> None:
        await asyncio.Event().wait()  # never set: only cancellation ends it

    blocker = b.submit(first)
    jobs = [b.submit(later) for _ in range(4 * SLICE)]
    report = b.shutdown(timeout=0.2)
    gate.set()
    assert blocker.done()
    assert all(job.done() for job in jobs)
    with pytest.raises(JobCancelled):
        jobs[-1].result(0)
    assert report is not None
