"""The telephony example (examples/telephony_flow) on the simulated stack.

The flow is driven two ways: by a scripted stack, where the test itself plays
the visitor from a thread not created by ``threading`` and synchronises with
events (its prompts are played by the real stacks' ``Playout``), and by the
simulated stack through the CLI, in-process and in a subprocess. The legacy
mode runs only in a subprocess: it produces "never awaited" warnings by
design, and pytest turns warnings into errors.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge import Bridge, JobCancelled, JobState
from examples.telephony_flow import flow as flow_module
from examples.telephony_flow.__main__ import main
from examples.telephony_flow.flow import FlowConfig, IntercomFlow
from examples.telephony_flow.services.directory import DirectoryService
from examples.telephony_flow.services.tts import SimulatedTts
from examples.telephony_flow.stacks.media import Playout
from examples.telephony_flow.stacks.simulate import make_plans
from examples.telephony_flow.telephony import AudioStream, CallEvents, Played

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "resident_answers": "door_opened",
    "no_answer": "no_answer",
    "wrong_apartment": "wrong_apartment",
    "visitor_hangs_up": "visitor_left",
}


def _own_threads() -> set[threading.Thread]:
    """Live threads Python created (``_thread`` ones show up as dummies forever)."""
    return {t for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}


def _foreign(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on a thread not created by ``threading``, and wait for it."""
    done = threading.Lock()
    done.acquire()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(run, ())
    assert done.acquire(timeout=10), "the callback did not return"
    assert not errors, errors


# -- the flow against a scripted stack -------------------------------------------------


class ScriptedStack:
    """A Telephony the test drives; hangup() reports the end synchronously, as
    pjsua2 may (on the thread that hung up). Its media thread plays prompts
    with the stacks' ``Playout`` and counts the frames each call heard."""

    def __init__(self) -> None:
        self.events: CallEvents | None = None
        self.answered = threading.Event()
        self.hung_up = threading.Event()
        self.lock = threading.Lock()  # guards the fields below
        self.said: list[str] = []
        self.hangups: list[str] = []
        self.heard: Counter[str] = Counter()
        self.after_hangup = 0
        self.listening: set[str] = set()
        self.played: list[concurrent.futures.Future[Played]] = []
        self.frame_heard = threading.Condition(self.lock)
        self.playout = Playout(self._hear)
        self._stopping = threading.Event()
        self._media = threading.Thread(target=self._play_media, name="test-media")

    def start(self, events: CallEvents) -> None:
        self.events = events
        self._media.start()

    def answer(self, call_id: str) -> None:
        self.playout.begin_call(call_id)
        with self.lock:
            self.listening.add(call_id)
        self.answered.set()

    def say(self, call_id: str, text: str) -> None:
        raise AssertionError("the flow plays its prompts as streams")

    def play(self, call_id: str, stream: AudioStream) -> concurrent.futures.Future[Played]:
        done = self.playout.add(call_id, stream)
        with self.lock:
            self.said.append(stream.text)
            self.played.append(done)
        return done

    def hangup(self, call_id: str) -> None:
        with self.lock:
            self.hangups.append(call_id)
        self.end(call_id, by_remote=False)
        self.hung_up.set()

    def end(self, call_id: str, by_remote: bool) -> None:
        """The call ends: silence first, then the flow hears of it."""
        self.playout.end_call(call_id)
        with self.lock:
            self.listening.discard(call_id)
        assert self.events is not None
        self.events.call_ended(call_id, by_remote)

    def stop(self) -> None:
        self._stopping.set()
        if self._media.ident is not None:
            self._media.join(10)
            assert not self._media.is_alive()

    def wait_heard(self, call_id: str, frames: int) -> None:
        with self.frame_heard:
            assert self.frame_heard.wait_for(lambda: self.heard[call_id] >= frames, 10)

    def _hear(self, call_id: str, frame: bytes) -> bool:
        with self.lock:
            if call_id not in self.listening:
                self.after_hangup += 1
                return False
            self.heard[call_id] += 1
            self.frame_heard.notify_all()
        return True

    def _play_media(self) -> None:
        while not self._stopping.is_set():
            self.playout.wait(self.playout.tick())
        self.playout.close()


class WatchedDirectory(DirectoryService):
    """The real directory service, with events around a ring (test synchronisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.ringing = threading.Event()
        self.rang = threading.Event()

    async def _ring(self, apartment: str, call_id: str, reader: Any) -> Any:
        self.ringing.set()
        try:
            return await super()._ring(apartment, call_id, reader)
        finally:
            self.rang.set()


async def _count_tasks() -> int:
    """Tasks on the bridge's loop, this one excluded."""
    return len(asyncio.all_tasks()) - 1


@pytest.fixture
def directory() -> Iterator[WatchedDirectory]:
    service = WatchedDirectory()
    service.start()
    yield service
    service.stop()


@pytest.fixture
def tts() -> SimulatedTts:
    return SimulatedTts(first_frame=0.005, frame_time=0.0)


@pytest.fixture
def setup(
    directory: WatchedDirectory, tts: SimulatedTts
) -> Iterator[tuple[Bridge, IntercomFlow, ScriptedStack]]:
    bridge = Bridge("test-intercom", thread_workers=2)
    bridge.start()
    http = bridge.resource(lambda: httpx.AsyncClient(base_url=directory.url, timeout=10.0))
    stack = ScriptedStack()
    config = FlowConfig(dtmf_timeout=5.0, resident_timeout=30.0, hangup_delay=0.01)
    flow = IntercomFlow(bridge, stack, http, tts.stream, config)
    stack.start(flow)
    yield bridge, flow, stack
    stack.stop()
    report = bridge.shutdown(timeout=2.0)
    assert report.clean, report
    assert stack.after_hangup == 0


def test_visitor_hanging_up_cancels_every_job_of_the_call_at_once(
    setup: tuple[Bridge, IntercomFlow, ScriptedStack], directory: WatchedDirectory
) -> None:
    bridge, flow, stack = setup
    tasks_before = bridge.call(_count_tasks)
    _foreign(flow.incoming_call, "c1", "sip:visitor@127.0.0.1")
    assert stack.answered.wait(10)
    for digit in "201#":  # a resident who never answers
        _foreign(flow.dtmf, "c1", digit)
    assert directory.ringing.wait(10)
    keys = {info.key for info in bridge.jobs()}
    assert {"call:c1", "ring:c1"} <= keys

    _foreign(flow.call_ended, "c1", True)

    assert flow.ledger.settle(grace=5.0) == set()
    assert bridge.jobs() == []
    assert directory.rang.wait(10)
    assert directory.stats().abandoned == 1  # the ring's connection was closed
    assert bridge.call(_count_tasks) == tasks_before  # no task of the call is left
    report = flow.ledger.report()
    assert report.outcomes == {"visitor_left": 1}
    assert report.cancelled_visitor_left >= 2  # the conversation and the ring, at least
    assert stack.hangups == []  # nobody hangs up a call that has gone
    assert bridge.stats().cancelled == report.cancelled_visitor_left


def test_resident_answers_and_the_flow_hangs_up_itself(
    setup: tuple[Bridge, IntercomFlow, ScriptedStack],
) -> None:
    bridge, flow, stack = setup
    _foreign(flow.incoming_call, "c2", "sip:visitor@127.0.0.1")
    assert stack.answered.wait(10)
    for digit in "101":  # three digits end the number without '#'
        _foreign(flow.dtmf, "c2", digit)
    assert stack.hung_up.wait(10)
    assert flow.ledger.wait_calls(1, timeout=10)
    assert flow.ledger.settle(grace=5.0) == set()
    assert bridge.jobs() == []
    assert flow.ledger.report().outcomes == {"door_opened": 1}
    assert stack.hangups == ["c2"]
    assert stack.said[0] == flow_module.GREETING
    assert stack.said[-1] == flow_module.DOOR_OPEN
    assert flow_module.PLEASE_WAIT in stack.said


def test_no_dtmf_before_the_timeout_says_goodbye_and_hangs_up(
    directory: WatchedDirectory,
) -> None:
    stack = ScriptedStack()
    with Bridge("test-intercom-nodtmf") as bridge:
        http = bridge.resource(lambda: httpx.AsyncClient(base_url=directory.url))
        config = FlowConfig(dtmf_timeout=0.05, hangup_delay=0.0)
        flow = IntercomFlow(bridge, stack, http, SimulatedTts(first_frame=0.005).stream, config)
        stack.start(flow)
        try:
            _foreign(flow.incoming_call, "c3", "sip:silent@127.0.0.1")
            assert stack.hung_up.wait(10)
            assert flow.ledger.settle(grace=5.0) == set()
        finally:
            stack.stop()
    assert flow.ledger.report().outcomes == {"no_input": 1}
    assert stack.said[-1] == flow_module.NO_INPUT
    assert directory.stats().requests == 0


def test_hangup_mid_prompt_stops_the_stream_on_the_loop_at_once(
    directory: WatchedDirectory,
) -> None:
    slow = SimulatedTts(first_frame=0.005, frame_time=0.0, chars_per_second=1.0)
    total = slow.frames_for(flow_module.GREETING)  # over a minute of audio
    stack = ScriptedStack()
    config = FlowConfig()
    with Bridge("test-intercom-mid-prompt") as bridge:
        loop_thread = bridge.thread
        assert loop_thread is not None
        http = bridge.resource(lambda: httpx.AsyncClient(base_url=directory.url))
        flow = IntercomFlow(bridge, stack, http, slow.stream, config)
        stack.start(flow)
        try:
            _foreign(flow.incoming_call, "c5", "sip:visitor@127.0.0.1")
            stack.wait_heard("c5", 3)  # the greeting is playing
            _foreign(stack.end, "c5", True)  # the visitor hangs up mid-prompt
            with stack.lock:
                heard = stack.heard["c5"]
            assert flow.ledger.settle(grace=5.0) == set()
            [done] = stack.played
            played = done.result(timeout=10)
        finally:
            stack.stop()
    assert flow.ledger.report().outcomes == {"visitor_left": 1}
    assert played.stopped
    assert played.after_hangup == stack.after_hangup == 0
    assert played.frames == heard == stack.heard["c5"]  # not one frame more
    [closed] = slow.closed()  # the generator's finally ran ...
    assert closed.thread_id == loop_thread.ident  # ... on the loop thread
    assert not closed.complete
    # ... at once: the TTS ran at most its buffer (and the frame in hand) ahead.
    assert heard <= closed.frames <= heard + config.tts_buffer + 2 < total


def test_callbacks_for_unknown_calls_are_ignored(
    setup: tuple[Bridge, IntercomFlow, ScriptedStack],
) -> None:
    bridge, flow, _stack = setup
    _foreign(flow.dtmf, "nobody", "1")
    _foreign(flow.call_ended, "nobody", True)
    assert bridge.jobs() == []
    assert flow.ledger.calls_ended() == 0


# -- the CLI on the simulated stack ----------------------------------------------------


def _last_json(text: str) -> dict[str, Any]:
    lines = text.strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _expected_outcomes(calls: int, seed: int) -> Counter[str]:
    return Counter(EXPECTED[plan.scenario] for plan in make_plans(calls, seed))


def _check_clean(summary: dict[str, Any], calls: int, seed: int) -> None:
    assert summary["mode"] == "bridge"
    assert summary["ok"] is True
    assert summary["jobs_leaked"] == 0
    assert summary["threads_leaked"] == 0
    assert summary["http_connections_open"] == 0
    assert summary["never_awaited"] == 0
    assert summary["errors"] == 0
    outcomes = {k: v for k, v in summary["outcomes"].items() if v}
    assert sum(outcomes.values()) == summary["calls"] == calls
    assert outcomes == _expected_outcomes(calls, seed)
    # A prompt already handed to a worker thread when the visitor left still
    # reaches the stack (a running thread cannot be interrupted): one per call
    # at most, against several per call in the legacy mode.
    assert summary["late_operations"] <= outcomes["visitor_left"]
    # Each visitor who left had at least the conversation itself cancelled.
    assert summary["cancelled_visitor_left"] >= outcomes["visitor_left"] > 0
    assert summary["latency_samples"] == calls
    # Every call heard at least the greeting, and nothing after its hangup.
    assert summary["first_frame_samples"] >= calls - outcomes["visitor_left"]
    assert 0 < summary["first_frame_ms"]["p50"] <= summary["first_frame_ms"]["p99"]
    assert summary["frames_played"] > 0
    assert summary["frames_after_hangup"] == 0
    assert any(
        n.startswith("tts: ") and n.endswith("all on the loop thread") for n in summary["notes"]
    )
    assert 0 <= summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert any(name.startswith("Dummy-") for name in summary["callback_threads"])


def test_simulate_in_process_with_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _own_threads()
    trace = tmp_path / "trace.jsonl"
    status = main(
        ["simulate", "--calls", "40", "--concurrency", "10", "--seed", "1", "--trace", str(trace)]
    )
    out = capsys.readouterr().out
    summary = _last_json(out)
    assert status == 0, out
    _check_clean(summary, calls=40, seed=1)
    assert "jobs leaked" in out
    assert _own_threads() == before

    events = [json.loads(line) for line in trace.read_text().splitlines()]
    asked = {e["call_id"]: e["keys"] for e in events if e["event"] == "call.jobs_cancelled"}
    assert len(asked) == summary["outcomes"]["visitor_left"]
    cancelled = [e for e in events if e["event"] == "job.finished" and e["outcome"] == "cancelled"]
    # A job may finish by itself before the cancellation reaches the loop (a
    # prompt that just ended), but every conversation is cancelled.
    assert {e["key"] for e in cancelled} <= {key for keys in asked.values() for key in keys}
    assert {e["key"] for e in cancelled} >= {f"call:{call_id}" for call_id in asked}
    assert len(cancelled) == summary["cancelled_visitor_left"]
    assert all(e["key"].split(":")[1] == e["call_id"] for e in cancelled)
    started = [e for e in events if e["event"] == "job.started"]
    assert {e["kind"] for e in started} >= {"call", "tts", "ring", "hangup"}
    assert all(e["key"].split(":")[1] == e["call_id"] for e in started if "call_id" in e)


def test_simulate_subprocess() -> None:
    cmd = [sys.executable, "-m", "examples.telephony_flow"]
    args = ["simulate", "--calls", "40", "--concurrency", "10", "--seed", "1"]
    proc = subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=50, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_clean(_last_json(proc.stdout), calls=40, seed=1)
    assert "calls done 40/40" in proc.stderr


def test_legacy_subprocess_reports_threads_and_warnings() -> None:
    calls, seed = 20, 3
    plans = make_plans(calls, seed)
    left = sum(plan.scenario == "visitor_hangs_up" for plan in plans)
    assert left > 0
    args = ["simulate", "--calls", str(calls), "--concurrency", "5", "--seed", str(seed)]
    proc = subprocess.run(
        [sys.executable, "-m", "examples.telephony_flow", *args, "--legacy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    summary = _last_json(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # it leaks by design
    assert summary["mode"] == "legacy"
    assert summary["ok"] is False
    assert summary["calls"] == calls
    digits = sum(len(plan.digits) for plan in plans)
    assert summary["never_awaited"] > 0
    assert summary["loop_errors"] > 0
    assert summary["threads_started"] > calls  # a thread per event
    assert summary["cancelled_visitor_left"] == 0  # it cannot cancel anything
    # The conversation of a visitor who left goes on talking to a dead call.
    assert summary["late_operations"] >= left
    assert any("no current event loop" in note for note in summary["notes"])
    assert summary["loop_errors"] <= digits


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--calls", "0"], "argument --calls: must be at least 1, not 0"),
        (["simulate", "--calls", "many"], "argument --calls: must be a whole number"),
        (["--concurrency", "-3"], "argument --concurrency: must be at least 1"),
        (["simulate", "--dtmf-timeout", "nan"], "argument --dtmf-timeout: must be a positive"),
        (["simulate", "--resident-timeout", "0"], "argument --resident-timeout: must be"),
        (["sip", "--listen", "localhost:5070"], "argument --listen: must be IP:PORT"),
        (["sip", "--listen", "127.0.0.1:70000"], "argument --listen: must end with a port"),
        (["sip", "--max-calls", "0"], "argument --max-calls: must be at least 1"),
        (["dial"], "invalid choice: 'dial'"),
    ],
)
def test_bad_arguments_name_the_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _own_threads()
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err
    assert _own_threads() == before


def test_unwritable_trace_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _own_threads()
    target = tmp_path / "missing-dir" / "trace.jsonl"
    assert main(["simulate", "--calls", "1", "--trace", str(target)]) == 2
    assert "argument --trace: cannot write" in capsys.readouterr().err
    assert not target.parent.exists()
    assert _own_threads() == before


def test_bad_arguments_subprocess_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.telephony_flow", "simulate", "--calls", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 2
    assert "argument --calls: must be at least 1, not -1" in proc.stderr
    assert proc.stdout == ""


def test_plans_are_seeded() -> None:
    assert make_plans(50, 7) == make_plans(50, 7)
    assert make_plans(50, 7) != make_plans(50, 8)
    scenarios = Counter(plan.scenario for plan in make_plans(400, 0))
    assert set(scenarios) == set(EXPECTED)


def test_jobstate_of_a_cancelled_call_is_visible(
    setup: tuple[Bridge, IntercomFlow, ScriptedStack], directory: WatchedDirectory
) -> None:
    bridge, flow, stack = setup
    _foreign(flow.incoming_call, "c4", "sip:visitor@127.0.0.1")
    assert stack.answered.wait(10)
    job = bridge.get("call:c4")
    assert job is not None
    _foreign(flow.call_ended, "c4", True)
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert job.state is JobState.CANCELLED
