"""Runs the flow on a fresh bridge for the CLI and the tests, and measures it.

It stands in for an application's startup and shutdown code: it creates the
bridge (:func:`~.flow.make_bridge`), puts the directory's HTTP client on it as
a resource, starts the stack with the flow, waits, then stops the stack, gives
the calls' jobs a grace period and shuts the bridge down, counting whatever
outlived the run. The legacy mode's counterpart is :func:`~.legacy.run_legacy`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import httpx

from bridge import Bridge

from .flow import FlowConfig, IntercomFlow, make_bridge
from .ledger import Ledger
from .services.tts import SimulatedTts
from .summary import FlowReport
from .telephony import CallEvents, Telephony

__all__ = ["run_bridge"]


#: As many kept-alive connections as httpx allows in all (its default keeps 20
#: alive: with 50 calls in flight, every other request opened a new one).
_POOL = httpx.Limits(max_connections=100, max_keepalive_connections=100)


def run_bridge(
    make_stack: Callable[[Bridge], Telephony],
    directory_url: str,
    config: FlowConfig,
    until: Callable[[Ledger], None],
    *,
    grace: float = 2.0,
    session: Callable[[Bridge], contextlib.AbstractContextManager[object]] | None = None,
    tts: SimulatedTts | None = None,
    bridge: Bridge | None = None,
    wrap_events: Callable[[Telephony, CallEvents], CallEvents] | None = None,
) -> FlowReport:
    """Run the flow on a fresh bridge until ``until(flow.ledger)`` returns, then clean up.

    ``make_stack(bridge)`` gives the telephony stack (the SIP stack runs pjsua2
    on a pinned thread of the bridge). ``until`` blocks (e.g. until N calls have
    ended). Then the stack is stopped, every call's jobs get *grace* seconds to
    end, and the bridge shuts down (it closes the HTTP client and the
    channels). Jobs still unfinished after the grace, or found by the shutdown,
    are reported as leaked. ``session(bridge)``, if given, is a context entered
    once the bridge has started and left before it shuts down (the CLI serves
    the operations dashboard in it). *bridge*, if given, is used instead of a
    fresh one (not yet started: the SIP agent installs ``handle_signals`` on it
    first). ``wrap_events(stack, flow)``, if given, returns what the stack
    reports its events to instead of the flow (the agent's event lines).
    """
    tts = SimulatedTts() if tts is None else tts
    bridge = (make_bridge(config) if bridge is None else bridge).start()
    try:
        with contextlib.nullcontext() if session is None else session(bridge):
            http = bridge.resource(
                lambda: httpx.AsyncClient(base_url=directory_url, timeout=10.0, limits=_POOL)
            )
            telephony = make_stack(bridge)
            flow = IntercomFlow(bridge, telephony, http, tts.stream, config)
            telephony.start(flow if wrap_events is None else wrap_events(telephony, flow))
            try:
                until(flow.ledger)
            finally:
                telephony.stop()
            leaked = flow.ledger.settle(grace)
            leaked |= {info.id for info in bridge.jobs()}
    finally:
        loop_thread = bridge.thread
        shutdown = bridge.shutdown(timeout=grace)
    leaked |= {info.id for info in (*shutdown.cancelled, *shutdown.stuck)}
    report = flow.ledger.report()
    report.jobs_leaked = len(leaked)
    report.errors += len(shutdown.resource_errors)
    stats = bridge.stats()
    report.notes.append(
        f"bridge: {stats.submitted} jobs, {stats.succeeded} succeeded, "
        f"{stats.cancelled} cancelled, {stats.failed} failed, {stats.timed_out} timed out"
    )
    report.notes.append(_tts_note(tts, loop_thread))
    return report


def _tts_note(tts: SimulatedTts, loop_thread: threading.Thread | None) -> str:
    """How the TTS streams ended, and on which thread their ``finally`` ran."""
    closed = tts.closed()
    cut = sum(not record.complete for record in closed)
    elsewhere = sum(
        loop_thread is None or record.thread_id != loop_thread.ident for record in closed
    )
    where = "all on the loop thread" if not elsewhere else f"{elsewhere} NOT on the loop thread"
    return f"tts: {len(closed)} streams closed, {cut} cut short, {where}"
