"""Channels at shutdown: every channel is closed, even one only a thread's queue keeps."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import janus
import pytest

from bridge import Bridge, Channel
from bridge._channel import ChannelSet, new_channel


@contextlib.contextmanager
def blocked_thread(
    target: Callable[[], object], unblock: Callable[[], object]
) -> Iterator[tuple[threading.Event, list[BaseException]]]:
    """Run *target* on a thread; yield (about to block, what it raised).

    On the way out the thread is joined with a bound; if it is still blocked
    (the test failed), *unblock* frees it so no thread outlives the test.
    """
    about_to_block = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        about_to_block.set()
        try:
            target()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, name="media")
    thread.start()
    try:
        yield about_to_block, raised
    finally:
        thread.join(10)
        if thread.is_alive():
            unblock()
            thread.join(10)


def _put_quietly(sync_q: janus.SyncQueue[Any], item: object) -> None:
    with contextlib.suppress(janus.SyncQueueShutDown):
        sync_q.put(item)


def _get_quietly(sync_q: janus.SyncQueue[Any]) -> None:
    with contextlib.suppress(janus.SyncQueueShutDown, janus.SyncQueueEmpty):
        sync_q.get_nowait()


def test_shutdown_wakes_a_thread_in_get_whose_channel_object_was_dropped(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    sync_q = b.channel().sync_q  # a media thread keeps its side only
    gc.collect()
    with blocked_thread(sync_q.get, lambda: _put_quietly(sync_q, "unblock")) as (blocking, raised):
        assert blocking.wait(10)
        b.shutdown(timeout=1)
    assert [type(e) for e in raised] == [janus.SyncQueueShutDown]


def test_shutdown_wakes_a_thread_in_put_whose_channel_object_was_dropped(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    sync_q = b.channel(maxsize=1).sync_q
    sync_q.put("first")
    gc.collect()
    with blocked_thread(lambda: sync_q.put("second"), lambda: _get_quietly(sync_q)) as (
        blocking,
        raised,
    ):
        assert blocking.wait(10)
        b.shutdown(timeout=1)
    assert [type(e) for e in raised] == [janus.SyncQueueShutDown]
    assert sync_q.get_nowait() == "first"  # what was put before is still there


def test_shutdown_wakes_a_coroutine_that_kept_only_the_async_side(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    async_q = b.channel().async_q
    gc.collect()
    waiting = threading.Event()

    async def consume(q: janus.AsyncQueue[Any]) -> str:
        waiting.set()
        try:
            await q.get()
        except janus.AsyncQueueShutDown:
            return "woken"
        return "got an item"

    job = b.submit(consume, async_q)
    del async_q
    assert waiting.wait(10)
    report = b.shutdown(timeout=5)
    assert job.result(timeout=0) == "woken"
    assert report.cancelled == ()  # it ended by itself: the channel was closed


def test_a_channel_created_after_shutdown_began_is_closed_at_once(
    make_bridge: Callable[..., Bridge],
) -> None:
    """Needs the new core: the bridge keeps its channels in a ChannelSet."""
    b = make_bridge()
    first = b.channel()
    waiting = threading.Event()

    async def opens_another_once_woken() -> bool:
        waiting.set()
        with contextlib.suppress(janus.AsyncQueueShutDown):
            await first.async_q.get()  # woken when shutdown closes the channels
        late = b.channel()  # while shutdown waits for this job
        return late.closed

    job = b.submit(opens_another_once_woken)
    assert waiting.wait(10)
    b.shutdown(timeout=5)
    assert job.result(timeout=0) is True


# -- ChannelSet: the registry the bridge keeps --------------------------------------------------


def _make_channel(maxsize: int = 0) -> Channel[Any]:
    """A channel made the way the bridge makes it (no loop needed for the sync side)."""
    return new_channel(maxsize)


def test_channel_set_closes_every_channel_it_holds() -> None:
    channels = ChannelSet()
    a, c = _make_channel(), _make_channel()
    channels.add(a)
    channels.add(c)
    assert len(channels) == 2
    channels.close_all()
    assert a.closed
    assert c.closed
    with pytest.raises(janus.SyncQueueShutDown):
        a.sync_q.put(1)


def test_channel_set_closes_a_channel_added_after_close_all() -> None:
    channels = ChannelSet()
    channels.close_all()
    late = _make_channel()
    channels.add(late)
    assert late.closed
    assert len(channels) == 0


def test_channel_set_holds_a_channel_as_long_as_either_side_is_kept() -> None:
    channels = ChannelSet()
    ch = _make_channel()
    channels.add(ch)
    sync_q = ch.sync_q
    del ch
    gc.collect()
    assert len(channels) == 1  # the queue keeps its channel
    channels.close_all()
    with pytest.raises(janus.SyncQueueShutDown):
        sync_q.put(1)
    del sync_q
    gc.collect()
    dropped = ChannelSet()
    dropped.add(_make_channel())
    gc.collect()
    assert len(dropped) == 0  # nothing kept it: the set does not either


def test_closing_through_a_side_marks_the_channel_closed() -> None:
    ch = _make_channel()
    assert not ch.closed
    ch.sync_q.shutdown()
    assert ch.closed
    assert "closed" in repr(ch)
