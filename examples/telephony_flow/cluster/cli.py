"""The ``cluster`` mode's command line.

::

    python -m examples.telephony_flow cluster --processes 3 --listen 127.0.0.1:5060 \\
        [--calls 24] [--dtmf-timeout 5] [--drain-after 8] [--drain-timeout 30] \\
        [--balance round-robin|least-loaded]

Kamailio listens on ``--listen``; agent #k (the ``sip`` mode) on the same IP,
port + k. ``ready`` is printed on stdout once the proxy has seen every agent
answer; progress goes to stderr; the summary table to stdout, its last line
the same as one JSON object. Exit status: 0 when nothing leaked and no call
was cut off, 1 otherwise (or when the cluster could not start), 2 for bad
arguments or a missing Kamailio or pjsua2; Ctrl+C or SIGTERM drains and
stops everything, then the process dies by that signal (130/143).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import sys
from collections.abc import Sequence

from examples.telephony_flow.arguments import positive_int, seconds

from .proxy import BALANCE
from .run import Cluster, ClusterConfig, ClusterError

__all__ = ["add_arguments", "main", "run_cli"]

PROG = "python -m examples.telephony_flow cluster"
DESCRIPTION = "The intercom flow on N user-agent processes behind a Kamailio proxy."
_SIP_HINT = "pjsua2 is missing: pip install -e '.[sip]' (the sip extra, PyPI pjsua2-python)"


def _address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be IPv4:PORT, e.g. 127.0.0.1:5060, not {text!r}"
        ) from None
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"must end with a port from 1 to 65535, not {text!r}")
    return host, int(port_text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the cluster's options to *parser* (its own, or the example's subcommand)."""
    parser.add_argument(
        "--processes", type=positive_int, default=3, metavar="N", help="user-agent processes"
    )
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 5060),
        metavar="IP:PORT",
        help="the proxy's address; agent #k listens on PORT+k",
    )
    parser.add_argument(
        "--calls", type=positive_int, default=None, help="stop after N calls (default: Ctrl+C)"
    )
    parser.add_argument("--dtmf-timeout", type=seconds, default=5.0, metavar="S")
    parser.add_argument("--resident-timeout", type=seconds, default=5.0, metavar="S")
    parser.add_argument(
        "--drain-after",
        type=positive_int,
        default=None,
        metavar="K",
        help="drain agent #1 once K calls were answered in the cluster",
    )
    parser.add_argument(
        "--drain-timeout",
        type=seconds,
        default=30.0,
        metavar="S",
        help="how long a draining agent lets its calls go on",
    )
    parser.add_argument("--balance", choices=sorted(BALANCE), default="round-robin")


def _config(args: argparse.Namespace) -> ClusterConfig:
    return ClusterConfig(
        listen=args.listen,
        processes=args.processes,
        calls=args.calls,
        dtmf_timeout=args.dtmf_timeout,
        resident_timeout=args.resident_timeout,
        drain_after=args.drain_after,
        drain_timeout=args.drain_timeout,
        balance=args.balance,
    )


def run_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the cluster for parsed *args*; return the exit status.

    **Thread safety:** the main thread (signals drain the cluster through
    ``bridge.handle_signals``).
    """
    port = args.listen[1]
    if port + args.processes > 65535:
        parser.error(f"argument --listen: ports {port + 1}-{port + args.processes} do not exist")
    if importlib.util.find_spec("pjsua2") is None:
        print(f"{PROG}: error: {_SIP_HINT}", file=sys.stderr)
        return 2
    try:
        cluster = Cluster(_config(args))
    except FileNotFoundError as exc:  # Kamailio
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = cluster.run()
        summary.print()
    except ClusterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.done()
    return 0 if summary.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m examples.telephony_flow.cluster``: parse *argv*, run, return the status."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv), parser)
