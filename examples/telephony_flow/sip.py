"""A real SIP user agent on pjsua2, implementing :class:`~.telephony.Telephony`.

``SipTelephony(host, port, *, on_log=None)`` listens for SIP calls over UDP on
``host:port`` (an IP address; the example uses 127.0.0.1), answers them when the
flow says so, delivers DTMF digits and hang-ups to the flow, and hangs up.

Threads. pjsua2 may only be called from threads registered with pjlib, a
misuse aborts the whole process, and a ``pj.Call`` object must die on a
registered thread *before* pjsua reuses its numeric call id (a stale object
would hang up the wrong call when collected). This stack therefore gives pjsua2
exactly one thread, ``pjsua``, which it creates itself:

- The library is configured with no worker threads of its own
  (``uaConfig.threadCnt = 0``, ``medConfig.threadCnt = 0``, RTP sharing the SIP
  ioqueue), and the ``pjsua`` thread polls it with ``libHandleEvents``. So every
  pjsua2 callback (incoming call, call state, DTMF over SIP INFO or RFC 2833)
  arrives on that thread, and :class:`~.telephony.CallEvents` methods are called
  on it.
- :meth:`SipTelephony.answer`, :meth:`~SipTelephony.say` and
  :meth:`~SipTelephony.hangup` may be called from any thread: they put a command
  on a queue that the ``pjsua`` thread runs between two polls, and wait for it
  (called on the ``pjsua`` thread itself, they run at once).
- Every ``pj.Call`` is created, used and dropped on that thread, inside its
  DISCONNECTED callback, so no other thread ever holds one.

This is safer than registering each calling thread on first use: registering
allocates a descriptor that pjlib keeps until ``libDestroy`` (worker threads come
and go), a thread that forgot to register aborts the process, and the callback
thread and a command thread would race on the same ``pj.Call`` (which is
exactly how a stale object ends up hanging up a reused call id). The price is up
to :data:`POLL_MS` of latency per command and that a slow
:class:`~.telephony.CallEvents` method delays all SIP processing, which the
interface forbids anyway.

Calls are identified by their SIP ``Call-ID``, which unlike pjsua's numeric id
is never reused, so a late command for a finished call is ignored. Each call's
audio is connected to pjsua's null sound device, which was needed to stop
conference ports leaking with pjsua's own threads;
:meth:`SipTelephony.call_media_ports` lets a run check that none leaked.
:meth:`~SipTelephony.say` does not synthesise speech: it reports the text
through ``on_log``. At most :data:`MAX_CONCURRENT_CALLS` calls are served at
once; pjsua answers further INVITEs with 486 Busy Here.

One :class:`SipTelephony` per process: pjsua2 has a single library instance.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Final, TypeVar

try:
    import pjsua2 as pj
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the sip telephony stack needs pjsua2: pip install 'bridge[sip]' "
        "(PyPI package pjsua2-python)"
    ) from exc

from .telephony import CallEvents

__all__ = ("MAX_CONCURRENT_CALLS", "POLL_MS", "SipTelephony")

MAX_CONCURRENT_CALLS: Final = 4
"""Calls served at once; the pjsua2-python wheel allows no more."""

POLL_MS: Final = 5
"""How long one ``libHandleEvents`` poll may block, so the longest wait for a command."""

_STOP_DRAIN_S: Final = 2.0
"""How long :meth:`SipTelephony.stop` lets hung-up calls reach DISCONNECTED."""

LogFn = Callable[[str], None]
_T = TypeVar("_T")


def _ignore(_message: str) -> None:
    pass


def _describe(exc: Exception) -> str:
    """The useful part of an exception; ``pj.Error`` has an empty ``str()``."""
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} (status {exc.status})"
    return repr(exc)


def _translated(command: Callable[[], _T]) -> _T:
    """Run ``command``, raising a ``pj.Error`` as a RuntimeError that says what failed.

    The exception travels to the thread that asked for the command, so the
    frames it went through are cleared first: their locals may hold a
    ``pj.Call``, which must never be collected outside the ``pjsua`` thread.
    """
    try:
        return command()
    except pj.Error as exc:
        traceback.clear_frames(exc.__traceback__)
        error = RuntimeError(_describe(exc))
    except Exception as exc:
        traceback.clear_frames(exc.__traceback__)
        raise
    raise error  # outside the handler: no __context__ pointing at the pj.Error


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null meanwhile (C code writes to it directly)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _Call(pj.Call):  # type: ignore[misc]
    """One pjsua2 call; lives only on the ``pjsua`` thread."""

    def __init__(self, stack: SipTelephony, account: pj.Account, pj_id: int) -> None:
        super().__init__(account, pj_id)
        info = self.getInfo()
        self.sip_call_id: str = info.callIdString
        self.caller: str = info.remoteUri
        self.answered = False
        self.hung_up_locally = False
        self._stack = stack

    def onCallState(self, prm: Any) -> None:
        self._stack._guard("call state", self._stack._on_call_state, self)

    def onCallMediaState(self, prm: Any) -> None:
        self._stack._guard("media state", self._stack._on_media_state, self)

    def onDtmfDigit(self, prm: Any) -> None:
        self._stack._guard("dtmf", self._stack._on_dtmf, self, str(prm.digit))


class _Account(pj.Account):  # type: ignore[misc]
    """The local account that receives calls; lives only on the ``pjsua`` thread."""

    def __init__(self, stack: SipTelephony) -> None:
        super().__init__()
        self._stack = stack

    def onIncomingCall(self, prm: Any) -> None:
        self._stack._guard("incoming call", self._stack._on_incoming_call, self, prm.callId)


class SipTelephony:
    """A SIP user agent on pjsua2 that answers calls on ``host:port`` (UDP).

    Args:
        host: The IP address to listen on, e.g. ``"127.0.0.1"``.
        port: The UDP port to listen on (1-65535).
        on_log: Called with one line of text for what the stack does (calls
            answered, text "said", errors raised by a callback); called on the
            ``pjsua`` thread, so it must return quickly. Default: discard.

    Raises:
        ValueError: ``host`` is not an IP address or ``port`` is out of range.
    """

    def __init__(self, host: str, port: int, *, on_log: LogFn | None = None) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address, got {host!r}") from None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, got {port!r}")
        self._host = host
        self._port = port
        self._log: LogFn = on_log or _ignore
        self._lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]
        self._commands = queue.SimpleQueue()
        self._running = False  # guarded by _lock: commands are accepted
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: CallEvents | None = None
        # Owned by the pjsua thread:
        self._calls: dict[str, _Call] = {}
        self._calls_started = 0
        self._callback_errors = 0
        self._idle_ports = 0
        self._account: _Account | None = None

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<SipTelephony {self._host}:{self._port} {state}>"

    @property
    def calls_started(self) -> int:
        """How many incoming calls the stack has accepted so far."""
        return self._calls_started

    @property
    def callback_errors(self) -> int:
        """How many exceptions the stack caught in its callbacks (including the
        :class:`~.telephony.CallEvents` methods); each is also reported to ``on_log``."""
        return self._callback_errors

    # -- Telephony -----------------------------------------------------------

    def start(self, events: CallEvents) -> None:
        """Start pjsua on its own thread and listen; return once it is listening.

        **Thread safety:** call once, from any thread other than ``pjsua``.

        Raises:
            RuntimeError: The stack was already started or stopped, or pjsua
                failed to start (for example the port is in use); nothing is
                left running then.
        """
        with self._lock:
            if self._thread is not None or self._stop_requested.is_set():
                raise RuntimeError("SipTelephony.start() was already called, or stop()")
            self._events = events
            ready: Future[None] = Future()
            self._thread = threading.Thread(target=self._run, args=(ready,), name="pjsua")
        self._thread.start()
        try:
            ready.result()
        except Exception:
            self._thread.join()
            raise

    def answer(self, call_id: str) -> None:
        """Answer a ringing call with 200 OK; unknown, answered or ended calls are ignored.

        **Thread safety:** any thread; blocks until the ``pjsua`` thread has run it
        (about :data:`POLL_MS` at most, plus the time to send the response).
        After :meth:`stop` it returns at once and does nothing.

        **Cancellation and timeouts:** there is no timeout: the wait ends when
        the command has run, which a :class:`~.telephony.CallEvents` method
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

    def hangup(self, call_id: str) -> None:
        """Hang up a call (BYE, or 603 if not yet answered); ``call_ended`` follows.

        Unknown or ended calls are ignored, so hanging up twice is harmless.

        **Thread safety**, **cancellation and timeouts:** as :meth:`answer`.

        Raises:
            RuntimeError: pjsua refused the operation (the message says why).
        """
        self._submit(lambda: self._hangup(call_id), None)

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
        """Hang up every call, destroy pjsua and join its thread; idempotent.

        Calls still alive get ``call_ended(call_id, by_remote=False)`` on the
        ``pjsua`` thread before this returns.

        **Thread safety:** any thread except ``pjsua`` (that would deadlock:
        raises RuntimeError).
        """
        thread = self._thread
        if thread is threading.current_thread():
            raise RuntimeError("SipTelephony.stop() called on the pjsua thread would deadlock")
        self._stop_requested.set()
        if thread is not None:
            thread.join()

    # -- commands, run on the pjsua thread -----------------------------------

    def _submit(self, command: Callable[[], _T], if_stopped: _T) -> _T:
        if threading.current_thread() is self._thread:
            return _translated(command)
        done: Future[_T] = Future()
        with self._lock:
            if not self._running:
                return if_stopped
            self._commands.put((command, done))
        return done.result()

    def _answer(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None or call.answered or call.hung_up_locally:
            return
        call.answered = True
        prm = pj.CallOpParam()
        prm.statusCode = 200
        call.answer(prm)
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
        self._calls[call.sip_call_id] = call
        self._calls_started += 1
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        call.answer(ringing)
        assert self._events is not None
        self._events.incoming_call(call.sip_call_id, call.caller)

    def _on_call_state(self, call: _Call) -> None:
        if call.getInfo().state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
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

    def _run(self, ready: Future[None]) -> None:
        endpoint = pj.Endpoint()
        try:
            self._open(endpoint)
        except Exception as exc:  # noqa: BLE001 - re-raised by start() as a RuntimeError
            self._destroy(endpoint)
            message = f"SIP stack failed to listen on {self._host}:{self._port}: {_describe(exc)}"
            ready.set_exception(RuntimeError(message))
            return
        with self._lock:
            self._running = True
        ready.set_result(None)
        try:
            self._serve(endpoint)
        finally:
            with self._lock:
                self._running = False
            self._run_commands()  # anything queued before _running went False
            self._close(endpoint)

    def _open(self, endpoint: pj.Endpoint) -> None:
        with _stdout_silenced():  # pjlib logs a banner to stdout before libInit
            endpoint.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.maxCalls = MAX_CONCURRENT_CALLS
        config.uaConfig.userAgent = "bridge-telephony-flow"
        config.medConfig.threadCnt = 0
        config.medConfig.hasIoqueue = False
        config.logConfig.level = 0
        config.logConfig.consoleLevel = 0
        endpoint.libInit(config)
        transport = pj.TransportConfig()
        transport.boundAddress = self._host
        transport.port = self._port
        endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        endpoint.libStart()
        endpoint.audDevManager().setNullDev()
        self._idle_ports = int(endpoint.mediaActivePorts())
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:intercom@{self._host}:{self._port}"
        self._account = _Account(self)
        self._account.create(account_config)

    def _serve(self, endpoint: pj.Endpoint) -> None:
        while not self._stop_requested.is_set():
            endpoint.libHandleEvents(POLL_MS)
            self._run_commands()

    def _run_commands(self) -> None:
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = _translated(command)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception(exc)
            else:
                done.set_result(result)

    def _close(self, endpoint: pj.Endpoint) -> None:
        # No pj object may outlive libDestroy, not even in a local variable: a
        # Call collected afterwards aborts the process. Hence no loop here.
        self._mark_all_hung_up()
        endpoint.hangupAllCalls()
        deadline = time.monotonic() + _STOP_DRAIN_S
        while self._calls and time.monotonic() < deadline:
            endpoint.libHandleEvents(POLL_MS)
        self._calls.clear()
        if self._account is not None:
            self._account.shutdown()
            self._account = None
        self._destroy(endpoint)

    def _mark_all_hung_up(self) -> None:
        for call in self._calls.values():
            call.hung_up_locally = True

    def _destroy(self, endpoint: pj.Endpoint) -> None:
        endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
