"""Turning the measurements into the table, the JSON file and the CDF plot."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import streams
from ._approaches import FLOOR
from ._plan import Measurement
from ._util import percentile

__all__ = ["as_json", "headline", "machine", "markdown", "plot_cdf", "summarize"]

BASE_RT = "roundtrip/run_coroutine_threadsafe/asyncio"
PACKAGES = (
    "bridge",
    "anyio",
    "janus",
    "structlog",
    "uvloop",
    "matplotlib",
    "prometheus_client",
    "opentelemetry-sdk",
)


# -- the machine ----------------------------------------------------------------------


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the numbers were measured on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": versions,
        "load_before": load_before,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- summarizing ----------------------------------------------------------------------


def summarize(plan: list[Measurement], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per measurement: round trips pooled over repetitions, other figures' medians."""
    summary: dict[str, Any] = {}
    for m in plan:
        reps = runs[m.id]
        if m.case == "roundtrip":
            pooled = sorted(x for rep in reps for x in rep["samples_us"])
            summary[m.id] = {
                "median_us": percentile(pooled, 50),
                "p99_us": percentile(pooled, 99),
                "samples": len(pooled),
                "rep_medians_us": [statistics.median(rep["samples_us"]) for rep in reps],
                "_pooled": pooled,
            }
        else:
            keys = reps[0].keys()
            entry = {k: _median([rep[k] for rep in reps]) for k in keys}
            entry["reps"] = reps
            summary[m.id] = entry
    return summary


def _median(values: list[Any]) -> Any:
    """The median; for counts, one of the values (never half a frame)."""
    if all(isinstance(v, int) for v in values):
        return statistics.median_low(values)
    return statistics.median(values)


def _ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else float("nan")


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what this run measured."""
    rows: list[dict[str, Any]] = []

    def check(
        what: str, mid: str, key: str, base: str | None, bkey: str, op: str, limit: float
    ) -> None:
        if mid not in summary or (base is not None and base not in summary):
            return
        value = summary[mid][key]
        ratio = _ratio(value, summary[base][bkey]) if base else None
        judged = value if ratio is None else ratio
        met = judged <= limit if op == "<=" else judged >= limit
        unit = "" if ratio is None else "x"
        rows.append(
            {
                "target": what,
                "measured": value,
                "key": key,
                "ratio": ratio,
                "goal": f"{op} {limit:g}{unit}",
                "met": met,
            }
        )

    for row in _TARGETS:
        check(*row)
    return rows


_RT_BRIDGE = "roundtrip/Bridge.call/asyncio"
_FF = "fire_and_forget/{}/asyncio"
_CH = "channel/{}/asyncio/{}"
_OPS = "ops/{}/asyncio/{}"
_PM = "process_map/{}/asyncio"
_PR = "process_run/run_process vs subprocess.run/asyncio"
#: (what, measurement, figure, baseline measurement or None, its figure, op, limit)
_TARGETS: list[tuple[str, str, str, str | None, str, str, float]] = [
    ("Bridge.call median round trip", _RT_BRIDGE, "median_us", BASE_RT, "median_us", "<=", 0.75),
    ("Bridge.call p99 round trip", _RT_BRIDGE, "p99_us", BASE_RT, "p99_us", "<=", 1.0),
    (
        "Bridge.call median on uvloop (vs stdlib on uvloop)",
        "roundtrip/Bridge.call/uvloop",
        "median_us",
        "roundtrip/run_coroutine_threadsafe/uvloop",
        "median_us",
        "<=",
        0.75,
    ),
    (
        "8-thread throughput",
        "throughput/Bridge.call/asyncio",
        "calls_per_s",
        "throughput/run_coroutine_threadsafe/asyncio",
        "calls_per_s",
        ">=",
        1.6,
    ),
    (
        "fire-and-forget wall time",
        _FF.format("Bridge.submit"),
        "wall_s",
        _FF.format("run_coroutine_threadsafe"),
        "wall_s",
        "<=",
        0.45 if sys.version_info < (3, 12) else 0.35,
    ),
    (
        "fire-and-forget peak bytes per job",
        _FF.format("Bridge.submit"),
        "bytes_per_job",
        None,
        "",
        "<=",
        1000.0,
    ),
    (
        "Bridge.map peak RSS growth (MiB)",
        "map_case/Bridge.map/asyncio",
        "rss_growth_mib",
        None,
        "",
        "<=",
        16.0,
    ),
    *[
        (
            f"channel {d}",
            _CH.format("Bridge.channel", d),
            "items_per_s",
            _CH.format("janus", d),
            "items_per_s",
            ">=",
            0.95,
        )
        for d in ("thread->loop", "loop->thread")
    ],
    (
        "tracing captured vs off",
        "tracing/events captured/asyncio",
        "calls_per_s",
        "tracing/tracing off/asyncio",
        "calls_per_s",
        ">=",
        0.75,
    ),
    *[
        (
            f"ops {mode}: {approach} vs plain",
            _OPS.format(approach, mode),
            "calls_per_s",
            _OPS.format("plain", mode),
            "calls_per_s",
            ">=",
            limit,
        )
        for mode in ("latency", "throughput")
        for approach, limit in (("history + metrics", 0.9), ("history + metrics + spans", 0.7))
    ],
    (
        "process_map throughput vs ProcessPoolExecutor.map",
        _PM.format("Bridge.process_map"),
        "items_per_s",
        _PM.format("ProcessPoolExecutor.map"),
        "items_per_s",
        ">=",
        0.8,
    ),
    (
        "process_map peak RSS growth (MiB)",
        _PM.format("Bridge.process_map"),
        "rss_growth_mib",
        None,
        "",
        "<=",
        32.0,
    ),
    ("run_process(['true']) / subprocess.run median", _PR, "ratio", None, "", "<=", 1.5),
    *[
        (
            f"telephony ({m} mode) p99 handoff (ms)",
            f"telephony/{m}/asyncio",
            "p99_ms",
            None,
            "",
            "<=",
            5.0,
        )
        for m in ("frame", "tick")
    ],
    *[
        (
            f"telephony ({m} mode) frames lost",
            f"telephony/{m}/asyncio",
            "frames_lost",
            None,
            "",
            "<=",
            0,
        )
        for m in ("frame", "tick")
    ],
    (
        "Bridge.iterate throughput (buffer=64) vs channel + job",
        "streams/Bridge.iterate/asyncio/throughput",
        "items_per_s",
        "streams/channel+job/asyncio/throughput",
        "items_per_s",
        ">=",
        1.0,
    ),
]


# -- markdown --------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _x(value: float, baseline: float) -> str:
    return f"{_ratio(value, baseline):.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _entries(summary: dict[str, Any], case: str) -> list[tuple[list[str], dict[str, Any]]]:
    return [(mid.split("/")[1:], s) for mid, s in summary.items() if mid.startswith(case + "/")]


def markdown(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """The results as a markdown document."""
    m = run["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# bridge benchmark results",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}",
        f"- Python: {m['python']}; {packages}",
        f"- Run: {run['mode']}, {run['reps']} repetitions interleaved, each measurement in a "
        f"fresh process; started {run['started']}, took {run['duration_s']} s; load average "
        f"before {_load(m['load_before'])}, after {_load(m['load_after'])}",
        "- Ratios are to the stdlib (or raw janus) baseline measured in the same run; "
        "figures are medians over the repetitions (round trips: over all pooled samples).",
        "",
        "## Targets",
        "",
    ]
    lines += _targets_table(summary)
    for title, section in _SECTIONS:
        lines += [f"## {title}", ""]
        lines += section(summary)
    return "\n".join(lines)


def headline(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README's headline: the targets table of this run, with its machine."""
    m = run["machine"]
    lines = [
        f"Measured by `make bench` on {m['cpu']} ({m['cores']} cores), {m['python']}, "
        f"{run['started']}; ratios are to the stdlib baseline of the same run.",
        "",
        *_targets_table(summary),
        "![Round-trip latency CDF](bench/results/latency_cdf.png)",
        "",
    ]
    return "\n".join(lines)


def _targets_table(summary: dict[str, Any]) -> list[str]:
    rows = []
    for t in targets(summary):
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        met = "yes" if t["met"] else "**no**"
        rows.append([t["target"], _num(t["measured"], 2), ratio, t["goal"], met])
    return _table(["target", "measured", "ratio", "goal", "met"], rows)


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _roundtrip(summary: dict[str, Any]) -> list[str]:
    base = summary.get(BASE_RT)
    rows = []
    for (approach, loop), s in _entries(summary, "roundtrip"):
        spread = " to ".join(_num(x) for x in (min(s["rep_medians_us"]), max(s["rep_medians_us"])))
        floor = summary.get(f"roundtrip/{FLOOR}/{loop}")
        rows.append(
            [
                approach,
                loop,
                _num(s["median_us"]),
                _x(s["median_us"], base["median_us"]),
                _x(s["median_us"], floor["median_us"]) if floor else "",
                _num(s["p99_us"]),
                _x(s["p99_us"], base["p99_us"]),
                spread,
                str(s["samples"]),
            ]
        )
    head = [
        "approach",
        "loop",
        "median us",
        "vs stdlib",
        "vs floor",
        "p99 us",
        "vs stdlib",
        "rep medians",
        "samples",
    ]
    return [
        "One sync thread: submit a trivial coroutine and wait for its value. The floor "
        "is `call_soon_threadsafe` starting a task whose done callback resolves a plain "
        "`concurrent.futures.Future` (no bookkeeping at all); *vs floor* compares with "
        "the floor on the same loop.",
        "",
        *_table(head, rows),
        "![Round-trip latency CDF](latency_cdf.png)",
        "",
    ]


def _throughput(summary: dict[str, Any]) -> list[str]:
    base = summary.get("throughput/run_coroutine_threadsafe/asyncio")
    rows = []
    for (approach, loop), s in _entries(summary, "throughput"):
        floor = summary.get(f"throughput/{FLOOR}/{loop}")
        rows.append(
            [
                approach,
                loop,
                _num(s["calls_per_s"]),
                _x(s["calls_per_s"], base["calls_per_s"]),
                _x(s["calls_per_s"], floor["calls_per_s"]) if floor else "",
            ]
        )
    return [
        "8 threads, each doing submit-and-wait round trips.",
        "",
        *_table(["approach", "loop", "calls/s", "vs stdlib", "vs floor"], rows),
    ]


def _burst(summary: dict[str, Any]) -> list[str]:
    base = summary.get("fire_and_forget/run_coroutine_threadsafe/asyncio")
    rows = []
    for case in ("fire_and_forget", "map_case"):
        for (approach, loop), s in _entries(summary, case):
            submit = _num(s["submit_s"], 2) if "submit_s" in s else "(lazy)"
            floor = summary.get(f"fire_and_forget/{FLOOR}/{loop}")
            per_job = s["rss_growth_mib"] * 1048576.0 / s["n"]
            rows.append(
                [
                    approach,
                    loop,
                    f"{s['n']:,}",
                    _num(s["wall_s"], 2),
                    _x(s["wall_s"], base["wall_s"]),
                    _x(s["wall_s"], floor["wall_s"]) if floor else "",
                    submit,
                    _num(s["rss_growth_mib"]),
                    _num(per_job, 0),
                ]
            )
    head = [
        "approach",
        "loop",
        "jobs",
        "wall s",
        "vs stdlib",
        "vs floor",
        "submitting s",
        "peak RSS growth MiB",
        "bytes per job",
    ]
    return [
        "One thread submits every job, then waits for all; `Bridge.map` pulls the same "
        "number of items from a generator (concurrency 16). The baseline is a list of "
        "`run_coroutine_threadsafe` futures, waited for with `concurrent.futures.wait`; "
        "bytes per job is the peak RSS growth over the number of jobs.",
        "",
        *_table(head, rows),
    ]


def _channel(summary: dict[str, Any]) -> list[str]:
    rows = []
    for (approach, loop, direction), s in _entries(summary, "channel"):
        base = summary[f"channel/janus/{loop}/{direction}"]
        rows.append(
            [
                direction,
                approach,
                loop,
                f"{s['n']:,}",
                _num(s["items_per_s"]),
                _x(s["items_per_s"], base["items_per_s"]),
            ]
        )
    return [
        "Small items (ints) through an unbounded queue; a raw janus queue on a plain "
        "loop thread is the baseline.",
        "",
        *_table(["direction", "approach", "loop", "items", "items/s", "vs janus"], rows),
    ]


def _tracing(summary: dict[str, Any]) -> list[str]:
    base = summary.get("tracing/tracing off/asyncio")
    rows = [
        [
            approach,
            loop,
            _num(s["calls_per_s"]),
            _x(s["calls_per_s"], base["calls_per_s"]),
            f"{s['events']:,}",
        ]
        for (approach, loop), s in _entries(summary, "tracing")
    ]
    return [
        "8-thread `Bridge.call` throughput with structlog not configured, and configured "
        "with a processor that counts and drops each event (three per job); the last row "
        "also sets `cache_logger_on_first_use=True`, as structlog advises for production.",
        "",
        *_table(["tracing", "loop", "calls/s", "vs off", "events"], rows),
    ]


def _telephony(summary: dict[str, Any]) -> list[str]:
    rows = []
    for (mode, loop), s in _entries(summary, "telephony"):
        rows.append(
            [
                mode,
                loop,
                f"{s['calls']:,}",
                _num(s["p50_ms"], 2),
                _num(s["p99_ms"], 2),
                _num(s["max_ms"], 2),
                f"{s['frames_sent']:,}",
                str(s["frames_lost"]),
                f"{s['frames_over_tick']:,}",
                _num(s["tick_lag_p99_ms"], 2),
                _num(s["cpu_percent_of_one_core"], 0),
            ]
        )
    head = [
        "mode",
        "loop",
        "calls",
        "p50 ms",
        "p99 ms",
        "max ms",
        "frames sent",
        "lost",
        "> 20 ms",
        "tick lag p99 ms",
        "CPU % of a core",
    ]
    return [
        "Each call sends a 160-byte frame every 20 ms from a media thread (a few media "
        "threads serve all calls) through a `Bridge.channel` to an async session on the "
        "loop, which sends a reply frame back through another channel. Latency: frame "
        "put to reply received. `frame` mode: one channel item per frame, handed over "
        "in batches (`put_many` per media tick, `aget_many`/`aput_many` in the loop's "
        "pump, `get_many` in the receiver); `frame-per-item`: the same items, one "
        "`put`/`get` each; `tick` mode: one item (a list) per media-thread tick.",
        "",
        *_table(head, rows),
    ]


def _ops(summary: dict[str, Any]) -> list[str]:
    rows = []
    for (approach, loop, mode), s in _entries(summary, "ops"):
        base = summary[_OPS.format("plain", mode)]
        latency = mode == "latency"
        rows.append(
            [
                mode,
                approach,
                loop,
                _num(s["calls_per_s"]),
                _x(s["calls_per_s"], base["calls_per_s"]),
                _num(s["median_us"]) if latency else "",
                _num(s["p99_us"]) if latency else "",
            ]
        )
    head = ["mode", "set-up", "loop", "calls/s", "vs plain", "median us", "p99 us"]
    return [
        "`Bridge.call` of a trivial coroutine from one thread (latency; calls/s is "
        "1 / median) and from 8 threads (throughput), on a plain bridge, with "
        "`history=1000` and `register_metrics()`, and with `instrument()` too (the "
        "OpenTelemetry SDK, a `BatchSpanProcessor` and an exporter that counts and "
        "drops the spans).",
        "",
        *_table(head, rows),
    ]


def _processes(summary: dict[str, Any]) -> list[str]:
    base = summary.get(_PM.format("ProcessPoolExecutor.map"))
    rows = [
        [
            approach,
            f"{s['n']:,}",
            _num(s["wall_s"], 2),
            _num(s["items_per_s"]),
            _x(s["items_per_s"], base["items_per_s"]) if base else "",
            _num(s["rss_growth_mib"]),
        ]
        for (approach, _loop), s in _entries(summary, "process_map")
    ]
    lines = [
        "A small CPU-bound function over items from a generator, chunks of 64, one "
        "forkserver worker per core. `ProcessPoolExecutor.map` submits every chunk at "
        "once; `process_map` pulls items as workers free up.",
        "",
        *_table(
            ["approach", "items", "wall s", "items/s", "vs executor", "peak RSS growth MiB"], rows
        ),
    ]
    pr = summary.get(_PR)
    if pr is not None:
        lines += [
            '`run_process(["true"]).result()` and `subprocess.run(["true"])` handed to a '
            "thread, alternating call by call in one process.",
            "",
            *_table(
                ["round trip", "median us", "p99 us", "calls"],
                [
                    [
                        "Bridge.run_process",
                        _num(pr["bridge_median_us"]),
                        _num(pr["bridge_p99_us"]),
                        f"{pr['n']:,}",
                    ],
                    [
                        "subprocess.run (thread)",
                        _num(pr["stdlib_median_us"]),
                        _num(pr["stdlib_p99_us"]),
                        f"{pr['n']:,}",
                    ],
                ],
            ),
            f"Ratio of the medians: {pr['ratio']:.2f}x (median over the repetitions).",
            "",
        ]
    return lines


_SECTIONS: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
    ("1. Round-trip latency", _roundtrip),
    ("2. Throughput, 8 threads", _throughput),
    ("3. Fire-and-forget and Bridge.map", _burst),
    ("4. Channel throughput", _channel),
    ("5. Tracing cost", _tracing),
    ("6. Telephony load", _telephony),
    ("7. Operations cost", _ops),
    ("8. Processes", _processes),
    ("9. Streams (Bridge.iterate)", streams.section),
]


# -- JSON and plot ----------------------------------------------------------------------


def as_json(run: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Everything but the raw round-trip samples (their quantiles instead)."""
    results = {}
    for mid, s in summary.items():
        entry = {k: v for k, v in s.items() if not k.startswith("_")}
        if "_pooled" in s:
            pooled = s["_pooled"]
            entry["quantiles_us"] = {str(q): percentile(pooled, q) for q in _QUANTILES}
        results[mid] = entry
    return {"run": run, "targets": targets(summary), "results": results}


_QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)


def plot_cdf(summary: dict[str, Any], path: Path, run: dict[str, Any]) -> None:
    """A PNG of the round-trip latency CDF per approach and loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors: dict[str, Any] = {}
    for (approach, loop), s in _entries(summary, "roundtrip"):
        pooled = s["_pooled"]
        n = len(pooled)
        step = max(1, n // 2000)
        xs = [*pooled[::step], pooled[-1]]
        ys = [*(i / n for i in range(0, n, step)), 1.0]
        color = colors.setdefault(approach, f"C{len(colors)}")
        ax.plot(
            xs,
            ys,
            color=color,
            linestyle="-" if loop == "asyncio" else "--",
            label=f"{approach} ({loop})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("round-trip latency (us, log scale)")
    ax.set_ylabel("fraction of round trips")
    m = run["machine"]
    ax.set_title(
        f"Round trip from one thread: {m['cpu']}, {m['cores']} cores, {m['python']}", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
