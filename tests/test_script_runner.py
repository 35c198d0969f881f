"""The script runner example (examples/script_runner): its routes, on a real bridge.

Every test runs real scripts as ``Bridge.run_process`` children and checks,
with psutil, that none of them (nor a grandchild) is left afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import psutil
import pytest
from flask.testing import FlaskClient

from examples.script_runner.__main__ import _parse
from examples.script_runner.app import (
    SCRIPTS,
    SCRIPTS_DIR,
    ScriptConfig,
    ScriptRunner,
    create_app,
    load_allow_list,
)

TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def script_children() -> list[Any]:
    """This process's descendants that run a script (of any test directory)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(arg.endswith(".py") for arg in cmdline[1:2]):
            found.append(child)
    return found


def assert_gone(*pids: int, timeout: float = 5.0) -> None:
    """Each pid is gone (or a zombie about to be reaped by init) within *timeout*."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


class Server:
    """A test client of the app and its runner."""

    def __init__(self, client: FlaskClient, runner: ScriptRunner) -> None:
        self.client = client
        self.runner = runner

    def get(self, url: str) -> Any:
        return self.client.get(url, headers=AUTH)

    def post(self, url: str) -> Any:
        return self.client.post(url, headers=AUTH)

    def start(self, name: str) -> int:
        response = self.post(f"/scripts/{name}")
        assert response.status_code == 202, response.get_json()
        pid = response.get_json()["pid"]
        assert isinstance(pid, int)
        return pid

    def wait_line(self, name: str, text: str) -> None:
        assert self.runner.wait_for_line(name, text, timeout=10.0), f"{name}: no {text!r}"


def serve(scripts_dir: Path, config: Any) -> Iterator[Server]:
    app = create_app(TOKEN, scripts_dir=scripts_dir, config=config)
    runner: ScriptRunner = app.extensions["script_runner"]
    try:
        yield Server(app.test_client(), runner)
    finally:
        runner.close(timeout=0.2)
        left = script_children()
        assert_gone(*(p.pid for p in left))


@pytest.fixture
def server() -> Iterator[Server]:
    """The app on the example's own scripts; the bridge shut down at teardown."""
    yield from serve(SCRIPTS_DIR, SCRIPTS)


SLEEPER = """
    import time
    print("ready", flush=True)
    time.sleep(120)
"""
STUBBORN = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        time.sleep(1)
"""
PARENT = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(f"grandchild {child.pid}", flush=True)
    print("ready", flush=True)
    time.sleep(120)
"""
CHATTY = """
    for i in range(8000):
        print(f"line {i:05d} " + "x" * 40)
    print("the end")
"""
ENV = """
    import os
    print("token:", os.environ.get("SCRIPT_RUNNER_TOKEN"))
"""


@pytest.fixture
def other_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The app on a test directory of long-running scripts, with short graces."""
    monkeypatch.setenv("SCRIPT_RUNNER_TOKEN", TOKEN)
    for name, body in [("sleeper", SLEEPER), ("stubborn", STUBBORN), ("parent", PARENT)]:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    (tmp_path / "env.py").write_text(textwrap.dedent(ENV))
    (tmp_path / "chatty.py").write_text(textwrap.dedent(CHATTY))
    (tmp_path / "short.py").write_text(textwrap.dedent(SLEEPER))
    config = {
        "sleeper": ScriptConfig(timeout=60.0, kill_grace=0.5),
        "stubborn": ScriptConfig(timeout=60.0, kill_grace=0.5),
        "parent": ScriptConfig(timeout=60.0, kill_grace=0.5),
        "short": ScriptConfig(timeout=0.5, kill_grace=0.5),
    }
    yield from serve(tmp_path, config)


# -- the token -------------------------------------------------------------------


ROUTES = [
    ("GET", "/scripts"),
    ("POST", "/scripts/quick"),
    ("GET", "/scripts/quick"),
    ("POST", "/scripts/quick/kill"),
    ("GET", "/running"),
    ("POST", "/kill-all"),
    ("GET", "/no-such-route"),
]


@pytest.mark.parametrize(("method", "url"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Bearer"}],
    ids=["none", "wrong", "no-scheme", "empty"],
)
def test_every_route_needs_the_token(
    server: Server, method: str, url: str, headers: dict[str, str]
) -> None:
    response = server.client.open(url, method=method, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["error"] == "missing or wrong token"
    assert server.runner.bridge.jobs() == []  # nothing was started


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app("")


# -- the allow-list ------------------------------------------------------------------


def test_list_scripts(server: Server) -> None:
    response = server.get("/scripts")
    assert response.status_code == 200
    scripts = {s["name"]: s for s in response.get_json()}
    assert sorted(scripts) == ["ask", "progress", "quick", "stubborn"]
    assert scripts["quick"] == {
        "name": "quick",
        "timeout": 10.0,
        "kill_grace": 2.0,
        "running": False,
    }
    assert scripts["stubborn"]["kill_grace"] == 1.0


@pytest.mark.parametrize("name", ["nope", "app", "__init__", "..", "quick.py", "QUICK"])
def test_unknown_script_is_404(server: Server, name: str) -> None:
    for response in (
        server.post(f"/scripts/{name}"),
        server.get(f"/scripts/{name}"),
        server.post(f"/scripts/{name}/kill"),
    ):
        assert response.status_code == 404
    assert server.runner.bridge.jobs() == []


def test_a_path_is_never_a_script(server: Server) -> None:
    for url in ("/scripts/../app", "/scripts/%2e%2e%2fapp", "/scripts/scripts/quick"):
        assert server.post(url).status_code == 404
    assert server.runner.bridge.jobs() == []


def test_config_must_name_existing_scripts(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("")
    assert list(load_allow_list(tmp_path, {})) == ["one"]
    with pytest.raises(ValueError, match="missing"):
        load_allow_list(tmp_path, {"two": ScriptConfig()})


# -- starting and finishing ------------------------------------------------------------


def test_finished_script_returns_its_output(server: Server) -> None:
    pid = server.start("quick")
    body = server.get("/scripts/quick?wait=10").get_json()
    assert body["running"] is None
    last = body["last"]
    assert last["pid"] == pid
    assert last["outcome"] == "succeeded"
    assert last["returncode"] == 0
    assert last["ended"] == "exited with status 0"
    assert last["truncated"] is False
    assert f"hello from pid {pid}" in last["stdout"]
    assert last["stdout"].endswith("quick: done\n")
    assert last["stderr"] == ""
    assert_gone(pid)
    assert server.get("/running").get_json() == []


def test_status_before_any_run(server: Server) -> None:
    assert server.get("/scripts/quick").get_json() == {
        "name": "quick",
        "running": None,
        "last": None,
    }


def test_a_script_waiting_for_stdin_ends_at_once(server: Server) -> None:
    pid = server.start("ask")
    last = server.get("/scripts/ask?wait=10").get_json()["last"]
    assert last["returncode"] == 2
    assert last["outcome"] == "succeeded"  # the job ran; the script said no
    assert last["ended"] == "exited with status 2"
    assert "giving up" in last["stdout"]
    assert_gone(pid)


def test_second_start_is_409_with_the_pid(server: Server) -> None:
    pid = server.start("progress")
    response = server.post("/scripts/progress")
    assert response.status_code == 409
    body = response.get_json()
    assert body["pid"] == pid
    assert "already running" in body["error"]
    assert len(server.runner.bridge.jobs()) == 1


def test_list_running_scripts(server: Server) -> None:
    pid = server.start("progress")
    server.wait_line("progress", "step 1/")
    (entry,) = server.get("/running").get_json()
    assert entry["name"] == "progress"
    assert entry["state"] == "running"
    assert entry["pid"] == pid
    assert entry["program"] == sys.executable
    assert 0 <= entry["age"] < 30
    assert 0 < entry["time_left"] <= 30
    assert entry["last_line"].startswith("progress: step ")
    status = server.get("/scripts/progress").get_json()
    assert status["running"]["pid"] == pid
    listed = {s["name"]: s["running"] for s in server.get("/scripts").get_json()}
    assert listed == {"ask": False, "progress": True, "quick": False, "stubborn": False}


def test_the_token_is_not_passed_to_scripts(other_server: Server) -> None:
    other_server.start("env")
    last = other_server.get("/scripts/env?wait=10").get_json()["last"]
    assert last["stdout"] == "token: None\n"


def test_a_script_that_overruns_its_timeout_is_killed(other_server: Server) -> None:
    pid = other_server.start("short")
    last = other_server.get("/scripts/short?wait=10").get_json()["last"]
    assert last["outcome"] == "timed_out"
    assert last["ended"].startswith("timed out after 0.5 s")
    assert last["returncode"] is None
    assert "ready\n" in last["stdout"]
    assert_gone(pid)


def test_output_beyond_the_limit_is_truncated_and_the_tail_kept(other_server: Server) -> None:
    other_server.start("chatty")  # prints about 400 KB; 256 KiB are kept
    last = other_server.get("/scripts/chatty?wait=10").get_json()["last"]
    assert last["returncode"] == 0
    assert last["truncated"] is True
    assert last["stdout"].endswith("line 07999 " + "x" * 40 + "\nthe end\n")
    assert len(last["stdout"]) <= 2000


# -- stopping ------------------------------------------------------------------------------


def test_kill_one(server: Server) -> None:
    pid = server.start("progress")
    server.wait_line("progress", "step 1/")
    response = server.post("/scripts/progress/kill")
    assert response.status_code == 200
    last = response.get_json()
    assert last["pid"] == pid
    assert last["outcome"] == "cancelled"
    assert "SIGTERM" in last["ended"]
    assert "progress: step 1/20" in last["stdout"]
    assert_gone(pid)
    assert server.get("/running").get_json() == []
    assert server.get("/scripts/progress").get_json()["last"] == last
    # It may run again now.
    assert server.start("progress") != pid


def test_kill_a_script_that_does_not_run_is_409(server: Server) -> None:
    response = server.post("/scripts/quick/kill")
    assert response.status_code == 409
    assert "not running" in response.get_json()["error"]


def test_a_script_ignoring_sigterm_is_killed_after_its_grace(server: Server) -> None:
    pid = server.start("stubborn")
    server.wait_line("stubborn", "SIGTERM is ignored")
    began = time.monotonic()
    response = server.post("/scripts/stubborn/kill")
    elapsed = time.monotonic() - began
    assert response.status_code == 200
    last = response.get_json()
    assert last["outcome"] == "cancelled"
    assert "SIGKILL" in last["ended"]
    assert elapsed >= 0.9  # its kill_grace is 1.0 s
    assert elapsed < 5.0
    assert_gone(pid)


def test_kill_all_while_three_scripts_run(other_server: Server) -> None:
    pids = {name: other_server.start(name) for name in ("sleeper", "stubborn", "parent")}
    for name in pids:
        other_server.wait_line(name, "ready")
    running = other_server.get("/running").get_json()
    assert {e["name"]: e["pid"] for e in running} == pids
    grandchild = _grandchild_pid(other_server)
    assert psutil.pid_exists(grandchild)

    response = other_server.post("/kill-all")
    assert response.status_code == 200
    ended = {s["name"]: s for s in response.get_json()}
    assert sorted(ended) == ["parent", "sleeper", "stubborn"]
    assert {s["outcome"] for s in ended.values()} == {"cancelled"}
    assert "SIGKILL" in ended["stubborn"]["ended"]
    assert_gone(*pids.values(), grandchild)
    assert other_server.get("/running").get_json() == []
    assert other_server.runner.bridge.jobs() == []
    assert script_children() == []


def _grandchild_pid(server: Server) -> int:
    server.wait_line("parent", "grandchild ")
    lines = [text for _, text in server.runner.lines("parent")]
    (match,) = [m for text in lines if (m := re.fullmatch(r"grandchild (\d+)", text))]
    return int(match.group(1))


def test_shutdown_stops_running_scripts(server: Server) -> None:
    pids = [server.start("progress"), server.start("stubborn")]
    server.wait_line("stubborn", "ready")
    report = server.runner.bridge.shutdown(timeout=0.1)
    assert report.stuck == ()
    assert_gone(*pids)
    assert script_children() == []


# -- the command line --------------------------------------------------------------------


def test_command_line_defaults_to_loopback() -> None:
    args = _parse([])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 8000, None)
    args = _parse(["--host", "0.0.0.0", "--port", "9000", "--token", "t"])
    assert (args.host, args.port, args.token) == ("0.0.0.0", 9000, "t")


def test_command_line_runs_the_server_and_stops_scripts_on_sigterm() -> None:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "SCRIPT_RUNNER_TOKEN"}
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.script_runner", "--port", "0"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stderr is not None
    try:
        token = server.stdout.readline().removeprefix("token: ").strip()
        assert len(token) >= 24
        url = None
        for line in server.stderr:
            if m := re.search(r"Running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
                break
        assert url is not None, "the server did not start"
        request = Request(
            f"{url}/scripts/progress", method="POST", headers={"Authorization": f"Bearer {token}"}
        )
        with urlopen(request, timeout=10) as response:
            assert response.status == 202
            pid = json.load(response)["pid"]
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0
    assert f"stopped script:progress (pid {pid})" in err
    assert "terminated by SIGTERM" in err
    assert_gone(pid)
