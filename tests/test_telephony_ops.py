"""The telephony example with ``--ops`` (issue 10): the dashboard of a real run.

The CLI prints the dashboard's URL, token included, once to stdout; the test
uses that URL as an operator would, over HTTP, while the run goes on and
while ``--hold`` keeps it up after the calls, then ends the hold with Ctrl+C
(SIGINT) and checks that the run is as clean as without ``--ops``.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from test_telephony_simulate import _check_clean, _last_json, _own_threads

from examples.telephony_flow.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
CALLS, SEED = 40, 1
SIMULATE = ["simulate", "--calls", str(CALLS), "--concurrency", "10", "--seed", str(SEED)]
URL_LINE = re.compile(r"^dashboard: (http://127\.0\.0\.1:\d+/)\?token=(\S+)$", re.MULTILINE)


class Lines:
    """A child's output stream, read on a thread; :meth:`wait_for` a line."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name="read-child-output")
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first match of *pattern* in the output so far, waiting for it."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = pattern.search("".join(self._lines))
            found[:] = [match] if match else []
            return bool(found) or self._ended

        with self._changed:
            self._changed.wait_for(seen, timeout)
        assert found, f"no {pattern.pattern!r} in the output:\n{self.text}"
        return found[0]

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def held_run() -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """The example with ``--ops 127.0.0.1:0 --hold``; killed at teardown if still running."""
    command = [sys.executable, "-m", "examples.telephony_flow", *SIMULATE]
    with subprocess.Popen(
        [*command, "--ops", "127.0.0.1:0", "--hold"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # closes the pipes at the end
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        try:
            yield proc, out, err
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            out.join()
            err.join()


def test_simulate_serves_the_dashboard_and_holds_it_until_ctrl_c(
    held_run: tuple[subprocess.Popen[str], Lines, Lines],
) -> None:
    proc, out, err = held_run
    base, token = out.wait_for(URL_LINE).groups()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=5.0) as client:
        # While the calls run (or, on a fast machine, just after).
        assert client.get("healthz").json()["status"] == "ok"
        live = client.get("jobs", headers=auth)
        assert live.status_code == 200
        assert all(job["kind"] in {"call", "tts", "ring", "hangup"} for job in live.json()["jobs"])
        assert client.get("jobs").status_code == 401  # the token is needed
        page = client.get("")
        assert page.status_code == 200
        assert "Token required" in page.text

        err.wait_for(re.compile(r"the dashboard stays up at \S+ until Ctrl\+C"))
        assert client.get("jobs", headers=auth).json() == {"jobs": []}
        stats = client.get("stats", headers=auth).json()
        assert stats["bridge"] == "intercom"
        assert stats["state"] == "running"
        assert stats["stats"]["active"] == 0
        history = client.get("history", headers=auth).json()["history"]
        assert len(history) == stats["stats"]["submitted"]  # the run's every job (< 1,000)
        assert {job["key"] for job in history if job["kind"] == "call"} == {
            f"call:sim-{n}" for n in range(1, CALLS + 1)
        }
        assert {job["outcome"] for job in history} >= {"succeeded", "cancelled"}

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, out.text + err.text
    out.join()
    err.join()
    _check_clean(_last_json(out.text), calls=CALLS, seed=SEED)
    assert "interrupted: shutting down" in err.text
    assert out.text.count(token) == 1  # printed once, on stdout
    assert token not in err.text


def test_simulate_in_process_with_ops_stops_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    before = _own_threads()
    assert main([*SIMULATE, "--ops", "127.0.0.1:0"]) == 0
    out = capsys.readouterr().out
    assert URL_LINE.search(out)
    _check_clean(_last_json(out), calls=CALLS, seed=SEED)
    assert _own_threads() == before  # the server's thread ended with the bridge


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ops", "localhost:8765"], "argument --ops: must be IP:PORT"),
        (["--ops", "10.1.2.3:8765"], "argument --ops: must be a loopback address"),
        (["--ops", "127.0.0.1:65536"], "argument --ops: must end with a port"),
        (["--hold"], "argument --hold: needs --ops"),
        (["--legacy", "--ops", "127.0.0.1:0"], "argument --ops: the legacy mode has no bridge"),
    ],
)
def test_bad_ops_arguments_name_the_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["simulate", *argv])
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_is_an_error_before_any_call() -> None:
    with socket_in_use() as port:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "examples.telephony_flow",
                *SIMULATE,
                "--ops",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"argument --ops: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "calls done" not in proc.stderr


@contextlib.contextmanager
def socket_in_use() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]
