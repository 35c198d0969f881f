"""``make bench-cluster``: the telephony cluster's capacity on this machine.

For 1, 2, 4 and 8 agent processes behind Kamailio, sipp offers calls at a
rate that steps up (:func:`rates`); each call holds 2 s and dials its
apartment (SIP INFO) 0.5 s after the ACK (``tests/sipp/cluster_bench.xml``).
Each step is a fresh cluster (``python -m examples.telephony_flow cluster``)
that serves :data:`STEP_SECONDS` of offered calls, then is stopped with
SIGINT (it drains and prints its summary). A step records the calls sipp
placed and saw fail, the callback-to-job p99 (the worst agent's, from the
agents' own summaries), and the CPU each process used while sipp ran (psutil,
sampled; % of one core). Stepping stops for an agent count at the first step
with a failed call or a p99 over :data:`P99_LIMIT_MS`; the highest clean
step is the sustained rate.

``python -m bench.cluster --out bench/results/cluster.md [--agents 1 2] [--seconds 10]``
writes the table (and a JSON file next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil  # type: ignore[import-untyped]

from .report import machine

__all__ = ["Step", "main", "rates", "run_step"]

ROOT: Final = Path(__file__).resolve().parents[1]
SCENARIO: Final = ROOT / "tests" / "sipp" / "cluster_bench.xml"
AGENTS: Final = (1, 2, 4, 8)
#: Seconds of offered calls per step.
STEP_SECONDS: Final = 10.0
P99_LIMIT_MS: Final = 50.0
#: Seconds a call holds (the scenario's), and the calls one agent serves at once.
HOLD_S: Final = 2.0
CALLS_PER_AGENT: Final = 4
_READY_TIMEOUT_S: Final = 60.0
_SAMPLE_S: Final = 0.25


def rates(agents: int) -> list[float]:
    """The offered rates (calls/s) for *agents*, around their ceiling of 4 calls per 2 s."""
    ceiling = agents * CALLS_PER_AGENT / HOLD_S
    return [round(ceiling * f, 2) for f in (0.5, 0.75, 0.9, 1.1)]


@dataclass
class Step:
    """One measured step."""

    agents: int
    rate: float
    placed: int = 0
    succeeded: int = 0
    failed: int = 0
    achieved_rate: float = 0.0
    p99_ms: float | None = None
    p50_ms: float | None = None
    jobs_leaked: int | None = None
    #: % of one core while sipp ran, per process ("agent #1", ..., "kamailio", "sipp").
    cpu_pct: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def clean(self) -> bool:
        """No failed call, every call placed, p99 within the limit."""
        return (
            self.error is None
            and self.failed == 0
            and self.succeeded == self.placed
            and self.p99_ms is not None
            and self.p99_ms <= P99_LIMIT_MS
        )


def free_port_block(count: int) -> int:
    """A base port with base .. base+count free for UDP on 127.0.0.1."""
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


class _CpuSampler:
    """Samples the CPU time of the cluster's processes (and sipp's) on a thread."""

    def __init__(self, cluster: psutil.Process, base_port: int) -> None:
        self._cluster = cluster
        self._base = base_port
        self._lock = threading.Lock()  # guards _last
        self._last: dict[int, tuple[str, float]] = {}
        self._extra: list[psutil.Process] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler")

    def add(self, process: psutil.Process) -> None:
        self._extra.append(process)

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far per label (processes of one label summed)."""
        self._sample()
        totals: dict[str, float] = {}
        with self._lock:
            for label, seconds in self._last.values():
                totals[label] = totals.get(label, 0.0) + seconds
        return totals

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        try:
            processes = [self._cluster, *self._cluster.children(recursive=True), *self._extra]
        except psutil.Error:
            return
        for process in processes:
            try:
                label = self._label(process)
                times = process.cpu_times()
            except psutil.Error:
                continue
            if label is not None:
                with self._lock:
                    self._last[process.pid] = (label, times.user + times.system)

    def _label(self, process: psutil.Process) -> str | None:
        command = process.cmdline()
        text = " ".join(command)
        if "kamcmd" in text:
            return None
        if "kamailio" in text:
            return "kamailio"
        if "sipp" in Path(command[0]).name if command else False:
            return "sipp"
        match = re.search(r"--listen 127\.0\.0\.1:(\d+)", text)
        if match and " sip " in f" {text} ":
            return f"agent #{int(match.group(1)) - self._base}"
        if process.pid == self._cluster.pid:
            return "cluster"
        return None


def _read_lines(proc: subprocess.Popen[str], lines: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("ready:"):
            ready.set()
    ready.set()


def _sipp_counts(output: str) -> tuple[int, int]:
    """Successful and failed calls from sipp's final statistics screen."""

    def count(name: str) -> int:
        found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", output)
        return int(found[-1]) if found else 0

    return count("Successful call"), count("Failed call")


def run_step(agents: int, rate: float, seconds: float) -> Step:
    """Start a cluster of *agents*, offer *rate* calls/s for *seconds*, stop it, measure."""
    step = Step(agents, rate)
    calls = max(1, round(rate * seconds))
    base = free_port_block(agents)
    command = [
        sys.executable, "-m", "examples.telephony_flow", "cluster",
        "--processes", str(agents), "--listen", f"127.0.0.1:{base}",
        "--resident-timeout", "10", "--drain-timeout", "10",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc, lines, ready), name="reader")
    reader.start()
    sampler = _CpuSampler(psutil.Process(proc.pid), base)
    try:
        if not ready.wait(_READY_TIMEOUT_S) or not any(x.startswith("ready:") for x in lines):
            step.error = "the cluster did not get ready"
            return step
        sampler.start()
        _offer(step, sampler, base, calls)
    finally:
        _stop_cluster(proc)
        reader.join()
        sampler.stop()
    _read_summary(step, lines)
    return step


def _offer(step: Step, sampler: _CpuSampler, base: int, calls: int) -> None:
    """Run sipp for *calls* calls at the step's rate; fill in its counts and the CPU."""
    sipp = shutil.which("sipp") or "sipp"
    command = [
        sipp, f"127.0.0.1:{base}", "-sf", str(SCENARIO),
        "-i", "127.0.0.1", "-p", "0", "-mi", "127.0.0.1",
        "-m", str(calls), "-l", "10000", "-r", str(step.rate), "-rp", "1000",
        "-recv_timeout", "20000", "-timeout", str(int(calls / step.rate + 60)),
        "-nostdin",
    ]  # fmt: skip
    before = sampler.snapshot()
    began = time.monotonic()
    sipp_proc = subprocess.Popen(
        command, cwd="/tmp", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler.add(psutil.Process(sipp_proc.pid))
    output, _ = sipp_proc.communicate()
    wall = time.monotonic() - began
    after = sampler.snapshot()
    step.placed = calls
    step.succeeded, step.failed = _sipp_counts(output)
    step.achieved_rate = round(step.succeeded / max(wall - HOLD_S, 1e-3), 2)
    step.cpu_pct = {
        label: round(100.0 * (seconds - before.get(label, 0.0)) / wall, 1)
        for label, seconds in sorted(after.items())
    }


def _stop_cluster(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def _read_summary(step: Step, lines: list[str]) -> None:
    summary: dict[str, Any] = {}
    for line in reversed(lines):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    if not summary:
        step.error = step.error or "no summary from the cluster"
        return
    step.p99_ms = summary["latency_ms"]["p99"]
    step.p50_ms = summary["latency_ms"]["p50"]
    step.jobs_leaked = summary["jobs_leaked"]


def _cpu_cell(step: Step) -> str:
    agents = [v for k, v in step.cpu_pct.items() if k.startswith("agent")]
    if not agents:
        return "-"
    return f"{sum(agents) / len(agents):.0f} / {max(agents):.0f}"


def markdown(steps: list[Step], info: dict[str, Any], seconds: float) -> str:
    """The result table (and how it was measured) as Markdown."""
    out = [
        "# Cluster capacity: agents behind Kamailio on one machine",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['python']}; "
        f"load average before: {' '.join(f'{x:.2f}' for x in info['load_before'])}.",
        "",
        f"sipp -> Kamailio (dispatcher, round robin) -> N `sip` agents on 127.0.0.1. "
        f"Each call holds {HOLD_S:.0f} s and dials its apartment 0.5 s after the ACK; "
        f"each step offers {seconds:.0f} s of calls at a fixed rate to a fresh cluster. "
        f"p99: callback to job start, the worst agent's. CPU: % of one core while sipp "
        f"ran (agents: mean / max).",
        "",
        "| agents | offered calls/s | achieved calls/s | calls | failed | p50 ms | p99 ms "
        "| CPU per agent % | Kamailio % | sipp % | leaked | clean |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        out.append(
            f"| {s.agents} | {s.rate:g} | {s.achieved_rate:g} | {s.placed} | {s.failed} | "
            f"{_fmt(s.p50_ms)} | {_fmt(s.p99_ms)} | {_cpu_cell(s)} | "
            f"{s.cpu_pct.get('kamailio', 0):.0f} | {s.cpu_pct.get('sipp', 0):.0f} | "
            f"{'-' if s.jobs_leaked is None else s.jobs_leaked} | "
            f"{'yes' if s.clean else 'no' + (f' ({s.error})' if s.error else '')} |"
        )
    out += ["", "Sustained (the highest clean step):", ""]
    out += ["| agents | calls/s | p99 ms |", "| ---: | ---: | ---: |"]
    for agents in sorted({s.agents for s in steps}):
        clean = [s for s in steps if s.agents == agents and s.clean]
        best = max(clean, key=lambda s: s.rate) if clean else None
        out.append(
            f"| {agents} | {'-' if best is None else f'{best.achieved_rate:g}'} | "
            f"{'-' if best is None else _fmt(best.p99_ms)} |"
        )
    return "\n".join(out) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(agent_counts: Sequence[int], seconds: float) -> list[Step]:
    """Every step, agent counts in order, stepping each up until it is not clean."""
    steps: list[Step] = []
    for agents in agent_counts:
        for rate in rates(agents):
            step = run_step(agents, rate, seconds)
            steps.append(step)
            print(json.dumps(asdict(step)), file=sys.stderr, flush=True)
            if not step.clean:
                break
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.cluster``: run, write the Markdown (and JSON) file."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster.md")
    parser.add_argument("--agents", type=int, nargs="+", default=list(AGENTS))
    parser.add_argument("--seconds", type=float, default=STEP_SECONDS)
    args = parser.parse_args(argv)
    missing = [tool for tool in ("sipp", "kamailio") if shutil.which(tool) is None]
    if missing and not (Path("/usr/sbin/kamailio").exists() and missing == ["kamailio"]):
        print(f"bench.cluster: missing {', '.join(missing)}: apt-get install "
              "sip-tester kamailio", file=sys.stderr)  # fmt: skip
        return 2
    info = machine(os.getloadavg())
    steps = run(args.agents, args.seconds)
    info["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(steps, info, args.seconds), encoding="utf-8")
    data = {"machine": info, "steps": [asdict(s) | {"clean": s.clean} for s in steps]}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"bench.cluster: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
