"""The building's directory in a child process of its own, as in a real installation.

:class:`DirectoryProcess` runs the same :class:`~.directory.DirectoryService`
(the same HTTP server on 127.0.0.1) in a child Python process, so that the
service's own work takes nothing from the flow's process: not a core's worth of
scheduling, and above all not the GIL, which the flow's loop thread and the
stack's threads need to start a call's job without delay. The CLI uses it; the
tests that look inside the service (a subclass that watches a ring) keep the
in-process :class:`~.directory.DirectoryService`.

The parent talks to the child over its stdin and stdout, one line each way:
the child writes the base URL once the socket listens; ``stats`` gets one JSON
line of counters back; end-of-file on stdin stops the service, and the child
writes the last counters before it exits.

Run as ``python -m examples.telephony_flow.services.directory_process`` it is
that child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, Final

from examples.telephony_flow.services.directory import DirectoryService, DirectoryStats

__all__ = ["DirectoryProcess"]

_MODULE: Final = "examples.telephony_flow.services.directory_process"
#: The directory that holds the ``examples`` package (for the child's import path).
_ROOT: Final = str(Path(__file__).resolve().parents[3])
_STATS: Final = "stats"


class DirectoryProcess:
    """The directory's HTTP server in a child process; the API of ``DirectoryService``.

    ``start()`` returns the base URL once the child's socket listens; ``stop()``
    stops the service, waits for the child and keeps its last counters;
    ``stats()`` asks the child (or, once stopped, returns those last counters).
    Every method may be called from any thread; none may be called from the
    child's. No child outlives ``stop()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards the pipes and _last
        self._child: subprocess.Popen[str] | None = None
        self._last = DirectoryStats(0, 0, 0, 0, 0)
        self._url = ""

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121`` (empty until started)."""
        return self._url

    def start(self) -> str:
        """Start the child and return the base URL.

        Raises:
            OSError: the child could not start, or its address could not be bound.
            RuntimeError: it is already started.
        """
        with self._lock:
            if self._child is not None:
                raise RuntimeError("the directory process is already started")
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, path) if p)}
        command = [sys.executable, "-m", _MODULE, self._host, str(self._port)]
        # A session of its own: Ctrl+C in the terminal reaches the flow, which
        # winds its calls down over HTTP, not the service; the child ends when
        # its stdin closes, also when the parent dies.
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline().strip()
        if not first.startswith("http://"):
            _end(child)
            raise OSError(f"the directory service did not start: {first or 'no output'}")
        with self._lock:
            self._child, self._url = child, first
        return first

    def stats(self) -> DirectoryStats:
        """A snapshot of the child's counters. Any thread."""
        with self._lock:
            child = self._child
            if child is None or child.poll() is not None:
                return self._last
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.write(_STATS + "\n")
            child.stdin.flush()
            self._last = _parse(child.stdout.readline(), self._last)
            return self._last

    def stop(self) -> None:
        """Stop the service and wait for the child; idempotent."""
        with self._lock:
            child, self._child = self._child, None
            if child is not None:
                self._last = _end(child, self._last)


def _end(child: subprocess.Popen[str], last: DirectoryStats | None = None) -> DirectoryStats:
    """Close the child's stdin (it stops), read its last counters, wait for it."""
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.close()
    except OSError:
        pass  # it has gone already
    final = child.stdout.read()
    child.stdout.close()
    child.wait()
    fallback = DirectoryStats(0, 0, 0, 0, 0) if last is None else last
    return _parse(final.strip().rpartition("\n")[2], fallback)


def _parse(line: str, fallback: DirectoryStats) -> DirectoryStats:
    try:
        return DirectoryStats(**json.loads(line))
    except (ValueError, TypeError):
        return fallback


def _write(out: IO[str], stats: DirectoryStats) -> None:
    out.write(json.dumps(asdict(stats)) + "\n")
    out.flush()


def main(argv: list[str]) -> int:
    """The child: serve until stdin closes, answering ``stats`` lines."""
    host = argv[0] if argv else "127.0.0.1"
    service = DirectoryService(host, int(argv[1]) if len(argv) > 1 else 0)
    try:
        url = service.start()
    except OSError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print(url, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == _STATS:
                _write(sys.stdout, service.stats())
    finally:
        service.stop()
    _write(sys.stdout, service.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
