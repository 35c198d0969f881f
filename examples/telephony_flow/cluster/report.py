"""The cluster's summary: per agent and in total, a table and then one JSON line.

Per agent: calls, outcomes, callback-to-job p50/p99 (the agent's own
percentiles), jobs leaked, calls cut off, how it ended. Cut off counts the
calls the agent's stack ended before they had an outcome (its summary's
``cut_off``) plus, for an agent that died without a summary, the calls it had
started and not ended (:attr:`~.ledger.AgentBook.lost`). Percentiles cannot
be merged from percentiles, so the total row shows the worst agent's.

``ok`` (exit status 0) only when every agent reported a clean summary, no
job leaked, no call was cut off, the proxy ran until the cluster stopped it,
and the run was not interrupted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from examples.telephony_flow.summary import OUTCOMES

from .ledger import AgentBook

__all__ = ["AgentRow", "ClusterSummary", "summarise"]


@dataclass(frozen=True)
class AgentRow:
    """One agent's line of the summary."""

    agent: int
    port: int
    pid: int | None
    calls: int
    outcomes: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    jobs_leaked: int | None
    cut_off: int
    #: The agent's exit status (negative: killed by that signal), None if still running.
    returncode: int | None
    #: Whether it wrote its summary (and so its leak counts are known).
    reported: bool
    #: Whether its own summary said it was clean.
    agent_ok: bool
    drained: bool
    started_while_draining: int


@dataclass(frozen=True)
class ClusterSummary:
    """The whole run."""

    processes: int
    calls: int
    outcomes: dict[str, int]
    #: The worst agent's p50 and p99, callback to job start (ms).
    latency_ms: dict[str, float | None]
    jobs_leaked: int
    cut_off: int
    agents: list[AgentRow]
    proxy_returncode: int | None
    interrupted: bool
    duration_s: float
    errors: list[str] = field(default_factory=list)
    #: For each agent that died (not drained): seconds until the proxy marked it out.
    proxy_noticed_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the run was clean: see the module docstring."""
        return (
            not self.errors
            and not self.interrupted
            and self.jobs_leaked == 0
            and self.cut_off == 0
            and all(row.reported and row.agent_ok for row in self.agents)
        )

    def to_json(self) -> str:
        """One line of JSON (``ok`` included)."""
        data: dict[str, Any] = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data)

    def render(self) -> str:
        """A table for people."""
        head = (
            f"cluster: {self.processes} agents behind Kamailio, {self.calls} calls "
            f"in {self.duration_s:.1f} s"
        )
        columns = f"  {'agent':>5} {'port':>6} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} "
        columns += f"{'leaked':>7} {'cut off':>8}  ended"
        rows = [head, "", columns]
        rows += [_agent_line(row) for row in self.agents]
        rows.append(
            f"  {'total':>5} {'':>6} {self.calls:>6} {_ms(self.latency_ms['p50']):>8} "
            f"{_ms(self.latency_ms['p99']):>8} {self.jobs_leaked:>7} {self.cut_off:>8}"
        )
        rows += ["", f"  {'outcome':<20}{'calls':>8}"]
        rows += [f"  {name:<20}{self.outcomes.get(name, 0):>8}" for name in OUTCOMES]
        rows += ["", *(f"  error: {error}" for error in self.errors)]
        rows.append(f"  {'result':<20}{'OK' if self.ok else 'NOT OK':>8}")
        return "\n".join(rows)

    def print(self) -> None:
        """The table, then the JSON line, on stdout."""
        print(self.render())
        print(self.to_json(), flush=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _agent_line(row: AgentRow) -> str:
    leaked = "?" if row.jobs_leaked is None else str(row.jobs_leaked)
    return (
        f"  {'#' + str(row.agent):>5} {row.port:>6} {row.calls:>6} {_ms(row.p50_ms):>8} "
        f"{_ms(row.p99_ms):>8} {leaked:>7} {row.cut_off:>8}  {_ended(row)}"
    )


def _ended(row: AgentRow) -> str:
    if row.returncode is None:
        return "still running"
    how = "drained, " if row.drained else ""
    if row.returncode < 0:
        return f"{how}killed by signal {-row.returncode}" + ("" if row.reported else ", no summary")
    summary = "summary" if row.reported else "no summary"
    return f"{how}exit {row.returncode}, {summary}"


def agent_row(book: AgentBook) -> AgentRow:
    """One agent's row from its book."""
    summary = book.summary or {}
    outcomes = {k: int(v) for k, v in dict(summary.get("outcomes", {})).items() if v}
    latency = dict(summary.get("latency_ms", {}))
    cut_off = int(outcomes.get("cut_off", 0)) + book.lost
    if book.lost:
        outcomes["cut_off"] = cut_off
    leaked = summary.get("jobs_leaked")
    return AgentRow(
        agent=book.number,
        port=book.port,
        pid=book.pid,
        calls=int(summary.get("calls", book.started)) if summary else book.started,
        outcomes=outcomes,
        p50_ms=latency.get("p50"),
        p99_ms=latency.get("p99"),
        jobs_leaked=None if leaked is None else int(leaked),
        cut_off=cut_off,
        returncode=book.returncode,
        reported=book.summary is not None,
        agent_ok=bool(summary.get("ok", False)),
        drained=book.draining_at is not None,
        started_while_draining=book.started_while_draining,
    )


def summarise(
    books: list[AgentBook],
    *,
    proxy_returncode: int | None,
    interrupted: bool,
    duration_s: float,
    errors: list[str],
    proxy_noticed_s: dict[str, float],
) -> ClusterSummary:
    """Add the agents' rows up into the cluster's summary."""
    rows = [agent_row(book) for book in books]
    outcomes: Counter[str] = Counter()
    for row in rows:
        outcomes.update(row.outcomes)
    return ClusterSummary(
        processes=len(rows),
        calls=sum(row.calls for row in rows),
        outcomes={name: outcomes.get(name, 0) for name in OUTCOMES},
        latency_ms={
            "p50": _worst(row.p50_ms for row in rows),
            "p99": _worst(row.p99_ms for row in rows),
        },
        jobs_leaked=sum(row.jobs_leaked or 0 for row in rows),
        cut_off=sum(row.cut_off for row in rows),
        agents=rows,
        proxy_returncode=proxy_returncode,
        interrupted=interrupted,
        duration_s=round(duration_s, 3),
        errors=errors,
        proxy_noticed_s=proxy_noticed_s,
    )


def _worst(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
