"""The flow's books: every call, its jobs and its outcome, and what the run measured.

It stands in for the call records and metrics a real intercom keeps (a CDR
table, a metrics exporter): :class:`~.flow.IntercomFlow` writes to it from the
stack's threads and from the loop, and the runner reads the
:class:`~.summary.FlowReport` from it at the end. It is thread-safe; none of it
touches the bridge except to wait for a call's jobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import structlog

from bridge import Job

from .summary import FlowReport
from .telephony import Played

__all__ = ["Call", "CallGone", "Ledger"]

T = TypeVar("T")

log: Final = structlog.get_logger("intercom")


class CallGone(asyncio.CancelledError):
    """Raised inside a conversation when its call has already ended.

    A cancellation: ``call_ended`` has cancelled (or is cancelling) the job
    anyway, and the job must end ``CANCELLED`` even when the conversation
    notices the end of the call (a closed channel, a stopped prompt) first.
    """


@dataclass(eq=False)
class Call:
    """One call as the flow sees it; ``lock`` guards ``ended``, ``outcome``, ``jobs``."""

    id: str
    caller: str
    callback_at: float  # time.time() in incoming_call
    lock: threading.Lock = field(default_factory=threading.Lock)
    digits: Any = None  # the Channel, created by the conversation on the loop
    jobs: list[Job[Any]] = field(default_factory=list)
    ended: bool = False
    by_remote: bool = False
    outcome: str | None = None
    cancelled: list[Job[Any]] = field(default_factory=list)  # by call_ended
    prompts: Any = field(default_factory=itertools.count)

    def listen(self, channel: Any) -> None:
        """Give the call its DTMF channel; close it and raise CallGone if the call ended."""
        with self.lock:
            if not self.ended:
                self.digits = channel
                return
        channel.close()
        raise CallGone(self.id)

    def decide(self, outcome: str) -> None:
        """Set the outcome; raise CallGone if the call has ended."""
        with self.lock:
            if self.ended:
                raise CallGone(self.id)
            self.outcome = outcome

    def start(self, submit: Callable[[], Job[T]]) -> Job[T]:
        """Run ``submit()`` and count its job as the call's; CallGone once the call ended."""
        with self.lock:
            if self.ended:
                raise CallGone(self.id)
            job = submit()
            self.jobs.append(job)
        return job

    def adopt(self, job: Job[Any]) -> bool:
        """Count a job started elsewhere as the call's; False if the call has ended."""
        with self.lock:
            self.jobs.append(job)
            return not self.ended

    def end(self, by_remote: bool) -> tuple[list[Job[Any]], Any]:
        """Mark the call ended; return its unfinished jobs and its channel."""
        with self.lock:
            self.ended, self.by_remote = True, by_remote
            if self.outcome is None and by_remote:
                self.outcome = "visitor_left"
            return [job for job in self.jobs if not job.done()], self.digits


class Ledger:
    """The calls in progress and those that ended, with the run's figures. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards everything below
        self._ended = threading.Condition(self._lock)
        self._calls: dict[str, Call] = {}
        self._done: list[Call] = []
        self._latencies: list[float] = []
        self._played: list[Played] = []
        self._errors = 0
        self._callback_threads: set[str] = set()
        self._work_threads: set[str] = set()

    # -- calls ---------------------------------------------------------------------

    def open(self, call: Call) -> None:
        """Record a new call. Raises ValueError if its id is already in progress."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            if call.id in self._calls:
                raise ValueError(f"call id {call.id!r} is already in progress")
            self._calls[call.id] = call

    def find(self, call_id: str) -> Call | None:
        """The call in progress with this id, if any (a stack callback)."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            return self._calls.get(call_id)

    def close(self, call_id: str) -> Call | None:
        """Take the call out of those in progress (a stack callback); None if unknown."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            return self._calls.pop(call_id, None)

    def ended(self, call: Call) -> None:
        """Count the call as ended, once its jobs have been dealt with."""
        with self._lock:
            self._done.append(call)
            self._ended.notify_all()

    # -- figures -------------------------------------------------------------------

    def conversation_done(self, call: Call, job: concurrent.futures.Future[Any]) -> None:
        """Record the callback-to-start latency and any failure (a job's done callback)."""
        assert isinstance(job, Job)
        started = job.info().started_at
        if started is not None:
            with self._lock:
                self._latencies.append(started - call.callback_at)
        error = None if job.cancelled() else job.exception()
        if error is not None:
            self.error("conversation", call.id, error)

    def played(self, done: concurrent.futures.Future[Played]) -> None:
        """Record how a prompt was played (a done callback of the stack's future)."""
        if done.exception() is None:
            with self._lock:
                self._played.append(done.result())

    def on_worker(self, method: Callable[..., T], *args: Any) -> T:
        """Call ``method(*args)``, recording this thread as one the flow's work ran on."""
        with self._lock:
            self._work_threads.add(threading.current_thread().name)
        return method(*args)

    def error(self, where: str, call_id: str, error: BaseException | None = None) -> None:
        """Count and log an error (``error=None``: the exception being handled)."""
        with self._lock:
            self._errors += 1
        log.error("flow.error", where=where, call_id=call_id, exc_info=error or True)

    # -- the run's view ------------------------------------------------------------

    def calls_ended(self) -> int:
        """How many calls have ended."""
        with self._lock:
            return len(self._done)

    def wait_calls(self, count: int, timeout: float | None = None) -> bool:
        """Block until *count* calls have ended; ``False`` if *timeout* expired first."""
        with self._ended:
            return self._ended.wait_for(lambda: len(self._done) >= count, timeout)

    def settle(self, grace: float) -> set[int]:
        """Wait up to *grace* s for every job of every call; return the ids still unfinished."""
        with self._lock:
            calls = self._done + list(self._calls.values())
        jobs = [job for call in calls for job in call.jobs]
        _, unfinished = concurrent.futures.wait(jobs, timeout=grace)
        return {job.id for job in unfinished if isinstance(job, Job)}

    def report(self) -> FlowReport:
        """Outcomes, latencies, prompts and cancellations of the calls that have ended."""
        with self._lock:
            calls, played = list(self._done), list(self._played)
            report = FlowReport(
                dict(Counter(call.outcome or "cut_off" for call in calls)),
                list(self._latencies),
                errors=self._errors,
                threads_started=1 + len(self._work_threads),  # the loop and the workers
                callback_threads=sorted(self._callback_threads),
            )
        report.cancelled_visitor_left = sum(
            job.cancelled() for call in calls if call.by_remote for job in call.cancelled
        )
        report.first_frame = [p.first_frame_s for p in played if p.first_frame_s is not None]
        report.frames_played = sum(p.frames for p in played)
        report.frames_after_hangup = sum(p.after_hangup for p in played)
        report.prompts_stopped = sum(p.stopped for p in played)
        return report
