"""Channels: janus queues between threads and the bridge's loop."""

from __future__ import annotations

import threading
from collections.abc import Callable

import janus
import pytest

from bridge import Bridge, Channel


async def wait_for_one_item(ch: Channel[object], waiting: threading.Event) -> str:
    """Wait for one item; ``"woken"`` if the channel closes first."""
    waiting.set()
    try:
        await ch.async_q.get()
    except janus.AsyncQueueShutDown:
        return "woken"
    return "got an item"


def test_frames_from_a_thread_reach_a_coroutine_in_order(bridge: Bridge) -> None:
    frames = bridge.channel(maxsize=8)  # bounded: the media thread feels backpressure

    async def consume(n: int) -> list[bytes]:
        return [await frames.async_q.get() for _ in range(n)]

    consumer = bridge.submit(consume, 500)

    def media_thread() -> None:
        for i in range(500):
            frames.sync_q.put(i.to_bytes(2, "big") * 80)  # 160 bytes, like 20 ms of G.711

    t = threading.Thread(target=media_thread)
    t.start()
    t.join(30)
    got = consumer.result(timeout=30)
    assert [int.from_bytes(f[:2], "big") for f in got] == list(range(500))
    assert all(len(f) == 160 for f in got)


def test_frames_from_a_coroutine_reach_a_thread(bridge: Bridge) -> None:
    replies = bridge.channel()

    async def produce() -> None:
        for i in range(100):
            await replies.async_q.put(i)

    bridge.submit(produce).result(timeout=10)
    assert [replies.sync_q.get(timeout=10) for _ in range(100)] == list(range(100))


def test_close_wakes_a_thread_blocked_in_get(bridge: Bridge) -> None:
    ch = bridge.channel()
    about_to_get = threading.Event()
    outcome: list[BaseException] = []

    def getter() -> None:
        about_to_get.set()
        try:
            ch.sync_q.get()
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=getter)
    t.start()
    assert about_to_get.wait(10)
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], janus.SyncQueueShutDown)
    assert ch.closed


def test_close_wakes_a_thread_blocked_in_put_on_a_full_channel(bridge: Bridge) -> None:
    ch = bridge.channel(maxsize=1)
    ch.sync_q.put("first")
    about_to_put = threading.Event()
    outcome: list[BaseException] = []

    def putter() -> None:
        about_to_put.set()
        try:
            ch.sync_q.put("second")
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=putter)
    t.start()
    assert about_to_put.wait(10)
    ch.close()
    t.join(10)
    assert not t.is_alive()
    assert [type(e) for e in outcome] == [janus.SyncQueueShutDown]
    assert ch.sync_q.get_nowait() == "first"  # nothing put before close is dropped


def test_close_wakes_a_coroutine_blocked_in_get(bridge: Bridge) -> None:
    ch = bridge.channel()
    waiting = threading.Event()
    job = bridge.submit(wait_for_one_item, ch, waiting)
    assert waiting.wait(10)
    ch.close()
    assert job.result(timeout=10) == "woken"


def test_items_put_before_close_are_still_delivered(bridge: Bridge) -> None:
    ch = bridge.channel()
    for i in range(3):
        ch.sync_q.put(i)
    ch.close()

    async def drain() -> list[int]:
        got = []
        try:
            while True:
                got.append(await ch.async_q.get())
        except janus.AsyncQueueShutDown:
            return got

    assert bridge.call(drain) == [0, 1, 2]
    with pytest.raises(janus.SyncQueueShutDown):
        ch.sync_q.put(3)


def test_shutdown_closes_channels_and_wakes_their_consumers(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    ch = b.channel()
    waiting = threading.Event()
    job = b.submit(wait_for_one_item, ch, waiting)
    assert waiting.wait(10)
    report = b.shutdown(timeout=10)
    assert ch.closed
    assert job.result() == "woken"
    assert report.finished == 1  # it ended by itself, not cancelled
    assert report.cancelled == ()


def test_channel_created_inside_a_job(bridge: Bridge) -> None:
    async def make() -> int:
        ch = bridge.channel(4)
        await ch.async_q.put(7)
        return ch.maxsize

    assert bridge.call(make) == 4


async def _noop() -> None:
    return None


def test_a_put_before_any_async_use_and_a_later_one_both_reach_a_coroutine(
    bridge: Bridge,
) -> None:
    """The queue binds its loop lazily: a thread's put before that must not be lost,
    and the coroutine that waits afterwards must be woken by the next put."""
    ch = bridge.channel()
    ch.sync_q.put("early")  # the queue has seen no loop yet
    waiting = threading.Event()

    async def consume() -> list[str]:
        early = await ch.async_q.get()
        waiting.set()
        return [early, await ch.async_q.get()]

    job = bridge.submit(consume)
    assert waiting.wait(10)
    bridge.call(_noop)  # the step that set `waiting` went on to wait in get()
    ch.sync_q.put("late")
    assert job.result(timeout=10) == ["early", "late"]


def test_a_thread_get_wakes_a_coroutine_blocked_in_put_on_a_full_channel(bridge: Bridge) -> None:
    ch = bridge.channel(maxsize=1)
    ch.sync_q.put("first")  # full before any async use
    waiting = threading.Event()

    async def produce() -> str:
        waiting.set()
        await ch.async_q.put("second")
        return "put"

    job = bridge.submit(produce)
    assert waiting.wait(10)
    bridge.call(_noop)  # the producer waits for room
    assert not job.done()
    assert ch.sync_q.get(timeout=10) == "first"
    assert job.result(timeout=10) == "put"
    assert ch.sync_q.get(timeout=10) == "second"


@pytest.mark.parametrize(
    ("maxsize", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_maxsize(bridge: Bridge, maxsize: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="maxsize"):
        bridge.channel(maxsize)  # type: ignore[arg-type]
