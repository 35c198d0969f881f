"""Bridge.iterate: an async generator on the loop, consumed by a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge import (
    Bridge,
    BridgeClosed,
    DuplicateJob,
    JobCancelled,
    JobIterator,
    JobState,
    JobTimeout,
    WrongThread,
)
from bridge.testing import hammer

#: A generous bound for a wait that must end long before it (never reached when green).
GATE = 10.0


class Finally:
    """Counts the runs of a generator's ``finally`` and the threads they ran on."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.ran = threading.Event()

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.ran.set()


def counting(n: int, cleanup: Finally | None = None) -> Callable[[], AsyncIterator[int]]:
    async def gen() -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
        finally:
            if cleanup is not None:
                cleanup()

    return gen


def endless(cleanup: Finally, yielded: threading.Event | None = None, first: int = 1) -> Any:
    """Yield *first* items, then wait for ever (until cancelled or closed)."""

    async def gen() -> AsyncIterator[int]:
        try:
            for i in range(first):
                yield i
            if yielded is not None:
                yielded.set()
            await asyncio.Event().wait()
            yield -1  # never reached
        finally:
            cleanup()

    return gen


def assert_ended(b: Bridge, it: JobIterator[Any], cleanup: Finally) -> None:
    """The generator's finally ran once on the loop and no job or task is left."""
    assert cleanup.ran.wait(GATE)
    done, _ = concurrent.futures.wait([it.job], GATE)
    assert done == {it.job}
    assert cleanup.threads == [b.name]
    assert b.jobs() == []


# -- order, arguments, backpressure --------------------------------------------------


def test_items_arrive_in_order_and_the_job_succeeds(bridge: Bridge) -> None:
    async def numbers(start: int, stop: int) -> AsyncIterator[int]:
        for i in range(start, stop):
            yield i

    with bridge.iterate(numbers, 3, 300, buffer=7, key="numbers", kind="tts") as it:
        assert isinstance(it, JobIterator)
        assert iter(it) is it
        assert it.job.key == "numbers"
        assert it.job.kind == "tts"
        assert list(it) == list(range(3, 300))
    assert it.job.state is JobState.SUCCEEDED
    assert it.job.info().deadline is None  # a stream has no deadline unless given
    with pytest.raises(StopIteration):
        next(it)


def test_an_async_iterable_is_accepted(bridge: Bridge) -> None:
    class Frames:
        def __aiter__(self) -> AsyncIterator[bytes]:
            return self.frames()

        async def frames(self) -> AsyncIterator[bytes]:
            for i in range(5):
                yield bytes([i])

    assert list(bridge.iterate(Frames())) == [bytes([i]) for i in range(5)]


def test_the_producer_is_never_more_than_buffer_ahead(bridge: Bridge) -> None:
    buffer = 4
    taken = 0
    ahead: list[int] = []  # how far ahead the generator was each time it was asked
    filled = threading.Event()

    async def gen() -> AsyncIterator[int]:
        for i in range(50):
            ahead.append(i - taken)
            if i == buffer - 1:
                filled.set()
            yield i

    it = bridge.iterate(gen, buffer=buffer)
    assert filled.wait(GATE)
    # The producer task parks in the same step that pushes item buffer-1; a call
    # submitted now runs after that step: by then the generator must not have
    # been asked for another item.
    bridge.call(asyncio.sleep, 0)
    assert ahead == list(range(buffer))
    for i in it:
        assert i == taken
        taken += 1
    assert taken == 50
    assert max(ahead) <= buffer


def test_a_slow_consumer_holds_the_producer_back(bridge: Bridge) -> None:
    produced: list[int] = []

    async def gen() -> AsyncIterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    it = bridge.iterate(gen, buffer=1)
    for i in range(20):
        assert next(it) == i
        bridge.call(asyncio.sleep, 0)  # let the producer run as far as it may
        assert len(produced) - (i + 1) <= 1
    with pytest.raises(StopIteration):
        next(it)


# -- errors ---------------------------------------------------------------------------


def test_items_before_an_exception_come_first_then_the_exception(bridge: Bridge) -> None:
    async def gen() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("synthesis failed")

    it = bridge.iterate(gen, buffer=8)
    with pytest.raises(ValueError, match="synthesis failed"):
        it.job.result(timeout=GATE)  # the job has failed before anything was taken
    assert next(it) == 1
    assert next(it) == 2
    with pytest.raises(ValueError, match="synthesis failed"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_cancel_drops_buffered_items_and_raises_at_the_next_next(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded, first=5), buffer=8)
    assert yielded.wait(GATE)
    assert next(it) == 0
    assert it.job.cancel()
    with pytest.raises(JobCancelled):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert_ended(bridge, it, cleanup)


def test_cancel_from_a_third_thread_wakes_the_waiting_consumer(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded), buffer=1)
    outcome: list[object] = []
    took_first = threading.Event()

    def consumer() -> None:
        outcome.append(next(it))
        took_first.set()
        try:
            next(it)  # blocks: the generator waits for ever
        except JobCancelled as exc:
            outcome.append(exc)

    t = threading.Thread(target=consumer)
    t.start()
    assert took_first.wait(GATE)
    assert yielded.wait(GATE)
    canceller = threading.Thread(target=it.job.cancel)
    canceller.start()
    canceller.join(GATE)
    t.join(GATE)
    assert not t.is_alive()
    assert outcome[0] == 0
    assert isinstance(outcome[1], JobCancelled)
    assert_ended(bridge, it, cleanup)


def test_the_deadline_fires_mid_stream(bridge: Bridge) -> None:
    cleanup = Finally()
    it = bridge.iterate(endless(cleanup, first=2), timeout=0.2)
    assert it.job.info().deadline is not None
    assert next(it) == 0
    assert next(it) == 1
    with pytest.raises(JobTimeout):
        next(it)
    assert it.job.state is JobState.TIMED_OUT
    assert_ended(bridge, it, cleanup)


def test_shutdown_ends_the_stream_with_job_cancelled(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    cleanup, yielded = Finally(), threading.Event()
    it = b.iterate(endless(cleanup, yielded))
    assert next(it) == 0
    assert yielded.wait(GATE)
    report = b.shutdown(timeout=0.1)
    assert [info.id for info in report.cancelled] == [it.job.id]
    assert report.stuck == ()
    with pytest.raises(JobCancelled):
        next(it)
    assert cleanup.threads == [b.name]


# -- leaving early ----------------------------------------------------------------------


def test_leaving_the_with_closes_the_generator_on_the_loop(bridge: Bridge) -> None:
    cleanup = Finally()
    with bridge.iterate(counting(1000, cleanup), buffer=2) as it:
        assert next(it) == 0
    assert it.job.state is JobState.CANCELLED
    assert_ended(bridge, it, cleanup)
    with pytest.raises(StopIteration):
        next(it)


def test_break_inside_with_closes_it(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    with bridge.iterate(endless(cleanup, yielded, first=3), buffer=3) as it:
        for i in it:
            if i == 1:
                break
    assert_ended(bridge, it, cleanup)


def test_close_is_idempotent_and_waits_for_the_finally(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded), buffer=2)
    assert yielded.wait(GATE)
    it.close()
    assert cleanup.threads == [bridge.name]  # close() returned after the finally ran
    it.close()
    assert_ended(bridge, it, cleanup)


def test_close_from_another_thread_ends_a_waiting_consumer(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded))
    assert next(it) == 0
    assert yielded.wait(GATE)
    ended = threading.Event()

    def consumer() -> None:
        for _ in it:  # waits: the generator yields nothing more
            pass
        ended.set()

    t = threading.Thread(target=consumer)
    t.start()
    it.close()
    t.join(GATE)
    assert ended.is_set()
    assert_ended(bridge, it, cleanup)


def test_garbage_collection_closes_the_generator(bridge: Bridge) -> None:
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded, first=2))
    assert next(it) == 0
    job = it.job
    del it
    gc.collect()
    assert cleanup.ran.wait(GATE)
    with pytest.raises(JobCancelled):
        job.result(timeout=GATE)
    assert cleanup.threads == [bridge.name]
    assert bridge.jobs() == []


def test_break_without_with_lets_collection_close_it(bridge: Bridge) -> None:
    cleanup = Finally()
    for i in bridge.iterate(counting(10_000, cleanup), buffer=4):
        if i == 2:
            break
    gc.collect()
    assert cleanup.ran.wait(GATE)
    assert cleanup.threads == [bridge.name]


def test_collection_never_takes_the_bridges_lock(bridge: Bridge) -> None:
    # A finalizer may run on a thread that holds the bridge's lock: it must only
    # hand the work to the loop. Holding the lock here from another thread, a
    # finalizer that took it would block until the lock is released.
    cleanup, yielded = Finally(), threading.Event()
    it = bridge.iterate(endless(cleanup, yielded), buffer=2)
    assert yielded.wait(GATE)
    locked, release, finalized = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with bridge._registry._lock:
            locked.set()
            release.wait(GATE)

    box = [it]
    del it  # the box holds the last reference: the dropper's clear() finalizes it

    def dropper() -> None:
        box.clear()
        finalized.set()

    t = threading.Thread(target=holder)
    t.start()
    assert locked.wait(GATE)
    d = threading.Thread(target=dropper)
    d.start()
    finished = finalized.wait(GATE)
    release.set()
    t.join(GATE)
    d.join(GATE)
    assert finished, "the finalizer blocked on the bridge's lock"
    assert cleanup.ran.wait(GATE)
    assert cleanup.threads == [bridge.name]


def test_a_failure_dropped_by_close_is_not_reported_unretrieved(bridge: Bridge) -> None:
    async def gen() -> AsyncIterator[int]:
        yield 0
        raise RuntimeError("dropped")

    it = bridge.iterate(gen, buffer=4)
    assert next(it) == 0
    concurrent.futures.wait([it.job], GATE)
    assert it.job.state is JobState.FAILED
    it.close()
    assert bridge._unretrieved_failures() == []


# -- threads, arguments -------------------------------------------------------------------


def test_64_threads_each_consume_their_own_stream(bridge: Bridge) -> None:
    async def stream(thread: int, n: int) -> AsyncIterator[tuple[int, int]]:
        for i in range(n):
            yield thread, i
            if i % 97 == 0:
                await asyncio.sleep(0)

    def consume(thread: int, call: int) -> int:
        with bridge.iterate(stream, thread, 1000, buffer=1 + thread % 8) as it:
            got = list(it)
        assert got == [(thread, i) for i in range(1000)]
        return len(got)

    result = hammer(consume, threads=64, calls=1, timeout=120)
    result.raise_first()
    assert result.results == (1000,) * 64
    assert bridge.jobs() == []


def test_on_the_loop_thread_it_raises_wrong_thread(bridge: Bridge) -> None:
    async def inside() -> str:
        try:
            bridge.iterate(counting(3))
        except WrongThread as exc:
            return str(exc)
        return "no error"

    assert "deadlock" in bridge.call(inside)
    assert bridge.stats().submitted == 1  # only `inside` itself


def test_next_on_the_loop_thread_raises_and_leaves_the_iterator(bridge: Bridge) -> None:
    it = bridge.iterate(counting(3))

    async def step() -> None:
        next(it)

    with pytest.raises(WrongThread):
        bridge.call(step)
    assert list(it) == [0, 1, 2]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((42,), {}, TypeError, "agen_fn_or_async_iterable"),
        ((asyncio.sleep,), {}, TypeError, "agen_fn_or_async_iterable"),
        ((counting(1)(), 1), {}, TypeError, "agen_fn_or_async_iterable"),
        ((counting(1),), {"buffer": 0}, ValueError, "buffer"),
        ((counting(1),), {"buffer": 1.5}, TypeError, "buffer"),
        ((counting(1),), {"timeout": -1}, ValueError, "timeout"),
        ((counting(1),), {"key": 7}, TypeError, "key"),
        ((counting(1),), {"kind": ""}, TypeError, "kind"),
    ],
)
def test_bad_arguments_leave_nothing_behind(
    bridge: Bridge, args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        bridge.iterate(*args, **kwargs)
    assert bridge.stats().submitted == 0
    assert bridge.jobs() == []


def test_a_coroutine_object_is_refused_and_closed(bridge: Bridge) -> None:
    async def not_a_generator() -> None:
        pass

    coro = not_a_generator()
    with pytest.raises(TypeError, match=r"agen_fn_or_async_iterable.*closed"):
        bridge.iterate(coro)  # type: ignore[arg-type]
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    assert bridge.stats().submitted == 0


def test_a_taken_key_is_refused(bridge: Bridge) -> None:
    cleanup = Finally()
    with bridge.iterate(endless(cleanup), key="tts:1") as it:
        assert next(it) == 0
        with pytest.raises(DuplicateJob):
            bridge.iterate(counting(3), key="tts:1")
    assert cleanup.ran.is_set()


def test_a_closed_bridge_refuses(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    b.shutdown()
    with pytest.raises(BridgeClosed):
        b.iterate(counting(3))


# -- blocking(agen_fn) ------------------------------------------------------------------------


def test_blocking_on_an_async_generator_function_returns_iterators(bridge: Bridge) -> None:
    async def frames(call_id: str, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"{call_id}:{i}"

    stream = bridge.blocking(frames, kind="tts", timeout=30.0)
    assert stream.__name__ == "frames"
    with stream("c1", 3) as it:
        assert isinstance(it, JobIterator)
        assert it.job.kind == "tts"
        assert it.job.info().deadline is not None
        assert list(it) == ["c1:0", "c1:1", "c1:2"]
    with bridge.blocking(frames)("c2", 1) as it:
        assert it.job.info().deadline is None  # blocking's default: no deadline for a stream
        assert list(it) == ["c2:0"]
