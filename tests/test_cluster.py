"""The example's ``cluster`` mode: sipp -> Kamailio (dispatcher) -> N ``sip`` agents on 127.0.0.1.

Each test starts ``python -m examples.telephony_flow cluster`` in a
subprocess, waits for its ``ready`` line, and places calls with sipp through
the proxy (``tests/sipp/cluster_uac.xml``: the ACK, INFOs and 200 to BYE follow
the route set the proxy recorded). Synchronisation is on the cluster's output
lines (``ready``, ``agent #k took its first call``), never on sleeps. Two
tests drive one ``sip --events`` agent directly (sipp calling it, no proxy):
its drain on SIGTERM, with the 503 it gives a new INVITE meanwhile, and the
drain timeout that cuts a call off.

Needs Kamailio (``apt-get install kamailio``), sipp (``apt-get install
sip-tester``) and pjsua2 (``pip install -e '.[sip]'``); skipped with the reason
otherwise, unless ``BRIDGE_REQUIRE_SIP=1`` (CI), which makes a missing tool a
failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

psutil = pytest.importorskip("psutil")

SIPP = shutil.which("sipp")
KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
_MISSING = [
    reason
    for reason, missing in [
        ("pjsua2 is missing: pip install -e '.[sip]'", importlib.util.find_spec("pjsua2") is None),
        ("sipp is missing: apt-get install sip-tester", SIPP is None),
        ("Kamailio is missing: apt-get install kamailio", KAMAILIO is None),
    ]
    if missing
]
if _MISSING and os.environ.get("BRIDGE_REQUIRE_SIP") == "1":
    pytest.fail("BRIDGE_REQUIRE_SIP=1 but " + "; ".join(_MISSING), pytrace=False)

pytestmark = [
    pytest.mark.sip,
    pytest.mark.timeout(120),
    pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING)),
]

ROOT = Path(__file__).resolve().parents[1]
SIPP_DIR = ROOT / "tests" / "sipp"
SCENARIO = ("-sf", str(SIPP_DIR / "cluster_uac.xml"), "-inf", str(SIPP_DIR / "apartments.csv"))
READY_TIMEOUT = 40.0
RUN_TIMEOUT = 90.0


def free_port_block(count: int) -> int:
    """A base port such that base .. base+count are free UDP ports on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError("no free block of UDP ports")


class ClusterProcess:
    """The cluster CLI in a subprocess; its output lines arrive on a queue."""

    def __init__(self, tmp_path: Path, *args: str, processes: int = 3) -> None:
        self.port = free_port_block(processes)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        command = [
            sys.executable, "-m", "examples.telephony_flow", "cluster",
            "--processes", str(processes), "--listen", f"127.0.0.1:{self.port}", *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            (self.stdout if name == "stdout" else self.stderr).append(line.rstrip("\n"))
            self.lines.put((name, line.rstrip("\n")))
        self.lines.put((name, ""))

    def expect(self, prefix: str, timeout: float = READY_TIMEOUT) -> str:
        """The first output line (either stream) containing *prefix*; fail if none comes."""
        while True:
            try:
                _, line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line within {timeout} s:\n{self.explain()}")
            if prefix in line:
                return line
            if self.proc.poll() is not None and self.lines.empty():
                pytest.fail(f"cluster exited before {prefix!r}:\n{self.explain()}")

    def descendants(self) -> list[Any]:
        return list(psutil.Process(self.proc.pid).children(recursive=True))

    def finish(self) -> tuple[int, dict[str, Any]]:
        try:
            self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"cluster did not exit:\n{self.explain()}")
        self._close_pipes()
        last = self.stdout[-1] if self.stdout else "{}"
        return self.proc.returncode, json.loads(last)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in self.descendants():
                child.kill()
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def explain(self) -> str:
        return (
            "stdout:\n"
            + "\n".join(self.stdout[-30:])
            + "\nstderr:\n"
            + "\n".join(self.stderr[-40:])
        )


def start_sipp(port: int, calls: int, limit: int, tmp_path: Path) -> subprocess.Popen[str]:
    assert SIPP is not None
    command = [
        SIPP, f"127.0.0.1:{port}", *SCENARIO,
        "-i", "127.0.0.1", "-p", "0", "-mi", "127.0.0.1",
        "-m", str(calls), "-l", str(limit), "-r", "10",
        "-recv_timeout", "30000", "-timeout", "80", "-timeout_error",
        "-nostdin", "-trace_err",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def sipp_result(sipp: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = sipp.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        sipp.kill()
        output, _ = sipp.communicate()
    return sipp.returncode, output[-3000:]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[ClusterProcess, list[subprocess.Popen[str]]]] = []

    def run(*args: str, processes: int = 3) -> ClusterProcess:
        proc = ClusterProcess(tmp_path, *args, processes=processes)
        started.append((proc, []))
        return proc

    yield run
    for proc, _ in started:
        proc.kill()


def assert_adds_up(summary: dict[str, Any]) -> None:
    rows = summary["agents"]
    assert summary["calls"] == sum(row["calls"] for row in rows), summary
    assert sum(summary["outcomes"].values()) == summary["calls"], summary
    assert summary["jobs_leaked"] == sum(row["jobs_leaked"] or 0 for row in rows), summary


def test_24_calls_over_3_agents(cluster: Any, tmp_path: Path) -> None:
    proc = cluster("--calls", "24")
    proc.expect("ready:")
    sipp = start_sipp(proc.port, 24, 12, tmp_path)
    sipp_rc, sipp_out = sipp_result(sipp)
    rc, summary = proc.finish()
    assert sipp_rc == 0, sipp_out + proc.explain()
    assert rc == 0, proc.explain()
    assert summary["ok"] is True, summary
    assert summary["calls"] == 24, summary
    assert summary["cut_off"] == 0, summary
    for row in summary["agents"]:
        assert row["reported"], row
        assert row["returncode"] == 0, row
        assert row["jobs_leaked"] == 0, row
        assert row["calls"] > 0, row  # round robin used every agent
    assert_adds_up(summary)


def test_drain_one_agent_without_dropping_a_call(cluster: Any, tmp_path: Path) -> None:
    # 3 agents of 4 calls each; up to 8 calls at once still fit on the two left.
    proc = cluster("--calls", "24", "--drain-after", "6")
    proc.expect("ready:")
    sipp = start_sipp(proc.port, 24, 8, tmp_path)
    proc.expect("draining agent #1", timeout=RUN_TIMEOUT)
    sipp_rc, sipp_out = sipp_result(sipp)
    rc, summary = proc.finish()
    assert sipp_rc == 0, sipp_out + proc.explain()
    assert rc == 0, proc.explain()
    first = summary["agents"][0]
    assert first["drained"] is True, first
    assert first["returncode"] == 0, first
    assert first["reported"], first
    assert first["cut_off"] == 0, first  # its calls ended by the flow, not by the drain
    assert first["started_while_draining"] == 0, first  # the next calls went elsewhere
    assert first["calls"] >= 1, first
    assert summary["calls"] == 24, summary
    assert summary["cut_off"] == 0, summary
    assert_adds_up(summary)


def test_crashed_agent_is_reported_and_routed_around(cluster: Any, tmp_path: Path) -> None:
    proc = cluster("--calls", "12")
    ready = proc.expect("ready:")
    pids = [int(p) for p in ready.partition("(pids ")[2].partition(")")[0].split(", ")]
    sipp = start_sipp(proc.port, 12, 6, tmp_path)
    proc.expect("agent #2 took its first call", timeout=RUN_TIMEOUT)
    os.kill(pids[1], signal.SIGKILL)  # mid-call: a call lasts over a second
    noticed = proc.expect("agent #2 died", timeout=RUN_TIMEOUT)
    sipp.kill()  # its calls on agent #2 can never finish
    sipp_result(sipp)
    rc, summary = proc.finish()
    assert rc == 1, proc.explain()
    assert summary["ok"] is False, summary
    second = summary["agents"][1]
    assert second["returncode"] == -signal.SIGKILL, second
    assert not second["reported"], second
    assert second["cut_off"] >= 1, second  # the call it had in progress, honestly
    assert summary["cut_off"] >= 1, summary
    # Probed every second; a dead UDP port answers with ICMP: out within a probe or two.
    assert float(summary["proxy_noticed_s"]["2"]) <= 2.5, (noticed, summary)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid


def test_ctrl_c_leaves_nothing_behind(cluster: Any, tmp_path: Path) -> None:
    proc = cluster("--calls", "100", processes=2)
    proc.expect("ready:")
    started = proc.descendants()
    assert len(started) >= 3, started  # Kamailio (and its workers) and two agents
    sipp = start_sipp(proc.port, 100, 4, tmp_path)
    proc.expect("took its first call", timeout=RUN_TIMEOUT)
    proc.proc.send_signal(signal.SIGINT)
    try:
        proc.proc.wait(timeout=RUN_TIMEOUT)
    finally:
        sipp.kill()
        sipp_result(sipp)
    assert proc.proc.returncode == -signal.SIGINT, proc.explain()
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive


# -- one agent, drained directly --------------------------------------------------------


class AgentProcess:
    """``python -m examples.telephony_flow sip --events`` in a subprocess, lines on a queue."""

    def __init__(self, *args: str) -> None:
        self.port = free_port_block(0)
        command = [
            sys.executable, "-m", "examples.telephony_flow", "sip",
            "--listen", f"127.0.0.1:{self.port}", "--events", *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, None))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, sink: list[str] | None) -> None:
        assert stream is not None
        for line in stream:
            if sink is None:
                self.stderr_lines.append(line.rstrip("\n"))
                continue
            sink.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until the agent answers a SIP OPTIONS (its stack listens)."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.explain()
                sock.sendto(_options(self.port, sock.getsockname()[1]), ("127.0.0.1", self.port))
                try:
                    if sock.recv(4096).startswith(b"SIP/2.0 200"):
                        return
                except TimeoutError:
                    continue
        pytest.fail(f"the agent did not listen within {timeout} s:\n{self.explain()}")

    def expect_event(self, event: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no {event!r} event within {timeout} s:\n{self.explain()}")
            if line.startswith("{") and json.loads(line).get("event") == event:
                return dict(json.loads(line))

    def finish(self) -> tuple[int, dict[str, Any]]:
        try:
            self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the agent did not exit:\n{self.explain()}")
        self._close()
        return self.proc.returncode, json.loads(self.stdout[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def explain(self) -> str:
        out = "\n".join(self.stdout[-30:])
        return f"stdout:\n{out}\nstderr:\n" + "\n".join(self.stderr_lines[-30:])


def _options(port: int, local_port: int) -> bytes:
    tag = uuid.uuid4().hex
    return (
        f"OPTIONS sip:intercom@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag}\r\n"
        f"From: <sip:probe@127.0.0.1:{local_port}>;tag={tag[:8]}\r\n"
        f"To: <sip:intercom@127.0.0.1:{port}>\r\nCall-ID: {tag}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def call_agent(port: int, scenario: str, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """sipp placing one call straight to the agent."""
    assert SIPP is not None
    command = [
        SIPP, f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / scenario), *extra,
        "-i", "127.0.0.1", "-p", "0", "-mi", "127.0.0.1", "-m", "1",
        "-recv_timeout", "30000", "-timeout", "60", "-timeout_error", "-nostdin",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def agent() -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        started.append(AgentProcess(*args))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()


def test_agent_drains_on_sigterm_and_refuses_new_calls(agent: Any, tmp_path: Path) -> None:
    # Apartment 201 never answers: the call rings the resident for 3 s, then the
    # flow says sorry and hangs up. It is in progress throughout the drain.
    keys = tmp_path / "silent_resident.csv"
    keys.write_text("SEQUENTIAL\n2;0;1;\n", encoding="utf-8")
    ua = agent("--resident-timeout", "3", "--drain-timeout", "20")
    ua.wait_listening()
    first = call_agent(ua.port, "cluster_uac.xml", tmp_path, "-inf", str(keys))
    started = ua.expect_event("call.start")
    ua.proc.send_signal(signal.SIGTERM)
    draining = ua.expect_event("agent.draining")
    assert draining["calls"] == 1, draining  # the call is still up
    refused = call_agent(ua.port, "cluster_refused.xml", tmp_path)
    refused_rc, refused_out = sipp_result(refused)
    assert refused_rc == 0, refused_out  # it got its 503
    first_rc, first_out = sipp_result(first)
    assert first_rc == 0, first_out  # the call ended normally: the agent's BYE
    rc, summary = ua.finish()
    assert rc == 0, ua.explain()
    assert summary["ok"] is True, summary
    assert summary["calls"] == 1, summary
    assert summary["outcomes"]["no_answer"] == 1, summary  # ended by the flow
    assert summary["outcomes"]["cut_off"] == 0, summary
    ends = [json.loads(x) for x in ua.stdout if '"call.end"' in x]
    assert ends == [{"event": "call.end", "call_id": started["call_id"], "by": "flow",
                     "t": ends[0]["t"]}], ends  # fmt: skip
    assert sum('"call.start"' in x for x in ua.stdout) == 1, ua.stdout  # 503: not a call


def test_agent_drain_timeout_cuts_the_call_off_and_exits_1(agent: Any, tmp_path: Path) -> None:
    ua = agent("--dtmf-timeout", "20", "--drain-timeout", "0.5")
    ua.wait_listening()
    caller = call_agent(ua.port, "uac_silent.xml", tmp_path)  # never dials
    started = ua.expect_event("call.start")
    ua.proc.send_signal(signal.SIGTERM)
    assert ua.expect_event("agent.draining")["calls"] == 1
    ended = ua.expect_event("call.end")
    assert ended["call_id"] == started["call_id"], ended
    assert ended["by"] == "stop", ended
    caller_rc, caller_out = sipp_result(caller)
    assert caller_rc == 0, caller_out  # the stop's BYE reached it
    rc, summary = ua.finish()
    assert rc == 1, ua.explain()
    assert summary["outcomes"]["cut_off"] == 1, summary
    assert summary["jobs_leaked"] == 0, summary
