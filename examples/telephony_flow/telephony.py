"""The seam between a telephony stack and the intercom flow.

A stack (``simulate`` or ``sip``) implements :class:`Telephony`; the flow
implements :class:`CallEvents`. The stack calls the flow's methods on its own
threads (often threads it did not create with :mod:`threading`, such as a C
library's), and the flow calls the stack's methods from any thread: each stack
deals with its own thread rules (for pjsua2, registering the calling thread).

A call id is an opaque string chosen by the stack, unique among the calls that
are alive at the same time.

The CLI builds the stacks as ``simulate.SimulatedTelephony(...)`` and
``sip.SipTelephony(host: str, port: int)``; it calls :meth:`Telephony.start`
once, and :meth:`Telephony.stop` once every call has ended (or on Ctrl-C).
"""

from __future__ import annotations

from typing import Protocol


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
    """A telephony stack; every method may be called from any thread."""

    def start(self, events: CallEvents) -> None:
        """Start the stack and deliver every later event to ``events``."""

    def answer(self, call_id: str) -> None:
        """Answer a ringing call. Unknown or ended calls are ignored."""

    def say(self, call_id: str, text: str) -> None:
        """Play ``text`` to the caller (TTS or a prompt; a stack may only log it).

        Blocks until the audio is queued, not until it has been heard. Unknown or
        ended calls are ignored.
        """

    def hangup(self, call_id: str) -> None:
        """Hang up a call; ``call_ended(call_id, by_remote=False)`` follows.

        Unknown or ended calls are ignored, so hanging up twice is harmless.
        """

    def stop(self) -> None:
        """Hang up what is left, stop the stack's threads and return; idempotent."""
