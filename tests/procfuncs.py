"""Module-level functions the worker-process tests run (workers import them by name)."""

from __future__ import annotations

import os


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def fail_at_5000(x: int) -> int:
    return fail_on(x, 5000)


def boom(message: str) -> None:
    raise ValueError(message)


def pid() -> int:
    return os.getpid()


def gated(started: str, gate: str) -> int:
    """Tell the test (through FIFO *started*) that it runs, then block until *gate* is opened."""
    with open(started, "w") as fifo:
        fifo.write(str(os.getpid()))
    with open(gate) as fifo:
        fifo.read()
    return os.getpid()
