"""The operations HTTP API through Starlette's test client: routes, token, Origin, bad input."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from helpers import hold
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import bridge.ops
from bridge import Bridge, JobCancelled, JobInfo, JobState
from bridge.ops._app import OpsApp

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB_FIELDS = {field.name for field in dataclasses.fields(JobInfo)}
LIVE_FIELDS = JOB_FIELDS | {"age", "time_left", "queue_seconds", "run_seconds"}


class Boom(Exception):
    pass


async def value(x: int) -> int:
    return x


async def fail() -> None:
    raise Boom("no line\nsecond line")


def ended_cancelled(job: Any) -> bool:
    """Wait for *job* to end; whether it ended CANCELLED."""
    concurrent.futures.wait([job], timeout=10)
    with pytest.raises(JobCancelled):
        job.result(timeout=0)
    return bool(job.info().state is JobState.CANCELLED)


@pytest.fixture
def b(make_bridge: Callable[..., Bridge]) -> Iterator[Bridge]:
    the_bridge = make_bridge(limits={"tts": 1}, max_pending=50)
    yield the_bridge
    the_bridge.cancel_all()  # the held jobs end now, not after shutdown's drain


@pytest.fixture
def client(b: Bridge) -> Iterator[TestClient]:
    with TestClient(bridge.ops.asgi_app(b, token=TOKEN), headers=AUTH) as c:
        yield c


# -- reading ---------------------------------------------------------------------------------


def test_jobs_lists_unfinished_jobs_oldest_first_with_their_times(
    b: Bridge, client: TestClient
) -> None:
    call = hold(b, key="call:1", kind="call", timeout=600)
    tts = hold(b, key="tts:1", kind="tts")
    waiting = b.submit(value, 3, key="tts:2", kind="tts", timeout=None)  # waits in the lane

    response = client.get("/jobs")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    jobs = response.json()["jobs"]
    assert [j["id"] for j in jobs] == [call.id, tts.id, waiting.id]
    assert all(set(j) == LIVE_FIELDS for j in jobs)
    first, _, last = jobs
    assert first["key"] == "call:1"
    assert first["kind"] == "call"
    assert first["state"] == "running"
    assert first["thread"] == threading.current_thread().name
    assert first["outcome"] is None
    assert first["finished_at"] is None
    assert 0 < first["time_left"] <= 600
    assert first["run_seconds"] >= 0
    assert first["queue_seconds"] >= 0
    assert first["age"] >= first["run_seconds"]
    assert last["state"] == "pending"
    assert last["started_at"] is None
    assert last["run_seconds"] is None
    assert last["time_left"] is None
    assert last["queue_seconds"] >= 0


def test_a_process_job_shows_its_pid_and_program(b: Bridge, client: TestClient) -> None:
    started = threading.Event()
    script = "import sys, time; print('up', flush=True); time.sleep(60)"
    job = b.run_process(
        [sys.executable, "-c", script],
        key="proc:1",
        kill_grace=0.2,
        on_line=lambda stream, line: started.set(),
    )
    assert started.wait(30), "the child did not start"
    items = client.get("/jobs", params={"key_prefix": "proc:"}).json()["jobs"]
    assert [(i["pid"], i["program"]) for i in items] == [(job.info().pid, sys.executable)]
    assert items[0]["pid"] is not None
    job.cancel()
    assert ended_cancelled(job)


def test_jobs_filters_by_kind_and_key_prefix(b: Bridge, client: TestClient) -> None:
    hold(b, key="call:1", kind="call")
    hold(b, key="call:2", kind="call")
    hold(b, key="other:1", kind="call")
    hold(b, key="tts:1", kind="tts")
    hold(b, kind="call")  # no key: never matches a key prefix

    def keys(query: str) -> list[str | None]:
        response = client.get("/jobs" + query)
        assert response.status_code == 200
        return [j["key"] for j in response.json()["jobs"]]

    assert keys("?kind=call") == ["call:1", "call:2", "other:1", None]
    assert keys("?key_prefix=call:") == ["call:1", "call:2"]
    assert keys("?kind=tts&key_prefix=call:") == []
    assert keys("?kind=&key_prefix=") == ["call:1", "call:2", "other:1", "tts:1", None]
    assert keys("?kind=nothing") == []


def test_history_is_newest_first_and_filters(b: Bridge, client: TestClient) -> None:
    assert b.call(value, 1, kind="a") == 1
    failed = b.submit(fail, kind="b", key="door/1")
    with pytest.raises(Boom):
        failed.result(timeout=10)
    gone = hold(b, kind="a")
    gone.cancel()
    assert ended_cancelled(gone)

    history = client.get("/history").json()["history"]

    assert [h["outcome"] for h in history] == ["cancelled", "failed", "succeeded"]
    assert all(set(h) == JOB_FIELDS for h in history)
    assert history[1]["error"].startswith("Boom: no line")
    assert "\n" not in history[1]["error"]
    assert history[1]["key"] == "door/1"
    assert history[1]["state"] == "failed"
    assert history[0]["finished_at"] >= history[0]["submitted_at"]
    outcomes = client.get("/history?outcome=failed").json()["history"]
    assert [h["id"] for h in outcomes] == [failed.id]
    assert [h["outcome"] for h in client.get("/history?kind=a").json()["history"]] == [
        "cancelled",
        "succeeded",
    ]
    assert len(client.get("/history?limit=1").json()["history"]) == 1
    assert len(client.get("/history?limit=10000").json()["history"]) == 3


def test_the_app_turns_history_on(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()  # history=0
    bridge.ops.asgi_app(b, token=None)
    b.call(value, 1)
    assert [info.outcome for info in b.history()] == ["succeeded"]


def test_stats_has_counters_lanes_room_workers_and_lag(b: Bridge, client: TestClient) -> None:
    b.call(value, 1)
    hold(b, kind="tts")
    b.submit(value, 2, kind="tts")  # waits in the lane
    b.call(value, 3)  # the loop takes submissions in order: the one above is in its lane now

    body = client.get("/stats").json()

    assert body["bridge"] == b.name
    assert body["state"] == "running"
    stats = b.stats()
    assert body["stats"]["submitted"] == stats.submitted == 4
    assert body["stats"]["succeeded"] == 2
    assert body["stats"]["running_by_kind"] == {"tts": 1}
    assert set(body["stats"]) == {f.name for f in dataclasses.fields(stats)}
    assert body["lanes"] == {"tts": {"limit": 1, "running": 1, "waiting": 1}}
    assert body["max_pending"] == 50
    assert body["room_left"] == 48
    assert set(body["workers"]) == {"max", "busy", "idle"}
    assert body["loop_lag_seconds"] >= 0


def test_metrics_are_prometheus_text_matching_stats(b: Bridge, client: TestClient) -> None:
    b.call(value, 1, kind="tts")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("bridge_jobs_submitted_total", (("bridge", b.name),))] == 1
    outcome = (("bridge", b.name), ("outcome", "succeeded"))
    assert samples[("bridge_jobs_finished_total", outcome)] == 1


def test_pings_are_not_jobs(b: Bridge, client: TestClient) -> None:
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/stats").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert b.stats().submitted == 0
    assert b.jobs() == []
    assert b.history() == []
    assert client.get("/stats").json()["loop_lag_seconds"] >= 0


# -- the token and the Origin -----------------------------------------------------------------

GUARDED = [
    ("GET", "/jobs"),
    ("GET", "/history"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("POST", "/jobs/call%3A1/cancel"),
    ("POST", "/jobs/id/1/cancel"),
    ("POST", "/kinds/call/cancel"),
    ("POST", "/cancel-all"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "],
)
def test_every_route_but_healthz_and_the_page_needs_the_token(
    b: Bridge, method: str, path: str, authorization: str | None
) -> None:
    job = hold(b, key="call:1", kind="call")
    headers = {} if authorization is None else {"Authorization": authorization}
    with TestClient(bridge.ops.asgi_app(b, token=TOKEN)) as anonymous:
        response = anonymous.request(method, path + f"?token={TOKEN}", headers=headers)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert job.info().state is JobState.RUNNING


def test_the_token_scheme_is_case_insensitive(b: Bridge) -> None:
    with TestClient(bridge.ops.asgi_app(b, token=TOKEN)) as c:
        assert c.get("/stats", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_healthz_and_the_page_shell_need_no_token(b: Bridge) -> None:
    with TestClient(bridge.ops.asgi_app(b, token=TOKEN)) as anonymous:
        health = anonymous.get("/healthz")
        page = anonymous.get("/")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert TOKEN not in page.text
    assert '<body data-auth="bearer">' in page.text  # the page asks for the token
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://testserver.evil.example",
        "http://testserver:8080",
        "https://testserver",
        "file://",
        "not a url at all",
    ],
)
@pytest.mark.parametrize(
    "path", ["/jobs/call%3A1/cancel", "/jobs/id/1/cancel", "/kinds/call/cancel", "/cancel-all"]
)
def test_posts_refuse_a_foreign_origin_and_cancel_nothing(
    b: Bridge, client: TestClient, origin: str, path: str
) -> None:
    job = hold(b, key="call:1", kind="call")
    response = client.post(path, headers={"Origin": origin})
    assert response.status_code == 403
    assert "Origin" in response.json()["error"]
    assert job.info().state is JobState.RUNNING
    assert b.stats().cancelled == 0


@pytest.mark.parametrize(
    "origin", ["http://testserver", "http://TESTSERVER", "http://testserver:80"]
)
def test_posts_accept_their_own_origin(b: Bridge, client: TestClient, origin: str) -> None:
    job = hold(b, key="call:1")
    response = client.post("/jobs/call%3A1/cancel", headers={"Origin": origin})
    assert response.status_code == 200
    assert ended_cancelled(job)


def test_get_routes_ignore_the_origin(client: TestClient) -> None:
    assert client.get("/jobs", headers={"Origin": "http://evil.example"}).status_code == 200


# -- cancelling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["call:42", "sip/call/42", "a b?c#d%e&f=g", "ключ/☎", "id/1"])
def test_cancel_by_key_takes_the_key_percent_encoded(
    b: Bridge, client: TestClient, key: str
) -> None:
    decoy = hold(b)  # "id/1" as a key must not reach the id route
    assert decoy.id == 1
    job = hold(b, key=key, kind="call")

    response = client.post(f"/jobs/{quote(key, safe='')}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert body["cancelled"] is True
    assert body["job"]["id"] == job.id
    assert body["job"]["key"] == key
    assert set(body["job"]) == LIVE_FIELDS
    assert ended_cancelled(job)
    assert decoy.info().state is JobState.RUNNING
    assert b.history()[0].key == key


def test_cancel_by_key_with_an_unencoded_slash_is_not_found(b: Bridge, client: TestClient) -> None:
    job = hold(b, key="sip/call")
    response = client.post("/jobs/sip/call/cancel")
    assert response.status_code == 404
    assert "%2F" in response.json()["error"]
    assert job.info().state is JobState.RUNNING


def test_cancel_by_id(b: Bridge, client: TestClient) -> None:
    other = hold(b)
    job = hold(b)

    response = client.post(f"/jobs/id/{job.id}/cancel")

    assert response.status_code == 200
    assert response.json()["job"]["id"] == job.id
    assert ended_cancelled(job)
    assert other.info().state is JobState.RUNNING
    again = client.post(f"/jobs/id/{job.id}/cancel")
    assert again.status_code == 404
    assert str(job.id) in again.json()["error"]


def test_cancel_unknown_or_finished_is_404(b: Bridge, client: TestClient) -> None:
    b.call(value, 1, key="done")
    for path in ("/jobs/done/cancel", "/jobs/nobody/cancel", "/jobs/id/999/cancel"):
        response = client.post(path)
        assert response.status_code == 404, path
        assert "no unfinished job" in response.json()["error"]


@pytest.mark.parametrize("job_id", ["abc", "-1", "1.5", "1e3", "0x1", "9" * 40, "%31", "\u0661"])
def test_cancel_by_id_refuses_a_non_integer(b: Bridge, client: TestClient, job_id: str) -> None:
    job = hold(b)
    response = client.post(f"/jobs/id/{quote(job_id, safe='%')}/cancel")
    assert response.status_code in (400, 404)
    assert response.json()["error"]
    assert job.info().state is JobState.RUNNING


def test_cancel_kind(b: Bridge, client: TestClient) -> None:
    calls = [hold(b, kind="sip/call") for _ in range(2)]
    tts = hold(b, kind="tts")

    response = client.post(f"/kinds/{quote('sip/call', safe='')}/cancel")

    assert response.json() == {"cancelled": 2}
    assert all(ended_cancelled(job) for job in calls)
    assert tts.info().state is JobState.RUNNING
    assert client.post("/kinds/nothing/cancel").json() == {"cancelled": 0}


def test_cancel_all(b: Bridge, client: TestClient) -> None:
    jobs = [hold(b, kind=kind) for kind in ("a", "b", "c")]
    assert client.post("/cancel-all").json() == {"cancelled": 3}
    assert all(ended_cancelled(job) for job in jobs)
    assert client.post("/cancel-all").json() == {"cancelled": 0}


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{}", b" { } \n"])
def test_posts_accept_no_body_or_an_empty_object(
    b: Bridge, client: TestClient, body: bytes
) -> None:
    job = hold(b, key="k")
    assert client.post("/jobs/k/cancel", content=body).status_code == 200
    assert ended_cancelled(job)


@pytest.mark.parametrize(
    "body", [b"x", b"[]", b'{"kind": "call"}', b"null", b"0", b"{", b"\xff\xfe", b'"{}"']
)
@pytest.mark.parametrize(
    "path", ["/jobs/k/cancel", "/jobs/id/1/cancel", "/kinds/call/cancel", "/cancel-all"]
)
def test_posts_refuse_any_other_body_and_change_nothing(
    b: Bridge, client: TestClient, body: bytes, path: str
) -> None:
    job = hold(b, key="k", kind="call")
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "body" in response.json()["error"]
    assert job.info().state is JobState.RUNNING
    assert b.stats().cancelled == 0


def test_posts_refuse_a_large_body(b: Bridge, client: TestClient) -> None:
    job = hold(b, key="k")
    response = client.post("/cancel-all", content=b"{}" + b" " * 100_000)
    assert response.status_code == 413
    assert response.json()["error"]
    assert job.info().state is JobState.RUNNING


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=-1", "limit=10001", "limit=abc", "limit=1e3", "limit=1.0",
     "limit=" + "9" * 30, "limit=%EF%BC%91", "outcome=exploded", "outcome=SUCCEEDED"],
)  # fmt: skip
def test_history_refuses_a_bad_query(client: TestClient, query: str) -> None:
    response = client.get("/history?" + query)
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/nope", 404),
        ("GET", "/stats/", 404),
        ("GET", "/jobs/", 405),
        ("POST", "/jobs/k", 404),
        ("POST", "/jobs/k/stop", 404),
        ("POST", "/jobs/id/1/2/cancel", 404),
        ("POST", "/kinds/call", 404),
        ("POST", "/kinds/a/b/cancel", 404),
        ("GET", "/cancel-all", 405),
        ("DELETE", "/jobs", 405),
        ("POST", "/stats", 405),
        ("PUT", "/healthz", 405),
    ],
)
def test_unknown_routes_and_methods_get_json_errors(
    b: Bridge, client: TestClient, method: str, path: str, status: int
) -> None:
    job = hold(b, key="k", kind="call")
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]
    assert job.info().state is JobState.RUNNING


# -- health ---------------------------------------------------------------------------------------


def test_healthz_is_503_while_a_job_blocks_the_loop_and_200_after(
    make_bridge: Callable[..., Bridge], loop_blocker: Any
) -> None:
    b = make_bridge()
    with TestClient(bridge.ops.asgi_app(b, token=TOKEN, lag_limit=0.2), headers=AUTH) as c:
        assert c.get("/healthz").status_code == 200
        blocker = loop_blocker.block(b)

        blocked = c.get("/healthz")
        jobs = c.get("/jobs")  # the API itself answers meanwhile
        stats = c.get("/stats").json()

        assert blocked.status_code == 503
        assert blocked.json()["status"] == "unhealthy"
        assert "has not answered" in blocked.json()["reason"]
        assert [j["id"] for j in jobs.json()["jobs"]] == [blocker.id]
        assert stats["loop_lag_seconds"] >= 0.2
        loop_blocker.release()
        blocker.result(timeout=10)
        b.call(value, 1)  # the loop has run the ping queued while it was blocked
        healthy = c.get("/healthz")
        assert healthy.status_code == 200
        assert 0 <= healthy.json()["lag_seconds"] < 0.2


def test_healthz_is_503_before_start_and_after_shutdown() -> None:
    b = Bridge(name="ops-health")
    app = bridge.ops.asgi_app(b, token=None)
    with TestClient(app) as c:
        before = c.get("/healthz")
        assert c.get("/stats").json()["loop_lag_seconds"] is None
        b.start()
        assert c.get("/healthz").status_code == 200
        assert c.get("/stats").json()["loop_lag_seconds"] >= 0
        b.shutdown()
        after = c.get("/healthz")
        assert c.get("/stats").json()["loop_lag_seconds"] is None
    assert before.status_code == 503
    assert "has not been started" in before.json()["reason"]
    assert after.status_code == 503
    assert after.json() == {
        "status": "unhealthy",
        "reason": "bridge 'ops-health' has been shut down",
    }


# -- mounting and prefixes -----------------------------------------------------------------------


def test_a_prefix_moves_every_route(b: Bridge) -> None:
    app = OpsApp(b, token=TOKEN, lag_limit=1.0, prefix="/ops/v1")
    job = hold(b, key="a/b")
    with TestClient(app.asgi, headers=AUTH) as c:
        assert c.get("/ops/v1/").status_code == 200
        assert c.get("/ops/v1").status_code == 200
        assert c.get("/ops/v1/healthz").status_code == 200
        assert c.get("/ops/v1/jobs").json()["jobs"][0]["key"] == "a/b"
        assert c.get("/jobs").status_code == 404
        assert c.get("/").status_code == 404
        assert c.post("/ops/v1/jobs/a%2Fb/cancel").status_code == 200
    app.close()
    assert ended_cancelled(job)


def test_mounted_without_a_token_checks_only_the_origin(b: Bridge) -> None:
    host = Starlette(routes=[Mount("/bridge/ops", app=bridge.ops.asgi_app(b, token=None))])
    job = hold(b, key="x/y", kind="call")
    with TestClient(host) as c:
        page = c.get("/bridge/ops/")
        assert page.status_code == 200
        assert '<body data-auth="none">' in page.text  # the page sends no token
        assert c.get("/bridge/ops/jobs").json()["jobs"][0]["key"] == "x/y"
        refused = c.post("/bridge/ops/jobs/x%2Fy/cancel", headers={"Origin": "http://evil"})
        assert refused.status_code == 403
        assert job.info().state is JobState.RUNNING
        assert c.post("/bridge/ops/jobs/x%2Fy/cancel").status_code == 200
    assert ended_cancelled(job)


@pytest.mark.parametrize("lag_limit", [0, -1.0, math.inf, math.nan])
def test_asgi_app_refuses_a_bad_lag_limit(b: Bridge, lag_limit: float) -> None:
    with pytest.raises(ValueError, match="lag_limit"):
        bridge.ops.asgi_app(b, token=TOKEN, lag_limit=lag_limit)


@pytest.mark.parametrize("token", ["", "two words", "tab\there", "naïve"])
def test_asgi_app_refuses_a_token_that_cannot_be_a_header(b: Bridge, token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        bridge.ops.asgi_app(b, token=token)


def test_the_public_surface() -> None:
    assert bridge.ops.__all__ == tuple(sorted(bridge.ops.__all__))
    assert set(bridge.ops.__all__) == {
        "Instrumentation",
        "Metrics",
        "OpsServer",
        "asgi_app",
        "instrument",
        "register_metrics",
        "serve_ops",
    }
    for name in bridge.ops.__all__:
        assert getattr(bridge.ops, name).__doc__, name
