"""The Python matrix: one table of the targets from several quick runs.

``python -m bench.matrix OUT.md [LABEL=]DIR [...]``: each DIR holds the
``results.json`` of one ``python -m bench --quick --out DIR`` run, made with
one Python (``make bench-quick`` per interpreter); a column is named after the
run's Python, or LABEL. The table has one column
per Python; each cell is the ratio (or figure) of that run and whether it
meets the goal. A ratio that holds on one Python and not on another shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "table"]

_FLOOR = "floor: call_soon_threadsafe + Future"
#: Rows that put the floor beside the targets: (row, measurement, over, figure).
_FLOOR_ROWS = [
    (
        "floor median round trip vs stdlib (asyncio)",
        f"roundtrip/{_FLOOR}/asyncio",
        "roundtrip/run_coroutine_threadsafe/asyncio",
        "median_us",
    ),
    (
        "Bridge.call median round trip vs floor (asyncio)",
        "roundtrip/Bridge.call/asyncio",
        f"roundtrip/{_FLOOR}/asyncio",
        "median_us",
    ),
    (
        "8-thread throughput, floor vs stdlib (asyncio)",
        f"throughput/{_FLOOR}/asyncio",
        "throughput/run_coroutine_threadsafe/asyncio",
        "calls_per_s",
    ),
    (
        "fire-and-forget wall, floor vs stdlib (asyncio)",
        f"fire_and_forget/{_FLOOR}/asyncio",
        "fire_and_forget/run_coroutine_threadsafe/asyncio",
        "wall_s",
    ),
]


def _floor_cell(run: dict[str, Any], mid: str, over: str, key: str) -> str:
    results = run["results"]
    if mid not in results or over not in results:
        return ""
    return f"{results[mid][key] / results[over][key]:.2f}x"


def _cell(target: dict[str, Any]) -> str:
    value = target["ratio"] if target["ratio"] is not None else target["measured"]
    text = f"{value:.2f}x" if target["ratio"] is not None else f"{value:,.2f}"
    return text if target["met"] else f"**{text}**"


def table(runs: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    """Markdown: one row per target, one column per run (bold: goal not met)."""
    pythons = labels or [run["run"]["machine"]["python"] for run in runs]
    names: list[str] = []
    goals: dict[str, str] = {}
    cells: dict[tuple[str, int], str] = {}
    for column, run in enumerate(runs):
        for target in run["targets"]:
            name = target["target"]
            if name not in goals:
                names.append(name)
            goals[name] = target["goal"]  # the fire-and-forget goal depends on the Python
            cells[name, column] = f"{_cell(target)} ({target['goal']})"
    lines = [
        "| target | " + " | ".join(pythons) + " |",
        "|---|" + "---|" * len(pythons),
    ]
    for name in names:
        row = [cells.get((name, column), "") for column in range(len(runs))]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    for name, mid, over, key in _FLOOR_ROWS:
        row = [_floor_cell(run, mid, over, key) for run in runs]
        lines.append(f"| *{name}* | " + " | ".join(row) + " |")
    loads = "; ".join(
        f"{name}: load {run['run']['machine']['load_before'][0]:.2f}"
        f" -> {run['run']['machine']['load_after'][0]:.2f}, {run['run']['duration_s']} s,"
        f" started {run['run']['started']}"
        for name, run in zip(pythons, runs, strict=True)
    )
    return "\n".join(
        [
            "# Quick mode on every supported Python",
            "",
            "`python -m bench --quick` (3 repetitions interleaved, fresh process per "
            "measurement) once per interpreter, one after the other on the same machine. "
            "Each cell: this run's ratio to its own baseline (figure where there is none), "
            "then the goal; **bold** misses it. The rows in italics put the floor "
            "(`call_soon_threadsafe` + `concurrent.futures.Future`) beside them.",
            "",
            *lines,
            "",
            f"Runs (1-minute load average before -> after, duration): {loads}.",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write(__doc__ or "")
        return 2
    out, specs = Path(argv[0]), argv[1:]
    runs, labels = [], []
    for spec in specs:
        label, _, directory = spec.rpartition("=")
        run = json.loads((Path(directory) / "results.json").read_text())
        runs.append(run)
        labels.append(label or run["run"]["machine"]["python"])
    out.write_text(table(runs, labels))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
