"""The intercom conversation as async code, run by one bridge.

The telephony stack calls :class:`IntercomFlow` on its own threads; each
callback only hands work to the bridge and returns at once:

* ``incoming_call`` submits the conversation as the job ``call:<id>``;
* ``dtmf`` puts the digit on the call's channel (a janus queue);
* ``call_ended`` cancels every unfinished job of the call when the visitor hung
  up first, all at once.

The conversation answers, greets (a ``tts`` job: the bridge runs at most two at
once), reads the apartment number from the channel with a timeout, looks the
resident up and rings them through the directory service with the bridge's
``httpx.AsyncClient`` (the ring is the job ``ring:<id>``, while "please wait"
plays), opens the door or apologises, and schedules the hangup as the job
``hangup:<id>``. Every job of a call is keyed by the call, so the trace and
``bridge.jobs()`` show whose it is. Calls into the stack go through
``bridge.to_thread``: the loop never blocks on the stack.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx
import janus
import structlog

from bridge import Bridge, Job, JobCancelled

from .summary import FlowReport
from .telephony import Telephony

__all__ = ["FlowConfig", "IntercomFlow", "run_bridge"]

T = TypeVar("T")

log: Final = structlog.get_logger("intercom")

GREETING: Final = "Welcome. Please type the apartment number and then the hash key."
PLEASE_WAIT: Final = "Please wait while we contact the resident."
DOOR_OPEN: Final = "The resident has opened the door. Please come in."
NO_ANSWER: Final = "Sorry, the resident is not answering. Goodbye."
WRONG_APARTMENT: Final = "Sorry, there is no apartment {apartment}. Goodbye."
NO_INPUT: Final = "We did not receive an apartment number. Goodbye."


@dataclass(frozen=True)
class FlowConfig:
    """Timings of the conversation, in seconds."""

    #: How long the visitor has to type the apartment number.
    dtmf_timeout: float = 5.0
    #: How long the resident has to answer.
    resident_timeout: float = 5.0
    #: Pause between the last prompt and the hangup.
    hangup_delay: float = 0.2
    #: Time to synthesise one prompt (stands in for a TTS service).
    tts_seconds: float = 0.005
    #: Apartment numbers have this many digits; ``#`` ends one early.
    max_digits: int = 3


class CallGone(asyncio.CancelledError):
    """Raised inside a conversation when its call has already ended.

    A cancellation: ``call_ended`` has cancelled (or is cancelling) the job
    anyway, and the job must end ``CANCELLED`` even when the conversation
    notices the end of the call (a closed channel, a cancelled prompt) before
    the cancellation itself arrives.
    """


@dataclass(eq=False)
class _Call:
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


class IntercomFlow:
    """The flow; implements :class:`~.telephony.CallEvents`.

    Args:
        bridge: a started bridge with ``limits={"tts": ...}``.
        telephony: the stack to answer, speak and hang up through.
        http: an ``httpx.AsyncClient`` for the directory, living on the bridge
            (``bridge.resource(...)``).
        config: the timings.
    """

    def __init__(
        self,
        bridge: Bridge,
        telephony: Telephony,
        http: httpx.AsyncClient,
        config: FlowConfig,
    ) -> None:
        self._bridge = bridge
        self._tel = telephony
        self._http = http
        self._config = config
        self._lock = threading.Lock()  # guards the fields below
        self._ended = threading.Condition(self._lock)
        self._calls: dict[str, _Call] = {}
        self._done: list[_Call] = []
        self._latencies: list[float] = []
        self._errors = 0
        self._callback_threads: set[str] = set()
        self._work_threads: set[str] = set()

    # -- CallEvents: the stack's threads; never block, never raise -------------------

    def incoming_call(self, call_id: str, caller: str) -> None:
        """Submit the conversation as the job ``call:<id>``."""
        call = _Call(call_id, caller, time.time())
        try:
            with self._lock:
                self._callback_threads.add(threading.current_thread().name)
                if call_id in self._calls:
                    raise ValueError(f"call id {call_id!r} is already in progress")
                self._calls[call_id] = call
            with structlog.contextvars.bound_contextvars(call_id=call_id):
                log.info("call.incoming", caller=caller)
                job = self._spawn(call, self._converse, call, key=f"call:{call_id}", kind="call")
            job.add_done_callback(functools.partial(self._conversation_done, call))
        except Exception:  # noqa: BLE001 - never raise into the stack
            self._error("incoming_call", call_id)

    def dtmf(self, call_id: str, digit: str) -> None:
        """Hand the digit to the conversation through the call's channel."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            call = self._calls.get(call_id)
        channel = None
        if call is not None:
            with call.lock:
                channel = call.digits
        if channel is None:
            log.warning("dtmf.dropped", call_id=call_id, digit=digit, reason="not listening")
            return
        try:
            channel.sync_q.put_nowait(digit)
        except (janus.SyncQueueShutDown, janus.SyncQueueFull):
            log.warning("dtmf.dropped", call_id=call_id, digit=digit, reason="channel closed")

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        """Forget the call; if the visitor left first, cancel all its jobs at once."""
        with self._lock:
            self._callback_threads.add(threading.current_thread().name)
            call = self._calls.pop(call_id, None)
        if call is None:
            return
        with call.lock:
            call.ended = True
            call.by_remote = by_remote
            if call.outcome is None and by_remote:
                call.outcome = "visitor_left"
            live = [job for job in call.jobs if not job.done()]
            channel = call.digits
        if channel is not None:
            channel.close()
        # Our own hangup job is what ended the call: let it finish.
        stop = live if by_remote else [job for job in live if job.kind != "hangup"]
        call.cancelled = [job for job in stop if job.cancel()]
        if call.cancelled:
            log.info(
                "call.jobs_cancelled",
                call_id=call_id,
                reason="visitor hung up" if by_remote else "call ended",
                keys=[job.key for job in call.cancelled],
            )
        with self._lock:
            self._done.append(call)
            self._ended.notify_all()

    # -- the conversation (loop thread) -------------------------------------------------

    async def _converse(self, call: _Call) -> None:
        try:
            self._listen(call)  # before answering: no digit is lost
            await self._stack(self._tel.answer, call.id)
            await self._say(call, GREETING)
            apartment = await self._collect(call)
            if not apartment:
                await self._close(call, "no_input", NO_INPUT)
                return
            please_wait = self._speak(call, PLEASE_WAIT)  # plays while we look up and ring
            if not await self._lookup(apartment):
                await self._wait(call, please_wait)
                await self._close(
                    call, "wrong_apartment", WRONG_APARTMENT.format(apartment=apartment)
                )
                return
            ring = self._spawn(
                call, self._ring, call.id, apartment, key=f"ring:{call.id}", kind="ring"
            )
            answered = await self._wait(call, ring)
            await self._wait(call, please_wait)
            if answered:
                log.info("door.opened", apartment=apartment)
                await self._close(call, "door_opened", DOOR_OPEN)
            else:
                await self._close(call, "no_answer", NO_ANSWER)
        except Exception:
            self._give_up(call)
            raise

    def _give_up(self, call: _Call) -> None:
        """The conversation failed: hang up rather than leave the visitor waiting."""
        with call.lock:
            if call.ended:
                return
            call.outcome = "failed"
        with contextlib.suppress(CallGone):
            self._spawn(call, self._hang_up_later, call.id, key=f"hangup:{call.id}", kind="hangup")

    def _listen(self, call: _Call) -> None:
        """Give the call its DTMF channel (on the loop: no job, no wait)."""
        channel = self._bridge.channel(maxsize=32)
        with call.lock:
            if not call.ended:
                call.digits = channel
                return
        channel.close()
        raise CallGone(call.id)

    async def _close(self, call: _Call, outcome: str, prompt: str) -> None:
        """Decide the outcome, say the last prompt, schedule the hangup."""
        with call.lock:
            if call.ended:
                raise CallGone(call.id)
            call.outcome = outcome
        log.info("call.outcome", outcome=outcome)
        await self._say(call, prompt)
        self._spawn(call, self._hang_up_later, call.id, key=f"hangup:{call.id}", kind="hangup")

    async def _collect(self, call: _Call) -> str:
        """The digits typed before ``#``, the last digit or the timeout."""
        typed: list[str] = []

        async def read() -> None:
            while len(typed) < self._config.max_digits:
                digit = await call.digits.async_q.get()
                if digit == "#":
                    return
                if digit.isdigit():
                    typed.append(digit)

        try:
            await asyncio.wait_for(read(), self._config.dtmf_timeout)
        except asyncio.TimeoutError:
            log.info("dtmf.timeout", typed="".join(typed))
        except janus.AsyncQueueShutDown:
            raise CallGone(call.id) from None
        return "".join(typed)

    async def _lookup(self, apartment: str) -> bool:
        response = await self._http.get(f"/residents/{apartment}")
        if response.status_code == httpx.codes.NOT_FOUND:
            return False
        response.raise_for_status()
        return True

    async def _ring(self, call_id: str, apartment: str) -> bool:
        """Ring the resident; ``False`` if they do not answer in time."""
        request = self._http.post(f"/residents/{apartment}/ring", json={"call_id": call_id})
        try:
            response = await asyncio.wait_for(request, self._config.resident_timeout)
        except asyncio.TimeoutError:
            return False
        response.raise_for_status()
        return bool(response.json().get("answer") == "open")

    async def _hang_up_later(self, call_id: str) -> None:
        await asyncio.sleep(self._config.hangup_delay)
        await self._stack(self._tel.hangup, call_id)

    async def _tts(self, call_id: str, text: str) -> None:
        await asyncio.sleep(self._config.tts_seconds)  # synthesis
        await self._stack(self._tel.say, call_id, text)

    async def _stack(self, method: Callable[..., None], *args: Any) -> None:
        """Call the stack on a bridge worker thread: the loop never blocks on it."""
        await self._bridge.to_thread(self._on_worker, method, *args)

    def _on_worker(self, method: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._work_threads.add(threading.current_thread().name)
        method(*args)

    def _speak(self, call: _Call, text: str) -> Job[None]:
        key = f"tts:{call.id}:{next(call.prompts)}"
        return self._spawn(call, self._tts, call.id, text, key=key, kind="tts")

    async def _say(self, call: _Call, text: str) -> None:
        await self._wait(call, self._speak(call, text))

    async def _wait(self, call: _Call, job: Job[T]) -> T:
        """Await one of the call's jobs; a job cancelled with its call ends the talk."""
        try:
            return await job
        except JobCancelled:
            if call.ended:
                raise CallGone(call.id) from None
            raise

    # -- bookkeeping ------------------------------------------------------------------

    def _spawn(
        self,
        call: _Call,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        key: str,
        kind: str,
    ) -> Job[T]:
        """Submit one of the call's jobs; none is started once the call has ended."""
        with call.lock:
            if call.ended:
                raise CallGone(call.id)
            job = self._bridge.submit(fn, *args, key=key, kind=kind)
            call.jobs.append(job)
        return job

    def _conversation_done(self, call: _Call, job: concurrent.futures.Future[None]) -> None:
        """Record the callback-to-start latency, and any failure (loop thread)."""
        assert isinstance(job, Job)
        started = job.info().started_at
        error = None if job.cancelled() else job.exception()
        with self._lock:
            if started is not None:
                self._latencies.append(started - call.callback_at)
        if error is not None:
            self._error("conversation", call.id, error)

    def _error(self, where: str, call_id: str, error: BaseException | None = None) -> None:
        with self._lock:
            self._errors += 1
        log.error("flow.error", where=where, call_id=call_id, exc_info=error or True)

    # -- the run's view ---------------------------------------------------------------------

    def calls_ended(self) -> int:
        """How many calls have ended. Any thread."""
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
        """Outcomes, latencies and cancellations of the calls that have ended."""
        with self._lock:
            calls = list(self._done)
            latencies = list(self._latencies)
            errors = self._errors
        outcomes = Counter(call.outcome or "cut_off" for call in calls)
        cancelled = sum(
            job.cancelled() for call in calls if call.by_remote for job in call.cancelled
        )
        with self._lock:
            callback_threads = sorted(self._callback_threads)
            threads = 1 + len(self._work_threads)  # the loop thread and the workers
        return FlowReport(
            dict(outcomes),
            latencies,
            cancelled,
            errors=errors,
            threads_started=threads,
            callback_threads=callback_threads,
        )


def run_bridge(
    telephony: Telephony,
    directory_url: str,
    config: FlowConfig,
    until: Callable[[IntercomFlow], None],
    *,
    grace: float = 2.0,
    session: Callable[[Bridge], contextlib.AbstractContextManager[object]] | None = None,
) -> FlowReport:
    """Run the flow on a fresh bridge until ``until(flow)`` returns, then clean up.

    ``until`` blocks (e.g. until N calls have ended). Then the stack is stopped,
    every call's jobs get *grace* seconds to end, and the bridge shuts down (it
    closes the HTTP client and the channels). Jobs still unfinished after the
    grace, or found by the shutdown, are reported as leaked. ``session(bridge)``,
    if given, is a context entered once the bridge has started and left before
    it shuts down (the CLI serves the operations dashboard in it).
    """
    bridge = Bridge(
        "intercom",
        limits={"tts": 2},
        timeouts={"call": 120.0, "tts": 10.0, "ring": config.resident_timeout + 5.0},
        thread_workers=4,
        loop_block_warning=0.25,  # log a loop.blocked warning if anything blocks the loop
    )
    bridge.start()
    try:
        with contextlib.nullcontext() if session is None else session(bridge):
            http = bridge.resource(lambda: httpx.AsyncClient(base_url=directory_url, timeout=10.0))
            flow = IntercomFlow(bridge, telephony, http, config)
            telephony.start(flow)
            try:
                until(flow)
            finally:
                telephony.stop()
            leaked = flow.settle(grace)
            leaked |= {info.id for info in bridge.jobs()}
    finally:
        shutdown = bridge.shutdown(timeout=grace)
    leaked |= {info.id for info in (*shutdown.cancelled, *shutdown.stuck)}
    report = flow.report()
    report.jobs_leaked = len(leaked)
    report.errors += len(shutdown.resource_errors)
    stats = bridge.stats()
    report.notes.append(
        f"bridge: {stats.submitted} jobs, {stats.succeeded} succeeded, "
        f"{stats.cancelled} cancelled, {stats.failed} failed, {stats.timed_out} timed out"
    )
    return report
