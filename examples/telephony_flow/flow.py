"""The intercom conversation as async code, run by one bridge.

The stack calls :class:`IntercomFlow` on its own threads, and each callback
only hands work to the bridge: ``incoming_call`` submits the conversation as
the job ``call:<id>``, ``dtmf`` puts the digit on the call's channel, and
``call_ended`` cancels every unfinished job of the call at once when the
visitor hung up first.

The conversation answers, greets, reads the apartment number with a timeout,
looks the resident up and rings them over HTTP (the job ``ring:<id>``, while
"please wait" plays), opens the door or apologises, and schedules the hangup
(the job ``hangup:<id>``). Every prompt is a TTS stream: the flow hands it to
the stack (``Telephony.play``), whose media thread opens it with
``bridge.iterate`` and takes its 20 ms frames as it plays them, while the
synthesis runs on the loop a few frames ahead (the job ``tts:<id>:<n>``).
Calls into the stack go through ``bridge.to_thread``: the loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx
import janus
import structlog

from bridge import Bridge, Job, JobCancelled

from .ledger import Call, CallGone, Ledger
from .telephony import Frames, Played, Telephony

__all__ = ["FlowConfig", "IntercomFlow", "Prompt", "make_bridge"]

T = TypeVar("T")
TextToSpeech = Callable[[str], AsyncIterator[bytes]]

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
    #: Frames the TTS may run ahead of the playout.
    tts_buffer: int = 4
    #: Apartment numbers have this many digits; ``#`` ends one early.
    max_digits: int = 3


def make_bridge(config: FlowConfig) -> Bridge:
    """The flow's bridge: deadlines per kind of job, a warning if the loop blocks."""
    return Bridge(
        "intercom",
        timeouts={"call": 120.0, "ring": config.resident_timeout + 5.0},
        thread_workers=4,
        loop_block_warning=0.25,
    )


@dataclass
class Prompt:
    """A prompt as a TTS stream (a ``telephony.AudioStream``).

    ``open`` runs on the stack's media thread: ``bridge.iterate`` starts the
    synthesis on the loop and returns the sync iterator of its frames.
    """

    text: str
    open: Callable[[], Frames]
    requested_at: float = field(default_factory=time.monotonic)


class IntercomFlow:
    """The flow; implements :class:`~.telephony.CallEvents`.

    Args:
        bridge: a started bridge.
        telephony: the stack to answer, play to and hang up through.
        http: an ``httpx.AsyncClient`` for the directory, living on the bridge
            (``bridge.resource(...)``).
        tts: the TTS engine's ``stream(text)``, an async generator function.
        config: the timings.
    """

    def __init__(
        self,
        bridge: Bridge,
        telephony: Telephony,
        http: httpx.AsyncClient,
        tts: TextToSpeech,
        config: FlowConfig,
    ) -> None:
        self._bridge = bridge
        self._tel = telephony
        self._http = http
        self._tts = tts
        self._config = config
        self.ledger: Final = Ledger()

    # -- CallEvents: the stack's threads; never block, never raise -------------------

    def incoming_call(self, call_id: str, caller: str) -> None:
        """Submit the conversation as the job ``call:<id>``."""
        call = Call(call_id, caller, time.time())
        try:
            self.ledger.open(call)
            with structlog.contextvars.bound_contextvars(call_id=call_id):
                log.info("call.incoming", caller=caller)
                job = self._spawn(call, self._converse, call, key=f"call:{call_id}", kind="call")
            job.add_done_callback(functools.partial(self.ledger.conversation_done, call))
        except Exception:  # noqa: BLE001 - never raise into the stack
            self.ledger.error("incoming_call", call_id)

    def dtmf(self, call_id: str, digit: str) -> None:
        """Hand the digit to the conversation through the call's channel."""
        call = self.ledger.find(call_id)
        with contextlib.nullcontext() if call is None else call.lock:
            channel = None if call is None else call.digits
        if channel is None:
            log.warning("dtmf.dropped", call_id=call_id, digit=digit, reason="not listening")
            return
        try:
            channel.sync_q.put_nowait(digit)
        except (janus.SyncQueueShutDown, janus.SyncQueueFull):
            log.warning("dtmf.dropped", call_id=call_id, digit=digit, reason="channel closed")

    def call_ended(self, call_id: str, by_remote: bool) -> None:
        """Forget the call; if the visitor left first, cancel all its jobs at once."""
        call = self.ledger.close(call_id)
        if call is None:
            return
        live, channel = call.end(by_remote)
        if channel is not None:
            channel.close()
        # Our own hangup job is what ended the call: let it finish.
        stop = live if by_remote else [job for job in live if job.kind != "hangup"]
        call.cancelled = [job for job in stop if job.cancel()]
        if call.cancelled:
            reason = "visitor hung up" if by_remote else "call ended"
            keys = [job.key for job in call.cancelled]
            log.info("call.jobs_cancelled", call_id=call_id, reason=reason, keys=keys)
        self.ledger.ended(call)

    # -- the conversation (loop thread) -------------------------------------------------

    async def _converse(self, call: Call) -> None:
        try:
            call.listen(self._bridge.channel(maxsize=32))  # before answering: no digit is lost
            await self._stack(self._tel.answer, call.id)
            await self._say(call, GREETING)
            apartment = await self._collect(call)
            if not apartment:
                return await self._close(call, "no_input", NO_INPUT)
            please_wait = await self._play(call, PLEASE_WAIT)  # plays while we look and ring
            if not await self._lookup(apartment):
                await self._heard(call, please_wait)
                wrong = WRONG_APARTMENT.format(apartment=apartment)
                return await self._close(call, "wrong_apartment", wrong)
            ring = self._spawn(
                call, self._ring, call.id, apartment, key=f"ring:{call.id}", kind="ring"
            )
            answered = await self._wait(call, ring)
            await self._heard(call, please_wait)
            if answered:
                log.info("door.opened", apartment=apartment)
                return await self._close(call, "door_opened", DOOR_OPEN)
            return await self._close(call, "no_answer", NO_ANSWER)
        except Exception:
            self._give_up(call)
            raise

    def _give_up(self, call: Call) -> None:
        """The conversation failed: hang up rather than leave the visitor waiting."""
        with contextlib.suppress(CallGone):
            call.decide("failed")
            self._spawn(call, self._hang_up_later, call.id, key=f"hangup:{call.id}", kind="hangup")

    async def _close(self, call: Call, outcome: str, prompt: str) -> None:
        """Decide the outcome, say the last prompt, schedule the hangup."""
        call.decide(outcome)
        log.info("call.outcome", outcome=outcome)
        await self._say(call, prompt)
        self._spawn(call, self._hang_up_later, call.id, key=f"hangup:{call.id}", kind="hangup")

    async def _collect(self, call: Call) -> str:
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

    # -- prompts: TTS streams played by the stack ------------------------------------------

    def _prompt(self, call: Call, text: str) -> Prompt:
        key = f"tts:{call.id}:{next(call.prompts)}"

        def open_stream() -> Frames:  # on the stack's media thread
            with structlog.contextvars.bound_contextvars(call_id=call.id):
                frames = self._bridge.iterate(
                    self._tts, text, key=key, kind="tts", buffer=self._config.tts_buffer
                )
            if not call.adopt(frames.job):  # cancelled with the call's other jobs
                frames.job.cancel()
            return frames

        return Prompt(text, open_stream)

    async def _play(self, call: Call, text: str) -> concurrent.futures.Future[Played]:
        """Hand a prompt to the stack; return the future of its playing."""
        done = await self._stack(self._tel.play, call.id, self._prompt(call, text))
        done.add_done_callback(self.ledger.played)
        return done

    async def _heard(self, call: Call, done: concurrent.futures.Future[Played]) -> None:
        """Wait until the prompt has been played; a call that ended ends the talk."""
        played = await asyncio.wrap_future(done)
        if played.stopped and call.ended:
            raise CallGone(call.id)

    async def _say(self, call: Call, text: str) -> None:
        await self._heard(call, await self._play(call, text))

    # -- jobs -----------------------------------------------------------------------------

    async def _stack(self, method: Callable[..., T], *args: Any) -> T:
        """Call the stack on a bridge worker thread: the loop never blocks on it."""
        return await self._bridge.to_thread(self.ledger.on_worker, method, *args)

    async def _wait(self, call: Call, job: Job[T]) -> T:
        """Await one of the call's jobs; a job cancelled with its call ends the talk."""
        try:
            return await job
        except JobCancelled:
            if call.ended:
                raise CallGone(call.id) from None
            raise

    def _spawn(
        self, call: Call, fn: Callable[..., Awaitable[T]], *args: Any, key: str, kind: str
    ) -> Job[T]:
        """Submit one of the call's jobs; none is started once the call has ended."""
        return call.start(lambda: self._bridge.submit(fn, *args, key=key, kind=kind))
