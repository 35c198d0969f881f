"""The agent's side of the cluster: event lines for the cluster, and draining.

A ``sip`` agent started with ``--events`` wraps the flow in :class:`EventReporter`,
which writes one JSON line per call start and end on stdout (the format
:mod:`.ledger` reads) before passing each callback on.

:class:`Drain` is what the agent's ``handle_signals(on_signal=...)`` runs on
SIGTERM: the stack refuses new calls (503, so the proxy tries the next
agent), the calls in progress go on until they end or ``timeout`` passes, and
then the agent's run is told to finish (stop the stack, shut the bridge down,
print its report), and the exit status goes back to ``handle_signals``.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TextIO

from .ledger import CALL_END, CALL_START, DRAINING

__all__ = ["Drain", "EventReporter"]


class _CallEvents(Protocol):
    def incoming_call(self, call_id: str, caller: str) -> None: ...
    def dtmf(self, call_id: str, digit: str) -> None: ...
    def call_ended(self, call_id: str, by_remote: bool) -> None: ...


class EventReporter:
    """Wraps the flow's :class:`~..telephony.CallEvents`; reports starts and ends as JSON lines.

    Its methods are called on the stack's thread, like the flow's, and each
    writes one short line (under a lock) to *out* before calling the flow
    (``out=None``: it only keeps count, for :meth:`wait_idle`).
    ``call.end``'s ``by`` is ``"remote"`` when the caller hung up,
    ``"stop"`` once :meth:`stopping` was called (the stack is hanging up
    what is left: cut off), and ``"flow"`` otherwise.
    """

    def __init__(self, flow: _CallEvents, out: TextIO | None) -> None:
        self._flow = flow
        self._out = out
        self._lock = threading.Lock()  # guards the fields below and the output
        self._idle = threading.Condition(self._lock)
        self._in_progress: set[str] = set()
        self._stopping = False

    def incoming_call(self, call_id: str, caller: str) -> None:
        with self._lock:
            self._in_progress.add(call_id)
            self._write({"event": CALL_START, "call_id": call_id})
        self._flow.incoming_call(call_id, caller)

    def dtmf(self, call_id: str, digit: str) -> None:
        self._flow.dtmf(call_id, digit)

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        self._flow.call_ended(call_id, by_remote)
        with self._lock:
            by = "remote" if by_remote else ("stop" if self._stopping else "flow")
            self._in_progress.discard(call_id)
            self._write({"event": CALL_END, "call_id": call_id, "by": by})
            self._idle.notify_all()

    def draining(self) -> None:
        """Report that the agent drains. Any thread."""
        with self._lock:
            self._write({"event": DRAINING, "calls": len(self._in_progress)})

    def stopping(self) -> None:
        """From now on a call that ends locally was cut off by the stop. Any thread."""
        with self._lock:
            self._stopping = True

    def wait_idle(self, timeout: float) -> bool:
        """Block until no call is in progress; ``False`` if *timeout* passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_progress, timeout)

    def _write(self, record: dict[str, Any]) -> None:
        # Called with the lock held: lines never interleave.
        if self._out is None:
            return
        record["t"] = round(time.time(), 3)
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()


class _Refuses(Protocol):
    def refuse_new_calls(self) -> None: ...


class Drain:
    """``on_signal`` for an agent: refuse new calls, let the others end, return the status.

    The agent's ``main`` creates it before its bridge starts, installs it with
    ``bridge.handle_signals(b, on_signal=drain)``, :meth:`attach` gives it the stack
    and the reporter once they exist, watches :attr:`stop` (its run ends when
    it is set), and, once its summary is printed, hands the exit status over
    with :meth:`report`.

    Args:
        timeout: how long calls in progress may go on (``--drain-timeout``).
        report_grace: how long, after the calls, to wait for the summary.
    """

    def __init__(self, timeout: float, report_grace: float = 60.0) -> None:
        self._timeout = timeout
        self._report_grace = report_grace
        self._lock = threading.Lock()  # guards _stack, _events and _draining
        self._stack: _Refuses | None = None
        self._events: EventReporter | None = None
        self._draining = False
        self._status: Future[int] = Future()
        self._process_ends = threading.Event()
        #: Set once the run should end (the calls are over, or the timeout passed).
        self.stop = threading.Event()
        #: Whether calls were still up when the timeout passed (they are cut off).
        self.timed_out = False

    def attach(self, stack: _Refuses, events: EventReporter) -> None:
        """The stack and reporter of the run (before the stack starts). Any thread."""
        with self._lock:
            self._stack, self._events = stack, events
            draining = self._draining
        if draining:  # the signal came while the run was starting
            stack.refuse_new_calls()

    def __call__(self) -> int:
        """Drain (the ``bridge-signals`` helper thread); returns the exit status.

        Blocks until the calls in progress have ended (each ended by the flow
        or the caller) or ``timeout`` passed, then sets :attr:`stop` and waits
        for :meth:`report`.

        **Cancellation and timeouts:** calls still up after ``timeout`` are
        left to the run's stop, which hangs them up (reported as cut off, and
        the status is 1); no summary within ``report_grace`` also gives 1.
        """
        with self._lock:
            self._draining = True
            stack, events = self._stack, self._events
        if stack is not None and events is not None:
            stack.refuse_new_calls()
            events.draining()
            print("draining: refusing new calls, waiting for calls in progress", file=sys.stderr)
            self.timed_out = not events.wait_idle(self._timeout)
            if self.timed_out:
                events.stopping()
        self.stop.set()
        try:
            status = self._status.result(timeout=self._report_grace)
        except concurrent.futures.TimeoutError:
            return 1
        return 1 if self.timed_out else status

    def wrapper(self, out: TextIO | None) -> Callable[[Any, _CallEvents], EventReporter]:
        """For the runner: wrap the flow in an :class:`EventReporter` on *out* and attach."""

        def wrap(stack: Any, flow: _CallEvents) -> EventReporter:
            reporter = EventReporter(flow, out)
            self.attach(stack, reporter)
            return reporter

        return wrap

    def report(self, status: int) -> None:
        """The run's exit status, once its summary is out (the main thread; once)."""
        if not self._status.done():
            self._status.set_result(status)

    def hold(self, timeout: float = 30.0) -> None:
        """If a signal is draining, wait up to *timeout* for it to end the process.

        After :meth:`report`, ``handle_signals`` shuts the bridge down, logs and
        exits; the caller keeps its logging set up meanwhile. Without a signal
        this returns at once. **Thread safety:** the main thread.
        """
        with self._lock:
            draining = self._draining
        if draining:
            self._process_ends.wait(timeout)  # never set: the helper exits the process
