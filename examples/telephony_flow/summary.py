"""The run's summary: a table for people, then the same as one JSON line.

It stands in for a service's end-of-run report or metrics dashboard. Also the
small measuring helpers both modes share: OS thread counts, latency
percentiles, and the progress line.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = ["OUTCOMES", "FlowReport", "Progress", "Summary", "os_threads", "percentile"]

#: Every outcome a call can have, in the order the table shows them.
OUTCOMES = (
    "door_opened",
    "no_answer",
    "wrong_apartment",
    "no_input",
    "visitor_left",
    "failed",  # the conversation raised; the flow hung up
    "cut_off",  # the stack ended the call before an outcome (stop, Ctrl-C)
)


@dataclass
class FlowReport:
    """What a flow (bridge or legacy) measured about its calls."""

    #: Calls by outcome.
    outcomes: dict[str, int]
    #: Seconds from each incoming-call callback to the start of its job.
    latencies: list[float]
    cancelled_visitor_left: int = 0
    jobs_leaked: int = 0
    errors: int = 0
    loop_errors: int = 0
    threads_started: int | None = None
    #: Names of the stack's threads that called the flow.
    callback_threads: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Seconds from each prompt's request to its first frame played (bridge mode).
    first_frame: list[float] = field(default_factory=list)
    #: Frames the stack played, and those it played after the call had ended.
    frames_played: int | None = None
    frames_after_hangup: int | None = None
    #: Prompts cut short (the call ended, or the stream was cancelled).
    prompts_stopped: int | None = None


@dataclass
class Summary:
    """What one run measured. ``ok`` is true only when nothing leaked."""

    #: "bridge", or "legacy" for the original pattern.
    mode: str
    #: The telephony stack: "simulate" or "sip".
    stack: str
    calls: int
    outcomes: dict[str, int]
    #: Telephony callback to the start of the job (or thread) it caused, in ms.
    latency_ms: dict[str, float | None]
    latency_samples: int
    #: Jobs of a call cancelled because the visitor hung up first.
    cancelled_visitor_left: int
    #: Jobs (legacy: threads running a coroutine) unfinished after the run.
    jobs_leaked: int
    #: OS threads alive after the run that were not alive before it.
    threads_leaked: int
    threads_peak: int
    #: Threads the flow's work ran on: the bridge's loop and worker threads, or
    #: (legacy) the threads started per event.
    threads_started: int | None
    http_connections_open: int
    never_awaited: int
    #: "There is no current event loop in thread ..." errors (legacy).
    loop_errors: int
    #: answer/say/hangup on calls that had already ended (simulate only).
    late_operations: int | None
    #: Names of the stack's threads that delivered callbacks.
    callback_threads: list[str]
    #: Calls whose flow failed, and callbacks that raised.
    errors: int
    duration_s: float
    #: Prompt requested -> its first frame played, in ms (None in legacy mode).
    first_frame_ms: dict[str, float | None] = field(default_factory=dict)
    first_frame_samples: int = 0
    #: Frames of prompts played, and those played after the call ended (must be 0).
    frames_played: int | None = None
    frames_after_hangup: int | None = None
    #: Prompts cut short because the call ended.
    prompts_stopped: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def leaked(self) -> int:
        """Everything that outlived the run."""
        return (
            self.jobs_leaked + self.threads_leaked + self.http_connections_open + self.never_awaited
        )

    @property
    def ok(self) -> bool:
        """Whether the run is clean: nothing leaked, no error, no frame after a hangup."""
        return self.leaked == 0 and self.errors == 0 and not self.frames_after_hangup

    def to_json(self) -> str:
        """The summary as one line of JSON (``ok`` included)."""
        data: dict[str, Any] = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, sort_keys=False)

    def render(self) -> str:
        """The summary as a table for people."""
        rows = [
            f"intercom flow ({self.mode}, {self.stack}): "
            f"{self.calls} calls in {self.duration_s:.1f} s",
            "",
        ]
        rows += [f"  {'outcome':<44}{'calls':>8}"]
        rows += [f"  {name:<44}{self.outcomes.get(name, 0):>8}" for name in OUTCOMES]
        rows += [f"  {'total':<44}{sum(self.outcomes.values()):>8}", ""]
        p50, p99 = self.latency_ms.get("p50"), self.latency_ms.get("p99")
        rows += [
            _row(
                "latency callback -> job start, p50 / p99",
                f"{_ms(p50)} / {_ms(p99)} ms ({self.latency_samples})",
            ),
            _row(
                "prompt requested -> first frame, p50 / p99",
                f"{_ms(self.first_frame_ms.get('p50'))} / {_ms(self.first_frame_ms.get('p99'))}"
                f" ms ({self.first_frame_samples})",
            ),
            _row("prompt frames played", _opt(self.frames_played)),
            _row("prompts cut short by the end of the call", _opt(self.prompts_stopped)),
            _row("frames played after the hangup", _opt(self.frames_after_hangup)),
            _row("jobs cancelled because the visitor left", self.cancelled_visitor_left),
            _row("jobs leaked", self.jobs_leaked),
            _row("threads leaked", self.threads_leaked),
            _row("threads: peak in the process", self.threads_peak),
            _row("threads started by the flow", _opt(self.threads_started)),
            _row("HTTP connections left open", self.http_connections_open),
            _row("never-awaited warnings", self.never_awaited),
            _row("'no current event loop' errors", self.loop_errors),
            _row("operations on calls that had ended", _opt(self.late_operations)),
            _row("errors", self.errors),
        ]
        rows += [f"  note: {note}" for note in self.notes]
        verdict = "OK: nothing leaked" if self.ok else f"FAILED: {self.leaked} leaked"
        if self.errors:
            verdict += f", {self.errors} errors"
        if self.frames_after_hangup:
            verdict += f", {self.frames_after_hangup} frames after a hangup"
        return "\n".join([*rows, "", verdict])

    def print(self, out: TextIO | None = None) -> None:
        """Print the table, then the JSON line last."""
        out = sys.stdout if out is None else out
        print(self.render(), file=out)
        print(self.to_json(), file=out, flush=True)


def _row(label: str, value: object) -> str:
    return f"  {label:<44}{value!s:>8}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def percentile(samples: Sequence[float], p: float) -> float | None:
    """The nearest-rank *p*-th percentile of *samples*, ``None`` when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(samples: Sequence[float]) -> dict[str, float | None]:
    """p50 and p99 of *samples* (seconds), in milliseconds."""
    return {
        name: None if value is None else round(value * 1000.0, 3)
        for name, value in (("p50", percentile(samples, 50)), ("p99", percentile(samples, 99)))
    }


def os_threads() -> int:
    """Threads of this process as the OS counts them (``_thread`` ones included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: only the threads Python knows about
        return threading.active_count()


def settle_threads(baseline: int, timeout: float = 2.0) -> int:
    """Wait (bounded) for exiting threads to be gone; return how many exceed *baseline*.

    A thread that has signalled its end is still exiting for a moment; this
    polls the OS count instead of trusting that moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        extra = os_threads() - baseline
        if extra <= 0 or time.monotonic() >= deadline:
            return max(extra, 0)
        time.sleep(0.01)


class Progress:
    """Prints ``calls done / total`` to stderr while the run goes on, and samples
    the OS thread count for the peak.

    Args:
        done: returns the number of calls that have ended.
        total: the calls expected, or ``None`` when open-ended (SIP without
            ``--max-calls``).
        out: where to print (stderr by default).
    """

    def __init__(
        self, done: Callable[[], int], total: int | None, out: TextIO | None = None
    ) -> None:
        self._done = done
        self._total = total
        self._out = sys.stderr if out is None else out
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self.peak = os_threads()

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        shown = -1
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, os_threads())
            done = self._done()
            if done != shown and self._due(done, shown):
                shown = done
                self._show(done)
        self._show(self._done(), final=True)

    def _due(self, done: int, shown: int) -> bool:
        """On a terminal every change; in a log about every tenth of the run."""
        if self._tty or self._total is None:
            return True
        step = max(1, self._total // 10)
        return done // step != max(shown, 0) // step or shown < 0

    def _show(self, done: int, final: bool = False) -> None:
        total = "?" if self._total is None else str(self._total)
        text = f"calls done {done}/{total}"
        end = "\n" if final or not self._tty else ""
        prefix = "\r" if self._tty else ""
        print(prefix + text, end=end, file=self._out, flush=True)


def outcome_counts(outcomes: Mapping[str, int]) -> dict[str, int]:
    """Every known outcome with its count (zeros included), then any other."""
    counts = {name: outcomes.get(name, 0) for name in OUTCOMES}
    counts.update({k: v for k, v in outcomes.items() if k not in counts})
    return counts
