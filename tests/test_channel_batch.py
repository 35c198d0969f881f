"""Channel batches: put_many/get_many (threads) and aput_many/aget_many (the loop)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import janus
import pytest

from bridge import Bridge, Channel, JobCancelled, WrongThread


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until *predicate* holds (a state another thread reaches), or fail."""
    never = threading.Event()
    for _ in range(int(timeout * 1000)):
        if predicate():
            return
        never.wait(0.001)
    raise AssertionError("the state was never reached")


def test_batches_from_a_thread_reach_a_coroutine_in_order_one_item_each(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()

    async def consume(n: int) -> list[list[int]]:
        batches: list[list[int]] = []
        while sum(map(len, batches)) < n:
            batches.append(await ch.aget_many())
        return batches

    job = bridge.submit(consume, 1_000)
    for start in range(0, 1_000, 100):
        ch.put_many(range(start, start + 50))  # any iterable
        for i in range(start + 50, start + 100):
            ch.sync_q.put(i)  # single puts mix with batches
    batches = job.result(timeout=10)
    assert [i for batch in batches for i in batch] == list(range(1_000))
    assert all(batches)  # never an empty batch


def test_batches_from_the_loop_reach_a_thread_in_order(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()

    async def produce() -> None:
        for start in range(0, 500, 50):
            await ch.aput_many([*range(start, start + 25)])
            for i in range(start + 25, start + 50):
                await ch.async_q.put(i)
        ch.close()

    bridge.submit(produce)
    got: list[int] = []
    while True:
        try:
            got.extend(ch.get_many(max_items=7, timeout=10))
        except janus.SyncQueueShutDown:
            break
    assert got == list(range(500))


def test_get_many_takes_at_most_max_items_and_leaves_the_rest(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel()
    ch.put_many(("a", "b", "c", "d", "e"))
    assert ch.get_many(max_items=2) == ["a", "b"]
    assert bridge.call(ch.aget_many, 2) == ["c", "d"]
    assert ch.get_many() == ["e"]


def test_a_bounded_channel_makes_a_large_batch_wait_for_room(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=4)
    put_done = threading.Event()

    def media() -> None:
        ch.put_many(range(10))  # more than maxsize: put what fits, wait for the rest
        put_done.set()

    t = threading.Thread(target=media)
    t.start()
    got: list[int] = []
    wait_until(lambda: ch.sync_q.qsize() == 4)
    assert not put_done.is_set()  # 6 items cannot have fit
    while len(got) < 10:
        batch = ch.get_many(timeout=10)
        assert len(batch) <= 4
        got.extend(batch)
    t.join(10)
    assert put_done.is_set()
    assert got == list(range(10))


def test_put_many_with_a_timeout_puts_what_fits_and_says_how_many(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=3)
    ch.sync_q.put(-1)
    with pytest.raises(janus.SyncQueueFull) as raised:
        ch.put_many([0, 1, 2, 3], timeout=0.01)
    assert raised.value.args == (2,)
    assert ch.get_many() == [-1, 0, 1]  # the first ones, in order; 2 and 3 were not put


def test_get_many_with_a_timeout_on_an_empty_channel(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    with pytest.raises(janus.SyncQueueEmpty):
        ch.get_many(timeout=0.01)
    with pytest.raises(janus.SyncQueueEmpty):
        ch.get_many(timeout=0)


def test_a_coroutine_waits_for_room_on_a_bounded_channel(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=2)

    async def produce() -> str:
        await ch.aput_many(range(6))
        return "put"

    job = bridge.submit(produce)
    got: list[int] = []
    wait_until(lambda: ch.sync_q.qsize() == 2)
    assert not job.done()
    while len(got) < 6:
        batch = ch.get_many(timeout=10)
        assert len(batch) <= 2
        got.extend(batch)
    assert job.result(timeout=10) == "put"
    assert got == list(range(6))


def test_one_batch_wakes_every_waiting_coroutine_it_can_feed(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel()
    tasks: list[asyncio.Task[list[str]]] = []

    async def start_two() -> None:
        tasks.extend(asyncio.ensure_future(ch.aget_many(max_items=1)) for _ in range(2))

    async def both() -> list[list[str]]:
        return list(await asyncio.gather(*tasks))

    bridge.call(start_two)
    wait_until(lambda: ch._queue._async_not_empty_waiting == 2)
    ch.put_many(["x", "y"])  # one wake-up call for both
    assert sorted(x for got in bridge.call(both) for x in got) == ["x", "y"]


def test_one_batch_from_the_loop_wakes_every_waiting_thread(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel()
    outs: list[list[str]] = [[], [], []]
    threads = [
        threading.Thread(target=lambda o=o: o.extend(ch.get_many(max_items=1, timeout=10)))
        for o in outs
    ]
    for t in threads:
        t.start()
    wait_until(lambda: ch._queue._sync_not_empty_waiting == 3)
    bridge.call(ch.aput_many, ["a", "b", "c"])
    for t in threads:
        t.join(10)
    assert sorted(x for out in outs for x in out) == ["a", "b", "c"]


def test_many_producers_and_consumers_lose_and_reorder_nothing(bridge: Bridge) -> None:
    ch: Channel[tuple[int, int]] = bridge.channel(maxsize=5)
    got: list[list[tuple[int, int]]] = [[], []]

    def produce(p: int) -> None:
        for start in range(0, 300, 30):
            ch.put_many([(p, i) for i in range(start, start + 30)], timeout=10)

    def consume(out: list[tuple[int, int]]) -> None:
        while True:
            try:
                out.extend(ch.get_many(max_items=4, timeout=10))
            except janus.SyncQueueShutDown:
                return

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    consumers = [threading.Thread(target=consume, args=(out,)) for out in got]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(30)
    ch.close()
    for t in consumers:
        t.join(30)
    everything = got[0] + got[1]
    assert sorted(everything) == [(p, i) for p in range(3) for i in range(300)]
    for out in got:  # each consumer saw each producer's items in order
        for p in range(3):
            seq = [i for q, i in out if q == p]
            assert seq == sorted(seq)


def test_close_wakes_a_thread_blocked_in_put_many_and_keeps_what_was_put(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel(maxsize=2)
    raised: list[BaseException] = []

    def media() -> None:
        try:
            ch.put_many(["a", "b", "c"])
        except janus.SyncQueueShutDown as exc:
            raised.append(exc)

    t = threading.Thread(target=media)
    t.start()
    wait_until(lambda: ch.sync_q.qsize() == 2)  # a and b are in: it waits for room for c
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert [(type(e), e.args) for e in raised] == [(janus.SyncQueueShutDown, (2,))]
    assert ch.get_many() == ["a", "b"]
    with pytest.raises(janus.SyncQueueShutDown):
        ch.get_many()


def test_close_wakes_a_thread_blocked_in_get_many(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel()
    raised: list[BaseException] = []

    def receiver() -> None:
        try:
            ch.get_many()
        except janus.SyncQueueShutDown as exc:
            raised.append(exc)

    t = threading.Thread(target=receiver)
    t.start()
    wait_until(lambda: ch._queue._sync_not_empty_waiting == 1)
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert [type(e) for e in raised] == [janus.SyncQueueShutDown]


def test_close_wakes_a_coroutine_blocked_in_aget_many(bridge: Bridge) -> None:
    ch: Channel[str] = bridge.channel()
    waiting = threading.Event()

    async def consume() -> str:
        waiting.set()
        try:
            await ch.aget_many()
        except janus.AsyncQueueShutDown:
            return "woken"
        return "got items"

    job = bridge.submit(consume)
    assert waiting.wait(10)
    ch.close()
    assert job.result(timeout=10) == "woken"


def test_close_wakes_a_coroutine_blocked_in_aput_many(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=3)

    async def produce() -> tuple[Any, ...]:
        try:
            await ch.aput_many(range(5))
        except janus.AsyncQueueShutDown as exc:
            return exc.args
        return ()

    job = bridge.submit(produce)
    wait_until(lambda: ch.sync_q.qsize() == 3)
    ch.close()
    assert job.result(timeout=10) == (3,)
    assert ch.get_many() == [0, 1, 2]


def test_a_closed_channel_refuses_batches(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    ch.close()
    with pytest.raises(janus.SyncQueueShutDown) as raised:
        ch.put_many([1, 2])
    assert raised.value.args == (0,)
    with pytest.raises(janus.AsyncQueueShutDown):
        bridge.call(ch.aput_many, [1])
    with pytest.raises(janus.AsyncQueueShutDown):
        bridge.call(ch.aget_many)
    with pytest.raises(janus.SyncQueueShutDown):
        ch.get_many(timeout=0)


def test_cancelling_aget_many_loses_no_item(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    waiting = threading.Event()

    async def consume() -> list[int]:
        waiting.set()
        return await ch.aget_many()

    job = bridge.submit(consume)
    assert waiting.wait(10)
    bridge.call(asyncio.sleep, 0)
    assert job.cancel()
    ch.put_many([1, 2, 3])
    assert ch.get_many(timeout=10) == [1, 2, 3]


def test_cancelling_aput_many_keeps_the_first_items_only(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=2)

    async def produce() -> None:
        await ch.aput_many(range(5))

    job = bridge.submit(produce)
    wait_until(lambda: ch.sync_q.qsize() == 2)
    assert job.cancel()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert ch.get_many() == [0, 1]
    assert ch.sync_q.qsize() == 0  # 2, 3 and 4 were not put


def test_blocking_batch_calls_refuse_the_loop_thread(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()

    async def on_the_loop() -> list[str]:
        await ch.aput_many([1])  # binds the loop
        refused = []
        for call in (lambda: ch.put_many([2]), ch.get_many):
            try:
                call()
            except WrongThread as exc:
                refused.append(str(exc))
        return refused

    refused = bridge.call(on_the_loop)
    assert len(refused) == 2
    assert all("loop" in r for r in refused)
    assert ch.get_many() == [1]  # nothing else was put


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_items": 0}, ValueError, "max_items"),
        ({"max_items": -3}, ValueError, "max_items"),
        ({"max_items": 2.0}, TypeError, "max_items"),
        ({"max_items": True}, TypeError, "max_items"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
    ],
)
def test_bad_get_many_arguments(
    bridge: Bridge, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    ch: Channel[int] = bridge.channel()
    ch.sync_q.put(1)
    with pytest.raises(error, match=name):
        ch.get_many(**kwargs)
    assert ch.sync_q.qsize() == 1  # nothing taken
    if "max_items" in kwargs:
        with pytest.raises(error, match=name):
            bridge.call(ch.aget_many, kwargs["max_items"])
        assert ch.sync_q.qsize() == 1


@pytest.mark.parametrize(
    ("items", "timeout", "error", "name"),
    [
        (b"frame", None, TypeError, "items"),
        ("text", None, TypeError, "items"),
        (5, None, TypeError, "items must be an iterable"),
        ([1], -0.5, ValueError, "timeout"),
    ],
)
def test_bad_put_many_arguments(
    bridge: Bridge, items: Any, timeout: Any, error: type[Exception], name: str
) -> None:
    ch: Channel[Any] = bridge.channel()
    with pytest.raises(error, match=name):
        ch.put_many(items, timeout=timeout)
    assert ch.sync_q.qsize() == 0  # nothing put


def test_an_empty_batch_puts_nothing(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel(maxsize=1)
    ch.sync_q.put(0)
    ch.put_many([])  # full, but nothing to wait for
    bridge.call(ch.aput_many, ())
    assert ch.get_many() == [0]


def test_the_janus_internals_used_are_there() -> None:
    """bridge/_batch.py reads these; a janus release that renames them fails here first."""
    q: janus.Queue[int] = janus.Queue(3)
    for name in (
        "_loop", "_maxsize", "_is_shutdown", "_sync_mutex", "_async_mutex",
        "_sync_not_empty", "_sync_not_full", "_async_not_empty", "_async_not_full",
        "_sync_not_empty_waiting", "_sync_not_full_waiting",
        "_async_not_empty_waiting", "_async_not_full_waiting",
        "_qsize", "_notify_async", "_get_loop", "_unfinished_tasks",
    ):  # fmt: skip
        assert hasattr(q, name), name
    assert type(q._queue) is deque  # FIFO: put appends, get pops from the left
    q.sync_q.put_nowait(1)
    assert list(q._queue) == [1]
    assert q._unfinished_tasks == 1  # one per item put, until task_done()
    assert q._async_not_full._lock is q._async_mutex
    assert q._async_not_empty._lock is q._async_mutex
    assert q._sync_not_full._lock is q._sync_mutex  # type: ignore[attr-defined]


def test_a_batch_counts_for_join_and_task_done_as_single_items(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    ch.put_many([1, 2, 3])
    assert ch.sync_q.unfinished_tasks == 3
    for _ in ch.get_many():
        ch.sync_q.task_done()
    ch.sync_q.join()  # returns at once: every item was marked done
    assert ch.sync_q.unfinished_tasks == 0


def test_an_iterable_that_fails_half_way_puts_nothing(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()

    def frames() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the codec failed")

    with pytest.raises(ValueError, match="codec"):
        ch.put_many(frames())
    with pytest.raises(ValueError, match="codec"):
        bridge.call(ch.aput_many, frames())
    assert ch.sync_q.qsize() == 0  # the items are taken before any is put


def test_batches_wake_the_single_item_calls_of_the_other_side(bridge: Bridge) -> None:
    """A batch wakes threads blocked in janus's own get/put, not only batch waiters."""
    ch: Channel[str] = bridge.channel(maxsize=2)
    got: list[str] = []
    getters = [
        threading.Thread(target=lambda: got.append(ch.sync_q.get(timeout=10))) for _ in range(2)
    ]
    for t in getters:
        t.start()
    wait_until(lambda: ch._queue._sync_not_empty_waiting == 2)
    bridge.call(ch.aput_many, ["a", "b"])
    for t in getters:
        t.join(10)
    assert sorted(got) == ["a", "b"]

    ch.put_many(["c", "d"])  # full
    putter = threading.Thread(target=ch.sync_q.put, args=("e",), kwargs={"timeout": 10})
    putter.start()
    wait_until(lambda: ch._queue._sync_not_full_waiting == 1)
    assert ch.get_many() == ["c", "d"]  # makes room: the putter goes on
    putter.join(10)
    assert not putter.is_alive()
    assert ch.get_many() == ["e"]
