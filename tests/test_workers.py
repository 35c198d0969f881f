"""Worker threads: Bridge.to_thread with a bounded pool and an initializer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from bridge import Bridge, JobCancelled, JobState


def test_to_thread_runs_on_an_initialized_worker(make_bridge: Callable[..., Bridge]) -> None:
    initialized: list[str] = []
    b = make_bridge(name="pbx", thread_initializer=lambda: initialized.append(_me()))

    def native_call(x: int) -> tuple[str, bool, int]:
        return _me(), _me() in initialized, x * 10

    async def job() -> tuple[str, bool, int]:
        return await b.to_thread(native_call, 4)

    name, was_initialized, value = b.call(job)
    assert name.startswith("pbx-worker-")
    assert was_initialized
    assert value == 40
    assert initialized == [name]


def test_initializer_runs_once_per_thread_before_its_first_task(
    make_bridge: Callable[..., Bridge],
) -> None:
    counts: dict[str, int] = {}
    b = make_bridge(thread_workers=3, thread_initializer=lambda: _count(counts))
    all_in = threading.Barrier(3)

    def task(i: int) -> str:
        if i < 3:
            all_in.wait(10)  # three tasks at once: three threads
        assert _me() in counts
        return _me()

    async def job() -> list[str]:
        return list(await asyncio.gather(*(b.to_thread(task, i) for i in range(30))))

    names = b.call(job)
    assert len(set(names)) == 3
    assert counts == dict.fromkeys(set(names), 1)


def test_pool_runs_at_most_thread_workers_at_once(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(thread_workers=2)
    lock = threading.Lock()
    running = 0
    peak = 0
    two_in = threading.Barrier(2)

    def blocking(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if i < 2:
            two_in.wait(10)
        with lock:
            running -= 1
        return i

    async def job() -> list[int]:
        return list(await asyncio.gather(*(b.to_thread(blocking, i) for i in range(12))))

    assert b.call(job) == list(range(12))
    assert peak == 2


def test_cancel_while_waiting_for_a_worker_is_honoured(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(thread_workers=1)
    occupied = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def occupy() -> None:
        occupied.set()
        release.wait(10)

    def must_not_run() -> None:
        ran.append("ran")

    async def hold() -> None:
        await b.to_thread(occupy)

    async def queued() -> None:
        await b.to_thread(must_not_run)

    holder = b.submit(hold)
    assert occupied.wait(10)
    waiting = b.submit(queued)
    assert waiting.cancel()
    with pytest.raises(JobCancelled):
        waiting.result(timeout=10)
    release.set()
    holder.result(timeout=10)

    async def after() -> str:
        return await b.to_thread(lambda: "after")

    assert b.call(after) == "after"  # the worker went past the cancelled call
    assert ran == []


def test_failing_initializer_fails_the_task_and_is_retried(
    make_bridge: Callable[..., Bridge],
) -> None:
    attempts: list[int] = []

    def flaky_init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("libRegisterThread failed")

    b = make_bridge(thread_initializer=flaky_init)

    async def job() -> str:
        return await b.to_thread(lambda: "ok")

    with pytest.raises(OSError, match="libRegisterThread failed"):
        b.call(job)
    assert b.call(job) == "ok"
    assert len(attempts) == 2


def test_worker_threads_end_with_the_bridge(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="pool-end", thread_workers=4)

    async def job() -> None:
        await asyncio.gather(*(b.to_thread(lambda: None) for _ in range(8)))

    b.call(job)
    assert any(t.name.startswith("pool-end-worker-") for t in threading.enumerate())
    b.shutdown(timeout=1)
    assert not any(t.name.startswith("pool-end-worker-") for t in threading.enumerate())


def test_a_cancelled_job_stops_waiting_for_a_running_worker(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(thread_workers=1)
    inside = threading.Event()
    release = threading.Event()

    async def job() -> None:
        await b.to_thread(lambda: (inside.set(), release.wait(10)))

    j = b.submit(job)
    assert inside.wait(10)
    j.cancel()
    with pytest.raises(JobCancelled):
        j.result(timeout=10)  # ends at once, while the thread still runs
    assert j.state is JobState.CANCELLED
    release.set()


def _me() -> str:
    return threading.current_thread().name


def _count(counts: dict[str, int]) -> None:
    counts[_me()] = counts.get(_me(), 0) + 1
