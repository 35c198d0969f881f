"""The stacks' playout (examples/telephony_flow/stacks/media.py), without a bridge.

The streams here are plain iterators; the test drives ``tick()`` from a
media thread of its own, as the stacks do, and synchronises with events.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bridge import JobCancelled
from examples.telephony_flow.stacks.media import Playout
from examples.telephony_flow.telephony import FRAME_SECONDS, Played


class FakeFrames:
    """A stream of numbered frames; ``cancel_after`` raises JobCancelled instead."""

    def __init__(self, count: int, cancel_after: int | None = None) -> None:
        self._next = 0
        self._count = count
        self._cancel_after = cancel_after
        self.closed = threading.Event()
        self.opened_on: int | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._next == self._cancel_after:
            raise JobCancelled("the call's jobs were cancelled")
        if self._next >= self._count:
            raise StopIteration
        self._next += 1
        return self._next.to_bytes(2, "big")

    def close(self) -> None:
        self.closed.set()


@dataclass
class FakeStream:
    text: str
    frames: FakeFrames
    requested_at: float = field(default_factory=time.monotonic)
    fail: BaseException | None = None

    def open(self) -> FakeFrames:
        if self.fail is not None:
            raise self.fail
        self.frames.opened_on = threading.get_ident()
        return self.frames


class Ear:
    """The sink: what each call heard, and when."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.heard: dict[str, list[tuple[float, bytes]]] = {}
        self.gone: set[str] = set()

    def __call__(self, call_id: str, frame: bytes) -> bool:
        with self.lock:
            self.heard.setdefault(call_id, []).append((time.monotonic(), frame))
            self.lock.notify_all()
            return call_id not in self.gone

    def wait(self, call_id: str, frames: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.heard.get(call_id, [])) >= frames, 10)


class MediaThread:
    def __init__(self, playout: Playout) -> None:
        self.playout = playout
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-media")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.playout.wait(self.playout.tick())
        self.playout.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def media() -> Iterator[tuple[Playout, Ear, MediaThread]]:
    ear = Ear()
    playout = Playout(ear, prebuffer=0.0)
    thread = MediaThread(playout)
    yield playout, ear, thread
    thread.stop()


def test_frames_are_played_in_order_at_real_time_pace_on_the_media_thread(
    media: tuple[Playout, Ear, MediaThread],
) -> None:
    playout, ear, thread = media
    playout.begin_call("a")
    stream = FakeStream("hello", FakeFrames(6))
    played = playout.add("a", stream).result(timeout=10)
    assert played == Played(6, played.first_frame_s, 0, stopped=False)
    assert played.first_frame_s is not None
    assert played.first_frame_s >= 0
    times, frames = zip(*ear.heard["a"], strict=True)
    assert [int.from_bytes(f, "big") for f in frames] == [1, 2, 3, 4, 5, 6]
    assert times[-1] - times[0] >= 5 * FRAME_SECONDS * 0.95  # no faster than real time
    assert stream.frames.closed.is_set()
    assert stream.frames.opened_on == thread.thread.ident


def test_a_calls_streams_play_one_after_the_other(
    media: tuple[Playout, Ear, MediaThread],
) -> None:
    playout, ear, _ = media
    playout.begin_call("a")
    first = playout.add("a", FakeStream("one", FakeFrames(2)))
    second = playout.add("a", FakeStream("two", FakeFrames(3)))
    assert second.result(timeout=10).frames == 3
    assert first.done()
    assert [int.from_bytes(f, "big") for _, f in ear.heard["a"]] == [1, 2, 1, 2, 3]


def test_end_call_stops_the_stream_and_nothing_is_played_after(
    media: tuple[Playout, Ear, MediaThread],
) -> None:
    playout, ear, _ = media
    playout.begin_call("a")
    playing = FakeStream("long", FakeFrames(10_000))
    waiting = FakeStream("next", FakeFrames(5))
    done = playout.add("a", playing)
    queued = playout.add("a", waiting)
    ear.wait("a", 2)
    playout.end_call("a")
    with ear.lock:
        ear.gone.add("a")  # the stack forgets the call only after end_call
        heard = len(ear.heard["a"])
    result = done.result(timeout=10)
    assert result.stopped
    assert result.after_hangup == 0
    assert result.frames == heard == len(ear.heard["a"])
    assert playing.frames.closed.is_set()
    assert queued.result(timeout=10) == Played(0, None, 0, stopped=True)
    assert waiting.frames.opened_on is None  # never opened
    assert playout.add("a", FakeStream("late", FakeFrames(1))).result(timeout=0) == Played(
        0, None, 0, stopped=True
    )


def test_a_sink_that_hears_a_gone_call_is_counted(
    media: tuple[Playout, Ear, MediaThread],
) -> None:
    playout, ear, _ = media
    playout.begin_call("a")
    with ear.lock:
        ear.gone.add("a")  # a stack that forgot the call before stopping its playout
    played = playout.add("a", FakeStream("oops", FakeFrames(3))).result(timeout=10)
    assert played.after_hangup == 3


def test_a_cancelled_stream_stops_and_an_open_error_reaches_the_future(
    media: tuple[Playout, Ear, MediaThread],
) -> None:
    playout, _, _ = media
    playout.begin_call("a")
    cancelled = FakeStream("cut", FakeFrames(10, cancel_after=2))
    played = playout.add("a", cancelled).result(timeout=10)
    assert (played.frames, played.after_hangup, played.stopped) == (2, 0, True)
    assert cancelled.frames.closed.is_set()
    broken = FakeStream("broken", FakeFrames(1), fail=RuntimeError("tts is down"))
    with pytest.raises(RuntimeError, match="tts is down"):
        playout.add("a", broken).result(timeout=10)


def test_unknown_calls_get_nothing_and_close_resolves_everything() -> None:
    ear = Ear()
    playout = Playout(ear)
    assert playout.add("nobody", FakeStream("x", FakeFrames(1))).result(timeout=0).stopped
    playout.begin_call("a")
    pending = playout.add("a", FakeStream("x", FakeFrames(100)))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(playout.close).result(timeout=10)
    assert pending.result(timeout=0) == Played(0, None, 0, stopped=True)
    assert ear.heard == {}
