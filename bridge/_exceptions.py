"""The exceptions bridge raises.

Every class derives from :class:`BridgeError` and also from the builtin whose
meaning it shares, so code that only knows the standard library still catches
it::

    BridgeError (Exception)
    ├── BridgeClosed (RuntimeError)    the bridge no longer accepts work
    ├── WrongThread (RuntimeError)     a blocking call on the loop thread
    ├── DuplicateJob (KeyError)        a key already names an unfinished job
    ├── Overloaded                     no room for another job (backpressure)
    ├── JobTimeout (TimeoutError)      a job's deadline expired
    ├── JobCancelled (concurrent.futures.CancelledError)
    │                                  a job was cancelled before it finished
    └── ProcessFailed (subprocess.CalledProcessError)
                                       run_process(check=True): non-zero exit
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from typing import Any

__all__ = [
    "BridgeClosed",
    "BridgeError",
    "DuplicateJob",
    "JobCancelled",
    "JobTimeout",
    "Overloaded",
    "ProcessFailed",
    "WrongThread",
]


class BridgeError(Exception):
    """Base class of every error the bridge itself raises."""


class BridgeClosed(BridgeError, RuntimeError):
    """Raised when work is offered to a bridge that is shutting down or shut down."""


class WrongThread(BridgeError, RuntimeError):
    """Raised when a blocking call is made on the bridge's own loop thread.

    Blocking there would wait for the loop while holding it: a deadlock.
    """


class DuplicateJob(BridgeError, KeyError):
    """Raised when a key is already used by an unfinished job (``on_conflict="reject"``)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better unquoted.
        return str(self.args[0]) if self.args else ""


class Overloaded(BridgeError):
    """Raised when the bridge has no room for another job (``max_pending`` reached)."""


class JobTimeout(BridgeError, TimeoutError):
    """Raised when a job's deadline expired; its coroutine was cancelled."""


class JobCancelled(BridgeError, concurrent.futures.CancelledError):
    """Raised when a job was cancelled before it finished."""


class ProcessFailed(BridgeError, subprocess.CalledProcessError):
    """Raised when a ``run_process(..., check=True)`` child exits with a non-zero status.

    Attributes as for :class:`subprocess.CalledProcessError` (``returncode``,
    ``cmd``, ``output``/``stdout``, ``stderr``), plus ``pid``. The message names
    the program (``argv[0]``) only, never the other arguments, which may hold
    secrets; ``cmd`` still has them all.
    """

    def __init__(
        self,
        returncode: int,
        cmd: Any,
        output: bytes | None = None,
        stderr: bytes | None = None,
        pid: int | None = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.returncode, self.cmd, self.output, self.stderr, self.pid))

    def __str__(self) -> str:
        cmd = self.cmd
        program = cmd[0] if isinstance(cmd, (list, tuple)) and cmd else cmd
        name = os.fsdecode(program) if isinstance(program, (str, bytes, os.PathLike)) else "?"
        pid = "" if self.pid is None else f" (pid {self.pid})"
        return f"process {name!r}{pid} {exit_description(self.returncode)}"


def exit_description(returncode: int) -> str:
    """``"exited with status 2"`` or ``"was killed by SIGKILL"`` (a negative status)."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"
