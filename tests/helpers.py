"""Small helpers shared by test modules (import them: ``from helpers import ...``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

import bridge

#: The directory that holds the ``bridge`` package the tests import.
PACKAGE_ROOT = str(Path(bridge.__file__).resolve().parent.parent)


class Recorder:
    """A structlog processor that keeps every event (thread-safe) and drops it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, _: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        with self._lock:
            self.events.append({**event_dict, "log_level": method})
        raise structlog.DropEvent

    def of(self, job: Any) -> list[dict[str, Any]]:
        """The events of *job* (a ``Job``), in order."""
        with self._lock:
            return [e for e in self.events if e.get("job_id") == job.id]

    def names(self, job_id: int | None = None) -> list[str]:
        """The events' names (of job *job_id*, if given), in order."""
        with self._lock:
            return [e["event"] for e in self.events if job_id is None or e.get("job_id") == job_id]


class Watched:
    """An async callable that runs until cancelled and records what happened to it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.got_cancelled = threading.Event()
        self.unwound = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.got_cancelled.set()
            raise
        finally:
            self.unwound.set()


def run_script(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run *script* in a fresh interpreter with *args*; return its ``RESULT`` JSON.

    The script dumps every thread's stack and exits 5 s before *timeout*, so a
    hang fails the test with the stacks that show where it hangs; the timeout
    itself is the last resort.
    """
    dump = f"import faulthandler; faulthandler.dump_traceback_later({timeout - 5}, exit=True)\n"
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", dump + textwrap.dedent(script), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired as exc:
        hung: subprocess.TimeoutExpired | None = exc
    else:
        hung = None
    if hung is not None:
        pytest.fail(f"the subprocess hung for {timeout} s\nstdout: {hung.stdout!r}")
    assert done.returncode == 0, f"the subprocess failed ('Timeout': it hung)\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line\nstdout: {done.stdout}\nstderr: {done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def hold(b: bridge.Bridge, **options: Any) -> Any:
    """Submit a job that runs until cancelled; return it once its coroutine runs."""
    started = threading.Event()

    async def held() -> None:
        started.set()
        await asyncio.Event().wait()

    job = b.submit(held, **options)
    assert started.wait(10), "the held job did not start"
    return job
