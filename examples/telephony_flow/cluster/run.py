"""Run the cluster: Kamailio and N agents as jobs of one bridge, until the calls are done.

:class:`Cluster` does, on the thread that calls :meth:`Cluster.run` (the
main thread, for ``handle_signals``):

1. writes the proxy's configuration into a temporary directory
   (:mod:`.proxy`), starts Kamailio and the agents as ``run_process`` jobs
   with ``timeout=None`` (each in a process group of its own, ended with the
   bridge), reading the agents' JSON event lines as they come (``on_line``
   into a :class:`~.ledger.Ledger`);
2. waits until ``kamcmd dispatcher.list`` shows every agent active (each has
   answered an OPTIONS probe), then prints ``ready`` on stdout;
3. waits until ``calls`` calls are over (ended, or lost with a dead agent),
   an agent crashed (once the proxy has taken it out of rotation), every
   agent has exited, the proxy has died, or a signal came. With
   ``drain_after``, once that many calls have started in the whole cluster,
   agent #1 is drained: disabled in the dispatcher, then sent SIGTERM;
4. drains the rest the same way (all agents disabled, then SIGTERM, each
   agent finishes its calls and exits with its summary), stops Kamailio,
   shuts the bridge down and removes the directory, on every path: an
   exception, Ctrl+C and SIGTERM included (``handle_signals`` with an
   ``on_signal`` that asks this thread to stop and waits until it has);
5. returns the :class:`~.report.ClusterSummary`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import bridge
from bridge import Bridge, Job, ProcessResult

from .ledger import Ledger
from .proxy import (
    ProxyPlan,
    find_kamailio,
    kamailio_args,
    kamcmd_args,
    parse_dispatcher_list,
    write_config,
)
from .report import ClusterSummary, summarise

__all__ = ["AGENT_COMMAND", "Cluster", "ClusterConfig", "ClusterError"]

#: The agent program: the example's ``sip`` mode.
AGENT_COMMAND: Final = (sys.executable, "-m", "examples.telephony_flow", "sip")
#: How long the agents and the proxy get to come up.
READY_TIMEOUT_S: Final = 30.0
#: Seconds between two looks at ``dispatcher.list`` while waiting for ready.
_READY_POLL_S: Final = 0.2
#: How long an agent gets beyond its drain timeout to shut down and report.
_REPORT_GRACE_S: Final = 15.0
_KAMCMD_TIMEOUT_S: Final = 5.0
#: How long after an agent's crash the cluster waits for the proxy to notice.
_NOTICE_LIMIT_S: Final = 10.0
#: SIGTERM to SIGKILL for a job the bridge ends (an agent that did not stop).
_KILL_GRACE_S: Final = 3.0
_ROOT: Final = Path(__file__).resolve().parents[3]


class ClusterError(Exception):
    """The cluster could not start (the message says why)."""


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster's settings (the CLI's arguments)."""

    listen: tuple[str, int]
    processes: int
    calls: int | None = None
    dtmf_timeout: float = 5.0
    resident_timeout: float = 5.0
    drain_after: int | None = None
    drain_timeout: float = 30.0
    balance: str = "round-robin"
    agent_command: Sequence[str] = AGENT_COMMAND
    #: Extra arguments for every agent.
    agent_args: Sequence[str] = field(default_factory=tuple)
    #: Agent #k's IP address (default: the proxy's), e.g. in another network namespace.
    agent_hosts: Sequence[str] = field(default_factory=tuple)
    #: A command prefix per agent (e.g. ``ip netns exec NS``), and one for Kamailio.
    agent_wrap: Sequence[Sequence[str]] = field(default_factory=tuple)
    proxy_wrap: Sequence[str] = field(default_factory=tuple)
    #: Called on the run's thread right after ``ready`` is printed (e.g. to start callers).
    on_ready: Callable[[], None] | None = None

    def agent_addresses(self) -> tuple[tuple[str, int], ...]:
        """Agent #k listens on its host (default: the proxy's IP), port + k."""
        host, port = self.listen
        hosts = list(self.agent_hosts) or [host] * self.processes
        return tuple((hosts[n - 1], port + n) for n in range(1, self.processes + 1))

    def agent_prefix(self, number: int) -> tuple[str, ...]:
        """The command prefix of agent *number* (1-based); empty by default."""
        return tuple(self.agent_wrap[number - 1]) if self.agent_wrap else ()


def say(message: str) -> None:
    """Progress for people, on stderr."""
    print(f"cluster: {message}", file=sys.stderr, flush=True)


class Cluster:
    """One run of the cluster; see the module docstring. Create, then :meth:`run` once."""

    def __init__(self, config: ClusterConfig) -> None:
        self._config = config
        self._kamailio, self._kamcmd, self._modules = find_kamailio()
        self._plan = ProxyPlan(config.listen, config.agent_addresses(), config.balance)
        self._ledger = Ledger([port for _, port in self._plan.agents])
        self._bridge = Bridge("cluster", default_timeout=None)
        self._stop = threading.Event()  # a signal asked the run to stop
        self._finished = threading.Event()  # the run has cleaned up (for on_signal)
        self._proxy: Job[ProcessResult] | None = None
        self._agents: dict[int, Job[ProcessResult]] = {}
        self._drained: set[int] = set()
        self._announced: set[int] = set()  # agents whose first call was announced
        self._died_at: dict[int, float] = {}  # agent -> monotonic time (loop thread writes)
        self._noticed: dict[int, float] = {}  # agent -> seconds until the proxy marked it out
        self._errors: list[str] = []
        self._proxy_tail: list[str] = []
        self._directory = Path()
        self._restore: Callable[[], None] = lambda: None

    # -- the run ------------------------------------------------------------------

    def run(self) -> ClusterSummary:
        """Start everything, serve the calls, stop everything; return the summary.

        **Thread safety:** once, from the main thread if signals are to drain the
        cluster (``handle_signals`` needs it); otherwise from any thread.

        Raises:
            ClusterError: the proxy or an agent did not come up; everything
                started was stopped first.
        """
        began = time.monotonic()
        self._bridge.start()
        self._restore = self._handle_signals()
        try:
            with tempfile.TemporaryDirectory(prefix="bridge-cluster-") as directory:
                self._directory = Path(directory)
                try:
                    self._start()
                    self._wait_ready()
                    self._serve()
                finally:
                    self._stop_all()
        finally:
            self._bridge.shutdown(timeout=5.0)
        return summarise(
            self._ledger.books(),
            proxy_returncode=self._returncode(self._proxy),
            interrupted=self._stop.is_set(),
            duration_s=time.monotonic() - began,
            errors=self._errors,
            proxy_noticed_s={str(n): s for n, s in sorted(self._noticed.items())},
        )

    def done(self) -> None:
        """Call once the summary is out: a signal's helper may now end the process.

        Without a signal, the previous signal handlers are put back. **Thread
        safety:** the thread that called :meth:`run`.
        """
        self._finished.set()
        if not self._stop.is_set():
            self._restore()

    def _handle_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        wait = self._config.drain_timeout + _REPORT_GRACE_S + _KILL_GRACE_S + 10.0
        return bridge.handle_signals(
            self._bridge, on_signal=lambda: self._interrupt(wait), timeout=5.0
        )

    def _interrupt(self, wait: float) -> None:
        """``on_signal`` (helper thread): ask the run to stop, wait until its summary is out.

        Then ``handle_signals`` shuts the (already closed) bridge down and the
        process dies by the signal.
        """
        say("interrupted: draining the agents")
        self._stop.set()
        self._ledger.wake()
        self._finished.wait(wait)

    # -- start --------------------------------------------------------------------

    def _start(self) -> None:
        config = write_config(self._plan, self._directory, self._modules)
        self._proxy = self._bridge.run_process(
            [*self._config.proxy_wrap, *kamailio_args(self._kamailio, config)],
            key="proxy",
            kind="proxy",
            timeout=None,
            on_line=self._on_proxy_line,
        )
        self._proxy.add_done_callback(lambda _job: self._ledger.wake())
        for number in range(1, self._config.processes + 1):
            self._start_agent(number)

    def _start_agent(self, number: int) -> None:
        host, port = self._plan.agents[number - 1]
        args = [
            *self._config.agent_prefix(number),
            *self._config.agent_command,
            *("--listen", f"{host}:{port}", "--events"),
            *("--dtmf-timeout", str(self._config.dtmf_timeout)),
            *("--resident-timeout", str(self._config.resident_timeout)),
            *("--drain-timeout", str(self._config.drain_timeout)),
            *self._config.agent_args,
        ]
        job = self._bridge.run_process(
            args,
            key=f"agent:{number}",
            kind="agent",
            timeout=None,
            cwd=_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            kill_grace=_KILL_GRACE_S,
            on_line=lambda stream, line: self._ledger.on_line(number, stream, line),
        )
        self._agents[number] = job
        job.add_done_callback(lambda done: self._agent_done(number, done))

    def _agent_done(self, number: int, job: Job[ProcessResult]) -> None:
        self._died_at[number] = time.monotonic()
        code = self._returncode(job)  # None: cancelled (killed by the bridge)
        self._ledger.agent_exited(number, -signal.SIGKILL if code is None else code)

    @staticmethod
    def _returncode(job: Job[ProcessResult] | None) -> int | None:
        if job is None or not job.done() or job.cancelled() or job.exception() is not None:
            return None
        return job.result().returncode

    def _on_proxy_line(self, _stream: str, line: str) -> None:
        self._proxy_tail = [*self._proxy_tail[-19:], line]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self._check_started()
            try:
                states = parse_dispatcher_list(self._kamcmd_output("dispatcher.list"))
            except ClusterError:  # the control socket is not there yet
                states = {}
            up = [n for n in range(1, self._config.processes + 1) if self._state(states, n)]
            if len(up) == self._config.processes:
                break
            if time.monotonic() > deadline or self._stop.is_set():
                raise ClusterError(
                    f"only agents {up} of {self._config.processes} answered the proxy's "
                    f"probes within {READY_TIMEOUT_S:.0f} s"
                )
            self._ledger.wait(_READY_POLL_S)
        for number, job in self._agents.items():
            self._ledger.set_pid(number, job.info().pid)  # known once the child runs
        host, port = self._config.listen
        pids = ", ".join(str(b.pid) for b in self._ledger.books())
        print(
            f"ready: proxy on udp:{host}:{port}, {self._config.processes} agents "
            f"(pids {pids}) on ports {port + 1}-{port + self._config.processes}",
            flush=True,
        )
        if self._config.on_ready is not None:
            self._config.on_ready()

    def _state(self, states: Mapping[str, str], number: int) -> bool:
        return states.get(self._plan.agent_uri(number - 1)) == "active"

    def _check_started(self) -> None:
        if self._proxy is not None and self._proxy.done():
            tail = "\n".join(self._proxy_tail[-10:])
            raise ClusterError(f"Kamailio exited while starting:\n{tail}")
        for book in self._ledger.books():
            if book.exited:
                tail = "\n".join(book.stderr_tail[-10:])
                raise ClusterError(f"agent #{book.number} exited while starting:\n{tail}")

    # -- serve --------------------------------------------------------------------

    def _serve(self) -> None:
        total = self._config.calls
        while not self._stop.is_set():
            started, over = self._ledger.totals()
            if total is not None and over >= total:
                return
            if self._maybe_drain_first(started):
                continue
            self._watch_agents()
            crashed = self._crash_settled()
            if crashed is not None:
                self._errors.append(f"agent #{crashed} crashed: the run was stopped")
                return
            if not self._ledger.live():
                self._errors.append("every agent exited before the calls were done")
                return
            if self._proxy is not None and self._proxy.done():
                self._errors.append("Kamailio exited during the run")
                return
            self._ledger.wait(0.5 if len(self._noticed) == len(self._died_at) else 0.05)

    def _watch_agents(self) -> None:
        """Say when an agent takes its first call or dies; time how soon the proxy notices."""
        for book in self._ledger.books():
            if book.started and book.number not in self._announced:
                self._announced.add(book.number)
                say(f"agent #{book.number} took its first call")
            crashed = book.exited and book.number not in self._drained
            if crashed and book.number not in self._noticed:
                self._notice_death(book.number)

    def _crash_settled(self) -> int | None:
        """An agent that died undrained, once the proxy took it out (or gave up on that).

        A crash ends the run: the calls it lost are reported as cut off, the
        other agents are drained, and the cluster exits 1.
        """
        for number, died in sorted(self._died_at.items()):
            if number in self._drained:
                continue
            if number in self._noticed or time.monotonic() - died > _NOTICE_LIMIT_S:
                return number
        return None

    def _notice_death(self, number: int) -> None:
        try:
            states = parse_dispatcher_list(self._kamcmd_output("dispatcher.list"))
        except ClusterError:
            return
        if states.get(self._plan.agent_uri(number - 1)) in ("inactive", "trying", "disabled"):
            noticed = round(time.monotonic() - self._died_at[number], 3)
            self._noticed[number] = noticed
            say(f"agent #{number} died; the proxy took it out of rotation after {noticed} s")

    def _maybe_drain_first(self, started: int) -> bool:
        after = self._config.drain_after
        if after is None or 1 in self._drained or started < after:
            return False
        say(f"{started} calls answered: draining agent #1")
        self._drain([1])
        return True

    def _drain(self, numbers: list[int]) -> None:
        """Take agents out of rotation, then ask them to stop (SIGTERM)."""
        for number in numbers:
            self._set_state("d", self._plan.agent_uri(number - 1))
        for number in numbers:
            self._drained.add(number)
            pid = self._agents[number].info().pid
            if pid is not None and number in self._ledger.live():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    # -- stop ---------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Drain the agents still running, wait for their reports, stop Kamailio."""
        live = self._ledger.live()
        if live and self._proxy is not None and not self._proxy.done():
            with contextlib.suppress(ClusterError):
                self._set_state("d", "all")
        self._drain([n for n in live if n not in self._drained] or [])
        deadline = time.monotonic() + self._config.drain_timeout + _REPORT_GRACE_S
        for number, job in self._agents.items():
            if not _wait_job(job, max(0.0, deadline - time.monotonic())):
                self._errors.append(f"agent #{number} did not stop in time; it was killed")
                job.cancel()
        if self._proxy is not None:
            self._proxy.cancel()
            _wait_job(self._proxy, _KILL_GRACE_S + 2.0)

    # -- kamcmd -------------------------------------------------------------------

    def _set_state(self, state: str, address: str) -> None:
        self._kamcmd_output("dispatcher.set_state", state, "1", address)

    def _kamcmd_output(self, *command: str) -> str:
        job = self._bridge.run_process(
            kamcmd_args(self._kamcmd, self._directory, *command),
            kind="kamcmd",
            timeout=_KAMCMD_TIMEOUT_S,
        )
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - a timeout, or exec failed
            raise ClusterError(f"kamcmd {command[0]} failed: {exc}") from None
        if result.returncode != 0:
            raise ClusterError(f"kamcmd {command[0]} failed: {result.stderr!r}")
        return result.stdout.decode("utf-8", "replace")


def _wait_job(job: Job[ProcessResult], timeout: float) -> bool:
    """Wait up to *timeout* s for *job* to end, however it ends; whether it did."""
    try:
        job.exception(timeout=timeout)
    except TimeoutError:
        return False
    except Exception:  # noqa: BLE001 - cancelled: it ended too
        return True
    return True
