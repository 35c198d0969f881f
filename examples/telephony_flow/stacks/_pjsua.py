"""pjsua2 glue for the SIP stack: the library import, error translation, and the
``pj.Call`` / ``pj.Account`` subclasses whose callbacks forward to the stack.

Everything here is used on the stack's ``pjsua`` thread only (see
:mod:`.sip`): the boilerplate every pjsua2 application writes, kept apart so
that ``sip.py`` shows the thread and call handling.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

try:
    import pjsua2 as pj
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the sip telephony stack needs pjsua2: pip install 'bridge[sip]' "
        "(PyPI package pjsua2-python)"
    ) from exc

__all__ = [
    "Account",
    "Call",
    "describe",
    "listening",
    "pj",
    "start_library",
    "stdout_silenced",
    "translated",
]

_T = TypeVar("_T")


class Handlers(Protocol):
    """What the subclasses call on the stack (on the ``pjsua`` thread)."""

    def _guard(self, what: str, handler: Callable[..., None], *args: object) -> None: ...
    def _on_incoming_call(self, account: Account, pj_id: int) -> None: ...
    def _on_call_state(self, call: Call) -> None: ...
    def _on_media_state(self, call: Call) -> None: ...
    def _on_dtmf(self, call: Call, digit: str) -> None: ...


def describe(exc: Exception) -> str:
    """The useful part of an exception; ``pj.Error`` has an empty ``str()``."""
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} (status {exc.status})"
    return repr(exc)


def translated(command: Callable[[], _T]) -> _T:
    """Run ``command``, raising a ``pj.Error`` as a RuntimeError that says what failed.

    The exception travels to the thread that asked for the command, so the
    frames it went through are cleared first: their locals may hold a
    ``pj.Call``, which must never be collected outside the ``pjsua`` thread.
    """
    try:
        return command()
    except pj.Error as exc:
        traceback.clear_frames(exc.__traceback__)
        error = RuntimeError(describe(exc))
    except Exception as exc:
        traceback.clear_frames(exc.__traceback__)
        raise
    raise error  # outside the handler: no __context__ pointing at the pj.Error


def listening() -> None:
    """Nothing: a call that returns once the initializer has run."""


@contextlib.contextmanager
def stdout_silenced() -> Iterator[None]:
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


def start_library(endpoint: pj.Endpoint, host: str, port: int, max_calls: int) -> None:
    """Create, configure and start pjsua on *endpoint*: no threads of its own, UDP on
    ``host:port``, the null sound device, no logging. Raises ``pj.Error``."""
    with stdout_silenced():  # pjlib logs a banner to stdout before libInit
        endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.maxCalls = max_calls
    config.uaConfig.userAgent = "bridge-telephony-flow"
    config.medConfig.threadCnt = 0
    config.medConfig.hasIoqueue = False
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.boundAddress = host
    transport.port = port
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()


class Call(pj.Call):  # type: ignore[misc]
    """One pjsua2 call; lives only on the ``pjsua`` thread."""

    def __init__(self, stack: Handlers, account: pj.Account, pj_id: int) -> None:
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


class Account(pj.Account):  # type: ignore[misc]
    """The local account that receives calls; lives only on the ``pjsua`` thread."""

    def __init__(self, stack: Handlers) -> None:
        super().__init__()
        self._stack = stack

    def onIncomingCall(self, prm: Any) -> None:
        self._stack._guard("incoming call", self._stack._on_incoming_call, self, prm.callId)
