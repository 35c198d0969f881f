"""A model-based test of the whole job state machine (hypothesis stateful testing).

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives a real :class:`Bridge`
(``limits={"lim": 1, "duo": 2}``, ``max_pending=4``, ``when_full`` "reject" or
"block" with a tiny ``block_timeout``) with random sequences of submissions (keys
``None``/"a"/"b"/"c", each ``on_conflict``, three kinds, no deadline, an expired one or
a far one), ``Job.cancel()``, ``Bridge.cancel(key)``, ``cancel_all(kind)``, gates opened
with "succeed" or "fail", and shutdown (a rule, and the end of every run); and checks
it after every step against a reference model of a few dicts (:class:`Model`).

Invariants, after every step: every accepted job resolves exactly once (done
callbacks counted), in the state and with the outcome the model says; ``get(key)`` is
the model's holder of the key; ``jobs()`` lists the unfinished jobs, at most
``max_pending`` of them but for those cancelled by ``replace`` and still unwinding;
``stats()`` adds up and matches the model's counters; no more coroutines of a kind
run at once than its limit (each coroutine counts itself); no coroutine receives a
second cancellation; no ended job stays reachable (``weakref``; failed jobs aside,
which the bridge keeps in a bounded ring for the pytest plugin).

Determinism, so that every run replays and shrinks:

- Each rule runs on one of three persistent helper threads, in turn, and is waited
  for: calls come from several threads but never at the same time (true races are
  left to the ``hammer`` stress tests).
- Every job's coroutine waits on gates of its own (``concurrent.futures.Future``)
  that only rules resolve; nothing depends on the clock. Deadlines are none, far (an
  hour) or already expired (``timeout=0``); a deadline that fires while a job runs
  would race with its start, so none does here.
- After each rule the machine settles: it waits (with a bound) for what the model says
  must happen (jobs ended, coroutines started or cancelled), then lets the loop spin a
  few rounds so that anything the model did not expect shows too, then checks.
- One race the contract allows is made harmless: a batch cancellation (``cancel_all``,
  shutdown) may free a place in a lane before it reaches a queued job of the same
  batch, which then starts; such a job waits for its cancellation (:func:`job_body`).

A coroutine ends when its gate opens ("fail": it raises :class:`GateFailure`). When
cancelled it either re-raises at once ("plain"), catches the cancellation and carries
on until a second gate opens ("swallow", then ends as that gate says), or awaits that
gate as its cleanup and then re-raises ("cleanup"). A second cancellation would hit
the last two while they wait: each coroutine counts the cancellations it receives.

The example budget comes from the hypothesis profile (``HYPOTHESIS_PROFILE``, see
conftest.py): "ci" runs a fixed set of 200 examples, "long" many more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import queue
import threading
import types
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bridge import (
    Bridge,
    BridgeClosed,
    DuplicateJob,
    Job,
    JobCancelled,
    JobState,
    JobTimeout,
    Overloaded,
    ShutdownReport,
)

LIMITS: Final = {"lim": 1, "duo": 2}
KINDS: Final = ("job", "lim", "duo")
KEYS: Final = (None, "a", "b", "c")
MAX_PENDING: Final = 4
#: How long a submission waits for room in "block" mode (room never comes here).
BLOCK_TIMEOUT: Final = 0.01
#: Deadlines: none, one that has expired at submit(), one that never fires here.
DEADLINES: Final = {"none": None, "expired": 0.0, "far": 3600.0}
BEHAVIOURS: Final = ("plain", "swallow", "cleanup")
#: (behaviour, deadline) of a submitted job. An expired job may start before the
#: bridge sees its deadline (then it is cancelled at once): only "plain" ends at once.
JOB_SPECS: Final = (
    *((behaviour, deadline) for deadline in ("none", "far") for behaviour in BEHAVIOURS),
    ("plain", "expired"),
)
OUTCOMES: Final = ("succeed", "fail")
HELPER_THREADS: Final = 3
#: Upper bound for anything the model says must happen now (it takes milliseconds).
WAIT: Final = 5.0
#: Upper bound for one rule's call into the bridge.
RULE_WAIT: Final = 30.0
#: Rounds of the loop a settle spins after the expected effects have shown.
SPIN_ROUNDS: Final = 8

# The model's statuses of an accepted job.
QUEUED: Final = "queued"  # accepted, not started (waits for a place in its lane)
RUNNING: Final = "running"  # its coroutine waits for its gate, never cancelled
CLEANING: Final = "cleaning"  # cancelled; awaits its gate as cleanup, then re-raises
SWALLOWED: Final = "swallowed"  # cancelled; caught it, waits for its gate again
DONE: Final = "done"
STARTED: Final = frozenset({RUNNING, CLEANING, SWALLOWED})

SUCCEEDED: Final = JobState.SUCCEEDED
FAILED: Final = JobState.FAILED
CANCELLED: Final = JobState.CANCELLED
TIMED_OUT: Final = JobState.TIMED_OUT

_bridge_names = itertools.count(1)

#: One AssertionError per verdict of submit() (see Model.verdict): hypothesis reports
#: and shrinks each kind of disagreement as a distinct failure, not only the simplest.
WRONG_ANSWER: Final = {
    verdict: type(f"ShouldBe{verdict.title()}", (AssertionError,), {})
    for verdict in ("accept", "closed", "duplicate", "join", "overloaded", "replace")
}


class GateFailure(Exception):
    """What a job whose gate opened with "fail" raises."""


class Meter:
    """What the coroutines share (loop thread): how many of each kind run now, the
    most at once, and the unwinding jobs the next cancellation releases (shutdown)."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.release: list[tuple[Probe, str]] = []

    def cancellation_seen(self) -> None:
        """A coroutine received a cancellation: open the listed cleanup gates."""
        release, self.release = self.release, []
        for probe, outcome in release:
            probe.open(probe.cleanup_gate, outcome)

    def enter(self, kind: str) -> None:
        self.running[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.running[kind])

    def leave(self, kind: str) -> None:
        self.running[kind] -= 1


class Probe:
    """One submission: its gates, what its coroutine saw, and what the model expects."""

    def __init__(
        self, mid: int, key: str | None, kind: str, deadline: str, behaviour: str, meter: Meter
    ) -> None:
        self.mid = mid
        self.key = key
        self.kind = kind
        self.deadline = deadline
        self.behaviour = behaviour
        self.meter = meter
        self.value = f"value of job#{mid}"
        self.thread = ""  # the helper thread that submitted it
        # What the coroutine waits for before a cancellation, and after one (its
        # cleanup, or carrying on); only rules (and shutdown) open them.
        self.gate = _new_gate()
        self.cleanup_gate = _new_gate()
        # What the coroutine and the done callbacks saw.
        self.entered = threading.Event()
        self.cancel_seen = threading.Event()
        self.resolved = threading.Event()
        self.cancels = 0
        self.resolutions = 0
        # The job: held strongly until it has ended and been checked, then weakly.
        self.job: Job[str] | None = None
        self.ref: weakref.ref[Job[str]] | None = None
        # The model's view.
        self.status = QUEUED
        self.expected: JobState | None = None
        self.outcome: str | None = None  # what its gate was opened with
        self.cancel_requested = False
        self.cancels_allowed: tuple[int, ...] = (0,)  # how many it may receive
        self.holds_key = False
        self.holds_room = False
        self.replaced = False
        self.confirmed = False  # ended, and checked by a settle

    def __repr__(self) -> str:
        return (
            f"job#{self.mid}(key={self.key!r}, kind={self.kind!r}, {self.behaviour}, "
            f"deadline={self.deadline}, model: {self.status}"
            f"{'' if self.expected is None else ' ' + self.expected.name})"
        )

    def on_done(self, _: object) -> None:
        self.resolutions += 1
        self.resolved.set()

    def waited_gate(self) -> concurrent.futures.Future[str]:
        """The gate the coroutine waits for now (or will, once started)."""
        return self.cleanup_gate if self.status in (CLEANING, SWALLOWED) else self.gate

    @staticmethod
    def open(gate: concurrent.futures.Future[str], outcome: str) -> None:
        if not gate.done():
            gate.set_result(outcome)


def _new_gate() -> concurrent.futures.Future[str]:
    # A gate that cannot be cancelled: asyncio.wrap_future() cancels its source
    # when the awaiting task is cancelled, and the gate must outlive that.
    gate: concurrent.futures.Future[str] = concurrent.futures.Future()
    gate.set_running_or_notify_cancel()
    return gate


async def _counted(probe: Probe, waited: Awaitable[str]) -> str:
    """Await *waited*, counting the cancellations the coroutine receives meanwhile."""
    try:
        return await waited
    except asyncio.CancelledError:
        probe.cancels += 1
        probe.cancel_seen.set()
        probe.meter.cancellation_seen()
        raise


async def job_body(probe: Probe) -> str:
    """Every job's coroutine: wait for the gate; react to a cancellation by behaviour."""
    probe.meter.enter(probe.kind)
    probe.entered.set()
    try:
        if probe.cancel_requested:
            # A batch cancellation (cancel_all, shutdown) that includes this queued job
            # may free a place in its lane before deciding this job's own cancellation:
            # the job then starts, and must end by that cancellation, as if it had
            # never started, whatever its behaviour and its gate.
            await _counted(probe, asyncio.get_running_loop().create_future())
        try:
            outcome = await _counted(probe, asyncio.wrap_future(probe.gate))
        except asyncio.CancelledError:
            if probe.behaviour == "plain":
                raise
            # Cleanup, or carry on: a gate says when. A second cancellation ends it here.
            outcome = await _counted(probe, asyncio.wrap_future(probe.cleanup_gate))
            if probe.behaviour == "cleanup":
                raise
        if outcome == "fail":
            raise GateFailure(f"job#{probe.mid} failed")
        return probe.value
    finally:
        probe.meter.leave(probe.kind)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _spin(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Attempt:
    """What a call into the bridge returned or raised (without the traceback, whose
    frames would keep jobs reachable)."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.value: Any = None
        self.error: type[BaseException] | None = None
        self.message = ""
        try:
            self.value = fn(*args, **kwargs)
        except Exception as exc:
            self.error = type(exc)
            self.message = str(exc)

    def __repr__(self) -> str:
        if self.error is None:
            return repr(self.value)
        return f"{self.error.__name__}({self.message!r})"


class Helpers:
    """A few persistent threads; each call runs on the next one in turn."""

    def __init__(self, n: int) -> None:
        self._queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(n)]
        self._threads = [
            threading.Thread(target=self._serve, args=(q,), name=f"sm-helper-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()
        self._turn = itertools.count()

    def start(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queues[next(self._turn) % len(self._queues)].put((fn, args, done))
        return done

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.start(fn, *args).result(RULE_WAIT)

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join(RULE_WAIT)

    @staticmethod
    def _serve(q: queue.SimpleQueue[Any]) -> None:
        while (item := q.get()) is not None:
            fn, args, done = item
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)
            del item, fn, args, done


class Model:
    """What the contract says the bridge holds: a few dicts, no threads, no clock.

    Room: every unfinished job holds room and its key, except a job cancelled by
    ``replace``, which gives up both at once. A lane place is held from the start of
    the coroutine until it ends (unwinding included). Each job gets one cancellation
    at most, whatever asks for it.
    """

    def __init__(self) -> None:
        self.probes: dict[int, Probe] = {}  # every accepted job, in order
        self.keys: dict[str, Probe] = {}
        self.queues: dict[str, deque[Probe]] = {kind: deque() for kind in LIMITS}
        self.placed: Counter[str] = Counter()  # coroutines started and not ended, by kind
        self.ended: Counter[JobState] = Counter()
        self.accepted = 0
        self.rejected = 0
        self.overloaded = 0
        self.closed = False

    def unfinished(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.status != DONE]

    def room_used(self) -> int:
        return sum(p.holds_room for p in self.unfinished())

    def verdict(self, key: str | None, on_conflict: str) -> str:
        """What submit() must do: closed, duplicate, join, replace, overloaded, accept."""
        if self.closed:
            return "closed"
        holder = None if key is None else self.keys.get(key)
        if holder is not None:
            # A taken key is decided before room; a replaced job's room is free at once.
            return {"reject": "duplicate", "join": "join", "replace": "replace"}[on_conflict]
        return "overloaded" if self.room_used() >= MAX_PENDING else "accept"

    def refuse(self, verdict: str) -> None:
        self.rejected += 1
        self.overloaded += verdict == "overloaded"

    def admit(self, probe: Probe) -> None:
        self.accepted += 1
        self.probes[probe.mid] = probe
        probe.holds_room = True
        replaced = None if probe.key is None else self.keys.get(probe.key)
        if probe.key is not None:
            self.keys[probe.key] = probe
            probe.holds_key = True
        if replaced is not None:
            replaced.holds_key = replaced.holds_room = False
            replaced.replaced = True
        if probe.deadline == "expired":
            self._end(probe, TIMED_OUT)  # whether or not its coroutine got to start
            probe.cancels_allowed = (0, 1)
        elif probe.kind in LIMITS and self.placed[probe.kind] >= LIMITS[probe.kind]:
            self.queues[probe.kind].append(probe)
        else:
            self._start(probe)
        if replaced is not None:
            self.cancel([replaced])

    def cancel(self, batch: Iterable[Probe]) -> list[bool]:
        """Ask each job to stop, queued ones first (they do not start: see job_body).

        Returns what ``Job.cancel()`` returns for each.
        """
        answers = []
        fresh = []
        for probe in batch:
            if probe.status == DONE:
                answers.append(probe.expected is CANCELLED)
                continue
            answers.append(True)
            if not probe.cancel_requested:  # delivered once, whatever asks again
                probe.cancel_requested = True
                fresh.append(probe)
        for probe in fresh:
            if probe.status == QUEUED:
                self.queues[probe.kind].remove(probe)
                self._end(probe, CANCELLED)
                if len(fresh) > 1:  # it may start in the batch's gap (see job_body)
                    probe.cancels_allowed = (0, 1)
        for probe in fresh:
            if probe.status == RUNNING:
                probe.cancels_allowed = (1,)
                if probe.behaviour == "plain":
                    self._end(probe, CANCELLED)
                else:
                    probe.status = CLEANING if probe.behaviour == "cleanup" else SWALLOWED
        return answers

    def open_gate(self, probe: Probe, outcome: str) -> None:
        """The gate *probe* waits for (:meth:`Probe.waited_gate`) opens."""
        probe.outcome = outcome
        if probe.status == CLEANING:
            self._end(probe, CANCELLED)
        elif probe.status in (RUNNING, SWALLOWED):
            self._end(probe, SUCCEEDED if outcome == "succeed" else FAILED)
        # QUEUED: it ends as soon as it starts.

    def shut_down(self) -> list[Probe]:
        """Close intake and cancel every job not asked before; return those."""
        self.closed = True
        fresh = [p for p in self.unfinished() if not p.cancel_requested]
        self.cancel(fresh)
        return fresh

    def _start(self, probe: Probe) -> None:
        probe.status = RUNNING
        self.placed[probe.kind] += 1
        if probe.outcome is not None:
            self.open_gate(probe, probe.outcome)

    def _end(self, probe: Probe, state: JobState) -> None:
        had_place = probe.status in STARTED
        probe.status = DONE
        probe.expected = state
        self.ended[state] += 1
        if probe.holds_key:
            assert probe.key is not None
            assert self.keys.pop(probe.key) is probe
        probe.holds_key = probe.holds_room = False
        if had_place:
            self.placed[probe.kind] -= 1
            waiting = self.queues.get(probe.kind)
            if waiting and self.placed[probe.kind] < LIMITS[probe.kind]:
                self._start(waiting.popleft())


def _holders(obj: object) -> str:
    """The types of the objects that refer to *obj* (frames left out)."""
    names = {
        type(ref).__qualname__
        for ref in gc.get_referrers(obj)
        if not isinstance(ref, types.FrameType)
    }
    return ", ".join(sorted(names)) or "nothing but frames"


class BridgeMachine(RuleBasedStateMachine):
    """Drives one Bridge per run and checks it against :class:`Model` after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.helpers = Helpers(HELPER_THREADS)
        self.model = Model()
        self.meter = Meter()
        self.bridge: Bridge | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.base = (0, 0)  # (submitted, succeeded) by the machine's own set-up call
        self.report: ShutdownReport | None = None
        self.made: list[Probe] = []  # every probe given to the bridge, accepted or not
        self.mids = itertools.count(1)
        self.in_step = False  # a step started and has not completed: it failed

    # -- set-up ----------------------------------------------------------------------

    @initialize(when_full=st.sampled_from(["reject", "block"]))
    def make_bridge(self, when_full: str) -> None:
        self.in_step = True
        self.bridge = Bridge(
            name=f"state-machine-{next(_bridge_names)}",
            default_timeout=None,
            limits=LIMITS,
            max_pending=MAX_PENDING,
            when_full=when_full,  # type: ignore[arg-type]
        )
        # The loop, for the settle's spin: one job, outside the model.
        self.loop = self.helpers.run(self.bridge.call, _running_loop)
        stats = self.bridge.stats()
        self.base = (stats.submitted, stats.succeeded)
        self.in_step = False

    # -- rules -----------------------------------------------------------------------

    @rule(
        key=st.sampled_from(KEYS),
        on_conflict=st.sampled_from(["reject", "replace", "join"]),
        kind=st.sampled_from(KINDS),
        job=st.sampled_from(JOB_SPECS),
    )
    def submit(self, key: str | None, on_conflict: str, kind: str, job: tuple[str, str]) -> None:
        self.in_step = True
        behaviour, deadline = job
        model = self.model
        probe = Probe(next(self.mids), key, kind, deadline, behaviour, self.meter)
        verdict = model.verdict(key, on_conflict)
        holder = None if key is None else model.keys.get(key)
        room = model.room_used()
        self.made.append(probe)
        attempt = self.helpers.run(self._submit_here, probe, on_conflict)
        got = self._classify(attempt, holder)
        if got == "new":
            probe.job = attempt.value  # held even when unexpected: teardown ends it
        expected = {"accept": "new", "replace": "new"}.get(verdict, verdict)
        why = (
            f"submit(key={key!r}, on_conflict={on_conflict!r}, kind={kind!r}) with "
            f"{room}/{MAX_PENDING} room used"
            f"{'' if holder is None else f' and the key held by {holder!r}'}: the contract "
            f"says {verdict}, the bridge answered {attempt!r}"
        )
        if got != expected:
            raise WRONG_ANSWER[verdict](why)
        if verdict in ("accept", "replace"):
            attempt.value.add_done_callback(probe.on_done)
            model.admit(probe)
        elif verdict != "join":
            model.refuse(verdict)
        self._settle()
        self.in_step = False

    @precondition(lambda self: self._gated())
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def open_gate(self, data: st.DataObject, outcome: str) -> None:
        self.in_step = True
        probe = self._draw(data, self._gated())
        self.helpers.run(probe.open, probe.waited_gate(), outcome)
        self.model.open_gate(probe, outcome)
        self._settle()
        self.in_step = False

    @precondition(lambda self: self.model.unfinished())
    @rule(data=st.data())
    def cancel_job(self, data: st.DataObject) -> None:
        self.in_step = True
        probe = self._draw(data, self.model.unfinished())
        assert probe.job is not None
        (expected,) = self.model.cancel([probe])  # the model first: see job_body
        answer = self.helpers.run(probe.job.cancel)
        assert answer is expected, f"{probe!r}.cancel() returned {answer}, not {expected}"
        self._settle()
        self.in_step = False

    @precondition(lambda self: self.bridge is not None and self.report is None)
    @rule(key=st.sampled_from([k for k in KEYS if k is not None]))
    def cancel_key(self, key: str) -> None:
        self.in_step = True
        assert self.bridge is not None
        holder = self.model.keys.get(key)
        expected = holder is not None and self.model.cancel([holder])[0]
        answer = self.helpers.run(self.bridge.cancel, key)
        assert answer is expected, (
            f"Bridge.cancel({key!r}) returned {answer}, not {expected} (holder: {holder!r})"
        )
        self._settle()
        self.in_step = False

    @precondition(lambda self: self.bridge is not None and self.report is None)
    @rule(kind=st.sampled_from([None, *KINDS]))
    def cancel_all(self, kind: str | None) -> None:
        self.in_step = True
        assert self.bridge is not None
        batch = [p for p in self.model.unfinished() if kind is None or p.kind == kind]
        fresh = sum(not p.cancel_requested for p in batch)
        self.model.cancel(batch)  # the model first: see job_body
        answer = self.helpers.run(self.bridge.cancel_all, kind)
        # Every job not asked before must be; asking again those already asked is allowed.
        assert fresh <= answer <= len(batch), (
            f"cancel_all({kind!r}) returned {answer}; {len(batch)} unfinished job(s) of that "
            f"kind, {fresh} of them not cancelled before: {batch!r}"
        )
        self._settle()
        self.in_step = False

    # Teardown shuts down every run; as a rule, only when jobs are queued or unwinding.
    @precondition(
        lambda self: (
            self.report is None
            and any(p.status in (QUEUED, CLEANING, SWALLOWED) for p in self.model.unfinished())
        )
    )
    @rule(outcome=st.sampled_from(OUTCOMES))
    def shutdown(self, outcome: str) -> None:
        self.in_step = True
        self._shut_down(outcome)
        self.in_step = False

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        if self.bridge is None:
            return
        self.in_step = True
        self._check_probes()
        self._check_keys()
        self._check_listing()
        self._check_stats()
        self._check_lanes()
        self._check_reachable()
        self.in_step = False

    # -- teardown -------------------------------------------------------------------

    def teardown(self) -> None:
        failed_before = self.in_step
        try:
            if self.bridge is not None and not failed_before:
                if self.report is None:
                    self._shut_down("succeed")
                self.agrees_with_model()
                unresolved = [p for p in self.model.probes.values() if p.resolutions != 1]
                assert unresolved == [], f"jobs not resolved exactly once: {unresolved!r}"
                self._check_closed()
        finally:
            self._clean_up()

    def _clean_up(self) -> None:
        """Whatever happened: end every job, shut down, retrieve every failure."""
        for probe in self.made:
            probe.open(probe.gate, "succeed")
            probe.open(probe.cleanup_gate, "succeed")
        try:
            if self.bridge is not None:
                self.bridge.shutdown(timeout=WAIT)
        finally:
            for probe in self.made:
                job = probe.job
                if job is None and probe.ref is not None:
                    job = probe.ref()
                if job is not None and job.done() and not job.cancelled():
                    job.exception()  # retrieved: the plugin must not flag it
            self.helpers.close()

    # -- the parts ------------------------------------------------------------------

    def _submit_here(self, probe: Probe, on_conflict: str) -> Attempt:
        """Runs on a helper thread."""
        assert self.bridge is not None
        probe.thread = threading.current_thread().name
        return Attempt(
            self.bridge.submit,
            job_body,
            probe,
            key=probe.key,
            kind=probe.kind,
            timeout=DEADLINES[probe.deadline],
            on_conflict=on_conflict,
            block_timeout=BLOCK_TIMEOUT,
        )

    @staticmethod
    def _classify(attempt: Attempt, holder: Probe | None) -> str:
        if attempt.error is None:
            if holder is not None and attempt.value is holder.job:
                return "join"
            return "new" if isinstance(attempt.value, Job) else f"returned {attempt.value!r}"
        for name, error in (
            ("closed", BridgeClosed),
            ("duplicate", DuplicateJob),
            ("overloaded", Overloaded),
        ):
            if issubclass(attempt.error, error):
                return name
        return f"raised {attempt!r}"

    def _gated(self) -> list[Probe]:
        return [p for p in self.model.unfinished() if not p.waited_gate().done()]

    @staticmethod
    def _draw(data: st.DataObject, probes: list[Probe]) -> Probe:
        by_mid = {p.mid: p for p in probes}
        return by_mid[data.draw(st.sampled_from(sorted(by_mid)), label="job")]

    def _shut_down(self, outcome: str) -> None:
        """Shut down with timeout 0 from a helper; every job ends as the model says.

        Nothing here depends on how long shutdown waits for cancelled jobs: the
        jobs it cancels have their cleanup gates open beforehand, so they end at
        once; the jobs cancelled before (unwinding) must get no second
        cancellation, and the first cancellation shutdown delivers opens their
        cleanup gates (:meth:`Meter.cancellation_seen`), on the loop, in the same
        pass in which a second one would have come. Without such a job to deliver
        to, the unwinding jobs are let finish first.
        """
        assert self.bridge is not None
        model = self.model
        if not any(p.status == RUNNING for p in model.unfinished()):
            for probe in model.unfinished():
                if probe.status in (CLEANING, SWALLOWED):
                    probe.open(probe.cleanup_gate, outcome)
                    model.open_gate(probe, outcome)
            self._settle()
        at_shutdown = model.unfinished()
        ids = {p.job.id for p in at_shutdown if p.job is not None}
        unwinding = [p for p in at_shutdown if p.status in (CLEANING, SWALLOWED)]
        self.meter.release = [(probe, outcome) for probe in unwinding]
        fresh = model.shut_down()  # the model first: see job_body
        for probe in fresh:
            if probe.status in (CLEANING, SWALLOWED):
                probe.open(probe.cleanup_gate, outcome)
                model.open_gate(probe, outcome)
        for probe in unwinding:  # after the queued jobs' cancellation, as in the bridge
            model.open_gate(probe, outcome)
        call = self.helpers.start(self.bridge.shutdown, 0)
        self.report = report = call.result(RULE_WAIT)
        self._settle()
        assert report.stuck == (), f"shutdown() reported stuck jobs: {report.stuck}"
        cancelled = {info.id for info in report.cancelled}
        assert cancelled <= ids, f"shutdown() reported jobs it never had: {report}"
        assert report.finished + len(cancelled) == len(at_shutdown), (
            f"shutdown() found {len(at_shutdown)} unfinished job(s) {at_shutdown!r} "
            f"but reported {report}"
        )

    def _check_closed(self) -> None:
        """After shutdown: intake refused, nothing to cancel, the same report again."""
        assert self.bridge is not None
        probe = Probe(next(self.mids), "a", "job", "none", "plain", self.meter)
        self.made.append(probe)
        attempt = self.helpers.run(self._submit_here, probe, "join")
        assert attempt.error is BridgeClosed, f"submit() after shutdown: {attempt!r}"
        self.model.refuse("closed")
        assert self.helpers.run(self.bridge.cancel, "a") is False
        assert self.helpers.run(self.bridge.cancel_all, None) == 0
        again = self.helpers.run(self.bridge.shutdown, 0)
        assert again == self.report, f"a second shutdown() returned {again}, not {self.report}"
        self.agrees_with_model()

    def _settle(self) -> None:
        """Wait for what the model says must have happened, let the loop spin, check."""
        model = self.model
        for probe in model.probes.values():
            if probe.status == DONE and not probe.confirmed:
                self._wait(probe.resolved, f"{probe!r} to end")
            elif probe.status in STARTED:
                self._wait(probe.entered, f"{probe!r} to start")
                if probe.status != RUNNING:
                    self._wait(probe.cancel_seen, f"{probe!r} to receive its cancellation")
        if not model.closed:
            assert self.loop is not None
            asyncio.run_coroutine_threadsafe(_spin(SPIN_ROUNDS), self.loop).result(WAIT)
        for probe in model.probes.values():
            if probe.status == DONE and not probe.confirmed:
                self._confirm(probe)

    def _confirm(self, probe: Probe) -> None:
        """Check how an ended job ended; then hold it only weakly."""
        job = probe.job
        assert job is not None
        assert probe.cancels <= 1, f"{probe!r} received {probe.cancels} cancellations"
        assert job.state is probe.expected, f"{probe!r} ended {job.state.name}"
        if probe.expected is SUCCEEDED:
            assert job.result() == probe.value
        elif probe.expected is FAILED:
            assert isinstance(job.exception(), GateFailure), f"{probe!r}: {job.exception()!r}"
        elif probe.expected is CANCELLED:
            assert job.cancelled()
            try:
                job.result()
            except JobCancelled as exc:
                exc.__traceback__ = None  # its frames would hold the job in a cycle
            else:
                raise AssertionError(f"{probe!r}: result() of a cancelled job returned")
        else:
            assert isinstance(job.exception(), JobTimeout), f"{probe!r}: {job.exception()!r}"
        probe.ref = weakref.ref(job)
        probe.job = None
        probe.confirmed = True

    @staticmethod
    def _wait(event: threading.Event, what: str) -> None:
        assert event.wait(WAIT), f"waited {WAIT} s for {what}"

    def _check_probes(self) -> None:
        for probe in self.model.probes.values():
            assert probe.cancels <= 1, (
                f"{probe!r} received {probe.cancels} cancellations; one at most may be delivered"
            )
            ended = probe.status == DONE
            assert probe.resolutions == ended, (
                f"{probe!r} resolved {probe.resolutions} time(s) (done callbacks)"
            )
            assert probe.cancels in probe.cancels_allowed, (
                f"{probe!r} received {probe.cancels} cancellation(s), not "
                f"{' or '.join(map(str, probe.cancels_allowed))}"
            )
            if ended:
                continue
            job = probe.job
            assert job is not None
            state = JobState.PENDING if probe.status == QUEUED else JobState.RUNNING
            assert job.state is state, f"{probe!r} is {job.state.name}"
            assert probe.entered.is_set() == (probe.status != QUEUED), (
                f"{probe!r}: its coroutine {'has' if probe.entered.is_set() else 'has not'} started"
            )

    def _check_keys(self) -> None:
        assert self.bridge is not None
        for key in KEYS:
            if key is None:
                continue
            holder = self.model.keys.get(key)
            expected = None if holder is None else holder.job
            actual = self.bridge.get(key)
            assert actual is expected, f"get({key!r}) is {actual!r}, the model says {holder!r}"

    def _check_listing(self) -> None:
        assert self.bridge is not None
        unfinished = {p.job.id: p for p in self.model.unfinished() if p.job is not None}
        listed = {info.id: info for info in self.bridge.jobs()}
        replaced = {i for i, p in unfinished.items() if p.replaced}
        must = set(unfinished) - replaced
        assert must <= set(listed) <= set(unfinished), (
            f"jobs() lists {sorted(listed)}; the model's unfinished jobs are "
            f"{list(unfinished.values())!r}"
        )
        assert len(set(listed) - replaced) <= MAX_PENDING
        for job_id, info in listed.items():
            probe = unfinished[job_id]
            assert (info.key, info.kind, info.thread) == (probe.key, probe.kind, probe.thread)

    def _check_stats(self) -> None:
        assert self.bridge is not None
        s = self.bridge.stats()
        assert s.submitted == s.succeeded + s.failed + s.cancelled + s.timed_out + s.active, (
            f"stats() do not add up: {s}"
        )
        model = self.model
        ended = model.ended
        actual = (s.submitted, s.succeeded, s.failed, s.cancelled, s.timed_out, s.active)
        expected = (
            self.base[0] + model.accepted,
            self.base[1] + ended[SUCCEEDED],
            ended[FAILED],
            ended[CANCELLED],
            ended[TIMED_OUT],
            len(model.unfinished()),
        )
        assert actual == expected, (
            f"stats() (submitted, succeeded, failed, cancelled, timed_out, active) are "
            f"{actual}, the model says {expected}"
        )
        assert (s.rejected, s.overloaded) == (model.rejected, model.overloaded), (
            f"stats() rejected/overloaded {s.rejected}/{s.overloaded}, the model says "
            f"{model.rejected}/{model.overloaded}"
        )

    def _check_lanes(self) -> None:
        for kind, limit in LIMITS.items():
            assert self.meter.peak[kind] <= limit, (
                f"{self.meter.peak[kind]} jobs of kind {kind!r} ran at once; its limit is {limit}"
            )
        for kind in KINDS:
            assert self.meter.running[kind] == self.model.placed[kind], (
                f"{self.meter.running[kind]} coroutine(s) of kind {kind!r} run, the model "
                f"says {self.model.placed[kind]}"
            )

    def _check_reachable(self) -> None:
        """No ended job stays reachable (failed ones aside: the plugin's bounded ring).

        Reference counting frees most ended jobs at once; a full collection (slow)
        runs only when some are still alive, to free those in reference cycles.
        """
        refs = [
            (probe, probe.ref)
            for probe in self.model.probes.values()
            if probe.ref is not None and probe.expected is not FAILED
        ]
        if any(ref() is not None for _, ref in refs):
            gc.collect()
        alive = []
        for probe, ref in refs:
            job = ref()
            if job is not None:
                alive.append(f"{probe!r} held by {_holders(job)}")
            del job
        assert alive == [], "ended jobs still reachable: " + "; ".join(alive)


STATE_MACHINE_SETTINGS: Final = settings(
    deadline=None,
    stateful_step_count=50,
    suppress_health_check=[HealthCheck.too_slow],
)


# A passing run takes seconds; shrinking a failure can take minutes.
@pytest.mark.timeout(900)
def test_bridge_agrees_with_its_model() -> None:
    run_state_machine_as_test(BridgeMachine, settings=STATE_MACHINE_SETTINGS)
