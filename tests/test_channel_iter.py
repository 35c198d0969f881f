"""Channels are iterable on both sides and end cleanly when closed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from bridge import Bridge, Channel

#: A generous bound for a wait that must end long before it (never reached when green).
GATE = 10.0


def test_async_for_takes_every_item_then_ends_when_closed(bridge: Bridge) -> None:
    frames: Channel[int] = bridge.channel(maxsize=4)
    started = threading.Event()

    async def consume() -> list[int]:
        started.set()
        return [item async for item in frames]

    job = bridge.submit(consume, timeout=None)
    assert started.wait(GATE)
    for i in range(100):
        frames.sync_q.put(i)
    frames.close()
    assert job.result(timeout=GATE) == list(range(100))


def test_async_for_on_an_already_closed_empty_channel_ends_at_once(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    ch.close()

    async def consume() -> list[int]:
        return [item async for item in ch]

    assert bridge.call(consume) == []


def test_a_waiting_async_for_is_woken_by_close(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    waiting = threading.Event()

    async def consume() -> list[int]:
        got = []
        async for item in ch:
            got.append(item)
            waiting.set()
        return got

    job = bridge.submit(consume, timeout=None)
    ch.sync_q.put(7)
    assert waiting.wait(GATE)  # it took 7 and waits for the next item
    ch.close()
    assert job.result(timeout=GATE) == [7]


def test_sync_iter_takes_every_item_then_ends_when_closed(bridge: Bridge) -> None:
    replies: Channel[str] = bridge.channel(maxsize=3)

    async def produce(n: int) -> None:
        for i in range(n):
            await replies.async_q.put(f"reply {i}")
        replies.close()

    job = bridge.submit(produce, 50, timeout=None)
    assert list(replies.sync_iter()) == [f"reply {i}" for i in range(50)]
    job.result(timeout=GATE)


def test_sync_iter_blocked_on_an_empty_channel_ends_at_close(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    got: list[int] = []
    took = threading.Event()

    def consumer() -> None:
        for item in ch.sync_iter():
            got.append(item)
            took.set()

    t = threading.Thread(target=consumer)
    t.start()
    ch.sync_q.put(1)
    assert took.wait(GATE)
    ch.close()
    t.join(GATE)
    assert not t.is_alive()
    assert got == [1]


def test_items_put_before_close_are_still_delivered(bridge: Bridge) -> None:
    ch: Channel[int] = bridge.channel()
    for i in range(5):
        ch.sync_q.put(i)
    ch.close()
    assert list(ch.sync_iter()) == [0, 1, 2, 3, 4]
    assert list(ch.sync_iter()) == []


def test_shutdown_ends_both_iterations(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    inbound: Channel[int] = b.channel()
    outbound: Channel[int] = b.channel()
    started = threading.Event()

    async def consume() -> int:
        started.set()
        return sum([1 async for _ in inbound])

    job = b.submit(consume, timeout=None)
    assert started.wait(GATE)
    ended = threading.Event()

    def consumer() -> None:
        for _ in outbound.sync_iter():
            pass
        ended.set()

    t = threading.Thread(target=consumer)
    t.start()
    b.shutdown(timeout=GATE)  # closes the channels: both loops end cleanly
    assert ended.wait(GATE)
    t.join(GATE)
    assert job.result() == 0
