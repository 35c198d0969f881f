"""The operations HTTP API and the dashboard page, as a Starlette application.

Routes, all under the prefix (JSON unless said otherwise)::

    GET  /                       the dashboard page (no token: the shell asks for one)
    GET  /healthz                200 {"status": "ok", ...} or 503 {"status": "unhealthy", ...}
    GET  /jobs?kind=&key_prefix= the unfinished jobs, oldest first
    GET  /history?kind=&outcome=&limit=
                                 the finished jobs kept, newest first
    GET  /stats                  counters, lanes, room, worker threads, loop lag
    GET  /metrics                Prometheus text format
    POST /jobs/{key}/cancel      one job by key (percent-encoded: "/" as %2F)
    POST /jobs/id/{id}/cancel    one job by id
    POST /kinds/{kind}/cancel    every unfinished job of a kind
    POST /cancel-all             every unfinished job

Every handler reads the bridge through its thread-safe calls only; the one
thing sent to the bridge's loop is the lag ping (``_lag.py``). So the API
keeps answering while a job blocks that loop. Bad input gets a 4xx JSON
``{"error": ...}`` before anything is changed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, final
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bridge._job import Job, JobInfo
from bridge._state import BridgeState

from . import _metrics, _page
from ._auth import bearer_ok, check_token, same_origin
from ._lag import LoopLag
from ._target import OpsTarget

__all__ = [
    "DEFAULT_LIMIT",
    "HISTORY",
    "MAX_LIMIT",
    "OpsApp",
    "asgi_app",
    "check_lag_limit",
    "info_json",
    "live_json",
]

#: History size turned on for a bridge that keeps none (``Bridge(history=0)``).
HISTORY: Final = 1_000
#: ``GET /history`` returns at most this many jobs unless ``limit`` says otherwise ...
DEFAULT_LIMIT: Final = 1_000
#: ... and ``limit`` may not exceed this.
MAX_LIMIT: Final = 10_000
_OUTCOMES: Final = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
#: The POST routes take no body; a client sending more than this is not ours.
_MAX_BODY: Final = 4096
_NO_STORE: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: The page may not be framed (its buttons cancel jobs) nor leak its URL.
_PAGE_HEADERS: Final = {
    **_NO_STORE,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def asgi_app(bridge: OpsTarget, *, token: str | None, lag_limit: float = 1.0) -> Starlette:
    """The operations routes and page as an ASGI application, to mount.

    For an application that already serves HTTP: ``app.mount("/bridge",
    bridge.ops.asgi_app(b, token=...))`` in Starlette or FastAPI. The routes are
    those of :func:`serve_ops`, relative to the mount point, and the page works
    at ``/bridge/``.

    Args:
        bridge: the bridge.
        token: the bearer token every route but ``/healthz`` and the page shell
            requires. ``None`` (say it explicitly) means **no authentication at
            all**: the routes, cancelling included, are open to whoever reaches
            the host application there, which must then guard the mount itself.
            The POST routes still refuse a foreign ``Origin``.
        lag_limit: seconds the bridge's loop may take to answer ``/healthz``.

    Turns the bridge's history on at 1,000 jobs if it keeps none, and keeps
    its metrics (for ``/metrics``) in a registry of the app's own until the
    bridge shuts down.

    Raises:
        ValueError: a bad *token* (empty, spaces, not ASCII) or *lag_limit*.

    **Thread safety:** any thread; the app serves requests on whatever event
    loop the host runs, reading the bridge only through its thread-safe calls.
    """
    if token is not None:
        token = check_token(token)
    app = OpsApp(bridge, token=token, lag_limit=check_lag_limit(lag_limit), prefix="")
    bridge._keep_history(HISTORY)
    bridge._at_shutdown(app.close)
    return app.asgi


class _Refusal(Exception):
    """A request the API turns down: answered with *status* and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


@final
class OpsApp:
    """One bridge's operations API and page; :attr:`asgi` is the application.

    Args:
        target: the bridge.
        token: the bearer token every route but ``/healthz`` and the page shell
            requires; ``None`` checks nothing (the host application authenticates).
        lag_limit: seconds the bridge's loop may take to answer ``/healthz``'s ping.
        prefix: the path every route is under: ``""`` or ``"/something"``.

    Building one keeps the bridge's metrics in a registry of its own (a job
    observer for the histograms); :meth:`close` drops them.
    """

    __slots__ = (
        "_closing",
        "_depth",
        "_lag_limit",
        "_page",
        "_registry",
        "_target",
        "_token",
        "asgi",
        "lag",
    )

    def __init__(
        self, target: OpsTarget, *, token: str | None, lag_limit: float, prefix: str
    ) -> None:
        self._target = target
        self._token = token
        self._lag_limit = lag_limit
        self._depth = prefix.count("/")  # path segments the prefix takes
        self._closing = False
        self._page = _page.page_html(needs_token=token is not None)
        #: Pings the bridge's loop (``/healthz``, ``/stats``, ``bridge_loop_lag_seconds``).
        self.lag = LoopLag(target)
        self._registry = _metrics.new_registry(target, self.lag.sample)
        app = Starlette(
            routes=self._routes(prefix),
            exception_handlers={HTTPException: _http_error, _Refusal: _refused},
        )
        app.router.redirect_slashes = False  # an API answers 404, not a redirect
        #: The ASGI application.
        self.asgi: Final = app

    def close(self) -> None:
        """Stop measuring: ``/healthz`` waits end (503), the metrics leave. Any thread."""
        self._closing = True
        self.lag.release()
        _metrics.close_registry(self._registry)

    def _routes(self, prefix: str) -> list[Route]:
        api: list[tuple[str, Endpoint, str]] = [
            ("/jobs", self._jobs, "GET"),
            ("/history", self._history, "GET"),
            ("/stats", self._stats, "GET"),
            ("/metrics", self._metrics, "GET"),
            ("/jobs/{rest:path}", self._cancel_job, "POST"),
            ("/kinds/{rest:path}", self._cancel_kind, "POST"),
            ("/cancel-all", self._cancel_all, "POST"),
        ]
        routes = [
            Route(prefix + "/", self._page_shell, methods=["GET"]),
            Route(prefix + "/healthz", self._healthz, methods=["GET"]),
        ]
        if prefix:
            routes.append(Route(prefix, self._page_shell, methods=["GET"]))
        routes += [
            Route(prefix + path, self._guarded(endpoint, post=method == "POST"), methods=[method])
            for path, endpoint, method in api
        ]
        return routes

    def _guarded(self, endpoint: Endpoint, *, post: bool) -> Endpoint:
        """*endpoint* behind the token check, and for a POST the Origin and body checks."""

        async def guarded(request: Request) -> Response:
            if self._token is not None and not bearer_ok(request, self._token):
                raise _Refusal(
                    401,
                    "this route needs the token: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": 'Bearer realm="bridge ops"'},
                )
            if post:
                if not same_origin(request):
                    raise _Refusal(
                        403, "cross-origin request refused: the Origin is not this server"
                    )
                await _check_no_body(request)
            return await endpoint(request)

        return guarded

    # -- reading ---------------------------------------------------------------------------

    async def _page_shell(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers=_PAGE_HEADERS)

    async def _healthz(self, request: Request) -> Response:
        target = self._target
        reason = self._unhealthy()
        if reason is None:
            lag = await self.lag.measure(self._lag_limit)
            reason = self._unhealthy()
            if reason is None and lag is not None:
                return _json({"status": "ok", "lag_seconds": lag})
            if reason is None:
                reason = (
                    f"the event loop of bridge {target.name!r} has not answered for "
                    f"{self._lag_limit:g} s: a job may be blocking it"
                )
        return _json({"status": "unhealthy", "reason": reason}, 503)

    def _unhealthy(self) -> str | None:
        """Why ``/healthz`` fails without asking the loop, or ``None``."""
        state = self._target.state
        if state is not BridgeState.RUNNING:
            return f"bridge {self._target.name!r} {state.value}"
        if self._closing:
            return "the operations server is closing"
        return None

    async def _jobs(self, request: Request) -> Response:
        kind = request.query_params.get("kind") or None
        key_prefix = request.query_params.get("key_prefix") or ""
        infos = self._target.jobs(kind)
        if key_prefix:
            infos = [i for i in infos if i.key is not None and i.key.startswith(key_prefix)]
        now = time.time()
        return _json({"jobs": [live_json(info, now) for info in infos]})

    async def _history(self, request: Request) -> Response:
        query = request.query_params
        limit = _limit(query.get("limit"))
        outcome = query.get("outcome") or None
        if outcome is not None and outcome not in _OUTCOMES:
            raise _Refusal(400, f"outcome must be one of {', '.join(sorted(_OUTCOMES))}")
        infos = self._target.history(query.get("kind") or None)
        if outcome is not None:
            infos = [info for info in infos if info.outcome == outcome]
        return _json({"history": [info_json(info) for info in infos[:limit]]})

    async def _stats(self, request: Request) -> Response:
        target = self._target
        stats = target.stats()
        capacity = target._capacity()
        return _json(
            {
                "bridge": target.name,
                "state": target.state.name.lower(),
                "stats": dataclasses.asdict(stats),
                "lanes": {kind: dataclasses.asdict(lane) for kind, lane in capacity.lanes.items()},
                "max_pending": capacity.max_pending,
                "room_left": capacity.room_left,
                "workers": {
                    "max": capacity.workers_max,
                    "busy": capacity.workers_busy,
                    "idle": capacity.workers_idle,
                },
                "loop_lag_seconds": self.lag.sample(),
            }
        )

    async def _metrics(self, request: Request) -> Response:
        body, content_type = _metrics.expose(self._registry)
        return Response(body, headers={**_NO_STORE, "Content-Type": content_type})

    # -- cancelling --------------------------------------------------------------------------

    async def _cancel_job(self, request: Request) -> Response:
        tail = self._raw_tail(request, b"jobs")
        job: Job[Any] | None
        if len(tail) == 2 and tail[1] == b"cancel":
            key = _decoded(tail[0], "key")
            job, what = self._target.get(key), f"key {key!r}"
        elif len(tail) == 3 and tail[0] == b"id" and tail[2] == b"cancel":
            job_id = _job_id(tail[1])
            job, what = self._target._registry.find(job_id), f"id {job_id}"
        else:
            raise _Refusal(
                404,
                "no such route: POST /jobs/{key}/cancel takes the key percent-encoded "
                "('/' as %2F), POST /jobs/id/{id}/cancel an integer id",
            )
        if job is None or not job.cancel():
            raise _Refusal(404, f"no unfinished job with {what}")
        return _json({"cancelled": True, "job": live_json(job.info(), time.time())})

    async def _cancel_kind(self, request: Request) -> Response:
        tail = self._raw_tail(request, b"kinds")
        if len(tail) != 2 or tail[1] != b"cancel":
            raise _Refusal(404, "no such route: POST /kinds/{kind}/cancel (kind percent-encoded)")
        return _json({"cancelled": self._target.cancel_all(_decoded(tail[0], "kind"))})

    async def _cancel_all(self, request: Request) -> Response:
        return _json({"cancelled": self._target.cancel_all()})

    def _raw_tail(self, request: Request, anchor: bytes) -> list[bytes]:
        """The path's segments after ``{prefix}/{anchor}/``, still percent-encoded.

        Routing sees the decoded path, where a key's ``%2F`` has become a
        ``/``; the raw path keeps each segment whole. The mount point
        (``root_path``) and the prefix take as many segments as they have
        slashes.
        """
        scope = request.scope
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        skip = 1 + self._depth + str(scope.get("root_path", "")).count("/")
        segments = raw.split(b"/")[skip:]
        return segments[1:] if segments[:1] == [anchor] else []


# -- JSON ----------------------------------------------------------------------------------


def info_json(info: JobInfo) -> dict[str, Any]:
    """A :class:`JobInfo` as JSON: its fields, the state as its value (``"running"``)."""
    return {field.name: _plain(getattr(info, field.name)) for field in dataclasses.fields(info)}


def live_json(info: JobInfo, now: float) -> dict[str, Any]:
    """:func:`info_json` with ``age``, ``time_left``, ``queue_seconds``, ``run_seconds``."""
    end = info.finished_at if info.finished_at is not None else now
    started = info.started_at
    item = info_json(info)
    item["age"] = max(0.0, now - info.submitted_at)
    item["time_left"] = None if info.deadline is None else max(0.0, info.deadline - now)
    item["queue_seconds"] = max(0.0, (end if started is None else started) - info.submitted_at)
    item["run_seconds"] = None if started is None else max(0.0, end - started)
    return item


def _plain(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def _json(content: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(content, status, headers=_NO_STORE)


# -- input ---------------------------------------------------------------------------------


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise _Refusal(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise _Refusal(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def _job_id(segment: bytes) -> int:
    if not (segment.isdigit() and len(segment) <= 18):
        raise _Refusal(400, "a job id is a decimal integer")
    return int(segment)


def _decoded(segment: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(400, f"the {what} is not UTF-8 once percent-decoded") from None


async def _check_no_body(request: Request) -> None:
    """Refuse a body other than nothing or ``{}`` (the POST routes take no arguments)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise _Refusal(413, "these routes take no body")
    if not body.strip():
        return
    try:
        value = json.loads(bytes(body))
    except ValueError:
        raise _Refusal(400, "the body must be empty or {}: these routes take no body") from None
    if value != {}:
        raise _Refusal(400, "the body must be empty or {}: these routes take no body")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) as JSON."""
    assert isinstance(exc, HTTPException)
    messages = {
        404: f"no such route: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    message = messages.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        {"error": message}, exc.status_code, headers={**_NO_STORE, **(exc.headers or {})}
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refusal)
    return JSONResponse(
        {"error": str(exc)}, exc.status, headers={**_NO_STORE, **(exc.headers or {})}
    )


def check_lag_limit(lag_limit: float) -> float:
    """*lag_limit* if it is a positive finite number of seconds; else ValueError."""
    if isinstance(lag_limit, bool) or not isinstance(lag_limit, (int, float)):
        raise TypeError(f"lag_limit must be a number of seconds, not {lag_limit!r}")
    if not (lag_limit > 0 and math.isfinite(lag_limit)):
        raise ValueError(
            f"lag_limit must be a positive finite number of seconds, not {lag_limit!r}"
        )
    return float(lag_limit)
