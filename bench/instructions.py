"""Instructions per round trip, counted by callgrind: figures a busy machine cannot move.

``python -m bench.instructions [--python PATH ...] [--calls N] [--out FILE.md]``

Wall-clock ratios on a shared 2-core machine move by tens of per cent from run
to run; the number of machine instructions a round trip executes hardly
does (repeated runs agree within about 4 %: how many turns the loop takes
per round trip still depends on timing). For each interpreter and each approach
this runs the same program twice under ``valgrind --tool=callgrind``, once
with no measured round trips and once with ``--calls`` of them (both after the
same warm-up), and divides the difference by ``--calls``: the instructions of
one submit-and-wait of a trivial coroutine, on both threads (the caller's and
the loop's), the idle wake-ups included, start-up and shutdown excluded.

The approaches are the round-trip case's: ``asyncio.run_coroutine_threadsafe``
(the baseline), the floor (``call_soon_threadsafe`` starting a task whose done
callback resolves a ``concurrent.futures.Future``) and ``Bridge.call``, all on
asyncio. Needs ``valgrind`` (Debian: ``apt install valgrind``); each
interpreter must be able to import ``bridge`` (a venv with the project
installed, or run from the repository's root).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["count", "main"]

APPROACHES = ("run_coroutine_threadsafe", "floor", "Bridge.call")
_WARMUP = 300

#: The measured program: python -c PROGRAM APPROACH CALLS.
_PROGRAM = f"""
import asyncio, concurrent.futures, functools, sys, threading
approach, calls = sys.argv[1], int(sys.argv[2])
async def echo(value):
    return value
def run(fn):
    for i in range({_WARMUP} + calls):
        assert fn(i) == i
if approach == "Bridge.call":
    from bridge import Bridge
    with Bridge(name="instructions") as b:
        run(lambda value: b.call(echo, value))
    sys.exit(0)
loop = asyncio.new_event_loop()
thread = threading.Thread(target=loop.run_forever)
thread.start()
if approach == "run_coroutine_threadsafe":
    run(lambda value: asyncio.run_coroutine_threadsafe(echo(value), loop).result())
else:
    def resolve(future, task):
        future.set_result(task.result())
    def start(coro, future):
        loop.create_task(coro).add_done_callback(functools.partial(resolve, future))
    def submit(coro):
        future = concurrent.futures.Future()
        loop.call_soon_threadsafe(start, coro, future)
        return future
    run(lambda value: submit(echo(value)).result())
loop.call_soon_threadsafe(loop.stop)
thread.join()
loop.close()
"""


def _collected(python: str, approach: str, calls: int) -> int:
    """Instructions callgrind counted for one run of the program."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            "-c",
            _PROGRAM,
            approach,
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(found.group(1))


def count(python: str, approach: str, calls: int) -> int:
    """Instructions of one round trip of *approach* on interpreter *python*."""
    return (_collected(python, approach, calls) - _collected(python, approach, 0)) // calls


def _version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _table(rows: dict[str, dict[str, int]]) -> str:
    lines = [
        "| Python | "
        + " | ".join(APPROACHES)
        + " | floor / stdlib | Bridge.call / stdlib | Bridge.call / floor |",
        "|---" * (len(APPROACHES) + 4) + "|",
    ]
    for version, counts in rows.items():
        stdlib, floor, bridge = (counts[a] for a in APPROACHES)
        lines.append(
            f"| {version} | {stdlib:,} | {floor:,} | {bridge:,} | "
            f"{floor / stdlib:.2f}x | {bridge / stdlib:.2f}x | {bridge / floor:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Count, print the table, and write it to ``--out`` if given."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument(
        "--python",
        action="append",
        help="an interpreter to measure (repeatable; default: this one)",
    )
    parser.add_argument("--calls", type=int, default=2000, help="round trips measured")
    parser.add_argument("--out", type=Path, help="write the table here (Markdown)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt install valgrind)")
    rows: dict[str, dict[str, int]] = {}
    for python in args.python or [sys.executable]:
        version = _version(python)
        rows[version] = {a: count(python, a, args.calls) for a in APPROACHES}
        print(version, rows[version], flush=True)
    table = _table(rows)
    print(table)
    if args.out is not None:
        args.out.write_text(
            "Machine instructions per round trip (submit-and-wait of a trivial coroutine, "
            "both threads), counted by `python -m bench.instructions` under callgrind "
            f"({args.calls:,} round trips after {_WARMUP} of warm-up; asyncio).\n\n" + table + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
