"""The cluster across network namespaces (run by ``netns.sh``, ``make cluster-netns``).

``netns.sh`` makes the namespaces (proxy, two agents, caller) on
198.18.0.0/24 and removes them whatever happens; this module runs the cluster
in them: Kamailio in the proxy's namespace on 198.18.0.1:5060, agent #k in
its own namespace on its own address (``ip netns exec NS`` in front of each
command, so the process ids stay the ones the cluster started), and, once
the proxy sees both agents, sipp in the caller's namespace placing
``--calls`` calls through the proxy. Nothing listens on 127.0.0.1 across
hosts: each agent's only loopback use is its own directory service.

Prints the cluster's summary (its last line JSON) and sipp's verdict; exits
0 only when the cluster's run was clean and every sipp call succeeded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .run import Cluster, ClusterConfig, ClusterError, say

PROXY_IP: Final = "198.18.0.1"
AGENT_IPS: Final = ("198.18.0.11", "198.18.0.12")
CALLER_IP: Final = "198.18.0.100"
PORT: Final = 5060
_ROOT: Final = Path(__file__).resolve().parents[3]
_SIPP_DIR: Final = _ROOT / "tests" / "sipp"
_SIPP_TIMEOUT_S: Final = 120.0


def _in(netns: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", netns)


class Caller:
    """sipp in the caller's namespace, started when the cluster is ready."""

    def __init__(self, netns: str, calls: int) -> None:
        self._netns = netns
        self._calls = calls
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The cluster's ``on_ready``: place the calls (returns at once)."""
        sipp = shutil.which("sipp") or "sipp"
        command = [
            *_in(self._netns), sipp, f"{PROXY_IP}:{PORT}",
            "-sf", str(_SIPP_DIR / "cluster_uac.xml"), "-inf", str(_SIPP_DIR / "apartments.csv"),
            "-i", CALLER_IP, "-p", "5070", "-mi", CALLER_IP,
            "-m", str(self._calls), "-l", "6", "-r", "4",
            "-recv_timeout", "30000", "-timeout", "100", "-timeout_error", "-nostdin",
        ]  # fmt: skip
        say(f"sipp in the caller's namespace ({CALLER_IP}) places {self._calls} calls")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def finish(self) -> tuple[int | None, str]:
        """Wait for sipp (killing it if it hangs); its status and the end of its output."""
        if self.proc is None:
            return None, "sipp never started"
        try:
            output, _ = self.proc.communicate(timeout=_SIPP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return self.proc.returncode, output.decode("utf-8", "replace")[-1500:]


def run(proxy_ns: str, agent_ns: Sequence[str], caller_ns: str, calls: int) -> int:
    """Run the cluster and the caller in the namespaces; the exit status."""
    caller = Caller(caller_ns, calls)
    config = ClusterConfig(
        listen=(PROXY_IP, PORT),
        processes=len(agent_ns),
        calls=calls,
        agent_hosts=AGENT_IPS[: len(agent_ns)],
        agent_wrap=tuple(_in(ns) for ns in agent_ns),
        proxy_wrap=_in(proxy_ns),
        on_ready=caller.start,
    )
    cluster = Cluster(config)
    try:
        summary = cluster.run()
        summary.print()
    except ClusterError as exc:
        print(f"cluster-netns: error: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.done()
        sipp_status, sipp_tail = caller.finish()
    verdict = "all calls succeeded" if sipp_status == 0 else f"FAILED (status {sipp_status})"
    print(f"cluster-netns: sipp: {verdict}", file=sys.stderr)
    if sipp_status != 0:
        print(sipp_tail, file=sys.stderr)
    return 0 if summary.ok and sipp_status == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse *argv* (the namespaces ``netns.sh`` made) and run."""
    parser = argparse.ArgumentParser(prog="python -m examples.telephony_flow.cluster.netns")
    parser.add_argument("--proxy-netns", required=True)
    parser.add_argument("--agent-netns", nargs=2, required=True)
    parser.add_argument("--caller-netns", required=True)
    parser.add_argument("--calls", type=int, default=16)
    args = parser.parse_args(argv)
    return run(args.proxy_netns, args.agent_netns, args.caller_netns, args.calls)


if __name__ == "__main__":
    sys.exit(main())
