"""A simulated telephony stack: seeded visitors calling the intercom.

It stands in for a SIP stack and its media engine, with visitors who dial,
press keys, listen and hang up, so that the flow can run hundreds of calls
without a network peer. It behaves like a native SIP library as far as
threads go. Its callbacks run on
a small pool of its own worker threads, half of them started with
``_thread.start_new_thread`` (no ``threading.Thread`` object: Python sees them
as ``Dummy-N``, like a C library's threads), and one call's callbacks may move
from one worker to another. A call's callbacks never overlap, arrive in order,
and nothing arrives after ``call_ended``.

Each visitor follows a plan drawn from the seed: dial an apartment whose
resident answers, one whose resident never answers, one that does not exist, or
dial a silent apartment and hang up early (while the flow is still busy with
the call). ``concurrency`` calls are in progress at once until ``calls`` have
ended.

Audio: one media thread, ``sim-media``, plays every call's prompts with a
:class:`~.media.Playout` (20 ms per frame). The visitor's ear counts the frames
it hears, and any frame that arrives once the visitor has hung up: the stack
stops the call's playout before it reports the end of the call, so there are
none.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from examples.telephony_flow.services.directory import ANSWERING, SILENT
from examples.telephony_flow.telephony import AudioStream, CallEvents, Played

from .media import Playout

__all__ = ["SCENARIOS", "CallPlan", "SimStats", "SimulatedTelephony", "make_plans"]

#: What a visitor does, and how often (weights).
SCENARIOS: Final = {
    "resident_answers": 4,
    "no_answer": 2,
    "wrong_apartment": 2,
    "visitor_hangs_up": 2,
}
_WRONG: Final = ("999", "404", "120", "300")


@dataclass(frozen=True)
class CallPlan:
    """One simulated visitor."""

    call_id: str
    caller: str
    scenario: str
    #: The keys the visitor presses once answered, ``#`` last.
    digits: str
    #: For ``visitor_hangs_up``: seconds after the answer when the visitor leaves.
    leave_after: float | None


@dataclass(frozen=True)
class SimStats:
    """What the stack saw (a snapshot)."""

    calls_started: int
    calls_ended: int
    ended_by_visitor: int
    ended_by_flow: int
    #: answer/say/play/hangup calls for a call that had already ended.
    late_operations: int
    #: Frames the visitors heard.
    frames_heard: int
    #: Frames that reached a visitor who had hung up (always 0).
    frames_after_hangup: int


def make_plans(calls: int, seed: int) -> list[CallPlan]:
    """The visitors of a run: the same seed gives the same plans."""
    rng = random.Random(seed)
    names, weights = zip(*SCENARIOS.items(), strict=True)
    plans = []
    for n in range(1, calls + 1):
        scenario = rng.choices(names, weights)[0]
        pool = {"resident_answers": ANSWERING, "wrong_apartment": _WRONG}.get(scenario, SILENT)
        apartment = rng.choice(pool)
        leave = round(rng.uniform(0.0, 0.3), 4) if scenario == "visitor_hangs_up" else None
        caller = f"sip:visitor{n}@127.0.0.1"
        plans.append(CallPlan(f"sim-{n}", caller, scenario, apartment + "#", leave))
    return plans


class _Call:
    """A call's state, guarded by the stack's lock; ``deliver`` serialises callbacks."""

    __slots__ = ("answered", "deliver", "ended", "plan")

    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan
        self.answered = False
        self.ended = False
        self.deliver = threading.Lock()


class SimulatedTelephony:
    """The simulated stack; implements ``Telephony``.

    Args:
        calls: how many calls to place in total.
        concurrency: how many calls are in progress at once.
        seed: seeds the visitors' plans.
        workers: callback threads (half of them foreign ``_thread`` threads).
        patience: seconds after which a visitor hangs up a call the flow never
            ended (a safety net against a stuck flow; counted as the visitor's).
    """

    def __init__(
        self,
        calls: int,
        concurrency: int,
        *,
        seed: int = 0,
        workers: int = 4,
        patience: float = 30.0,
        first_digit_after: float = 0.02,
        digit_gap: float = 0.005,
    ) -> None:
        if calls < 1 or concurrency < 1 or workers < 1:
            raise ValueError("calls, concurrency and workers must be at least 1")
        self.plans: Final = make_plans(calls, seed)
        self._concurrency = concurrency
        self._workers = workers
        self._patience = patience
        self._first_digit_after = first_digit_after
        self._digit_gap = digit_gap
        self._events: CallEvents | None = None
        self._cond = threading.Condition()  # guards everything below
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._calls: dict[str, _Call] = {}
        self._next_plan: Iterator[CallPlan] = iter(self.plans)
        self._started = self._ended = self._by_visitor = self._late = 0
        self._stopping = False
        self._exited: list[threading.Lock] = []  # held by each worker until it exits
        self._ear = threading.Lock()  # guards _listening and the two counters below
        self._listening: set[str] = set()  # answered calls whose visitor is still there
        self._heard = self._after_hangup = 0
        self._playout = Playout(self._hear)
        self._media = threading.Thread(target=self._play_media, name="sim-media")
        self.finished: Final = threading.Event()  # every planned call has ended

    # -- Telephony --------------------------------------------------------------

    def start(self, events: CallEvents) -> None:
        """Start the workers and place the first ``concurrency`` calls."""
        with self._cond:
            if self._events is not None:
                raise RuntimeError("the simulated stack is already started")
            self._events = events
            for n in range(min(self._concurrency, len(self.plans))):
                self._place_next(n * 0.001)
        self._media.start()
        for n in range(self._workers):
            exited = threading.Lock()
            exited.acquire()
            self._exited.append(exited)
            if n % 2:
                _thread.start_new_thread(self._work, (exited,))
            else:
                name = f"sim-worker-{n}"
                threading.Thread(target=self._work, args=(exited,), name=name).start()

    def answer(self, call_id: str) -> None:
        """Answer: the visitor starts pressing keys (and may plan to leave)."""
        with self._cond:
            call = self._live(call_id)
            if call is None or call.answered:
                return
            call.answered = True
            self._playout.begin_call(call_id)
            with self._ear:
                self._listening.add(call_id)
            self._schedule(self._first_digit_after, self._press, call, 0)
            if call.plan.leave_after is not None:
                self._schedule(call.plan.leave_after, self._end, call, True)

    def say(self, call_id: str, text: str) -> None:
        """Pretend to play *text*: the simulated visitor does not listen."""
        with self._cond:
            self._live(call_id)

    def play(self, call_id: str, stream: AudioStream) -> concurrent.futures.Future[Played]:
        """Queue *stream* on the media thread; returns at once (see ``Telephony.play``)."""
        with self._cond:
            self._live(call_id)
        return self._playout.add(call_id, stream)

    def hangup(self, call_id: str) -> None:
        """Hang up; ``call_ended(call_id, by_remote=False)`` follows on a worker."""
        with self._cond:
            call = self._live(call_id)
            if call is not None:
                self._schedule(0.0, self._end, call, False)

    def stop(self) -> None:
        """End the calls still in progress, stop the workers and wait for them."""
        with self._cond:
            left = [c for c in self._calls.values() if not c.ended]
        for call in left:
            self._end(call, False)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for exited in self._exited:  # _thread threads cannot be joined: wait for the lock
            exited.acquire()
            exited.release()
        if self._media.ident is not None:
            self._media.join()

    def stats(self) -> SimStats:
        """A snapshot of what the stack saw. Any thread."""
        with self._cond:
            return SimStats(
                self._started,
                self._ended,
                self._by_visitor,
                self._ended - self._by_visitor,
                self._late,
                self._heard,
                self._after_hangup,
            )

    # -- internals (with the lock held, as marked) -----------------------------------

    def _live(self, call_id: str) -> _Call | None:
        """The call if it is in progress, else count a late operation. Lock held."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            self._late += 1
            return None
        return call

    def _schedule(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` on a worker after *delay* seconds. Lock held."""
        due = time.monotonic() + delay
        heapq.heappush(self._heap, (due, next(self._seq), lambda: fn(*args)))
        self._cond.notify()

    def _place_next(self, delay: float) -> None:
        """Place the next planned call, if any. Lock held."""
        plan = next(self._next_plan, None)
        if plan is None:
            return
        call = _Call(plan)
        self._calls[plan.call_id] = call
        self._started += 1
        self._schedule(delay, self._ring, call)
        self._schedule(self._patience, self._end, call, True)

    def _play_media(self) -> None:
        """The media thread: play what is due, sleep until the next frame."""
        while True:
            with self._cond:
                if self._stopping:
                    break
            self._playout.wait(self._playout.tick())
        self._playout.close()

    def _hear(self, call_id: str, frame: bytes) -> bool:
        """The visitor's ear (media thread, playout lock held)."""
        with self._ear:
            gone = call_id not in self._listening
            self._heard += not gone
            self._after_hangup += gone
        return not gone

    def _work(self, exited: threading.Lock) -> None:
        try:
            while True:
                with self._cond:
                    task = self._next_due()
                if task is None:
                    return
                task()
        finally:
            exited.release()

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the next due task; ``None`` when stopping. Lock held."""
        while not self._stopping:
            if self._heap:
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)
            else:
                self._cond.wait()
        return None

    # -- the visitor's side (on a worker, lock not held) -------------------------------

    def _ring(self, call: _Call) -> None:
        with call.deliver:
            if not call.ended:
                self._flow.incoming_call(call.plan.call_id, call.plan.caller)

    def _press(self, call: _Call, index: int) -> None:
        with call.deliver:
            if call.ended:
                return
            self._flow.dtmf(call.plan.call_id, call.plan.digits[index])
        if index + 1 < len(call.plan.digits):
            with self._cond:
                self._schedule(self._digit_gap, self._press, call, index + 1)

    def _end(self, call: _Call, by_visitor: bool) -> None:
        with call.deliver:
            with self._cond:
                if call.ended:
                    return
                call.ended = True
            self._playout.end_call(call.plan.call_id)  # silence first, then the hangup
            with self._ear:
                self._listening.discard(call.plan.call_id)
            self._flow.call_ended(call.plan.call_id, by_visitor)
        with self._cond:
            del self._calls[call.plan.call_id]
            self._ended += 1
            self._by_visitor += by_visitor
            if self._ended == len(self.plans):
                self.finished.set()
            elif not self._stopping:
                self._place_next(0.0)

    @property
    def _flow(self) -> CallEvents:
        events = self._events
        assert events is not None
        return events
