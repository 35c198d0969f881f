"""Subprocess jobs: ``Bridge.run_process`` (issue 11)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

psutil = pytest.importorskip("psutil")

from bridge import (  # noqa: E402 - after the importorskip
    Bridge,
    BridgeError,
    DuplicateJob,
    JobCancelled,
    JobState,
    JobTimeout,
    ProcessFailed,
    ProcessResult,
)

GRACE = 0.3

#: A child whose whole group ignores SIGTERM (the disposition is inherited).
IGNORES_TERM = ["sh", "-c", "trap '' TERM; echo ready $$; sleep 30"]
#: A child (dies of SIGTERM) with a grandchild that ignores it.
GRANDCHILD = ["sh", "-c", "sh -c 'trap \"\" TERM; echo ready $$; exec sleep 30' & wait"]
SCENARIOS = {"ignores_term": IGNORES_TERM, "grandchild": GRANDCHILD}


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie that is not ours (init reaps it, or not)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], bound: float = 5.0) -> list[int]:
    """Poll (bounded) until every pid is gone; return those still alive."""
    deadline = time.monotonic() + bound
    while True:
        alive = [pid for pid in pids if not _gone(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        threading.Event().wait(0.01)


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    """Every test ends with no process of its own left (psutil)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    new = [p.pid for p in me.children(recursive=True) if p.pid not in before]
    alive = wait_gone(new)
    for pid in alive:  # do not leave them running even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"processes left: {alive}"


class Ready:
    """An ``on_line`` that records lines and the pid of the first ``ready`` line."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lines: list[tuple[str, str]] = []
        self.pid = 0

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        if line.startswith("ready "):
            self.pid = int(line.split()[1])
            self.event.set()

    def wait(self) -> int:
        assert self.event.wait(10), "the child never said it was ready"
        return self.pid


def start(b: Bridge, argv: list[str], **options: Any) -> tuple[Any, Ready]:
    ready = Ready()
    job = b.run_process(argv, kill_grace=GRACE, on_line=ready, **options)
    ready.wait()
    return job, ready


def expected_how(scenario: str) -> str:
    if scenario == "ignores_term":
        return f"was killed by SIGKILL after {GRACE} s"
    left = f"what it left in its group was killed by SIGKILL after {GRACE} s"
    return f"was terminated by SIGTERM; {left}"


# -- the four ways a child is ended early -------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cancel_kills_the_group(bridge: Bridge, scenario: str) -> None:
    job, ready = start(bridge, SCENARIOS[scenario])
    pid = job.info().pid
    began = time.monotonic()
    assert job.cancel()
    with pytest.raises(JobCancelled) as info:
        job.result(timeout=10)
    elapsed = time.monotonic() - began
    assert f"child pid {pid} {expected_how(scenario)}" in str(info.value)
    assert expected_how(scenario) in (job.info().error or "")
    assert GRACE <= elapsed < GRACE + 2.0
    assert job.state is JobState.CANCELLED
    assert wait_gone([pid, ready.pid], bound=0.5) == []  # gone when the job resolved


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deadline_kills_the_group(bridge: Bridge, scenario: str) -> None:
    job, ready = start(bridge, SCENARIOS[scenario], timeout=1.0)
    pid = job.info().pid
    with pytest.raises(JobTimeout) as info:
        job.result(timeout=10)
    assert f"child pid {pid} {expected_how(scenario)}" in str(info.value)
    assert job.state is JobState.TIMED_OUT
    assert wait_gone([pid, ready.pid], bound=0.5) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replace_kills_the_group(bridge: Bridge, scenario: str) -> None:
    old, ready = start(bridge, SCENARIOS[scenario], key="script")
    pid = old.info().pid
    with pytest.raises(DuplicateJob):
        bridge.run_process(["true"], key="script")
    new = bridge.run_process(["echo", "new"], key="script", on_conflict="replace")
    with pytest.raises(JobCancelled) as info:
        old.result(timeout=10)
    assert expected_how(scenario) in str(info.value)
    assert new.result(timeout=10).stdout == b"new\n"
    assert wait_gone([pid, ready.pid], bound=0.5) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shutdown_kills_the_group(make_bridge: Callable[..., Bridge], scenario: str) -> None:
    b = make_bridge()
    job, ready = start(b, SCENARIOS[scenario])
    pid = job.info().pid
    report = b.shutdown(timeout=0)
    assert [info.id for info in report.cancelled] == [job.id]
    assert report.stuck == ()
    assert report.duration < GRACE + 1.0 + 1.0
    with pytest.raises(JobCancelled) as info:
        job.result(timeout=0)
    assert expected_how(scenario) in str(info.value)
    assert wait_gone([pid, ready.pid], bound=0.5) == []


def test_shutdown_waits_kill_grace_plus_a_second_before_stuck(
    make_bridge: Callable[..., Bridge],
) -> None:
    # kill_grace 1.0 is longer than the coroutines' CANCEL_GRACE (0.5): the job
    # must still end cancelled, not stuck.
    b = make_bridge()
    ready = Ready()
    job = b.run_process(IGNORES_TERM, kill_grace=1.0, on_line=ready)
    ready.wait()
    report = b.shutdown(timeout=0)
    assert report.stuck == ()
    assert [info.id for info in report.cancelled] == [job.id]
    assert "SIGKILL after 1.0 s" in (report.cancelled[0].error or "")
    assert 1.0 <= report.duration < 1.0 + 1.0 + 1.0
    assert wait_gone([ready.pid], bound=0.5) == []


def test_shutdown_sigkills_a_group_the_blocked_loop_cannot_end(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    ready = Ready()
    job = b.run_process(IGNORES_TERM, kill_grace=0.2, on_line=ready)
    ready.wait()
    release = threading.Event()
    blocking = threading.Event()

    async def block_the_loop() -> None:
        blocking.set()
        release.wait(10)  # blocks the loop thread on purpose

    blocker = b.submit(block_the_loop)
    assert blocking.wait(10)
    report = b.shutdown(timeout=0)
    release.set()
    assert {info.id for info in report.stuck} == {job.id, blocker.id}
    # The shutdown thread SIGKILLed the group after the loop stopped.
    assert wait_gone([ready.pid, job.info().pid], bound=2.0) == []


# -- normal exits ---------------------------------------------------------------------------


def test_result_and_info(bridge: Bridge) -> None:
    lines: list[tuple[str, str]] = []
    job = bridge.run_process(
        ["sh", "-c", "echo one; echo two >&2; echo three; exit 3", "secret-token"],
        kind="script",
        on_line=lambda stream, line: lines.append((stream, line)),
    )
    result = job.result(timeout=10)
    assert isinstance(result, ProcessResult)
    assert result.returncode == 3
    assert result.stdout == b"one\nthree\n"
    assert result.stderr == b"two\n"
    assert result.args == ("sh", "-c", "echo one; echo two >&2; echo three; exit 3", "secret-token")
    assert result.truncated is False
    assert result.duration > 0
    assert [line for line in lines if line[0] == "stdout"] == [
        ("stdout", "one"),
        ("stdout", "three"),
    ]
    assert ("stderr", "two") in lines
    info = job.info()
    assert (info.pid, info.program, info.kind) == (result.pid, "sh", "script")
    assert "secret-token" not in repr(info)
    assert wait_gone([result.pid], bound=0.5) == []


def test_program_in_info_while_running(bridge: Bridge) -> None:
    job, _ready = start(bridge, IGNORES_TERM)
    (info,) = bridge.jobs("process")
    assert info.program == "sh"
    assert info.pid is not None
    assert psutil.Process(info.pid).is_running()
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)


def test_check_raises_process_failed(bridge: Bridge) -> None:
    job = bridge.run_process(
        ["sh", "-c", "echo out; echo bad >&2; exit 4", "secret-token"], check=True
    )
    with pytest.raises(ProcessFailed) as info:
        job.result(timeout=10)
    error = info.value
    assert isinstance(error, BridgeError)
    assert isinstance(error, subprocess.CalledProcessError)
    assert (error.returncode, error.stdout, error.stderr) == (4, b"out\n", b"bad\n")
    assert error.cmd[-1] == "secret-token"
    assert "secret-token" not in str(error)
    assert "exited with status 4" in str(error)
    assert "secret-token" not in (job.info().error or "")
    assert bridge.run_process(["true"], check=True).result(timeout=10).returncode == 0


def test_stdin_is_dev_null(bridge: Bridge) -> None:
    # cat reads stdin to EOF: with /dev/null it ends at once.
    result = bridge.run_process(["cat"], timeout=5).result(timeout=10)
    assert (result.returncode, result.stdout) == (0, b"")


def test_input_is_written_then_closed(bridge: Bridge) -> None:
    assert bridge.run_process(["cat"], input=b"abc").result(timeout=10).stdout == b"abc"
    assert bridge.run_process(["cat"], input="é").result(timeout=10).stdout == "é".encode()
    # A child that never reads its input is no error.
    assert bridge.run_process(["true"], input=b"x" * 1_000_000).result(timeout=10).returncode == 0


def test_long_lines_are_split(bridge: Bridge) -> None:
    pieces: list[str] = []
    code = "import sys; sys.stdout.write('a' * 200000 + '\\nb\\nc')"
    job = bridge.run_process(
        [sys.executable, "-c", code], on_line=lambda stream, line: pieces.append(line)
    )
    job.result(timeout=10)
    assert [len(p) for p in pieces] == [65536, 65536, 65536, 200000 - 3 * 65536, 1, 1]


def test_on_line_error_fails_the_job_and_ends_the_child(bridge: Bridge) -> None:
    def explode(stream: str, line: str) -> None:
        raise RuntimeError("on_line failed")

    job = bridge.run_process(IGNORES_TERM, kill_grace=GRACE, on_line=explode)
    with pytest.raises(RuntimeError, match="on_line failed"):
        job.result(timeout=10)
    assert job.state is JobState.FAILED
    assert wait_gone([job.info().pid], bound=0.5) == []


def test_leftovers_are_ended_after_a_normal_exit(bridge: Bridge) -> None:
    # The grandchild keeps stdout open: without ending it the job would wait 30 s.
    job = bridge.run_process(["sh", "-c", "sleep 30 & echo $!"], kill_grace=GRACE)
    result = job.result(timeout=10)
    grandchild = int(result.stdout)
    assert result.returncode == 0
    assert wait_gone([grandchild], bound=0.5) == []


def test_kill_group_on_exit_false_leaves_them(bridge: Bridge) -> None:
    job = bridge.run_process(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], kill_group_on_exit=False
    )
    grandchild = int(job.result(timeout=10).stdout)
    try:
        assert not _gone(grandchild)
    finally:
        os.kill(grandchild, signal.SIGKILL)
    assert wait_gone([grandchild]) == []


# -- output bounds ----------------------------------------------------------------------------


def test_hundred_megabytes_of_output_stay_bounded(bridge: Bridge) -> None:
    code = (
        "import sys\nline = b'x' * 1048575 + b'\\n'\n"
        "for _ in range(100):\n    sys.stdout.buffer.write(line)\n"
    )
    seen = [0, 0]  # bytes, longest piece

    def count(stream: str, line: str) -> None:
        seen[0] += len(line)
        seen[1] = max(seen[1], len(line))

    rss = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    job = bridge.run_process(
        [sys.executable, "-c", code], max_output=1_000_000, on_line=count, timeout=60
    )
    result = job.result(timeout=60)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert result.truncated is True
    assert len(result.stdout) == 1_000_000
    assert seen == [100 * 1048575, 65536]
    # Generous: 100 MB went through; growth stays a small fraction of it.
    assert peak_after - max(peak_before, rss) < 40 * 1024 * 1024
    assert psutil.Process().memory_info().rss - rss < 40 * 1024 * 1024


def test_max_output_zero_keeps_nothing(bridge: Bridge) -> None:
    result = bridge.run_process(["echo", "hi"], max_output=0).result(timeout=10)
    assert (result.stdout, result.truncated) == (b"", True)


# -- limits -------------------------------------------------------------------------------------

_COUNTER = """
import fcntl, sys, time
def bump(delta):
    with open(sys.argv[1], "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        now, most = map(int, f.read().split())
        now += delta
        f.seek(0); f.truncate(); f.write(f"{now} {max(most, now)}")
bump(1)
time.sleep(0.02)
bump(-1)
"""


def test_limits_bound_live_children(make_bridge: Callable[..., Bridge], tmp_path: Path) -> None:
    b = make_bridge(limits={"proc": 8})
    counter = tmp_path / "counter"
    counter.write_text("0 0")
    me = psutil.Process()
    sampled: list[int] = []
    # Children from before the test (multiprocessing's forkserver and resource
    # tracker, once an earlier test used worker processes) are not its own.
    earlier = {p.pid for p in me.children()}

    def alive(proc: Any) -> bool:
        try:
            return bool(proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def sample(stream: str, line: str) -> None:  # loop thread, while a child runs
        sampled.append(sum(1 for p in me.children() if p.pid not in earlier and alive(p)))

    argv = [sys.executable, "-S", "-c", _COUNTER + "print('started')", str(counter)]
    jobs = [b.run_process(argv, kind="proc", on_line=sample, timeout=60) for _ in range(100)]
    assert all(job.result(timeout=60).returncode == 0 for job in jobs)
    now, most = map(int, counter.read_text().split())
    assert now == 0
    assert 1 <= most <= 8
    assert len(sampled) == 100
    assert max(sampled) <= 8


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], ValueError),
        ((), ValueError),
        ("ls", TypeError),
        (b"ls", TypeError),
        (["ls", 3], TypeError),
        ([None], TypeError),
        (42, TypeError),
    ],
)
def test_bad_args_leave_nothing(bridge: Bridge, args: Any, error: type[Exception]) -> None:
    before = bridge.stats().submitted
    with pytest.raises(error):
        bridge.run_process(args)
    assert bridge.stats().submitted == before
    assert bridge.jobs() == []


@pytest.mark.parametrize(
    "options",
    [
        {"kill_grace": -1},
        {"kill_grace": float("nan")},
        {"max_output": -1},
        {"max_output": 1.5},
        {"on_line": 3},
        {"input": 3},
        {"env": {"A": 1}},
        {"cwd": 3},
        {"kind": ""},
    ],
)
def test_bad_options_leave_nothing(bridge: Bridge, options: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        bridge.run_process(["true"], **options)
    assert bridge.jobs() == []


def test_missing_program_or_cwd_raises_the_exec_error(bridge: Bridge, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        bridge.run_process(["no-such-program-bridge-test"]).result(timeout=10)
    with pytest.raises(FileNotFoundError):
        bridge.run_process(["true"], cwd=tmp_path / "missing").result(timeout=10)


def test_path_like_args_cwd_and_env(bridge: Bridge, tmp_path: Path) -> None:
    result = bridge.run_process(
        [Path("/bin/sh"), "-c", 'echo "$PWD $X"'], cwd=tmp_path, env={"X": "y"}
    ).result(timeout=10)
    assert result.stdout.decode().split() == [str(tmp_path), "y"]
    assert bridge.run_process([b"echo", b"hi"]).result(timeout=10).stdout == b"hi\n"


# -- how the exit is learnt: a pidfd, or a waiting thread where there is none ----------------


@pytest.fixture(params=["pidfd", "thread"])
def exit_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the loop learns of a child's exit (no ``os.pidfd_open``: a thread waits)."""
    if request.param == "thread":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open here")
    return str(request.param)


def test_exit_status_output_and_input_either_way(bridge: Bridge, exit_watch: str) -> None:
    code = "import sys; data = sys.stdin.read(); print(data.upper()); sys.exit(3)"
    result = bridge.run_process([sys.executable, "-c", code], input=b"abc").result(timeout=10)
    assert (result.returncode, result.stdout, result.truncated) == (3, b"ABC\n", False)
    killed = bridge.run_process(["sh", "-c", "kill -9 $$"]).result(timeout=10)
    assert killed.returncode == -signal.SIGKILL


def test_cancel_kills_the_group_either_way(bridge: Bridge, exit_watch: str) -> None:
    job, ready = start(bridge, GRANDCHILD)
    pid = job.info().pid
    assert job.cancel()
    with pytest.raises(JobCancelled, match=f"child pid {pid} {expected_how('grandchild')}"):
        job.result(timeout=10)
    assert wait_gone([pid, ready.pid], bound=0.5) == []


def test_on_uvloop(make_bridge: Callable[..., Bridge]) -> None:
    pytest.importorskip("uvloop")
    b = make_bridge(use_uvloop=True)
    assert b.run_process(["sh", "-c", "echo hi; exit 2"]).result(timeout=10).stdout == b"hi\n"
    job, ready = start(b, IGNORES_TERM)
    assert job.cancel()
    with pytest.raises(JobCancelled, match=expected_how("ignores_term")):
        job.result(timeout=10)
    assert wait_gone([ready.pid], bound=0.5) == []
