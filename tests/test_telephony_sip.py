"""The example's ``sip`` stack against a real SIP peer: sipp calls a pjsua2 UA over 127.0.0.1.

The UA runs in a subprocess (a pjsua2 misuse aborts the whole process), either
the example's real CLI (``python -m examples.telephony_flow sip``) or
``tests/sipp/ua_harness.py``, which drives :class:`SipTelephony` with a minimal
flow so that the stack's own contract (digits, who hung up, stop) is checked
without the bridge. Every sipp call must succeed and the UA must exit 0 with a
JSON summary showing nothing left over.

Needs sipp (Debian package ``sip-tester``) and pjsua2 (``pip install -e '.[sip]'``);
skipped with the reason otherwise, unless ``BRIDGE_REQUIRE_SIP=1`` (set by CI),
which turns a missing tool into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SIPP = shutil.which("sipp")
NO_PJSUA2 = importlib.util.find_spec("pjsua2") is None
_MISSING = [
    reason
    for reason, missing in [
        ("pjsua2 is missing: pip install -e '.[sip]'", NO_PJSUA2),
        ("sipp is missing: apt-get install sip-tester", SIPP is None),
    ]
    if missing
]
if _MISSING and os.environ.get("BRIDGE_REQUIRE_SIP") == "1":  # CI: skipping would hide it
    pytest.fail("BRIDGE_REQUIRE_SIP=1 but " + "; ".join(_MISSING), pytrace=False)

pytestmark = [
    pytest.mark.sip,
    pytest.mark.skipif(NO_PJSUA2, reason="pjsua2 is missing: pip install -e '.[sip]'"),
]

ROOT = Path(__file__).resolve().parents[1]
SIPP_DIR = ROOT / "tests" / "sipp"
HARNESS = SIPP_DIR / "ua_harness.py"
PCAP_DIR = Path("/usr/share/sip-tester")  # the RFC 2833 pcaps of Debian's sip-tester

UA_START_TIMEOUT = 15.0
RUN_TIMEOUT = 40.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def options_request(port: int, local_port: int) -> bytes:
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    return (
        f"OPTIONS sip:intercom@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch}\r\n"
        f"From: <sip:probe@127.0.0.1:{local_port}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:intercom@127.0.0.1:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class UA:
    """A UA subprocess; :meth:`wait_ready` returns once it answers SIP OPTIONS."""

    def __init__(self, args: list[str], port: int, tmp_path: Path) -> None:
        self.port = port
        self._stderr = (tmp_path / "ua.stderr").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def wait_ready(self) -> None:
        """Probe with OPTIONS until a response comes back; fail if the UA dies."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.connect(("127.0.0.1", self.port))
            sock.settimeout(0.1)
            request = options_request(self.port, sock.getsockname()[1])
            for _ in range(int(UA_START_TIMEOUT / 0.1)):
                try:
                    sock.send(request)
                    if sock.recv(4096).startswith(b"SIP/2.0 "):
                        return
                except TimeoutError:
                    continue
                except ConnectionRefusedError:  # nothing bound yet: give the UA 0.1 s
                    self._expect_running(0.1)
        pytest.fail(f"UA not answering on 127.0.0.1:{self.port}:\n{self.stderr()}")

    def _expect_running(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        pytest.fail(f"UA exited early:\n{self.stderr()}")

    def finish(self) -> tuple[int, str]:
        """Wait for the UA to exit; return its exit code and stdout."""
        try:
            stdout, _ = self.proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"UA did not exit:\n{self.stderr()}")
        return self.proc.returncode, stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def close(self) -> None:
        self.kill()
        self._stderr.close()


@dataclass
class Run:
    sipp_rc: int
    sipp_output: str
    ua_rc: int
    ua_stdout: str
    ua_stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        last = self.ua_stdout.strip().splitlines()[-1]
        result: dict[str, Any] = json.loads(last)
        return result

    def explain(self) -> str:
        return (
            f"sipp exit {self.sipp_rc}:\n{self.sipp_output[-3000:]}\n"
            f"UA exit {self.ua_rc}; stdout:\n{self.ua_stdout[-3000:]}\n"
            f"UA stderr:\n{self.ua_stderr}"
        )

    def assert_all_succeeded(self) -> None:
        assert self.sipp_rc == 0, self.explain()
        assert self.ua_rc == 0, self.explain()


@pytest.fixture
def call(tmp_path: Path) -> Iterator[Any]:
    """``call(ua_args, calls, *sipp_args)`` runs one UA and one sipp against it."""
    if SIPP is None:
        pytest.skip("sipp is missing: apt-get install sip-tester")
    started: list[UA] = []

    def run(ua_args: list[str], calls: int, *sipp_args: str) -> Run:
        port = free_udp_port()
        ua = UA(
            [*ua_args, "--listen", f"127.0.0.1:{port}", "--max-calls", str(calls)],
            port,
            tmp_path,
        )
        started.append(ua)
        ua.wait_ready()
        sipp = run_sipp(port, calls, sipp_args, tmp_path)
        if sipp.returncode != 0:
            ua.kill()
        ua_rc, ua_stdout = ua.finish()
        return Run(sipp.returncode, sipp.stdout + sipp.stderr, ua_rc, ua_stdout, ua.stderr())

    yield run
    for ua in started:
        ua.close()


def run_sipp(
    port: int, calls: int, scenario: tuple[str, ...], cwd: Path
) -> subprocess.CompletedProcess[str]:
    assert SIPP is not None
    command = [
        SIPP,
        f"127.0.0.1:{port}",
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
        "-recv_timeout", "10000", "-timeout", "30", "-timeout_error",
        "-m", str(calls), "-l", "4", "-r", "20",
        "-nostdin", "-trace_err",
        *scenario,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


CLI = ["-m", "examples.telephony_flow", "sip"]
HARNESS_UA = [str(HARNESS)]
DTMF_INFO = ("-sf", str(SIPP_DIR / "uac_dtmf_info.xml"), "-inf", str(SIPP_DIR / "apartments.csv"))
SILENT = ("-sf", str(SIPP_DIR / "uac_silent.xml"))
VISITOR_HANGS_UP = ("-sn", "uac", "-d", "300")  # sipp's own BYE 300 ms after its ACK
RFC2833 = ("-sf", str(SIPP_DIR / "uac_dtmf_rfc2833.xml"))


def can_open_raw_socket() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


needs_raw_socket = pytest.mark.skipif(
    not can_open_raw_socket() or not (PCAP_DIR / "dtmf_2833_pound.pcap").exists(),
    reason="sipp plays RFC 2833 pcaps through a raw socket: needs CAP_NET_RAW and "
    f"{PCAP_DIR}/dtmf_2833_*.pcap",
)


def assert_clean(summary: dict[str, Any], calls: int) -> None:
    assert summary["ok"] is True, summary
    assert summary["calls"] == calls, summary
    for leak in ("jobs_leaked", "threads_leaked", "http_connections_open", "never_awaited"):
        assert summary[leak] == 0, (leak, summary)
    assert summary["errors"] == 0, summary
    # Every call's greeting was streamed on the pjsua thread; none after a hangup.
    assert summary["first_frame_samples"] >= 1, summary
    assert summary["frames_played"] > 0, summary
    assert summary["frames_after_hangup"] == 0, summary
    assert any(n.endswith("all on the loop thread") for n in summary["notes"]), summary


# -- the example's CLI against sipp ---------------------------------------------------


def test_cli_dtmf_over_sip_info_and_ua_hangs_up(call: Any) -> None:
    run = call([*CLI, "--dtmf-timeout", "5", "--resident-timeout", "5"], 6, *DTMF_INFO)
    run.assert_all_succeeded()
    summary = run.summary
    assert_clean(summary, 6)
    # apartments.csv dials 101, 115 (residents answer) and 99# (no such apartment).
    assert summary["outcomes"]["door_opened"] == 4, summary
    assert summary["outcomes"]["wrong_apartment"] == 2, summary


def test_cli_visitor_hangs_up_first(call: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    run = call([*CLI, "--dtmf-timeout", "10", "--trace", str(trace)], 4, *VISITOR_HANGS_UP)
    run.assert_all_succeeded()
    summary = run.summary
    assert_clean(summary, 4)
    assert summary["outcomes"]["visitor_left"] == 4, summary
    # Each call's jobs were cancelled when its BYE came in, and the trace says so.
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    cancelled = {
        e["call_id"]: e["keys"]
        for e in events
        if e["event"] == "call.jobs_cancelled" and e["reason"] == "visitor hung up"
    }
    assert len(cancelled) == 4, cancelled
    for call_id, keys in cancelled.items():
        assert f"call:{call_id}" in keys, cancelled


def test_cli_no_dtmf_ua_says_goodbye(call: Any) -> None:
    run = call([*CLI, "--dtmf-timeout", "0.5"], 4, *SILENT)
    run.assert_all_succeeded()
    summary = run.summary
    assert_clean(summary, 4)
    assert summary["outcomes"]["no_input"] == 4, summary


@needs_raw_socket
def test_cli_dtmf_over_rfc2833(call: Any) -> None:
    run = call([*CLI, "--dtmf-timeout", "5"], 2, *RFC2833)
    run.assert_all_succeeded()
    summary = run.summary
    assert_clean(summary, 2)
    assert summary["outcomes"]["wrong_apartment"] == 2, summary  # dialled 1#


# -- the stack alone, under a minimal flow ------------------------------------------


def assert_stack_clean(summary: dict[str, Any], calls: int) -> None:
    assert summary["calls"] == calls, summary
    assert summary["calls_left"] == 0, summary
    assert summary["threads_left"] == [], summary
    assert summary["errors"] == [], summary
    assert summary["media_ports_leaked"] == 0, summary
    # Every pjsua2 callback arrives on the stack's one registered thread: the
    # bridge's pinned thread.
    assert summary["callback_threads"] == ["ua-pjsua"], summary


def test_stack_delivers_sip_info_digits_in_order(call: Any) -> None:
    run = call([*HARNESS_UA, "--dtmf-timeout", "5"], 6, *DTMF_INFO)
    run.assert_all_succeeded()
    summary = run.summary
    assert_stack_clean(summary, 6)
    assert summary["outcomes"] == {"dialled": 6}, summary
    assert summary["dialled"] == ["101", "115", "99#"], summary


@needs_raw_socket
def test_stack_delivers_rfc2833_digits(call: Any) -> None:
    run = call([*HARNESS_UA, "--dtmf-timeout", "5"], 2, *RFC2833)
    run.assert_all_succeeded()
    summary = run.summary
    assert_stack_clean(summary, 2)
    assert summary["dialled"] == ["1#"], summary


def test_stack_reports_remote_hangup(call: Any) -> None:
    run = call([*HARNESS_UA, "--dtmf-timeout", "10"], 4, *VISITOR_HANGS_UP)
    run.assert_all_succeeded()
    summary = run.summary
    assert_stack_clean(summary, 4)
    assert summary["outcomes"] == {"visitor_hung_up": 4}, summary


def test_stack_hangs_up_after_dtmf_timeout(call: Any) -> None:
    run = call([*HARNESS_UA, "--dtmf-timeout", "0.3"], 4, *SILENT)
    run.assert_all_succeeded()
    summary = run.summary
    assert_stack_clean(summary, 4)
    assert summary["outcomes"] == {"dtmf_timeout": 4}, summary


def test_stack_stop_hangs_up_calls_in_progress(call: Any) -> None:
    # The UA stops as soon as 4 calls are answered; sipp's calls succeed only if
    # stop() sends each of them a BYE.
    run = call([*HARNESS_UA, "--dtmf-timeout", "30", "--stop-when-answered", "4"], 4, *SILENT)
    run.assert_all_succeeded()
    summary = run.summary
    assert_stack_clean(summary, 4)
    assert summary["ended_on_stop"] == 4, summary
    assert summary["outcomes"] == {"ended_by_stop": 4}, summary


def test_stack_survives_an_exception_in_a_flow_callback(call: Any) -> None:
    # An exception escaping into pjsua2 would abort the UA; the stack reports it
    # and goes on. The third caller's "#" is lost, so that call times out on "99".
    ua = [*HARNESS_UA, "--dtmf-timeout", "1.5", "--fail-on-digit", "#"]
    run = call(ua, 3, *DTMF_INFO)
    run.assert_all_succeeded()
    summary = run.summary
    assert summary["errors"] == ["error in dtmf callback: RuntimeError('flow refuses digit #')"], (
        summary
    )
    assert summary["dialled"] == ["101", "115", "99"], summary
    assert summary["calls_left"] == 0, summary
    assert summary["media_ports_leaked"] == 0, summary


# -- start, stop and bad input, in a subprocess of their own ---------------------------

LIFECYCLE = """
import socket, sys, threading
import structlog
from bridge import Bridge
from examples.telephony_flow.stacks.sip import SipTelephony

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

class Events:
    def incoming_call(self, call_id, caller): raise AssertionError("no call expected")
    def dtmf(self, call_id, digit): raise AssertionError("no call expected")
    def call_ended(self, call_id, by_remote): raise AssertionError("no call expected")

def pjsua_threads():
    return [t.name for t in threading.enumerate() if t.name.endswith("-pjsua")]

busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
busy.bind(("127.0.0.1", 0))
port = busy.getsockname()[1]
bridge = Bridge("lifecycle")
stack = SipTelephony("127.0.0.1", port, bridge=bridge)
try:
    stack.start(Events())
except RuntimeError as exc:
    print("busy:", exc)
assert pjsua_threads() == [], threading.enumerate()
busy.close()

stack = SipTelephony("127.0.0.1", port, bridge=bridge)  # the same port, now free
stack.start(Events())
assert pjsua_threads() == ["lifecycle-pjsua"], threading.enumerate()
stack.answer("no-such-call")
stack.say("no-such-call", "hello")
stack.hangup("no-such-call")
assert stack.call_media_ports() == 0
stack.stop()
stack.stop()
stack.answer("no-such-call")  # after stop: ignored
assert stack.call_media_ports() == 0
assert pjsua_threads() == [], threading.enumerate()
report = bridge.shutdown(timeout=5.0)
assert report.clean, report
assert threading.active_count() == 1, threading.enumerate()

bridge = Bridge("shutdown")  # the bridge's shutdown alone stops the stack
stack = SipTelephony("127.0.0.1", port, bridge=bridge)
stack.start(Events())
report = bridge.shutdown(timeout=5.0)
assert report.clean, report
stack.hangup("no-such-call")  # after the bridge's shutdown: ignored
stack.stop()
assert threading.active_count() == 1, threading.enumerate()
print("clean")
"""


def test_start_on_busy_port_fails_cleanly_and_stop_is_idempotent() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LIFECYCLE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("busy: SIP stack failed to listen on 127.0.0.1:"), lines
    assert "Address already in use" in lines[0], lines
    assert lines[-1] == "clean", lines


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("localhost", 5070, "host must be an IP address"),
        ("127.0.0.1", 0, "port must be an int in 1..65535"),
        ("127.0.0.1", 70000, "port must be an int in 1..65535"),
        ("127.0.0.1", True, "port must be an int in 1..65535"),
    ],
)
def test_bad_address_is_refused_before_pjsua_starts(host: str, port: int, message: str) -> None:
    from bridge import Bridge
    from examples.telephony_flow.stacks.sip import SipTelephony

    bridge = Bridge("never-started")
    with pytest.raises(ValueError, match=message):
        SipTelephony(host, port, bridge=bridge)
    assert bridge.thread is None  # nothing was started
