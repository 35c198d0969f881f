"""serve_ops(): uvicorn on a thread of its own, through real HTTP on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from helpers import hold
from prometheus_client.parser import text_string_to_metric_families

import bridge.ops
from bridge import Bridge, BridgeClosed, JobState
from bridge.ops import OpsServer


async def value(x: int) -> int:
    return x


def token_of(server: OpsServer) -> str:
    return parse_qs(urlsplit(server.url).query)["token"][0]


def base_of(server: OpsServer) -> str:
    return server.url.split("?", 1)[0]


def auth(server: OpsServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(server)}"}


def ops_threads(b: Bridge) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{b.name}-ops"]


def refused(server: OpsServer) -> bool:
    """Whether a new connection to *server*'s port is refused."""
    try:
        socket.create_connection((server.host, server.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(condition: Callable[[], object], what: str) -> None:
    """Wait until *condition()* is true (a state another thread reaches), 10 s at most."""
    deadline = time.monotonic() + 10
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.005)


@pytest.fixture
def serve() -> Iterator[Callable[..., OpsServer]]:
    """``serve(bridge, **options)``: serve_ops(), closed at teardown."""
    servers: list[OpsServer] = []

    def start(b: Bridge, **options: Any) -> OpsServer:
        server = bridge.ops.serve_ops(b, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def b(make_bridge: Callable[..., Bridge]) -> Iterator[Bridge]:
    the_bridge = make_bridge()
    yield the_bridge
    the_bridge.cancel_all()  # the held jobs end now, not after shutdown's drain


# -- serving ---------------------------------------------------------------------------------


def test_serves_on_loopback_with_a_generated_token(b: Bridge, serve: Any) -> None:
    server = serve(b)

    token = token_of(server)
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/?token={token}"
    assert len(token) >= 32
    assert token_of(serve(b)) != token
    (thread,) = ops_threads(b)[:1]
    assert thread.daemon
    base = base_of(server)
    assert httpx.get(base + "healthz").json()["status"] == "ok"
    assert httpx.get(base + "jobs").status_code == 401
    assert httpx.get(base + "jobs", headers=auth(server)).json() == {"jobs": []}
    assert httpx.get(base).status_code == 200


def test_the_listening_socket_says_it_is_tcp(b: Bridge, serve: Any) -> None:
    # asyncio sets TCP_NODELAY on accepted connections only then; without it a
    # keep-alive response waits ~40 ms for the client's delayed ACK.
    server = serve(b)
    assert server._socket.proto == socket.IPPROTO_TCP
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(base_of(server) + "healthz").status_code == 200


def test_bridge_serve_ops_takes_the_same_options(b: Bridge) -> None:
    with b.serve_ops(port=0, token="given-token", lag_limit=0.5, prefix="/ops/") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/ops/?token=given-token"
        base = base_of(server)
        assert httpx.get(base + "stats", headers=auth(server)).json()["bridge"] == b.name
        assert httpx.get(base.rstrip("/")).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{server.port}/stats").status_code == 404
    assert server.closed
    assert ops_threads(b) == []


def test_the_url_quotes_the_token(b: Bridge, serve: Any) -> None:
    server = serve(b, token="a+b/c=d&e")
    assert server.url.endswith("?token=a%2Bb%2Fc%3Dd%26e")
    assert token_of(server) == "a+b/c=d&e"
    assert httpx.get(base_of(server) + "stats", headers=auth(server)).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", ""])
def test_a_generated_token_is_refused_beyond_loopback(b: Bridge, host: str) -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match=r"token=\.\.\."):
        bridge.ops.serve_ops(b, host=host, token=None)
    assert threading.active_count() == before
    assert b.history() == []
    b.call(value, 1)
    assert b.history() == []  # nothing was turned on either


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"port": -1}, "port"),
        ({"port": 65536}, "port"),
        ({"port": True}, "port"),
        ({"prefix": "ops"}, "prefix"),
        ({"prefix": "/a?b"}, "prefix"),
        ({"prefix": "/a%2Fb"}, "prefix"),
        ({"lag_limit": 0}, "lag_limit"),
        ({"lag_limit": float("inf")}, "lag_limit"),
        ({"token": ""}, "token"),
        ({"token": "has space"}, "token"),
    ],
)
def test_bad_arguments_raise_and_start_nothing(
    b: Bridge, options: dict[str, Any], named: str
) -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match=named):
        bridge.ops.serve_ops(b, **options)
    assert threading.active_count() == before


def test_a_port_in_use_raises_oserror(b: Bridge) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            bridge.ops.serve_ops(b, port=port)
    assert ops_threads(b) == []


def test_a_closed_bridge_has_nothing_to_serve(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    b.shutdown()
    with pytest.raises(BridgeClosed):
        bridge.ops.serve_ops(b)


# -- the API over HTTP -------------------------------------------------------------------------


def test_cancel_over_http_by_encoded_key_and_by_id(b: Bridge, serve: Any) -> None:
    server = serve(b)
    base, headers = base_of(server), auth(server)
    keyed = hold(b, key="sip/call/7")
    plain = hold(b)

    by_key = httpx.post(base + f"jobs/{quote('sip/call/7', safe='')}/cancel", headers=headers)
    by_id = httpx.post(base + f"jobs/id/{plain.id}/cancel", headers=headers)

    assert by_key.status_code == 200
    assert by_key.json()["job"]["key"] == "sip/call/7"
    assert by_id.status_code == 200
    concurrent.futures.wait([keyed, plain], timeout=10)
    assert keyed.info().state is plain.info().state is JobState.CANCELLED
    assert httpx.post(base + f"jobs/id/{plain.id}/cancel", headers=headers).status_code == 404


def test_the_origin_check_compares_with_the_host_header(b: Bridge, serve: Any) -> None:
    server = serve(b)
    base, headers = base_of(server), auth(server)
    job = hold(b, key="k")
    foreign = {**headers, "Origin": f"http://localhost:{server.port + 1}"}
    assert httpx.post(base + "jobs/k/cancel", headers=foreign).status_code == 403
    assert job.info().state is JobState.RUNNING
    own = {**headers, "Origin": f"http://127.0.0.1:{server.port}"}
    assert httpx.post(base + "jobs/k/cancel", headers=own).status_code == 200
    concurrent.futures.wait([job], timeout=10)
    assert job.info().state is JobState.CANCELLED


def test_metrics_over_http(b: Bridge, serve: Any) -> None:
    server = serve(b)
    b.call(value, 1, kind="tts")
    response = httpx.get(base_of(server) + "metrics", headers=auth(server))
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    (submitted,) = families["bridge_jobs_submitted"].samples
    assert submitted.value == b.stats().submitted == 1
    assert "bridge_loop_lag_seconds" in families


def test_the_page_and_api_answer_while_a_job_blocks_the_loop(
    b: Bridge, serve: Any, loop_blocker: Any
) -> None:
    server = serve(b, lag_limit=0.3)
    base, headers = base_of(server), auth(server)
    blocker = loop_blocker.block(b)

    started = time.monotonic()
    health = httpx.get(base + "healthz", timeout=10)
    waited = time.monotonic() - started
    page = httpx.get(base, timeout=10)
    jobs = httpx.get(base + "jobs", headers=headers, timeout=10)

    assert health.status_code == 503
    assert "has not answered for 0.3 s" in health.json()["reason"]
    assert 0.25 <= waited < 2.0
    assert page.status_code == 200
    assert [j["id"] for j in jobs.json()["jobs"]] == [blocker.id]
    loop_blocker.release()
    blocker.result(timeout=10)
    b.call(value, 1)  # the loop has run the ping queued while it was blocked
    assert httpx.get(base + "healthz").status_code == 200


# -- stopping ------------------------------------------------------------------------------------


def test_close_takes_under_a_second_with_connections_open(
    b: Bridge, serve: Any, loop_blocker: Any
) -> None:
    server = serve(b, lag_limit=30)
    base, headers = base_of(server), auth(server)
    idle = httpx.Client(headers=headers)  # a keep-alive connection, idle after one request
    assert idle.get(base + "jobs").status_code == 200
    partial = socket.create_connection((server.host, server.port), timeout=10)
    partial.sendall(b"GET /jobs HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    loop_blocker.block(b)
    answers: list[httpx.Response] = []
    asking = threading.Thread(
        target=lambda: answers.append(httpx.get(base + "healthz", timeout=10))
    )
    asking.start()
    lag = server._app.lag
    wait_for(lambda: lag._ping is not None and lag._ping.waiters, "/healthz to wait for the loop")

    started = time.monotonic()
    server.close()
    took = time.monotonic() - started

    asking.join(10)
    assert took < 1.0
    assert answers[0].status_code == 503
    assert answers[0].json()["reason"] == "the operations server is closing"
    assert ops_threads(b) == []
    assert partial.recv(1024) == b""
    assert refused(server)
    with pytest.raises(httpx.TransportError):
        idle.get(base + "jobs")
    idle.close()
    partial.close()


def test_the_bridge_shutdown_stops_the_server(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    server = bridge.ops.serve_ops(b)
    assert httpx.get(base_of(server) + "healthz").status_code == 200
    hold(b)  # shutdown cancels it

    b.shutdown(timeout=0.1)

    assert server.closed
    assert ops_threads(b) == []
    assert refused(server)


def test_the_shutdown_of_a_bridge_never_started_stops_the_server() -> None:
    b = Bridge(name="ops-never-started")
    server = bridge.ops.serve_ops(b)
    try:
        assert httpx.get(base_of(server) + "healthz").json() == {
            "status": "unhealthy",
            "reason": "bridge 'ops-never-started' has not been started",
        }
        b.shutdown()
        assert server.closed
        assert ops_threads(b) == []
    finally:
        server.close()


def test_close_is_idempotent(b: Bridge) -> None:
    server = bridge.ops.serve_ops(b)
    server.close()
    server.close()
    assert server.closed
    assert "closed" in repr(server)
    assert ops_threads(b) == []


# -- a guest in the process: logging, signals ----------------------------------------------------


def test_the_url_is_logged_once_without_the_token(
    b: Bridge, serve: Any, bridge_events: list[dict[str, Any]]
) -> None:
    server = serve(b)
    httpx.get(server.url)
    httpx.get(base_of(server) + "stats", headers=auth(server))
    server.close()

    serving = [e for e in bridge_events if e["event"] == "ops.serving"]
    assert serving == [
        {
            "event": "ops.serving",
            "log_level": "info",
            "bridge": b.name,
            "url": base_of(server),
        }
    ]
    assert token_of(server) not in repr(bridge_events)
    assert token_of(server) not in repr(server)


def test_no_access_log_and_no_logging_configuration(
    b: Bridge, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    access = logging.getLogger("uvicorn.access")
    before = (access.handlers[:], access.propagate, access.level)
    caplog.set_level(logging.DEBUG)  # a handler on the root logger, which uvicorn.access reaches
    server = serve(b)

    httpx.get(server.url)  # the first page load, ?token= in its URL
    httpx.get(base_of(server) + "jobs", headers=auth(server))
    server.close()

    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert ours  # uvicorn's own lines ("Shutting down") are there: the capture works
    assert not [r for r in ours if token_of(server) in r.getMessage()]
    assert not [r for r in ours if r.name == "uvicorn.access"]
    assert (access.handlers, access.propagate, access.level) == before


def test_no_signal_handlers(b: Bridge, serve: Any) -> None:
    signals = (signal.SIGINT, signal.SIGTERM)
    before = [signal.getsignal(s) for s in signals]
    server = serve(b)
    assert httpx.get(base_of(server) + "healthz").status_code == 200
    with server._server.capture_signals():  # uvicorn installs its handlers here (main thread)
        assert [signal.getsignal(s) for s in signals] == before
    server.close()
    assert [signal.getsignal(s) for s in signals] == before
