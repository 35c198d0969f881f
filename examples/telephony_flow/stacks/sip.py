"""A real SIP user agent on pjsua2, implementing ``Telephony``.

It stands in for the building's SIP intercom gateway: a real user agent that
sipp, a softphone or a PBX can call. ``SipTelephony(host, port, *, bridge,
on_log=None)`` listens for SIP calls over UDP on ``host:port`` (an IP address; the example
uses 127.0.0.1), answers them when the flow says so, delivers DTMF digits and
hang-ups to the flow, and hangs up.

Threads. pjsua2 may only be called from threads registered with pjlib, a
misuse aborts the whole process, and a ``pj.Call`` object must die on a
registered thread *before* pjsua reuses its numeric call id (a stale object
would hang up the wrong call when collected). This stack therefore gives pjsua2
exactly one thread: the bridge's pinned thread ``<bridge>-pjsua``
(``bridge.pinned_thread("pjsua", initializer=..., idle=..., finalizer=...)``),
called the ``pjsua`` thread below:

- Its initializer creates and starts the library, configured with no worker
  threads of its own (``uaConfig.threadCnt = 0``, ``medConfig.threadCnt = 0``,
  RTP sharing the SIP ioqueue), and its ``idle`` polls it with
  ``libHandleEvents``. So every pjsua2 callback (incoming call, call state, DTMF
  over SIP INFO or RFC 2833) arrives on that thread, and ``CallEvents`` methods
  are called on it. Its finalizer hangs up what is left and destroys the library.
- :meth:`SipTelephony.answer`, :meth:`~SipTelephony.say` and
  :meth:`~SipTelephony.hangup` may be called from any thread but the loop's:
  they run on the pinned thread with ``pinned.call()`` and wait for it (called
  on the ``pjsua`` thread itself, they run at once).
- Every ``pj.Call`` is created, used and dropped on that thread, inside its
  DISCONNECTED callback, so no other thread ever holds one.

This is safer than registering each calling thread on first use: registering
allocates a descriptor that pjlib keeps until ``libDestroy`` (worker threads come
and go), a thread that forgot to register aborts the process, and the callback
thread and a command thread would race on the same ``pj.Call`` (which is
exactly how a stale object ends up hanging up a reused call id). The price is up
to :data:`POLL_MS` of latency per command and that a slow
``CallEvents`` method delays all SIP processing, which the
interface forbids anyway.

Audio. The flow's prompts are played by a :class:`~.media.Playout` that the
``pjsua`` thread ticks after each poll (why not pjsua2's ``AudioMediaPort``:
see :mod:`.media`). A hangup stops the call's playout before the flow hears of it.

Calls are identified by their SIP ``Call-ID``, which unlike pjsua's numeric id
is never reused, so a late command for a finished call is ignored. Each call's
audio is connected to pjsua's null sound device, which was needed to stop
conference ports leaking with pjsua's own threads;
:meth:`SipTelephony.call_media_ports` lets a run check that none leaked.
:meth:`~SipTelephony.say` does not synthesise speech: it reports the text
through ``on_log``. At most :data:`MAX_CONCURRENT_CALLS` calls are served at
once; pjsua answers further INVITEs with 486 Busy Here. After
:meth:`SipTelephony.refuse_new_calls` (an agent draining before it stops)
every new INVITE is answered 503 Service Unavailable and never reaches the
flow, so a proxy in front tries another agent.

One :class:`SipTelephony` per process: pjsua2 has a single library instance.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, TypeVar

from bridge import Bridge, BridgeClosed, PinnedThread
from examples.telephony_flow.telephony import AudioStream, CallEvents, Played

from ._pjsua import Account as _Account
from ._pjsua import Call as _Call
from ._pjsua import describe as _describe
from ._pjsua import listening as _listening
from ._pjsua import pj
from ._pjsua import start_library as _start_library
from ._pjsua import translated as _translated
from .media import Playout

__all__ = ("MAX_CONCURRENT_CALLS", "POLL_MS", "SipTelephony")

MAX_CONCURRENT_CALLS: Final = 4
"""Calls served at once; the pjsua2-python wheel allows no more."""

POLL_MS: Final = 5
"""How long one ``libHandleEvents`` poll may block, so the longest wait for a command."""

_IDLE_INTERVAL_S: Final = 0.001
"""How long the ``pjsua`` thread waits for a command between two polls."""

_STOP_DRAIN_S: Final = 2.0
"""How long :meth:`SipTelephony.stop` lets hung-up calls reach DISCONNECTED."""

LogFn = Callable[[str], None]
_T = TypeVar("_T")


def _ignore(_message: str) -> None:
    pass


class SipTelephony:
    """A SIP user agent on pjsua2 that answers calls on ``host:port`` (UDP).

    Args:
        host: The IP address to listen on, e.g. ``"127.0.0.1"``.
        port: The UDP port to listen on (1-65535).
        bridge: The bridge whose pinned thread runs pjsua2 (started if needed
            by :meth:`start`); its shutdown also stops the stack.
        on_log: Called with one line of text for what the stack does (calls
            answered, text "said", errors raised by a callback); called on the
            ``pjsua`` thread, so it must return quickly. Default: discard.

    Raises:
        ValueError: ``host`` is not an IP address or ``port`` is out of range.
    """

    def __init__(
        self, host: str, port: int, *, bridge: Bridge, on_log: LogFn | None = None
    ) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address, got {host!r}") from None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, got {port!r}")
        self._host = host
        self._port = port
        self._bridge = bridge
        self._log: LogFn = on_log or _ignore
        self._lock = threading.Lock()  # guards the three fields below
        self._pinned: PinnedThread | None = None
        self._running = False  # commands are accepted
        self._stopped = False
        self._refusing = False  # new INVITEs get 503
        self._events: CallEvents | None = None
        # Owned by the pjsua thread:
        self._endpoint: pj.Endpoint | None = None
        self._calls: dict[str, _Call] = {}
        self._refused: dict[str, _Call] = {}  # answered 503, until DISCONNECTED
        self._calls_started = 0
        self._calls_refused = 0
        self._callback_errors = 0
        self._idle_ports = 0
        self._account: _Account | None = None
        self._playout = Playout(self._sink)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"  # a racy peek, for people
        return f"<SipTelephony {self._host}:{self._port} {state}>"

    @property
    def calls_started(self) -> int:
        """How many incoming calls the stack has accepted so far."""
        return self._calls_started

    @property
    def calls_refused(self) -> int:
        """How many INVITEs the stack answered 503 after :meth:`refuse_new_calls`."""
        return self._calls_refused

    @property
    def callback_errors(self) -> int:
        """How many exceptions the stack caught in its callbacks (including the
        ``CallEvents`` methods); each is also reported to ``on_log``."""
        return self._callback_errors

    # -- Telephony -----------------------------------------------------------

    def start(self, events: CallEvents) -> None:
        """Start pjsua on the bridge's pinned thread and listen; return once it listens.

        **Thread safety:** call once, from any thread but ``pjsua`` and the loop's.

        Raises:
            RuntimeError: The stack was already started or stopped, or pjsua
                failed to start (for example the port is in use); nothing is
                left running then.
        """
        with self._lock:
            if self._pinned is not None or self._stopped:
                raise RuntimeError("SipTelephony.start() was already called, or stop()")
            self._events = events
            pinned = self._bridge.pinned_thread(
                "pjsua",
                initializer=self._open,
                idle=self._poll,
                idle_interval=_IDLE_INTERVAL_S,
                finalizer=self._close,
            )
            self._pinned = pinned
        try:
            pinned.call(_listening)  # runs after the initializer
        except BridgeClosed as exc:
            pinned.close()
            raise RuntimeError(str(exc.__cause__ or exc)) from None
        with self._lock:
            self._running = not self._stopped

    def answer(self, call_id: str) -> None:
        """Answer a ringing call with 200 OK; unknown, answered or ended calls are ignored.

        **Thread safety:** any thread but the loop's; blocks until the ``pjsua``
        thread has run it (about :data:`POLL_MS` at most, plus the time to send
        the response).
        After :meth:`stop` it returns at once and does nothing.

        **Cancellation and timeouts:** there is no timeout: the wait ends when
        the command has run, which a ``CallEvents`` method
        that blocks the ``pjsua`` thread would delay.

        Raises:
            RuntimeError: pjsua refused the operation (the message says why).
        """
        self._submit(lambda: self._answer(call_id), None)

    def say(self, call_id: str, text: str) -> None:
        """Report ``text`` through ``on_log``; no audio is synthesised.

        **Thread safety**, **cancellation and timeouts:** as :meth:`answer`.
        """
        self._submit(lambda: self._say(call_id, text), None)

    def play(self, call_id: str, stream: AudioStream) -> Future[Played]:
        """Queue *stream* for the call's playout on the ``pjsua`` thread.

        **Thread safety:** any thread; never blocks. The frames are taken on the
        ``pjsua`` thread, 20 ms apart, and discarded (see the module's notes).
        """
        return self._playout.add(call_id, stream)

    def hangup(self, call_id: str) -> None:
        """Hang up a call (BYE, or 603 if not yet answered); ``call_ended`` follows.

        Unknown or ended calls are ignored, so hanging up twice is harmless.

        **Thread safety**, **cancellation and timeouts:** as :meth:`answer`.

        Raises:
            RuntimeError: pjsua refused the operation (the message says why).
        """
        self._submit(lambda: self._hangup(call_id), None)

    def refuse_new_calls(self) -> None:
        """Answer every later INVITE with 503, unseen by the flow; calls in progress go on.

        A proxy in front then tries another agent. Idempotent, also before :meth:`start`.
        **Thread safety:** any thread; never blocks (it sets a flag the ``pjsua`` thread
        reads on the next INVITE).
        """
        with self._lock:
            self._refusing = True

    def call_media_ports(self, *, settle: float = 1.0) -> int:
        """How many conference-bridge ports calls hold beyond the idle stack's.

        Each call with audio holds one port until it is disconnected; pjmedia
        frees it on its next clock tick (every 20 ms), so this waits up to
        ``settle`` seconds for the count to drop to 0. Once every call has ended,
        anything above 0 is a leak. Returns 0 once stopped.

        **Thread safety:** any thread except ``pjsua``; blocks up to ``settle``
        seconds.
        """
        deadline = time.monotonic() + settle
        while True:
            held = self._submit(self._ports_held, 0)
            if held == 0 or time.monotonic() >= deadline:
                return held
            time.sleep(0.01)

    def stop(self) -> None:
        """Hang up every call, destroy pjsua and end its thread; idempotent.

        Calls still alive get ``call_ended(call_id, by_remote=False)`` on the
        ``pjsua`` thread before this returns. The bridge's shutdown does the
        same if this was not called.

        **Thread safety:** any thread except ``pjsua`` (that would deadlock:
        raises RuntimeError) and the loop's.
        """
        with self._lock:
            pinned = self._pinned
            if pinned is not None and pinned.thread is threading.current_thread():
                raise RuntimeError("SipTelephony.stop() called on the pjsua thread would deadlock")
            self._running, self._stopped = False, True
        if pinned is not None:
            pinned.close(timeout=None)  # runs the commands queued, then the finalizer

    # -- commands, run on the pjsua thread -----------------------------------

    def _submit(self, command: Callable[[], _T], if_stopped: _T) -> _T:
        with self._lock:
            pinned = self._pinned if self._running else None
        if pinned is None:
            return if_stopped
        try:
            return pinned.call(_translated, command)
        except BridgeClosed:  # stopped meanwhile
            return if_stopped

    def _answer(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.answered or call.hung_up_locally:
            return
        call.answered = True
        prm = pj.CallOpParam()
        prm.statusCode = 200
        call.answer(prm)
        self._playout.begin_call(call_id)
        self._log(f"answered {call_id}")

    def _ports_held(self) -> int:
        return int(pj.Endpoint.instance().mediaActivePorts()) - self._idle_ports

    def _say(self, call_id: str, text: str) -> None:
        if call_id in self._calls:
            self._log(f"say {call_id}: {text}")

    def _hangup(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.hung_up_locally:
            return
        call.hung_up_locally = True
        prm = pj.CallOpParam()
        prm.statusCode = 603  # used only if the call was never answered
        call.hangup(prm)

    # -- callbacks, on the pjsua thread --------------------------------------

    def _guard(self, what: str, handler: Callable[..., None], *args: object) -> None:
        # An exception escaping a pjsua2 callback aborts the process: report it.
        try:
            handler(*args)
        except Exception as exc:  # noqa: BLE001 - must not reach pjsua2
            self._callback_errors += 1
            self._log(f"error in {what} callback: {_describe(exc)}")

    def _on_incoming_call(self, account: _Account, pj_id: int) -> None:
        call = _Call(self, account, pj_id)
        with self._lock:
            refusing = self._refusing
        if refusing:
            self._refuse(call)
            return
        self._calls[call.sip_call_id] = call
        self._calls_started += 1
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)
        assert self._events is not None
        self._events.incoming_call(call.sip_call_id, call.caller)

    def _refuse(self, call: _Call) -> None:
        """Answer 503; keep the ``pj.Call`` (on this thread) until it is DISCONNECTED."""
        self._refused[call.sip_call_id] = call
        self._calls_refused += 1
        prm = pj.CallOpParam()
        prm.statusCode = 503
        prm.reason = "Draining"
        call.hangup(prm)

    def _on_call_state(self, call: _Call) -> None:
        if call.getInfo().state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
        if self._refused.get(call.sip_call_id) is call:
            del self._refused[call.sip_call_id]  # the flow never heard of it
            return
        self._playout.end_call(call.sip_call_id)  # no frame after this
        # Drop the last reference here, before pjsua can reuse the numeric id.
        del self._calls[call.sip_call_id]
        assert self._events is not None
        self._events.call_ended(call.sip_call_id, not call.hung_up_locally)

    def _on_media_state(self, call: _Call) -> None:
        speaker = pj.Endpoint.instance().audDevManager().getPlaybackDevMedia()
        for media in call.getInfo().media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                call.getAudioMedia(media.index).startTransmit(speaker)

    def _on_dtmf(self, call: _Call, digit: str) -> None:
        assert self._events is not None
        self._events.dtmf(call.sip_call_id, digit)

    # -- the pjsua thread ----------------------------------------------------

    def _open(self) -> None:
        """The pinned thread's initializer: create, start and listen, or undo and raise."""
        error = self._try_open()
        if error is not None:  # raised here, where no frame holds a pj object
            raise RuntimeError(error)

    def _try_open(self) -> str | None:
        """Open pjsua; on failure destroy it and return why (its pj objects die here)."""
        endpoint = pj.Endpoint()
        try:
            self._configure(endpoint)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            self._account = None
            self._destroy(endpoint)
            traceback.clear_frames(exc.__traceback__)
            return f"SIP stack failed to listen on {self._host}:{self._port}: {_describe(exc)}"
        self._endpoint = endpoint
        return None

    def _configure(self, endpoint: pj.Endpoint) -> None:
        _start_library(endpoint, self._host, self._port, MAX_CONCURRENT_CALLS)
        self._idle_ports = int(endpoint.mediaActivePorts())
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:intercom@{self._host}:{self._port}"
        self._account = _Account(self)
        self._account.create(account_config)

    def _poll(self) -> None:
        """The pinned thread's idle: poll pjsua, then play the frames that are due."""
        assert self._endpoint is not None
        self._endpoint.libHandleEvents(POLL_MS)
        self._playout.tick()

    def _sink(self, call_id: str, frame: bytes) -> bool:
        """Discard one frame of a call's prompt (``pjsua`` thread); False if it has ended."""
        return call_id in self._calls

    def _close(self) -> None:
        """The pinned thread's finalizer: hang up, let the calls end, destroy pjsua."""
        # No pj object may outlive libDestroy, not even in a local variable: a
        # Call collected afterwards aborts the process. Hence no loop here.
        endpoint, self._endpoint = self._endpoint, None
        assert endpoint is not None
        self._playout.close()
        deadline = time.monotonic() + _STOP_DRAIN_S
        while self._awaiting_ack() and time.monotonic() < deadline:
            endpoint.libHandleEvents(POLL_MS)  # a BYE may only follow the caller's ACK
        self._mark_all_hung_up()
        endpoint.hangupAllCalls()
        while (self._calls or self._refused) and time.monotonic() < deadline:
            endpoint.libHandleEvents(POLL_MS)
        self._calls.clear()
        self._refused.clear()
        if self._account is not None:
            self._account.shutdown()
            self._account = None
        self._destroy(endpoint)

    def _awaiting_ack(self) -> bool:
        """Whether a call was answered and the caller's ACK has not arrived yet."""
        connecting = pj.PJSIP_INV_STATE_CONNECTING
        return any(c.answered and c.getInfo().state == connecting for c in self._calls.values())

    def _mark_all_hung_up(self) -> None:
        for call in self._calls.values():
            call.hung_up_locally = True

    def _destroy(self, endpoint: pj.Endpoint) -> None:
        endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
