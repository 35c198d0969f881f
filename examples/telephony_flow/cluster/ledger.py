"""The cluster's books: what each agent said about its calls, as it said it.

An agent (``python -m examples.telephony_flow sip --events``) writes one JSON
object per line on its stdout for every call's start and end, one when it
starts draining, and, as its last line, its summary::

    {"event": "call.start", "call_id": "...", "t": 1718000000.125}
    {"event": "call.end", "call_id": "...", "by": "flow", "t": ...}
    {"event": "agent.draining", "calls": 3, "t": ...}
    {"mode": "bridge", "stack": "sip", "calls": 8, ..., "ok": true}

``by`` says who ended the call: ``"flow"`` (the flow hung up), ``"remote"``
(the caller hung up) or ``"stop"`` (the stack stopped with the call still up:
cut off). Other lines (the summary table) are ignored.

So when an agent dies without its summary, the calls it had started and not
ended are known, and :meth:`Ledger.agent_exited` counts them as cut off.
:class:`Ledger` is fed from the bridge's loop thread (``run_process``'s
``on_line``) and read from the cluster's main thread; one lock guards it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["CALL_END", "CALL_START", "DRAINING", "AgentBook", "Ledger", "parse_line"]

CALL_START: Final = "call.start"
CALL_END: Final = "call.end"
DRAINING: Final = "agent.draining"
_STDERR_LINES: Final = 40


def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON object on *line*, or ``None`` if it is not one."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class AgentBook:
    """What one agent reported (a snapshot when returned by :meth:`Ledger.books`)."""

    #: 1-based, as the cluster numbers agents.
    number: int
    port: int
    pid: int | None = None
    #: Calls started and not yet ended: Call-ID -> start time (time.time()).
    in_progress: dict[str, float] = field(default_factory=dict)
    started: int = 0
    #: Ended calls by who ended them ("flow", "remote", "stop").
    ended_by: Counter[str] = field(default_factory=Counter)
    #: Calls that started after the agent said it was draining.
    started_while_draining: int = 0
    draining_at: float | None = None
    #: The agent's own summary (its last line), if it got that far.
    summary: dict[str, Any] | None = None
    returncode: int | None = None
    #: Calls in progress when the agent died without a summary.
    lost: int = 0
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def exited(self) -> bool:
        return self.returncode is not None

    @property
    def ended(self) -> int:
        """Calls over: ended normally, or lost with the agent."""
        return sum(self.ended_by.values()) + self.lost


class Ledger:
    """Every agent's :class:`AgentBook`, and a condition to wait for progress on."""

    def __init__(self, ports: list[int]) -> None:
        self._lock = threading.Lock()  # guards the books; _changed is its condition
        self._changed = threading.Condition(self._lock)
        self._books = [AgentBook(n + 1, port) for n, port in enumerate(ports)]

    def on_line(self, number: int, stream: str, line: str) -> None:
        """Record one line of agent *number*'s output (the loop thread; never blocks long)."""
        with self._lock:
            book = self._books[number - 1]
            if stream == "stderr":
                book.stderr_tail = [*book.stderr_tail[-(_STDERR_LINES - 1) :], line]
                return
            record = parse_line(line)
            if record is not None:
                self._apply(book, record)
                self._changed.notify_all()

    def _apply(self, book: AgentBook, record: dict[str, Any]) -> None:
        # Called with the lock held.
        event = record.get("event")
        call_id = str(record.get("call_id", ""))
        if event == CALL_START:
            book.started += 1
            book.in_progress[call_id] = float(record.get("t", time.time()))
            if book.draining_at is not None:
                book.started_while_draining += 1
        elif event == CALL_END:
            book.in_progress.pop(call_id, None)
            book.ended_by[str(record.get("by", "flow"))] += 1
        elif event == DRAINING:
            book.draining_at = float(record.get("t", time.time()))
        elif "ok" in record and "outcomes" in record:
            book.summary = record

    def set_pid(self, number: int, pid: int | None) -> None:
        """Note agent *number*'s process id. Any thread."""
        with self._lock:
            self._books[number - 1].pid = pid

    def agent_exited(self, number: int, returncode: int) -> None:
        """Agent *number* ended: calls it left in progress without a summary are lost."""
        with self._lock:
            book = self._books[number - 1]
            book.returncode = returncode
            if book.summary is None:
                book.lost = len(book.in_progress)
            self._changed.notify_all()

    def totals(self) -> tuple[int, int]:
        """Calls started and calls over (ended, or lost with their agent), cluster-wide."""
        with self._lock:
            return self._started(), sum(book.ended for book in self._books)

    def _started(self) -> int:
        # Called with the lock held.
        return sum(book.started for book in self._books)

    def live(self) -> list[int]:
        """The numbers of the agents that have not exited."""
        with self._lock:
            return [book.number for book in self._books if not book.exited]

    def wait(self, timeout: float) -> None:
        """Block until something changes or *timeout* seconds pass. Not the loop thread."""
        with self._changed:
            self._changed.wait(timeout)

    def wake(self) -> None:
        """Wake :meth:`wait` (e.g. on a signal). Any thread."""
        with self._changed:
            self._changed.notify_all()

    def books(self) -> list[AgentBook]:
        """A copy of every agent's book, agent #1 first."""
        with self._lock:
            return [_copy(book) for book in self._books]


def _copy(book: AgentBook) -> AgentBook:
    return AgentBook(
        number=book.number,
        port=book.port,
        pid=book.pid,
        in_progress=dict(book.in_progress),
        started=book.started,
        ended_by=Counter(book.ended_by),
        started_while_draining=book.started_while_draining,
        draining_at=book.draining_at,
        summary=None if book.summary is None else dict(book.summary),
        returncode=book.returncode,
        lost=book.lost,
        stderr_tail=list(book.stderr_tail),
    )
