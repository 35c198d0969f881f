"""Worker threads: a failing initializer, and shutting the pool down from anywhere."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge import Bridge, BridgeClosed, JobCancelled
from bridge._workers import WorkerPool

WAIT = 10.0  # seconds: a bound that only a broken pool reaches


class InitFailed(Exception):
    """What the test initializers raise."""


class GatedInitializer:
    """An initializer that waits for :attr:`gate`, then fails the first *failures* times."""

    def __init__(self, failures: int) -> None:
        self.gate = threading.Event()
        self.failures = failures
        self.calls = 0
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            attempt = self.calls
        self.entered.set()
        assert self.gate.wait(WAIT)
        if attempt <= self.failures:
            raise InitFailed(f"attempt {attempt}: libRegisterThread failed")


@pytest.fixture
def make_pool() -> Iterator[Callable[..., WorkerPool]]:
    """Pools closed and joined after the test."""
    pools: list[WorkerPool] = []

    def make(size: int = 1, initializer: Callable[[], object] | None = None) -> WorkerPool:
        pool = WorkerPool(f"pool-{len(pools)}", size, initializer)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        assert pool.shutdown(WAIT) == ()


def _value(x: int) -> int:
    return x


def _block(inside: threading.Event, release: threading.Event) -> None:
    inside.set()
    assert release.wait(WAIT)


# -- a failing initializer ------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3])
def test_queued_tasks_run_after_an_initializer_failure(
    make_pool: Callable[..., WorkerPool], size: int
) -> None:
    init = GatedInitializer(failures=1)
    pool = make_pool(size, init)
    first = pool.submit(_value, (0,))
    assert init.entered.wait(WAIT)  # the first thread is in its initializer
    queued = [pool.submit(_value, (i,)) for i in range(1, 6)]
    init.gate.set()  # the first attempt fails; later ones succeed
    futures = [first, *queued]
    _, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not_done == set(), "queued tasks waited for a thread that never came"
    errors = [f.exception() for f in futures]
    failed = [error for error in errors if error is not None]
    if size == 1:
        assert len(failed) == 1, "the task the failing thread took fails"
    else:  # other threads may have taken every task before the failing one could
        assert len(failed) <= 1, "only the task the failing thread took fails"
    for failure in failed:
        assert isinstance(failure, InitFailed)
        assert "attempt 1" in str(failure)
    for i, (future, error) in enumerate(zip(futures, errors)):
        if error is None:
            assert future.result() == i


def test_an_initializer_that_always_fails_costs_one_task_per_attempt(
    make_pool: Callable[..., WorkerPool],
) -> None:
    init = GatedInitializer(failures=10**9)
    pool = make_pool(1, init)
    futures = [pool.submit(_value, (0,))]
    assert init.entered.wait(WAIT)
    futures += [pool.submit(_value, (i,)) for i in range(1, 4)]
    init.gate.set()
    _, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not_done == set()
    messages = [str(f.exception()) for f in futures]
    assert messages == [f"attempt {i}: libRegisterThread failed" for i in range(1, 5)]
    # No task left: no replacement is started, nothing retries on its own.
    assert pool.shutdown(WAIT) == ()
    assert init.calls == 4


def test_the_error_goes_to_a_task_that_was_not_cancelled(
    make_pool: Callable[..., WorkerPool],
) -> None:
    init = GatedInitializer(failures=1)
    pool = make_pool(1, init)
    abandoned = pool.submit(_value, (0,))
    assert init.entered.wait(WAIT)
    waiting = pool.submit(_value, (1,))
    assert abandoned.cancel()  # nobody waits for it any more
    init.gate.set()
    assert isinstance(waiting.exception(timeout=WAIT), InitFailed)
    assert pool.submit(_value, (2,)).result(timeout=WAIT) == 2  # a fresh thread


def test_a_bridge_runs_queued_to_thread_calls_after_an_initializer_failure(
    make_bridge: Callable[..., Bridge],
) -> None:
    init = GatedInitializer(failures=1)
    b = make_bridge(thread_workers=1, thread_initializer=init)

    async def job() -> list[Any]:
        calls = [b.to_thread(_value, i) for i in range(4)]
        gathered = asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0)  # every call is queued before the gate opens
        init.gate.set()
        return list(await gathered)

    results = b.submit(job).result(timeout=WAIT)
    assert isinstance(results[0], InitFailed)
    assert results[1:] == [1, 2, 3]


# -- shutting down ----------------------------------------------------------------------------


def test_shutdown_from_a_worker_thread_does_not_join_itself(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool(2)
    release = threading.Event()
    inside = threading.Event()

    def blocked() -> None:
        inside.set()
        assert release.wait(WAIT)

    other = pool.submit(blocked, ())
    assert inside.wait(WAIT)

    def shut_down_own_pool() -> tuple[str, tuple[str, ...]]:
        return threading.current_thread().name, pool.shutdown(0.01)

    me, left = pool.submit(shut_down_own_pool, ()).result(timeout=WAIT)
    assert me not in left  # the caller is never waited for, nor reported
    assert len(left) == 1  # the other worker, still blocked
    release.set()
    other.result(timeout=WAIT)
    assert pool.join(time.monotonic() + WAIT) == ()


def test_shutdown_of_a_bridge_from_its_worker_thread(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="self-stop")
    reports: list[Any] = []

    def shut_down() -> None:
        reports.append(b.shutdown(timeout=0))  # cancels the job that waits for it

    async def job() -> None:
        await b.to_thread(shut_down)

    outcome = b.submit(job)
    with pytest.raises(JobCancelled):
        outcome.result(timeout=WAIT)
    report = b.shutdown(timeout=WAIT)  # waits for the first one, returns its report
    assert reports == [report]
    left = report.threads_left  # type: ignore[attr-defined]  # the new core's report
    assert not any(name.startswith("self-stop-worker-") for name in left)


def test_join_honours_an_absolute_deadline(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(1)
    release = threading.Event()
    inside = threading.Event()
    blocked = pool.submit(_block, (inside, release))
    assert inside.wait(WAIT)
    pool.close()
    assert pool.join(time.monotonic()) == ("pool-0-worker-1",)  # already passed
    assert pool.threads_left() == ("pool-0-worker-1",)
    release.set()
    blocked.result(timeout=WAIT)
    assert pool.join(None) == ()
    assert pool.threads_left() == ()


def test_shutdown_accepts_inf_and_a_deadline(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(2)
    assert pool.submit(_value, (1,)).result(timeout=WAIT) == 1
    assert pool.shutdown(float("inf"), deadline=time.monotonic() + WAIT) == ()


def test_close_cancels_queued_tasks_and_refuses_new_ones(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool(1)
    release = threading.Event()
    inside = threading.Event()
    running = pool.submit(_block, (inside, release))
    assert inside.wait(WAIT)
    queued = pool.submit(_value, (1,))
    pool.close()
    assert queued.cancelled()
    with pytest.raises(BridgeClosed):
        pool.submit(_value, (2,))
    release.set()
    running.result(timeout=WAIT)


def test_owns_current_thread(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(1)
    assert not pool.owns_current_thread()
    assert pool.submit(pool.owns_current_thread, ()).result(timeout=WAIT)
