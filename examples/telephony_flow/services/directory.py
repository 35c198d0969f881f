"""The building's directory: a small HTTP/1.1 service on 127.0.0.1.

It stands in for the building's resident directory and intercom handsets, a
separate service in a real installation: the flow looks residents up and rings
them through it with an ``httpx.AsyncClient``, over a real TCP socket on
loopback.

It runs on its own thread with its own event loop (``asyncio.run`` once, for the
life of the service): the flow's bridge shares nothing with it but the socket.
The CLI runs it in a child process of its own (:mod:`.directory_process`), as
in a real installation, so that its work takes none of the flow's GIL; the
tests that watch inside it use it in-process. It is written on ``asyncio.start_server``
rather than ``http.server`` because a ringing request must notice when its
client goes away (the visitor hung up and the flow cancelled the request): the
handler races the resident's answer against end-of-file on the socket, which a
thread blocked in ``http.server`` cannot do. It also counts its open
connections, so the run can prove that none outlives it.

The building (fixed, so that SIP tests can dial known numbers):

* apartments ``101``-``116``: the resident answers after a short delay and opens
  the door (``{"answer": "open"}``);
* apartments ``201``-``208``: the resident never answers; the request stays open
  until the client gives up;
* any other number: ``404`` (wrong apartment).

Endpoints: ``GET /residents/<apartment>`` and ``POST /residents/<apartment>/ring``
(JSON body ``{"call_id": ...}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ANSWERING", "SILENT", "DirectoryService", "DirectoryStats"]

#: Apartments whose resident answers and opens the door.
ANSWERING: Final = tuple(str(n) for n in range(101, 117))
#: Apartments whose resident never answers.
SILENT: Final = tuple(str(n) for n in range(201, 209))

_MAX_HEADER_LINES: Final = 64
_MAX_BODY: Final = 64 * 1024
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


@dataclass(frozen=True)
class DirectoryStats:
    """Counters of the service (a snapshot)."""

    #: HTTP requests answered or abandoned.
    requests: int
    #: Ring requests whose resident answered.
    answered: int
    #: Ring requests whose client went away before an answer.
    abandoned: int
    #: Connections accepted since the start.
    connections: int
    #: Connections open now.
    open_connections: int


def reaction_delay(apartment: str) -> float:
    """Seconds the resident of *apartment* takes to answer (fixed per apartment)."""
    return 0.005 + (int(apartment) * 7 % 40) / 1000.0


class DirectoryService:
    """The directory's HTTP server, on its own thread and event loop.

    ``start()`` returns the base URL once the socket listens; ``stop()`` closes
    every connection, ends every handler and joins the thread. Both may be
    called from any thread except the service's own.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards the counters
        self._requests = 0
        self._answered = 0
        self._abandoned = 0
        self._connections = 0
        self._connections_open = 0
        self._open: set[asyncio.StreamWriter] = set()  # loop thread only
        self._handlers: set[asyncio.Task[None]] = set()  # loop thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._url = ""
        self._thread = threading.Thread(target=self._main, name="directory", daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121`` (empty until started)."""
        return self._url

    def start(self) -> str:
        """Start listening and return the base URL.

        Raises:
            OSError: the address could not be bound.
        """
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._url

    def stop(self) -> None:
        """Close the server and every connection, then join the thread; idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.ident is not None:
            self._thread.join()

    def stats(self) -> DirectoryStats:
        """A snapshot of the counters. Any thread."""
        with self._lock:
            return DirectoryStats(
                self._requests,
                self._answered,
                self._abandoned,
                self._connections,
                self._connections_open,
            )

    # -- the service's thread ------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, self._host, self._port)
        port = server.sockets[0].getsockname()[1]
        self._url = f"http://{self._host}:{port}"
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for writer in list(self._open):
                writer.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._open.add(writer)
        with self._lock:
            self._connections += 1
            self._connections_open += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or spoke nonsense: drop the connection
        finally:
            self._open.discard(writer)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            with self._lock:
                self._connections_open -= 1

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open."""
        request = await _read_request(reader)
        if request is None:
            return False
        method, path, body = request
        with self._lock:
            self._requests += 1
        reply = await self._route(method, path, body, reader)
        if reply is None:  # the client left while the resident was ringing
            return False
        status, payload = reply
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        return True

    async def _route(
        self, method: str, path: str, body: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, Any]] | None:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "residents" or not parts[1].isdigit():
            return 404, {"error": f"no route {path}"}
        apartment = parts[1]
        known = apartment in ANSWERING or apartment in SILENT
        if len(parts) == 2 and method == "GET":
            if not known:
                return 404, {"error": f"no apartment {apartment}"}
            return 200, {"apartment": apartment, "name": f"Resident of {apartment}"}
        if len(parts) == 3 and parts[2] == "ring" and method == "POST":
            if not known:
                return 404, {"error": f"no apartment {apartment}"}
            try:
                call_id = json.loads(body)["call_id"]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": "the body must be JSON with a call_id"}
            return await self._ring(apartment, str(call_id), reader)
        return 405, {"error": f"{method} {path} is not allowed"}

    async def _ring(
        self, apartment: str, call_id: str, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, Any]] | None:
        """Ring the resident: answer after their delay, or wait until the client leaves."""
        gone = asyncio.ensure_future(reader.read(1))  # EOF (b"") when the client leaves
        delay = reaction_delay(apartment) if apartment in ANSWERING else None
        try:
            done, _ = await asyncio.wait({gone}, timeout=delay)
        finally:
            gone.cancel()
            await asyncio.wait({gone})  # let the read end before the next request's
        if not done:
            with self._lock:
                self._answered += 1
            return 200, {"apartment": apartment, "call_id": call_id, "answer": "open"}
        with self._lock:
            self._abandoned += 1
        return None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """Read one request; ``None`` at a clean end of the connection."""
    line = await reader.readline()
    if not line:
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    length = 0
    for _ in range(_MAX_HEADER_LINES):
        header = (await reader.readline()).decode("latin-1").strip()
        if not header:
            break
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    else:
        raise ValueError("too many header lines")
    if not 0 <= length <= _MAX_BODY:
        raise ValueError(f"bad Content-Length {length}")
    body = await reader.readexactly(length)
    return method, path, body
