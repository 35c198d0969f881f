"""The operations server: uvicorn on a thread and event loop of its own.

Not on the bridge's loop: the dashboard and ``/healthz`` must answer while a
job blocks that loop, which is exactly when an operator opens them.

uvicorn is configured as a guest in somebody else's process:

- no signal handlers (:meth:`_GuestServer.capture_signals` does nothing; the
  main thread may be a pjsua2 or Flask application's, and Ctrl+C is theirs);
- no logging configuration: ``log_config=None``, and ``Config.configure_logging``
  does nothing (uvicorn's own ``access_log=False`` handling would clear the
  handlers of the process-wide ``uvicorn.access`` logger, which a host
  application running uvicorn itself relies on);
- no access log: uvicorn's HTTP protocol decides from whether the
  ``uvicorn.access`` logger has handlers, so :class:`_QuietH11` switches it off
  per connection. An access line would carry the first page load's
  ``?token=``, and a secret never goes to logs. (h11 always, httptools never:
  the same pure-Python parser wherever the extra is installed;)
- the socket is bound here, on the caller's thread, so that a port in use
  raises ``OSError`` from :func:`serve_ops` (uvicorn would ``sys.exit()`` in
  its thread) and :attr:`OpsServer.url` is known before the thread starts;
- ``lifespan="off"``, ``ws="none"``, ``proxy_headers=False`` (Host and scheme
  are what the client sent: the Origin check compares with them),
  ``server_header=False``, and a bound on concurrent connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any, Final, final
from urllib.parse import quote

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge import _log
from bridge._exceptions import BridgeClosed
from bridge._state import BridgeState

from ._app import HISTORY, OpsApp, check_lag_limit
from ._auth import check_token, is_loopback, new_token
from ._target import OpsTarget

__all__ = ["OPS_FAILED", "OPS_SERVING", "OpsServer", "check_prefix", "serve_ops"]

#: Log event: the server is up (fields ``bridge``, ``url`` without the token).
OPS_SERVING: Final = "ops.serving"
#: Log event: the server's thread ended with an error (fields ``bridge``, ``exc_info``).
OPS_FAILED: Final = "ops.failed"

#: :meth:`OpsServer.close` waits this long for a graceful stop, then forces it ...
_GRACE: Final = 0.6
#: ... and this much longer for the thread to end.
_FORCED: Final = 0.3
#: At most this many connections at once (the rest get 503 from uvicorn).
_MAX_CONNECTIONS: Final = 64


@final
class OpsServer:
    """A running operations server (what :func:`serve_ops` returns).

    Stop it with :meth:`close` or the bridge's ``shutdown()``; a context
    manager too. **Thread safety:** any thread.
    """

    __slots__ = (
        "_app",
        "_lock",
        "_name",
        "_server",
        "_socket",
        "_state",
        "_thread",
        "_token",
        "_where",
        "host",
        "port",
    )

    def __init__(
        self, app: OpsApp, sock: socket.socket, name: str, prefix: str, token: str
    ) -> None:
        self._app = app
        self._socket = sock
        self._name = name
        self._token = token
        #: The address the server listens on.
        self.host: Final[str] = str(sock.getsockname()[0])
        #: The port it listens on (the one the system chose for ``port=0``).
        self.port: Final[int] = int(sock.getsockname()[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._where = f"http://{host}:{self.port}{prefix}/"  # the URL without the token
        self._lock = threading.Lock()  # guards _state: "new", "serving", "closed"
        self._state = "new"
        config = _GuestConfig(
            app.asgi,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=_QuietH11,
            ws="none",
            proxy_headers=False,
            server_header=False,
            limit_concurrency=_MAX_CONNECTIONS,
            timeout_graceful_shutdown=1,
        )
        self._server = _GuestServer(config)
        self._thread = threading.Thread(target=self._run, name=f"{name}-ops", daemon=True)

    @property
    def url(self) -> str:
        """The dashboard's URL, token included: give it only to who may cancel jobs."""
        return f"{self._where}?token={quote(self._token, safe='')}"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._state == "closed"

    def __repr__(self) -> str:  # never the token
        return f"<OpsServer {self._where} bridge={self._name!r} {self._state}>"

    def __enter__(self) -> OpsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, within about a second, open dashboards or not. Idempotent.

        In-flight requests get their answers (a ``/healthz`` waiting for a
        blocked loop gets 503 at once); idle keep-alive connections are closed.

        **Thread safety:** any thread. Called from the server's own thread
        (a request handler), it asks for the stop and returns at once.
        """
        with self._lock:  # _start() either ran before or will not start the thread
            self._state = "closed"
        self._app.close()
        self._server.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_GRACE)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(_FORCED)
        if not self._thread.is_alive():  # else the thread's uvicorn closes it
            self._socket.close()

    def _start(self) -> None:
        with self._lock:  # not if close() came first (a bridge already shutting down)
            if self._state != "new":
                return
            self._state = "serving"
            self._thread.start()

    def _run(self) -> None:
        """The server's thread: its own event loop, plain asyncio."""
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # noqa: BLE001 - the thread's end: report, never raise
            _log.emit("error", OPS_FAILED, {"bridge": self._name, "exc_info": exc})


class _GuestConfig(uvicorn.Config):
    """uvicorn's configuration, minus touching the process's logging (module docstring)."""

    def configure_logging(self) -> None:
        pass


class _GuestServer(uvicorn.Server):
    """uvicorn's server, minus signal handlers (module docstring)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _QuietH11(H11Protocol):
    """uvicorn's h11 protocol without the access log (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


def serve_ops(
    bridge: OpsTarget,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    lag_limit: float = 1.0,
    prefix: str = "",
) -> OpsServer:
    """Serve *bridge*'s operations dashboard and HTTP API on a thread of its own.

    uvicorn runs on a daemon thread named ``<bridge name>-ops`` with an event
    loop of its own, so the page and ``/healthz`` answer while a job blocks
    the bridge's loop. It installs no signal handlers and leaves logging
    alone (no access log). The bridge's ``shutdown()`` stops it, as does
    :meth:`OpsServer.close`.

    Turns the bridge's history on at 1,000 jobs if it keeps none, and logs
    ``ops.serving`` (info) with the URL, without the token.

    Args:
        bridge: the bridge.
        host: the address to listen on; the default serves this machine only.
        port: the port; 0 lets the system choose (see :attr:`OpsServer.port`).
        token: the bearer token every route but ``/healthz`` and the page
            shell requires. ``None`` generates one, which is allowed only on
            a loopback address. :attr:`OpsServer.url` carries it.
        lag_limit: seconds the bridge's loop may take to answer
            ``/healthz``'s ping before it reports 503.
        prefix: a path to serve everything under, e.g. ``"/bridge"``.

    Returns:
        The running server.

    Raises:
        ValueError: *token* is ``None`` and *host* is not a loopback address,
            or a bad *token*, *port*, *lag_limit* or *prefix*.
        OSError: the address cannot be bound (the port is taken).
        BridgeClosed: the bridge is shutting down or shut down.

    **Thread safety:** any thread.
    """
    if bridge.state in (BridgeState.CLOSING, BridgeState.CLOSED):
        raise BridgeClosed(f"bridge {bridge.name!r} {bridge.state.value}: nothing to serve")
    lag_limit = check_lag_limit(lag_limit)
    prefix = check_prefix(prefix)
    family, address = _resolve(host, port)
    if token is None:
        if not is_loopback(address[0]):
            raise ValueError(
                f"serve_ops(host={host!r}, token=None): a generated token is allowed only on "
                f"a loopback host; pass token=... to serve beyond this machine"
            )
        token = new_token()
    token = check_token(token)
    sock = _listen(family, address)  # OSError: the port is taken
    try:
        bridge._keep_history(HISTORY)
        app = OpsApp(bridge, token=token, lag_limit=lag_limit, prefix=prefix)
        server = OpsServer(app, sock, bridge.name, prefix, token)
    except BaseException:
        sock.close()
        raise
    bridge._at_shutdown(server.close)  # at once, and then _start() does nothing, if it began
    server._start()
    # An info event, so like the job events: only once the application configured structlog.
    if not server.closed and _log.tracing():
        _log.emit("info", OPS_SERVING, {"bridge": bridge.name, "url": server._where})
    return server


def check_prefix(prefix: str) -> str:
    """*prefix* as the routes use it: ``""`` or ``"/a/b"``; else ValueError."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {prefix!r}")
    prefix = prefix.rstrip("/")
    if prefix and (not prefix.startswith("/") or any(c in prefix for c in "?#%{}\\ ")):
        raise ValueError(f"prefix must be '' or a path such as '/bridge', not {prefix!r}")
    return prefix


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and the ``(address, port)`` that *host* names, to bind."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]  # "" as socket.bind() has it: every interface
    return family, (str(address[0]), port)


def _listen(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket on *address*.

    Made with ``IPPROTO_TCP`` named: asyncio sets ``TCP_NODELAY`` on accepted
    connections only when the socket says it is TCP, and without it every
    keep-alive response waits about 40 ms (Nagle against delayed ACKs).
    """
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":  # a restarted server may rebind a port in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
