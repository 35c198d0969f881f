"""The driver: ``python -m bench [--smoke | --quick] [--reps N] [--out DIR] [--case NAME ...]``.

Runs every measurement of the plan in a fresh subprocess, repetition after
repetition, interleaved (A B C, A B C, ...), so that drift on a shared machine
hits every approach alike. Then writes ``results.md``, ``results.json`` and
``latency_cdf.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from ._plan import FULL, QUICK, SMOKE, Measurement, build_plan

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    args = _parse_args()
    if args.smoke and args.quick:
        raise SystemExit("--smoke and --quick: choose one")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = {"smoke": SMOKE, "quick": QUICK, "full": FULL}[mode]
    reps = args.reps if args.reps is not None else {"smoke": 1, "quick": 3, "full": 5}[mode]
    plan = build_plan(sizes, set(args.case) if args.case else None, quick=args.quick)
    if args.out is not None:
        out = Path(args.out)
    elif mode != "full":  # never overwrite the committed results
        out = Path(tempfile.mkdtemp(prefix=f"bridge-bench-{mode}-"))
    else:
        out = ROOT / "bench" / "results"
    machine = report.machine(load_before=os.getloadavg())
    started = time.time()
    runs: dict[str, list[dict[str, Any]]] = {m.id: [] for m in plan}
    for rep in range(reps):
        for number, measurement in enumerate(plan, 1):
            _progress(f"[rep {rep + 1}/{reps}] {number:2}/{len(plan)} {measurement.id}")
            runs[measurement.id].append(_run_child(measurement, args.child_timeout))
    machine["load_after"] = os.getloadavg()
    run = {
        "mode": mode,
        "reps": reps,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "sizes": sizes,
        "machine": machine,
    }
    summary = report.summarize(plan, runs)
    out.mkdir(parents=True, exist_ok=True)
    markdown = report.markdown(run, summary)
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(report.as_json(run, summary), indent=1) + "\n")
    (out / "headline.md").write_text(report.headline(run, summary))
    report.plot_cdf(summary, out / "latency_cdf.png", run)
    print(markdown)
    print(f"wrote results.md, results.json, headline.md and latency_cdf.png to {out}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the targets' cases only, smaller sizes, 3 repetitions: under 3 minutes "
        "(for the Python matrix); writes to a temporary directory unless --out",
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 5; quick 3; smoke 1)")
    parser.add_argument("--out", help="output directory (default bench/results; smoke: a temp dir)")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--child-timeout", type=float, default=900.0, help="seconds per process")
    return parser.parse_args()


def _run_child(measurement: Measurement, timeout: float) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench._child",
        measurement.case,
        measurement.approach,
        measurement.loop,
        json.dumps(measurement.params),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{measurement.id} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
