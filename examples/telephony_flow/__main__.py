"""The command line: ``python -m examples.telephony_flow [simulate|sip] ...``.

::

    python -m examples.telephony_flow simulate --calls 200 --concurrency 50 [--seed N] [--legacy]
    python -m examples.telephony_flow sip --listen 127.0.0.1:5070 [--max-calls N] [--dtmf-timeout S]
        [--events] [--drain-timeout S]
    python -m examples.telephony_flow cluster --processes 3 --listen 127.0.0.1:5060 [--calls N]
        [--dtmf-timeout S] [--drain-after K]   (see examples/telephony_flow/cluster/)

Both modes take ``--ops IP:PORT`` (the operations dashboard and HTTP API of
``bridge.ops`` during the run, on a loopback address, port 0 for any; its URL,
token included, is printed once to stdout) and ``--hold`` (once the calls have
ended, keep the bridge and its dashboard up until Ctrl+C, then shut down and
print the summary).

The ``sip`` mode drains on SIGTERM or Ctrl+C (``handle_signals`` with a
:class:`~.cluster.agent.Drain`): new calls get 503, calls in progress go on
until the flow ends them (or ``--drain-timeout``), then the summary is
printed and the process exits 0 (1 if a call was cut off or something
leaked). ``--events`` writes one JSON line per call start and end on stdout.

Progress goes to stderr; the summary table to stdout, its last line the same
summary as one JSON object. The exit status is 0 only when nothing leaked (no
job, thread or HTTP connection outlived the run, no coroutine was left
un-awaited) and no call failed; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TextIO

import structlog

import bridge as bridge_module
from bridge import Bridge

from .arguments import positive_int, seconds
from .cluster import cli as cluster_cli
from .cluster.agent import Drain
from .flow import FlowConfig, make_bridge
from .legacy import run_legacy
from .runner import run_bridge
from .services.directory_process import DirectoryProcess
from .stacks.simulate import SimulatedTelephony
from .summary import (
    Progress,
    Summary,
    latency_summary,
    os_threads,
    outcome_counts,
    settle_threads,
)
from .telephony import Telephony

PROG = "python -m examples.telephony_flow"


class _Flow(Protocol):
    def calls_ended(self) -> int: ...
    def wait_calls(self, count: int, timeout: float | None = None) -> bool: ...


# -- arguments ----------------------------------------------------------------------


def _listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be IP:PORT with an IP address, e.g. 127.0.0.1:5070, not {text!r}"
        ) from None
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"must end with a port from 1 to 65535, not {text!r}")
    return host, int(port_text)


def _ops_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be IP:PORT with an IP address, e.g. 127.0.0.1:8765, not {text!r}"
        ) from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(
            f"must be a loopback address (127.0.0.1 or [::1]), not {host!r}: the example "
            "serves the dashboard to this machine only"
        )
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"must end with a port from 0 (any) to 65535, not {text!r}"
        )
    return host, int(port_text)


_DTMF = "seconds the visitor has to type the apartment number"
_RING = "seconds the resident has to answer"
_OPS = "serve the operations dashboard on this loopback IP:PORT during the run (port 0: any)"
_EVENTS = "write one JSON line per call start and end on stdout (for the cluster)"
_DRAIN = "on SIGTERM or Ctrl+C, how long calls in progress may go on before they are cut off"
_HOLD = "with --ops: once the calls have ended, keep the dashboard up until Ctrl+C"


def _add_ops_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=_ops_address, default=None, metavar="IP:PORT", help=_OPS)
    parser.add_argument("--hold", action="store_true", help=_HOLD)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The intercom flow on bridge: a visitor calls, the bot asks for the "
        "apartment, rings the resident and opens the door or apologises.",
    )
    modes = parser.add_subparsers(dest="mode", metavar="{simulate,sip,cluster}")
    sim = modes.add_parser("simulate", help="simulated calls, no network peer (the default)")
    sim.add_argument("--calls", type=positive_int, default=200, help="calls in total")
    sim.add_argument("--concurrency", type=positive_int, default=50, help="calls at once")
    sim.add_argument("--seed", type=int, default=0, help="seeds the visitors' behaviour")
    sim.add_argument(
        "--legacy", action="store_true", help="the original thread+asyncio.run pattern"
    )
    sim.add_argument("--dtmf-timeout", type=seconds, default=1.5, metavar="S", help=_DTMF)
    sim.add_argument("--resident-timeout", type=seconds, default=1.5, metavar="S", help=_RING)
    sim.add_argument("--trace", metavar="FILE", help="write the structlog trace (JSON lines)")
    _add_ops_arguments(sim)
    sip = modes.add_parser("sip", help="a real SIP UA (pjsua2) answering calls")
    sip.add_argument("--listen", type=_listen, default=("127.0.0.1", 5070), metavar="IP:PORT")
    sip.add_argument(
        "--max-calls", type=positive_int, default=None, help="exit after N calls have ended"
    )
    sip.add_argument("--dtmf-timeout", type=seconds, default=5.0, metavar="S", help=_DTMF)
    sip.add_argument("--resident-timeout", type=seconds, default=5.0, metavar="S", help=_RING)
    sip.add_argument("--trace", metavar="FILE", help="write the structlog trace (JSON lines)")
    sip.add_argument("--events", action="store_true", help=_EVENTS)
    sip.add_argument("--drain-timeout", type=seconds, default=30.0, metavar="S", help=_DRAIN)
    _add_ops_arguments(sip)
    cluster = modes.add_parser("cluster", help=cluster_cli.DESCRIPTION)
    cluster_cli.add_arguments(cluster)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse *argv*; ``simulate`` when no mode is named. Exits 2 on bad input."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "simulate")
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.mode == "cluster":
        return args
    if args.hold and args.ops is None:
        parser.error("argument --hold: needs --ops (it keeps the dashboard up)")
    if args.ops is not None and getattr(args, "legacy", False):
        parser.error("argument --ops: the legacy mode has no bridge to show")
    return args


# -- logging ------------------------------------------------------------------------


@contextlib.contextmanager
def _logging(trace: TextIO | None) -> Iterator[None]:
    """structlog for the run: the trace file at debug level, or warnings to stderr."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    if trace is not None:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(default=repr),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.WriteLoggerFactory(trace),
        )
    else:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


# -- the run ------------------------------------------------------------------------


def _wait_for(flow: _Flow, total: int | None, stop: threading.Event) -> bool:
    """Block until *total* calls have ended (forever if ``None``), Ctrl-C or *stop*.

    Returns whether it was interrupted.
    """
    try:
        while not flow.wait_calls(total or sys.maxsize, timeout=0.1):
            if stop.is_set():  # a signal drained the calls
                return True
    except KeyboardInterrupt:
        print("interrupted: stopping", file=sys.stderr)
        return True
    return False


class _Dashboard:
    """``--ops``: the bridge's operations dashboard while the flow runs.

    The server runs on a thread of its own and stops with the bridge's
    ``shutdown()``; ``--hold`` waits for Ctrl+C before the flow lets the
    bridge shut down.
    """

    def __init__(self, address: tuple[str, int], hold: bool, stop: threading.Event) -> None:
        self._address = address
        self._hold = hold
        self._stop = stop  # a signal's drain ends the hold
        self.interrupted = False  # Ctrl+C during the run: no hold then

    @contextlib.contextmanager
    def session(self, bridge: Bridge) -> Iterator[None]:
        host, port = self._address
        try:
            server = bridge.serve_ops(host=host, port=port)
        except OSError as exc:
            raise _CannotServe(
                f"argument --ops: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        print(f"dashboard: {server.url}", flush=True)  # the one place the token is shown
        yield
        if self._hold and not self.interrupted:
            where = server.url.partition("?")[0]
            print(f"calls done: the dashboard stays up at {where} until Ctrl+C", file=sys.stderr)
            try:
                while not self._stop.wait(3600):
                    pass
            except KeyboardInterrupt:
                print("interrupted: shutting down", file=sys.stderr)


class _CannotServe(Exception):
    """The dashboard's address cannot be used (a port in use)."""


def _make_stack(
    args: argparse.Namespace,
) -> tuple[SimulatedTelephony | None, Callable[[Bridge], Telephony], int | None]:
    """The simulated stack (if simulating), the stack given the run's bridge, the calls."""
    if args.mode == "sip":
        from .stacks.sip import SipTelephony  # needs pjsua2: imported only here

        host, port = args.listen
        return None, lambda bridge: SipTelephony(host, port, bridge=bridge), args.max_calls
    sim = SimulatedTelephony(args.calls, args.concurrency, seed=args.seed)
    return sim, lambda _bridge: sim, args.calls


def _wait_closed(directory: DirectoryProcess, timeout: float = 2.0) -> int:
    """Give the server a moment to see closed clients; return the connections still open."""
    deadline = time.monotonic() + timeout
    while directory.stats().open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    return directory.stats().open_connections


def _drained_run(
    args: argparse.Namespace, config: FlowConfig, drain: Drain | None
) -> tuple[Bridge | None, Callable[[], None]]:
    """For the SIP agent: its bridge, with ``handle_signals`` draining it, and the undo.

    Installed before the run measures its threads (the signal helper is one).
    """
    if drain is None or threading.current_thread() is not threading.main_thread():
        return None, lambda: None
    bridge = make_bridge(config)
    return bridge, bridge_module.handle_signals(bridge, on_signal=drain, timeout=5.0)


def run(args: argparse.Namespace, drain: Drain | None = None) -> Summary:
    """Run one mode as *args* say and measure it; *drain* handles signals (``sip``)."""
    config = FlowConfig(dtmf_timeout=args.dtmf_timeout, resident_timeout=args.resident_timeout)
    legacy = bool(getattr(args, "legacy", False))
    bridge, restore = _drained_run(args, config, drain)
    try:
        return _run(args, config, legacy, bridge, drain)
    finally:
        restore()


def _run(
    args: argparse.Namespace,
    config: FlowConfig,
    legacy: bool,
    bridge: Bridge | None,
    drain: Drain | None,
) -> Summary:
    baseline = os_threads()
    began = time.monotonic()
    sim, make_stack, total = _make_stack(args)
    peak = [baseline]
    stop = threading.Event() if drain is None else drain.stop
    dashboard = None if args.ops is None else _Dashboard(args.ops, args.hold, stop)
    wrap = None if drain is None else drain.wrapper(sys.stdout if args.events else None)

    def until(flow: _Flow) -> None:
        with Progress(flow.calls_ended, total) as progress:
            interrupted = _wait_for(flow, total, stop)
        peak[0] = progress.peak
        if dashboard is not None:
            dashboard.interrupted = interrupted

    directory = DirectoryProcess()  # its own process: its work takes none of our GIL
    url = directory.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if legacy:
                assert sim is not None  # --legacy is a simulate option
                report = run_legacy(sim, url, config, until)
            else:
                session = None if dashboard is None else dashboard.session
                report = run_bridge(
                    make_stack, url, config, until, session=session, bridge=bridge, wrap_events=wrap
                )
            gc.collect()  # a dropped coroutine warns when it is collected
    finally:
        open_connections = _wait_closed(directory)
        directory.stop()
    never_awaited = [w for w in caught if "was never awaited" in str(w.message)]
    if never_awaited:
        report.notes.append(f"{never_awaited[0].category.__name__}: {never_awaited[0].message}")
    sim_stats = None if sim is None else sim.stats()
    report.notes.append("stack callbacks ran on: " + ", ".join(report.callback_threads))
    return Summary(
        mode="legacy" if legacy else "bridge",
        stack=args.mode,
        calls=sum(report.outcomes.values()),
        outcomes=outcome_counts(report.outcomes),
        latency_ms=latency_summary(report.latencies),
        latency_samples=len(report.latencies),
        first_frame_ms=latency_summary(report.first_frame),
        first_frame_samples=len(report.first_frame),
        frames_played=report.frames_played,
        frames_after_hangup=report.frames_after_hangup,
        prompts_stopped=report.prompts_stopped,
        cancelled_visitor_left=report.cancelled_visitor_left,
        jobs_leaked=report.jobs_leaked,
        threads_leaked=settle_threads(baseline),
        threads_peak=peak[0],
        threads_started=report.threads_started,
        http_connections_open=open_connections,
        never_awaited=len(never_awaited),
        loop_errors=report.loop_errors,
        late_operations=None if sim_stats is None else sim_stats.late_operations,
        callback_threads=report.callback_threads,
        errors=report.errors,
        duration_s=round(time.monotonic() - began, 3),
        notes=report.notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = parse_args(argv)
    if args.mode == "cluster":
        return cluster_cli.run_cli(args, build_parser())
    trace: TextIO | None = None
    if args.trace:
        try:
            trace = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(
                f"{PROG}: error: argument --trace: cannot write {args.trace!r}: {exc}",
                file=sys.stderr,
            )
            return 2
    drain = Drain(args.drain_timeout) if args.mode == "sip" else None
    status = 1
    try:
        with _logging(trace):
            try:
                status = _run_and_print(args, drain)
            finally:
                if drain is not None:  # a signal's drain ends the process with it,
                    drain.report(status)
                    drain.hold()  # while the logging is still set up
    finally:
        if trace is not None:
            trace.close()
    return status


def _run_and_print(args: argparse.Namespace, drain: Drain | None) -> int:
    try:
        summary = run(args, drain)
    except (ImportError, _CannotServe) as exc:  # ImportError: the ops or sip extra
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    summary.print()
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
