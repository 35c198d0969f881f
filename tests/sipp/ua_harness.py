"""Drive :class:`SipTelephony` with a minimal threaded flow, for the sipp tests.

Usage: ``python tests/sipp/ua_harness.py --listen 127.0.0.1:5070 --max-calls N
--dtmf-timeout S``. Each call is answered; the UA hangs up once the caller has
dialled three digits or ``#``, or after ``S`` seconds without a digit; the run
ends after ``N`` calls have ended. The last line printed is one JSON object: the outcome of
every call, the digits each caller dialled, the threads callbacks arrived on,
the conference ports still held once every call had ended, what was left
over after :meth:`SipTelephony.stop`, and the errors the stack caught in its
callbacks. Exits 0 only when nothing was left over.

It tests the stack alone, without the flow (the stack only needs a bridge for
its pinned ``pjsua`` thread, named ``ua-pjsua`` here): the example's real flow
is ``python -m examples.telephony_flow sip``.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bridge import Bridge
from examples.telephony_flow.stacks.sip import SipTelephony

APARTMENT_DIGITS = 3


@dataclass
class _Call:
    deadline: float
    digits: str = ""
    hung_up: bool = False


@dataclass
class MiniFlow:
    """The CallEvents side: callbacks queue events; one worker thread acts on them."""

    stack: SipTelephony
    max_calls: int
    dtmf_timeout: float
    fail_on_digit: str | None = None
    events: queue.SimpleQueue[tuple[str, str, object]] = field(default_factory=queue.SimpleQueue)
    callback_threads: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    dialled: list[str] = field(default_factory=list)
    calls: dict[str, _Call] = field(default_factory=dict)

    def incoming_call(self, call_id: str, caller: str) -> None:
        self._put("incoming", call_id, caller)

    def dtmf(self, call_id: str, digit: str) -> None:
        if digit == self.fail_on_digit:
            raise RuntimeError(f"flow refuses digit {digit}")
        self._put("dtmf", call_id, digit)

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        self._put("ended", call_id, by_remote)

    def _put(self, kind: str, call_id: str, arg: object) -> None:
        self.callback_threads.add(threading.current_thread().name)
        self.events.put((kind, call_id, arg))

    def run(self, stop_when_answered: int | None = None) -> None:
        """Handle events until ``max_calls`` calls have ended (on this thread).

        With ``stop_when_answered``, return as soon as that many calls have been
        answered instead, leaving them up for :meth:`SipTelephony.stop`.
        """
        ended = answered = 0
        while ended < self.max_calls and answered != stop_when_answered:
            try:
                kind, call_id, arg = self.events.get(timeout=self._wait())
            except queue.Empty:
                self._expire()
                continue
            if kind == "incoming":
                answered += 1
                self.calls[call_id] = _Call(time.monotonic() + self.dtmf_timeout)
                self.stack.answer(call_id)
                self.stack.say(call_id, "Which apartment?")
            elif kind == "dtmf":
                self._on_digit(call_id, str(arg))
            else:
                ended += 1
                self._on_ended(call_id, bool(arg))

    def drain(self) -> int:
        """Record the calls that ended during :meth:`SipTelephony.stop`; return how many."""
        ended = 0
        while not self.events.empty():
            kind, call_id, arg = self.events.get()
            if kind == "ended":
                ended += 1
                self._on_ended(call_id, bool(arg))
        return ended

    def _wait(self) -> float:
        deadlines = [c.deadline for c in self.calls.values() if not c.hung_up]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def _expire(self) -> None:
        now = time.monotonic()
        for call_id, call in self.calls.items():
            if not call.hung_up and call.deadline <= now:
                self._hang_up(call_id, call, "Goodbye.")

    def _on_digit(self, call_id: str, digit: str) -> None:
        call = self.calls[call_id]
        if call.hung_up:
            return
        call.digits += digit
        call.deadline = time.monotonic() + self.dtmf_timeout
        if digit == "#" or len(call.digits) == APARTMENT_DIGITS:
            self._hang_up(call_id, call, f"Calling apartment {call.digits.rstrip('#')}.")

    def _hang_up(self, call_id: str, call: _Call, text: str) -> None:
        call.hung_up = True
        self.stack.say(call_id, text)
        self.stack.hangup(call_id)

    def _on_ended(self, call_id: str, by_remote: bool) -> None:
        call = self.calls.pop(call_id)
        if by_remote:
            self.outcomes["visitor_hung_up"] += 1
        elif not call.hung_up:
            self.outcomes["ended_by_stop"] += 1
        elif call.digits:
            self.outcomes["dialled"] += 1
            self.dialled.append(call.digits)
        else:
            self.outcomes["dtmf_timeout"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--max-calls", type=int, required=True)
    parser.add_argument("--dtmf-timeout", type=float, default=3.0)
    parser.add_argument(
        "--stop-when-answered",
        type=int,
        help="stop the UA once this many calls are answered, with the calls still up",
    )
    parser.add_argument(
        "--fail-on-digit", help="the flow's dtmf() raises on this digit (it is then lost)"
    )
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    log_lines: list[str] = []
    threads_before = {t.name for t in threading.enumerate()}
    bridge = Bridge("ua")
    stack = SipTelephony(host, int(port), bridge=bridge, on_log=log_lines.append)
    flow = MiniFlow(stack, args.max_calls, args.dtmf_timeout, args.fail_on_digit)
    stack.start(flow)
    print(f"listening on {host}:{port}", flush=True)
    try:
        flow.run(args.stop_when_answered)
        ports_leaked = stack.call_media_ports() if args.stop_when_answered is None else 0
    finally:
        stack.stop()
        bridge.shutdown(timeout=5.0)
    ended_on_stop = flow.drain()
    errors = [line for line in log_lines if line.startswith("error")]
    threads_left = sorted({t.name for t in threading.enumerate()} - threads_before)
    summary = {
        "calls": stack.calls_started,
        "outcomes": dict(flow.outcomes),
        "dialled": sorted(set(flow.dialled)),
        "callback_threads": sorted(flow.callback_threads),
        "calls_left": len(flow.calls),
        "threads_left": threads_left,
        "errors": errors,
        "said": sum(line.startswith("say ") for line in log_lines),
        "media_ports_leaked": ports_leaked,
        "ended_on_stop": ended_on_stop,
    }
    print(json.dumps(summary), flush=True)
    leaked = flow.calls or threads_left or ports_leaked
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
