"""A simulated text-to-speech engine: prompts as async streams of 20 ms frames.

It stands in for a streaming TTS service (a cloud API or a local model): the
first audio arrives after some tens of milliseconds of synthesis, the rest
faster than real time, and the stream is an async generator, so the consumer
pulls one frame at a time and closing the generator stops the synthesis. The
audio is a 440 Hz tone in 8 kHz 16-bit mono PCM, as long as the text would take
to say at ``chars_per_second``.

The engine records every stream that ended (in the generator's ``finally``):
how many frames it yielded, whether it reached the end, and the thread it was
closed on, so that a run can prove that a prompt cut short by a hangup was
closed at once, on the loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from examples.telephony_flow.telephony import FRAME_BYTES

__all__ = ["Closed", "SimulatedTts"]

_RATE: Final = 8000
_SAMPLES: Final = FRAME_BYTES // 2


def _tone(hz: float = 440.0, amplitude: int = 3000) -> tuple[bytes, ...]:
    """Frames of one tone, as many as it takes to loop it without a click."""
    period = _RATE // math.gcd(_RATE, int(hz))  # samples until the wave repeats
    frames = period // math.gcd(period, _SAMPLES)  # frames until a frame boundary matches
    samples = [
        int(amplitude * math.sin(2 * math.pi * hz * n / _RATE)) for n in range(frames * _SAMPLES)
    ]
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    return tuple(pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES))


@dataclass(frozen=True)
class Closed:
    """One stream as it ended."""

    text: str
    frames: int
    #: Every frame of the text was yielded.
    complete: bool
    #: ``threading.get_ident()`` of the thread the generator was closed on.
    thread_id: int


class SimulatedTts:
    """The engine. ``stream(text)`` is an async generator function (loop thread).

    Args:
        first_frame: seconds of synthesis before the first frame (the mean; it
            varies by +-50 %).
        frame_time: seconds of synthesis per further frame (far below the 20 ms
            a frame lasts: faster than real time).
        chars_per_second: speaking rate, so how many frames a text gives (at
            least 5). The demo speaks fast, to keep the run short.
        seed: seeds the variation of ``first_frame``.
    """

    def __init__(
        self,
        *,
        first_frame: float = 0.04,
        frame_time: float = 0.002,
        chars_per_second: float = 400.0,
        seed: int = 0,
    ) -> None:
        self._first_frame = first_frame
        self._frame_time = frame_time
        self._chars_per_second = chars_per_second
        self._random = random.Random(seed)
        self._tone = _tone()
        self._lock = threading.Lock()  # guards _closed and _random
        self._closed: list[Closed] = []

    def frames_for(self, text: str) -> int:
        """How many frames ``text`` gives."""
        return max(5, round(len(text) / self._chars_per_second / 0.020))

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        """Synthesise ``text``: yield its frames as they are ready.

        **Cancellation:** closing or cancelling the generator stops the
        synthesis at once; its ``finally`` records the stream (see :meth:`closed`).
        """
        total, sent = self.frames_for(text), 0
        try:
            with self._lock:
                first = self._first_frame * self._random.uniform(0.5, 1.5)
            await asyncio.sleep(first)
            while sent < total:
                if sent:
                    await asyncio.sleep(self._frame_time)
                sent += 1
                yield self._tone[(sent - 1) % len(self._tone)]
        finally:
            record = Closed(text, sent, sent == total, threading.get_ident())
            with self._lock:
                self._closed.append(record)

    def closed(self) -> list[Closed]:
        """Every stream that has ended so far, in order. Any thread."""
        with self._lock:
            return list(self._closed)
