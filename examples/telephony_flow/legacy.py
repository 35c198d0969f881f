"""``--legacy``: the same conversation written the way the original application was.

It stands in for the application before bridge, on the same simulated calls.

Every event starts a daemon thread that runs ``asyncio.run`` (a new event loop
per event), and a DTMF callback first tries ``asyncio.get_event_loop()`` on the
stack's thread, which has no loop. So this mode shows, on the same simulated
calls, what the bridge removes:

* "There is no current event loop in thread 'Dummy-1'" on every digit, and the
  coroutine object created for it is never awaited (a ``RuntimeWarning``);
* one thread and one event loop per event, plus one HTTP client (with its own
  connection pool) per call, because a client is bound to the loop it was first
  used on;
* digits that race each other through separate threads;
* no way to cancel a call's work when the visitor hangs up: the conversation
  goes on talking to a call that has ended and the hangup timer fires later
  (the stack counts these late operations).

Do not copy this module; it exists to be compared with :mod:`.flow`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from .flow import (
    DOOR_OPEN,
    GREETING,
    NO_ANSWER,
    NO_INPUT,
    PLEASE_WAIT,
    WRONG_APARTMENT,
    FlowConfig,
)
from .summary import FlowReport
from .telephony import Telephony

__all__ = ["LegacyFlow", "run_legacy"]

log = structlog.get_logger("intercom.legacy")

_TTS_SECONDS = 0.005  # the original "synthesised" a prompt in one go, then said it


@dataclass(eq=False)
class _Call:
    id: str
    digits: queue.Queue[str] = field(default_factory=queue.Queue)
    ended: bool = False
    outcome: str | None = None


class LegacyFlow:
    """The original pattern; implements :class:`~.telephony.CallEvents`."""

    def __init__(self, telephony: Telephony, directory_url: str, config: FlowConfig) -> None:
        self._tel = telephony
        self._url = directory_url
        self._config = config
        self._lock = threading.Lock()  # guards the fields below and every _Call
        self._ended_cond = threading.Condition(self._lock)
        self._calls: dict[str, _Call] = {}
        self._done: list[_Call] = []
        self._threads: list[threading.Thread] = []
        self._latencies: list[float] = []
        self._loop_errors = 0
        self._errors = 0
        self._first_loop_error = ""
        self._callback_threads: set[str] = set()

    # -- CallEvents ----------------------------------------------------------------

    def incoming_call(self, call_id: str, caller: str) -> None:
        """Start a thread that runs the conversation in its own event loop."""
        call = _Call(call_id)
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            self._calls[call_id] = call
        self._spawn(self._converse(call, time.time()))

    def dtmf(self, call_id: str, digit: str) -> None:
        """What the original did: schedule on "the" event loop, then fall back."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            call = self._calls.get(call_id)
        if call is None:
            return
        handler = self._on_digit(call, digit)
        try:
            asyncio.get_event_loop().create_task(handler)
        except RuntimeError as exc:  # this thread has no event loop
            with self._lock:
                self._loop_errors += 1
                self._first_loop_error = self._first_loop_error or str(exc)
            self._spawn(self._on_digit(call, digit))  # `handler` is never awaited

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        """Mark the call ended; its coroutines, on other loops, cannot be stopped."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            call = self._calls.pop(call_id, None)
            if call is None:
                return
            call.ended = True
            if call.outcome is None and by_remote:
                call.outcome = "visitor_left"
            self._done.append(call)
            self._ended_cond.notify_all()

    # -- the conversation, one event loop per thread --------------------------------------

    async def _converse(self, call: _Call, callback_at: float) -> None:
        with self._lock:
            self._latencies.append(time.time() - callback_at)
        async with httpx.AsyncClient(base_url=self._url, timeout=10.0) as http:
            self._tel.answer(call.id)
            await self._say(call, GREETING)
            apartment = await self._collect(call)
            if not apartment:
                await self._close(call, "no_input", NO_INPUT)
                return
            await self._say(call, PLEASE_WAIT)
            found = await http.get(f"/residents/{apartment}")
            if found.status_code == httpx.codes.NOT_FOUND:
                await self._close(
                    call, "wrong_apartment", WRONG_APARTMENT.format(apartment=apartment)
                )
                return
            try:
                ring = http.post(f"/residents/{apartment}/ring", json={"call_id": call.id})
                answer = await asyncio.wait_for(ring, self._config.resident_timeout)
                opened = answer.json().get("answer") == "open"
            except asyncio.TimeoutError:
                opened = False
            if opened:
                await self._close(call, "door_opened", DOOR_OPEN)
            else:
                await self._close(call, "no_answer", NO_ANSWER)

    async def _close(self, call: _Call, outcome: str, prompt: str) -> None:
        with self._lock:
            if not call.ended:
                call.outcome = outcome
        await self._say(call, prompt)
        self._spawn(self._hang_up_later(call.id))  # a timer thread that nobody cancels

    async def _collect(self, call: _Call) -> str:
        typed: list[str] = []
        deadline = time.monotonic() + self._config.dtmf_timeout
        while len(typed) < self._config.max_digits:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                digit = await asyncio.to_thread(call.digits.get, True, remaining)
            except queue.Empty:
                break
            if digit == "#":
                break
            if digit.isdigit():
                typed.append(digit)
        return "".join(typed)

    async def _on_digit(self, call: _Call, digit: str) -> None:
        call.digits.put(digit)

    async def _say(self, call: _Call, text: str) -> None:
        await asyncio.sleep(_TTS_SECONDS)
        self._tel.say(call.id, text)

    async def _hang_up_later(self, call_id: str) -> None:
        await asyncio.sleep(self._config.hangup_delay)
        self._tel.hangup(call_id)

    # -- threads ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        thread = threading.Thread(target=self._run, args=(coro,), daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            asyncio.run(coro)
        except Exception:  # counted, like the original's log line
            with self._lock:
                self._errors += 1
            log.exception("legacy.error")

    # -- the run's view --------------------------------------------------------------------------

    def calls_ended(self) -> int:
        """How many calls have ended. Any thread."""
        with self._lock:
            return len(self._done)

    def wait_calls(self, count: int, timeout: float | None = None) -> bool:
        """Block until *count* calls have ended; ``False`` if *timeout* expired first."""
        with self._ended_cond:
            return self._ended_cond.wait_for(lambda: len(self._done) >= count, timeout)

    def join(self, timeout: float) -> int:
        """Wait up to *timeout* s for every thread started; return how many still run."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in threads)

    def report(self) -> FlowReport:
        """Outcomes, latencies, errors and threads of the calls that have ended."""
        with self._lock:
            outcomes = Counter(call.outcome or "cut_off" for call in self._done)
            report = FlowReport(
                dict(outcomes),
                list(self._latencies),
                errors=self._errors,
                loop_errors=self._loop_errors,
                threads_started=len(self._threads),
                callback_threads=sorted(self._callback_threads),
            )
            if self._first_loop_error:
                report.notes.append(f"first loop error: {self._first_loop_error}")
        return report


def run_legacy(
    telephony: Telephony,
    directory_url: str,
    config: FlowConfig,
    until: Callable[[LegacyFlow], None],
    *,
    grace: float = 2.0,
) -> FlowReport:
    """Run the legacy flow until ``until(flow)`` returns; threads still running
    *grace* s after the stack stopped count as leaked work.

    Then it waits (bounded) for those threads anyway, so that the run ends
    without killing daemon threads in the middle of an HTTP request.
    """
    flow = LegacyFlow(telephony, directory_url, config)
    telephony.start(flow)
    try:
        until(flow)
    finally:
        telephony.stop()
    leaked = flow.join(grace)
    patience = config.dtmf_timeout + config.resident_timeout + config.hangup_delay + 2.0
    left = flow.join(patience) if leaked else 0
    report = flow.report()
    report.jobs_leaked = leaked
    if leaked:
        report.notes.append(
            f"{leaked} threads were still running {grace:.0f} s after the last call; "
            f"{left} still ran {patience:.0f} s later"
        )
    return report
