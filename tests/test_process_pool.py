"""Worker processes: Bridge.to_process and Bridge.process_map."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from procfuncs import boom, fail_at_5000, gated, pid, square

from bridge import Bridge, BridgeClosed, JobCancelled, JobTimeout, WrongThread

pytestmark = pytest.mark.timeout(60)


def _workers(b: Bridge) -> list[int]:
    return b._procpool.pids()


def _assert_gone(pids: list[int]) -> None:
    procs = []
    for number in pids:
        try:
            procs.append(psutil.Process(number))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, f"still running: {alive}"


@pytest.fixture
def pb() -> Iterator[Bridge]:
    b = Bridge("procs", process_workers=2)
    try:
        yield b
    finally:
        workers = _workers(b)
        b.shutdown()
        _assert_gone(workers)


class _Gate:
    """Two FIFOs: the worker says it started through one and waits on the other."""

    def __init__(self, tmp_path: Path) -> None:
        self.started = str(tmp_path / "started")
        self.gate = str(tmp_path / "gate")
        os.mkfifo(self.started)
        os.mkfifo(self.gate)

    def wait_started(self) -> int:
        with open(self.started) as fifo:  # blocks until the worker opens it
            return int(fifo.read())

    def release(self) -> None:
        with open(self.gate, "w"):
            pass


def test_to_process_result(pb: Bridge) -> None:
    async def job() -> int:
        return await pb.to_process(square, 12)

    assert pb.call(job) == 144


def test_to_process_runs_in_another_process(pb: Bridge) -> None:
    async def job() -> int:
        return await pb.to_process(pid)

    assert pb.call(job) != os.getpid()


def test_to_process_exception(pb: Bridge) -> None:
    async def job() -> None:
        await pb.to_process(boom, "from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        pb.call(job)


def test_to_process_outside_the_loop_is_wrong_thread(pb: Bridge) -> None:
    with pytest.raises(WrongThread, match="to_process"):
        asyncio.run(pb.to_process(square, 2))


def test_cancel_discards_result_and_keeps_worker(pb: Bridge, tmp_path: Path) -> None:
    gate = _Gate(tmp_path)

    async def job() -> int:
        return await pb.to_process(gated, gate.started, gate.gate)

    j = pb.submit(job, timeout=None)
    worker = gate.wait_started()
    j.cancel()
    with pytest.raises(JobCancelled):
        j.result(timeout=10)
    assert psutil.pid_exists(worker)  # cancelling did not kill the worker
    gate.release()

    async def after() -> int:
        return await pb.to_process(square, 5)

    assert pb.call(after) == 25
    assert psutil.Process(worker).is_running()


def test_worker_overrunning_deadline_is_killed_and_pool_replaced(tmp_path: Path) -> None:
    gate = _Gate(tmp_path)
    with Bridge("overrun", process_workers=1) as b:

        async def job() -> int:
            return await b.to_process(gated, gate.started, gate.gate)

        j = b.submit(job, timeout=0.2)
        worker = gate.wait_started()
        with pytest.raises(JobTimeout):
            j.result(timeout=10)
        _assert_gone([worker])  # killed KILL_GRACE after the deadline

        async def after() -> int:
            return await b.to_process(pid)

        assert b.call(after) != worker
        workers = _workers(b)
    _assert_gone(workers)


def test_process_map_in_order(pb: Bridge) -> None:
    n = 20_000
    assert list(pb.process_map(square, (i for i in range(n)))) == [i * i for i in range(n)]


def test_process_map_unordered(pb: Bridge) -> None:
    n = 20_000
    got = list(pb.process_map(square, range(n), ordered=False, chunksize=50))
    assert sorted(got) == [i * i for i in range(n)]


def test_process_map_progress(pb: Bridge) -> None:
    seen: list[tuple[int, int | None]] = []
    list(pb.process_map(square, range(300), on_progress=lambda d, t: seen.append((d, t))))
    assert seen[0] == (1, 300)
    assert seen[-1] == (300, 300)


class _Counting:
    """A generator of items that records how far ahead of the consumer it was read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.consumed = 0
        self.max_ahead = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - self.consumed)
            yield i


def test_process_map_is_lazy(pb: Bridge) -> None:
    items = _Counting(20_000)
    for _ in pb.process_map(square, items, concurrency=3, chunksize=16):
        items.consumed += 1
    assert items.consumed == 20_000
    assert items.max_ahead <= 3 * 16


def test_process_map_first_failure_cancels(pb: Bridge) -> None:
    items = _Counting(1_000_000)
    got = []
    with pytest.raises(ValueError, match="bad item 5000"):
        for value in pb.process_map(fail_at_5000, items, concurrency=4, chunksize=64):
            got.append(value)
    assert got == list(range(len(got)))  # a failure is raised as soon as it arrives
    assert len(got) <= 5000
    assert items.pulled <= 5000 + 4 * 64  # nothing was read after the failure's window


def test_process_map_close_early(pb: Bridge) -> None:
    items = _Counting(1_000_000)
    results = pb.process_map(square, items, concurrency=4, chunksize=64)
    assert [next(results) for _ in range(10)] == [i * i for i in range(10)]
    results.close()
    pulled = items.pulled
    assert pulled <= 4 * 64
    with pytest.raises(StopIteration):
        next(results)
    assert items.pulled == pulled


def test_process_map_on_loop_thread_is_wrong_thread(pb: Bridge) -> None:
    async def job() -> None:
        pb.process_map(square, range(3))

    with pytest.raises(WrongThread, match="process_map"):
        pb.call(job)


def test_process_map_arguments(pb: Bridge) -> None:
    with pytest.raises(ValueError, match="chunksize"):
        pb.process_map(square, range(3), chunksize=0)
    with pytest.raises(ValueError, match="concurrency"):
        pb.process_map(square, range(3), concurrency=0)
    with pytest.raises(TypeError, match="iterable"):
        pb.process_map(square, 3)  # type: ignore[call-overload]


def test_process_workers_is_checked() -> None:
    with pytest.raises(ValueError, match="process_workers"):
        Bridge(process_workers=0)
    with pytest.raises(TypeError, match="process_workers"):
        Bridge(process_workers="2")  # type: ignore[arg-type]


def test_no_process_before_first_use_and_none_after_shutdown() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    b = Bridge("lazy", process_workers=1).start()
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    assert list(b.process_map(square, range(5))) == [0, 1, 4, 9, 16]
    workers = _workers(b)
    assert workers
    b.shutdown()
    _assert_gone(workers)
    with pytest.raises(BridgeClosed):
        list(b.process_map(square, range(5)))


def test_shutdown_does_not_wait_for_a_running_worker(tmp_path: Path) -> None:
    gate = _Gate(tmp_path)
    b = Bridge("busy", process_workers=1)

    async def job() -> int:
        return await b.to_process(gated, gate.started, gate.gate)

    j = b.submit(job, timeout=None)
    worker = gate.wait_started()
    report = b.shutdown(timeout=0.1)
    assert report.duration < 5
    assert report.stuck == ()
    with pytest.raises((BridgeClosed, JobCancelled)):
        j.result(timeout=1)
    _assert_gone([worker])


def test_to_process_finishing_within_shutdown_timeout_returns_its_result(tmp_path: Path) -> None:
    gate = _Gate(tmp_path)
    holder = os.open(gate.gate, os.O_RDWR)  # the worker reads the gate until this closes
    b = Bridge("drain", process_workers=1)

    async def job() -> int:
        return await b.to_process(gated, gate.started, gate.gate)

    j = b.submit(job, timeout=None)
    worker = gate.wait_started()
    shutdown_began = threading.Event()
    b._shutdown.add_closer(shutdown_began.set)  # runs once shutdown has begun
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        report = pool.submit(b.shutdown, 30.0)
        assert shutdown_began.wait(10)
        os.close(holder)  # the worker finishes well within shutdown's timeout
        assert report.result(timeout=30).cancelled == ()
    assert j.result(timeout=1) == worker
    _assert_gone([worker])
