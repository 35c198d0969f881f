"""The seam between a telephony stack and the intercom flow.

A stack (``stacks.simulate`` or ``stacks.sip``) implements :class:`Telephony`;
the flow implements :class:`CallEvents`. The stack calls the flow's methods on
its own threads (often threads it did not create with :mod:`threading`, such as
a C library's), and the flow calls the stack's methods from any thread: each
stack deals with its own thread rules (for pjsua2, one pinned thread).

Audio goes the other way as an :class:`AudioStream`: the flow describes a
prompt, the stack's media thread opens it and takes its 20 ms frames at
real-time pace, and reports how it went as :class:`Played`.

A call id is an opaque string chosen by the stack, unique among the calls that
are alive at the same time.

The CLI builds the stacks as ``stacks.simulate.SimulatedTelephony(...)`` and
``stacks.sip.SipTelephony(host: str, port: int)``; it calls
:meth:`Telephony.start` once, and :meth:`Telephony.stop` once every call has
ended (or on Ctrl-C).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "AudioStream",
    "CallEvents",
    "Frames",
    "Played",
    "Telephony",
]

FRAME_SECONDS: Final = 0.020
"""One frame of audio lasts 20 ms."""

FRAME_BYTES: Final = 320
"""One frame of 8 kHz 16-bit mono PCM: 160 samples."""


class Frames(Iterator[bytes], Protocol):
    """An open stream of frames (a ``bridge.JobIterator``): iterate, then close."""

    def close(self) -> None:
        """Stop the stream; the producer's cleanup runs where it lives."""


class AudioStream(Protocol):
    """A prompt the flow asks the stack to play; opened on the stack's media thread."""

    #: What it says (for logs and for stacks that only print).
    text: str
    #: ``time.monotonic()`` when the flow asked for it.
    requested_at: float

    def open(self) -> Frames:
        """Start producing frames; called once, on the thread that will consume them."""


@dataclass(frozen=True)
class Played:
    """How the stack played one :class:`AudioStream`."""

    #: Frames played to the caller.
    frames: int
    #: Seconds from ``requested_at`` to the first frame played (None: no frame).
    first_frame_s: float | None
    #: Frames played after the call had ended: a correct stack always shows 0.
    after_hangup: int
    #: The stream ended early: the call ended, the job was cancelled, or it failed.
    stopped: bool


class CallEvents(Protocol):
    """What the stack reports; implemented by the flow, called on the stack's threads.

    Each method must return quickly: it hands the event to the bridge and never
    blocks on async work.
    """

    def incoming_call(self, call_id: str, caller: str) -> None:
        """A new call arrived and is ringing; the flow decides when to answer."""

    def dtmf(self, call_id: str, digit: str) -> None:
        """The caller pressed ``digit`` (one of ``0-9*#``)."""

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        """The call is over; ``by_remote`` is True when the caller hung up first.

        Called exactly once per call, also after the flow's own :meth:`Telephony.hangup`.
        """


class Telephony(Protocol):
    """A telephony stack; every method may be called from any thread but the loop's."""

    def start(self, events: CallEvents) -> None:
        """Start the stack and deliver every later event to ``events``."""

    def answer(self, call_id: str) -> None:
        """Answer a ringing call. Unknown or ended calls are ignored."""

    def say(self, call_id: str, text: str) -> None:
        """Log ``text`` as said to the caller, without audio (the legacy mode's prompts).

        Unknown or ended calls are ignored.
        """

    def play(self, call_id: str, stream: AudioStream) -> concurrent.futures.Future[Played]:
        """Play ``stream`` to the caller at real-time pace, after what is already playing.

        Returns at once with a future that the stack resolves when the stream has
        ended, was stopped (the call ended: no frame is played after that), or
        failed (the future then holds the error). An unknown or ended call gives
        ``Played(0, None, 0, stopped=True)`` without opening the stream.
        """

    def hangup(self, call_id: str) -> None:
        """Hang up a call; ``call_ended(call_id, by_remote=False)`` follows.

        Unknown or ended calls are ignored, so hanging up twice is harmless.
        """

    def stop(self) -> None:
        """Hang up what is left, stop the stack's threads and return; idempotent."""
