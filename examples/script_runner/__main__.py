"""The command line: ``python -m examples.script_runner [--host H] [--port P] [--token T]``.

Binds 127.0.0.1:8000 by default. The token comes from ``--token``, else from
the environment variable ``SCRIPT_RUNNER_TOKEN``, else a random one is made
and printed. Ctrl+C or SIGTERM stops the server; the bridge then shuts down,
which stops and reaps every script still running, and says which it stopped.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from .app import SCRIPTS_DIR, TOKEN_ENV, create_app

PROG = "python -m examples.script_runner"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (8000)")
    parser.add_argument(
        "--token", default=None, help=f"the API token (default: ${TOKEN_ENV}, else random)"
    )
    return parser.parse_args(argv)


def _stop(signum: int, frame: FrameType | None) -> None:
    # SIGTERM ends the server as Ctrl+C does, so the bridge shuts down below.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    app = create_app(token)
    runner = app.extensions["script_runner"]
    base = f"http://{args.host}:{args.port}"
    shown = "$TOKEN"
    if not (args.token or os.environ.get(TOKEN_ENV)):
        print(f"token: {token}", flush=True)
        shown = token
    print(f"scripts from {SCRIPTS_DIR}: {', '.join(runner.scripts)}", flush=True)
    print(f"try: curl -H 'Authorization: Bearer {shown}' {base}/scripts", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        # No drain: the scripts still running are stopped now, and reaped.
        report = runner.bridge.shutdown(timeout=0)
        for info in report.cancelled + report.stuck:
            print(f"stopped {info.key} (pid {info.pid}): {info.error}", file=sys.stderr)
        print(f"bridge shut down in {report.duration:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
