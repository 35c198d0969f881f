"""The cluster agent's drain and event lines, without SIP: a fake stack and flow.

:class:`Drain` is what ``handle_signals`` runs on an agent's SIGTERM; here it
runs on a plain thread, synchronised with events and futures.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import threading

import pytest

from examples.telephony_flow.cluster.agent import Drain, EventReporter
from examples.telephony_flow.cluster.ledger import Ledger


class FakeStack:
    def __init__(self) -> None:
        self.refused = threading.Event()

    def refuse_new_calls(self) -> None:
        self.refused.set()


class FakeFlow:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def incoming_call(self, call_id: str, caller: str) -> None:
        self.calls.append(("incoming", call_id, caller))

    def dtmf(self, call_id: str, digit: str) -> None:
        self.calls.append(("dtmf", call_id, digit))

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        self.calls.append(("ended", call_id, str(by_remote)))


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


class DrainThread:
    """Runs the drain as the signal helper would; :meth:`result` joins the thread."""

    def __init__(self, drain: Drain) -> None:
        self._future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=lambda: self._future.set_result(drain()))
        self._thread.start()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float) -> int:
        value = self._future.result(timeout=timeout)
        self._thread.join(timeout)
        return value


def run_drain(drain: Drain) -> DrainThread:
    return DrainThread(drain)


def test_reporter_writes_start_and_end_and_passes_every_event_on() -> None:
    out, flow = io.StringIO(), FakeFlow()
    reporter = EventReporter(flow, out)
    reporter.incoming_call("a", "sip:visitor@x")
    reporter.dtmf("a", "5")
    reporter.call_ended("a", by_remote=False)
    reporter.incoming_call("b", "sip:visitor@x")
    reporter.call_ended("b", by_remote=True)
    records = lines(out)
    assert [(r["event"], r["call_id"], r.get("by")) for r in records] == [
        ("call.start", "a", None),
        ("call.end", "a", "flow"),
        ("call.start", "b", None),
        ("call.end", "b", "remote"),
    ]
    assert flow.calls == [
        ("incoming", "a", "sip:visitor@x"),
        ("dtmf", "a", "5"),
        ("ended", "a", "False"),
        ("incoming", "b", "sip:visitor@x"),
        ("ended", "b", "True"),
    ]


def test_reporter_lines_feed_the_cluster_ledger() -> None:
    out = io.StringIO()
    reporter = EventReporter(FakeFlow(), out)
    reporter.incoming_call("a", "x")
    reporter.draining()
    reporter.stopping()
    reporter.call_ended("a", by_remote=False)
    ledger = Ledger([5061])
    for line in out.getvalue().splitlines():
        ledger.on_line(1, "stdout", line)
    (book,) = ledger.books()
    assert book.started == 1
    assert book.ended_by == {"stop": 1}  # ended after stopping(): cut off
    assert book.draining_at is not None
    assert book.in_progress == {}


def test_drain_refuses_waits_for_the_calls_then_returns_the_reported_status() -> None:
    out, stack = io.StringIO(), FakeStack()
    drain = Drain(timeout=30.0)
    reporter = drain.wrapper(out)(stack, FakeFlow())
    reporter.incoming_call("a", "x")
    status = run_drain(drain)
    assert stack.refused.wait(10)
    assert not drain.stop.is_set()  # the call is still up
    reporter.call_ended("a", by_remote=False)  # the flow ends it
    assert drain.stop.wait(10)
    assert not status.done()  # waits for the summary
    drain.report(0)
    assert status.result(timeout=10) == 0
    assert drain.timed_out is False
    assert [r["event"] for r in lines(out)] == ["call.start", "agent.draining", "call.end"]
    assert lines(out)[-1]["by"] == "flow"


def test_drain_timeout_cuts_off_and_gives_status_1() -> None:
    out = io.StringIO()
    drain = Drain(timeout=0.05)
    reporter = drain.wrapper(out)(FakeStack(), FakeFlow())
    reporter.incoming_call("a", "x")
    status = run_drain(drain)
    assert drain.stop.wait(10)
    assert drain.timed_out is True
    reporter.call_ended("a", by_remote=False)  # the run's stop hangs it up
    drain.report(0)
    assert status.result(timeout=10) == 1
    assert lines(out)[-1]["by"] == "stop"


def test_signal_before_the_stack_exists_refuses_once_attached() -> None:
    drain = Drain(timeout=1.0)
    status = run_drain(drain)
    assert drain.stop.wait(10)  # nothing to wait for yet
    stack = FakeStack()
    drain.attach(stack, EventReporter(FakeFlow(), None))
    assert stack.refused.is_set()
    drain.report(1)
    assert status.result(timeout=10) == 1


def test_no_summary_in_time_gives_status_1() -> None:
    drain = Drain(timeout=1.0, report_grace=0.05)
    assert drain() == 1


def test_hold_returns_at_once_without_a_signal() -> None:
    drain = Drain(timeout=1.0)
    drain.report(0)
    drain.hold(timeout=60.0)  # would block a minute if it thought a drain ran


@pytest.mark.parametrize("by_remote", [True, False])
def test_reporter_without_output_still_tracks_calls(by_remote: bool) -> None:
    reporter = EventReporter(FakeFlow(), None)
    reporter.incoming_call("a", "x")
    assert reporter.wait_idle(0.01) is False
    reporter.call_ended("a", by_remote=by_remote)
    assert reporter.wait_idle(0.01) is True
