"""The media side of a stack: plays the flow's audio streams at real-time pace.

It stands in for a media engine's playout (a conference bridge or an RTP
sender), which serves many calls from one thread on a 20 ms clock. The thread
that owns a :class:`Playout` calls :meth:`Playout.tick` often (the simulated
media thread in a loop, the pjsua thread between two polls); each tick opens
the streams whose turn has come (``AudioStream.open()``, which calls
``bridge.iterate`` on that thread) and takes one frame from every stream whose
next frame is due, ``prebuffer`` after the open and then every 20 ms, as a
jitter buffer would. A call's streams play one after the other.

A frame is handed to the stack's ``sink`` under the playout's lock, and
:meth:`Playout.end_call` takes that lock too: once it returns, no frame of the
call is played, and the stream is closed on the owner thread's next tick (its
generator's ``finally`` then runs on the loop). A stack calls ``end_call``
before it considers the call gone; the sink reports a frame that reached a call
already gone, and ``Played`` counts those as
``after_hangup``.

In the SIP stack (:mod:`.sip`) the prompts are played by a :class:`Playout` that the
``pjsua`` thread ticks after each poll: each stream is opened there (the
flow's ``bridge.iterate``) and its frames are taken at real-time pace there,
then discarded. pjsua2's ``AudioMediaPort`` would carry them to the caller,
but it is pulled: the conference bridge calls its ``onFrameRequested`` on the
sound device's clock thread, not on the ``pjsua`` thread, so feeding it would
move the consumption to a second thread and a hand-off buffer. The pacing,
the first-frame latency and the stop on hangup are the same either way. A
hangup stops the call's playout before the flow hears of it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from bridge import JobCancelled
from examples.telephony_flow.telephony import FRAME_SECONDS, AudioStream, Frames, Played

__all__ = ["Playout", "Sink"]

Sink = Callable[[str, bytes], bool]
"""``sink(call_id, frame)`` plays a frame; returns False if the call was already gone."""

_IDLE_WAIT: Final = 0.1


@dataclass(eq=False)
class _Stream:
    call_id: str
    source: AudioStream
    done: concurrent.futures.Future[Played]
    frames: Frames | None = None
    due: float = 0.0  # monotonic time of the next frame
    played: int = 0
    first_frame_s: float | None = None
    after_hangup: int = 0


@dataclass(eq=False)
class _Queue:
    streams: deque[_Stream] = field(default_factory=deque)
    ended: bool = False


class Playout:
    """Paced playout of every call's streams, driven by one owner thread.

    Args:
        sink: plays one frame (called on the owner thread, under the lock: it
            must be quick and must not call back into the playout).
        prebuffer: seconds between opening a stream and playing its first frame.
    """

    def __init__(self, sink: Sink, *, prebuffer: float = 0.06) -> None:
        self._sink = sink
        self._prebuffer = prebuffer
        self._lock = threading.Condition()  # guards _calls, _closed and each _Queue
        self._calls: dict[str, _Queue] = {}
        self._closed = False

    def add(self, call_id: str, source: AudioStream) -> concurrent.futures.Future[Played]:
        """Queue ``source`` after the call's other streams. Any thread; never blocks."""
        done: concurrent.futures.Future[Played] = concurrent.futures.Future()
        done.set_running_or_notify_cancel()  # only the playout resolves it
        with self._lock:
            queue = self._calls.get(call_id)
            if self._closed or queue is None or queue.ended:
                done.set_result(Played(0, None, 0, stopped=True))
                return done
            queue.streams.append(_Stream(call_id, source, done))
            self._lock.notify_all()
        return done

    def begin_call(self, call_id: str) -> None:
        """Accept streams for ``call_id`` from now on. Any thread."""
        with self._lock:
            self._calls.setdefault(call_id, _Queue())

    def end_call(self, call_id: str) -> None:
        """Play nothing more to ``call_id``; its streams stop on the next tick. Any thread."""
        with self._lock:
            queue = self._calls.get(call_id)
            if queue is not None:
                queue.ended = True
                self._lock.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, less if a stream is added or a call ends. Owner thread."""
        with self._lock:
            self._lock.wait(timeout)

    def tick(self) -> float:
        """Play every due frame; return the seconds until the next is due. Owner thread.

        Takes frames with ``next()`` outside the lock: a producer that is late
        delays this thread, never the threads that call :meth:`add` or
        :meth:`end_call`.
        """
        now = time.monotonic()
        for stream in self._due(now):
            self._step(stream, now)
        with self._lock:
            dues = [q.streams[0].due for q in self._calls.values() if q.streams]
        return max(0.0, min(dues) - time.monotonic()) if dues else _IDLE_WAIT

    def close(self) -> None:
        """Stop every stream and refuse new ones. Owner thread."""
        with self._lock:
            self._closed = True
            for queue in self._calls.values():
                queue.ended = True
        self.tick()

    # -- the owner thread ----------------------------------------------------------

    def _due(self, now: float) -> list[_Stream]:
        """The head stream of every call that has work now; drops ended, empty calls."""
        with self._lock:
            for call_id in [c for c, q in self._calls.items() if q.ended and not q.streams]:
                del self._calls[call_id]
            heads = [q.streams[0] for q in self._calls.values() if q.streams]
            return [s for s in heads if s.frames is None or s.due <= now or self._ended(s)]

    def _ended(self, stream: _Stream) -> bool:
        """Lock held."""
        return self._calls[stream.call_id].ended

    def _step(self, stream: _Stream, now: float) -> None:
        with self._lock:
            ended = self._ended(stream)
        if ended:
            self._stop_all(stream.call_id)
        elif stream.frames is None:
            self._open(stream, now)
        else:
            self._play_next(stream)

    def _stop_all(self, call_id: str) -> None:
        """Stop the call's streams, the one playing and those waiting."""
        while True:
            with self._lock:
                streams = self._calls[call_id].streams
                if not streams:
                    return
                stream = streams[0]
            self._finish(stream, stopped=True)

    def _open(self, stream: _Stream, now: float) -> None:
        try:
            stream.frames = stream.source.open()
        except Exception as exc:  # noqa: BLE001 - handed to the flow through the future
            self._finish(stream, error=exc)
            return
        stream.due = now + self._prebuffer

    def _play_next(self, stream: _Stream) -> None:
        assert stream.frames is not None
        try:
            frame = next(stream.frames)
        except StopIteration:
            self._finish(stream, stopped=False)
            return
        except JobCancelled:  # the flow cancelled the call's jobs
            self._finish(stream, stopped=True)
            return
        except Exception as exc:  # noqa: BLE001 - handed to the flow through the future
            self._finish(stream, error=exc)
            return
        with self._lock:
            if self._ended(stream):
                return  # dropped: the call ended while the frame was on its way
            if not self._sink(stream.call_id, frame):
                stream.after_hangup += 1
            stream.played += 1
        if stream.first_frame_s is None:
            stream.first_frame_s = time.monotonic() - stream.source.requested_at
        stream.due += FRAME_SECONDS

    def _finish(
        self, stream: _Stream, *, stopped: bool = True, error: BaseException | None = None
    ) -> None:
        if stream.frames is not None:
            stream.frames.close()  # the generator's finally runs on the loop
        with self._lock:
            self._calls[stream.call_id].streams.popleft()
        if error is not None:
            stream.done.set_exception(error)
        else:
            played = Played(stream.played, stream.first_frame_s, stream.after_hangup, stopped)
            stream.done.set_result(played)
