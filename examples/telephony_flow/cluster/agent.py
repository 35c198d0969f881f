"""The agent's side of the cluster: event lines for the cluster, and draining.

A ``sip`` agent started with ``--events`` wraps the flow in :class:`EventReporter`,
which writes one JSON line per call start and end on stdout (the format
:mod:`.ledger` reads) before passing each callback on.

:class:`Drain` is what the agent's ``handle_signals(on_signal=...)`` runs on
SIGTERM: the stack refuses new calls (503, so the proxy tries the next
agent), the calls in progress go on until they end or ``timeout`` passes, and
then the agent's run is told to finish (stop the stack, shut the bridge down,
print its report).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
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
    writes one short line (under a lock) before calling the flow.
    ``call.end``'s ``by`` is ``"remote"`` when the caller hung up,
    ``"stop"`` once :meth:`stopping` was called (the stack is hanging up
    what is left: cut off), and ``"flow"`` otherwise.
    """

    def __init__(self, flow: _CallEvents, out: TextIO | None = None) -> None:
        self._flow = flow
        self._out = out if out is not None else sys.stdout
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
        record["t"] = round(time.time(), 3)
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()


class Drain:
    """``on_signal`` for an agent: refuse new calls, let the others end, then finish.

    Args:
        refuse: makes the stack answer new INVITEs with 503 (any thread).
        events: the reporter that knows which calls are in progress.
        finish: tells the agent's run to end (its stop, shutdown and report).
        timeout: how long calls in progress may go on (``--drain-timeout``).
    """

    def __init__(
        self,
        refuse: Callable[[], None],
        events: EventReporter,
        finish: Callable[[], None],
        timeout: float,
    ) -> None:
        self._refuse = refuse
        self._events = events
        self._finish = finish
        self._timeout = timeout
        self.started = threading.Event()
        self.timed_out = False

    def __call__(self) -> None:
        """Drain (the ``bridge-signals`` helper thread); blocks up to ``timeout``.

        **Cancellation and timeouts:** calls still up after ``timeout`` are
        left to the run's stop, which hangs them up (they count as cut off).
        """
        self.started.set()
        self._refuse()
        self._events.draining()
        print("draining: refusing new calls, waiting for calls in progress", file=sys.stderr)
        self.timed_out = not self._events.wait_idle(self._timeout)
        self._finish()
