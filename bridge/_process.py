"""Subprocess jobs: the engine behind :meth:`Bridge.run_process`.

This module checks a ``run_process`` call on the submitting thread
(:func:`check_spec`) and holds the job's coroutine (:func:`run_child`). That
coroutine starts one child on the bridge's loop, in a session (and process
group) of its own, stdin from ``/dev/null`` unless *input* is given
(``_child.py``); it captures stdout and stderr up to ``max_output`` bytes each
and calls ``on_line`` on the loop thread (``_output.py``), and ends the child's
whole group whenever the job ends early (cancel, deadline, ``replace``,
shutdown): SIGTERM, then SIGKILL after ``kill_grace``. The job resolves only
once the child is reaped and its group is empty; after a normal exit,
processes left in the group are ended the same way (unless
``kill_group_on_exit=False``). The message of the job's ``JobCancelled`` or
``JobTimeout`` says how the child ended.

The job is told its child's pid and program through a :class:`JobSlot`
(the job does not exist yet when its coroutine function is chosen). Live
groups are listed in the bridge's :class:`~bridge._children.ChildGroups`, which
shutdown consults.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from ._child import Child, ProcessSpec
from ._children import ChildGroups
from ._exceptions import ProcessFailed
from ._job import Job
from ._output import LINE_LIMIT, OnLine

__all__ = ["LINE_LIMIT", "JobSlot", "ProcessResult", "ProcessSpec", "check_spec", "run_child"]


@dataclass(frozen=True)
class ProcessResult:
    """What :meth:`Bridge.run_process` returns for a child that exited by itself."""

    #: The arguments as given (``argv``).
    args: tuple[str | bytes | os.PathLike[str] | os.PathLike[bytes], ...]
    #: The exit status; negative ``-N`` when killed by signal N.
    returncode: int
    #: Standard output, the first ``max_output`` bytes.
    stdout: bytes
    #: Standard error, the first ``max_output`` bytes.
    stderr: bytes
    #: The child's process id (it no longer exists).
    pid: int
    #: Seconds from starting the child to the end of the job's group.
    duration: float
    #: Whether output beyond ``max_output`` was discarded (either stream).
    truncated: bool

    def check_returncode(self) -> None:
        """Raise :class:`~bridge.ProcessFailed` if the exit status is non-zero."""
        if self.returncode:
            raise ProcessFailed(
                self.returncode, list(self.args), self.stdout, self.stderr, self.pid
            ) from None


@final
class JobSlot:
    """Where a process job's coroutine leaves its child's pid for the job.

    The facade attaches the job after ``submit()`` returns, which may be after
    the coroutine has started the child; whichever comes second copies the
    fields. One lock guards the three fields.
    """

    __slots__ = ("_job", "_lock", "_pid", "_program")

    def __init__(self, program: str) -> None:
        self._lock = threading.Lock()  # guards _job and _pid (submitter and loop thread)
        self._job: Job[Any] | None = None
        self._pid: int | None = None
        self._program = program

    def attach(self, job: Job[Any]) -> None:
        with self._lock:  # pairs with set_pid
            self._job = job
            job._program = self._program
            job._pid = self._pid

    def set_pid(self, pid: int) -> None:
        with self._lock:  # pairs with attach
            self._pid = pid
            if self._job is not None:
                self._job._pid = pid


def check_spec(
    args: object,
    cwd: object,
    env: object,
    input: object,
    check: object,
    max_output: object,
    kill_grace: object,
    kill_group_on_exit: object,
    on_line: object,
) -> ProcessSpec:
    """Check a ``run_process`` call's arguments; raise ``TypeError``/``ValueError``."""
    argv = _check_args(args)
    if cwd is not None and not isinstance(cwd, (str, bytes, os.PathLike)):
        raise TypeError(f"cwd must be str, bytes, path-like or None, not {type(cwd).__name__}")
    return ProcessSpec(
        args=argv,
        program=os.fsdecode(argv[0]),
        cwd=cwd,
        env=_check_env(env),
        input=_check_input(input),
        check=bool(check),
        max_output=_check_max_output(max_output),
        kill_grace=_check_grace(kill_grace),
        kill_group_on_exit=bool(kill_group_on_exit),
        on_line=_check_on_line(on_line),
    )


def _check_args(args: object) -> tuple[Any, ...]:
    if isinstance(args, (str, bytes, os.PathLike)) or not isinstance(args, Sequence):
        raise TypeError(
            f"args must be a list of arguments (str, bytes or path-like), "
            f"not {type(args).__name__}; e.g. ['ls', '-l']"
        )
    argv = tuple(args)
    if not argv:
        raise ValueError("args must not be empty: the first one names the program")
    for index, arg in enumerate(argv):
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise TypeError(
                f"args[{index}] must be str, bytes or path-like, not {type(arg).__name__}"
            )
    return argv


def _check_env(env: object) -> dict[Any, Any] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping or None, not {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, (str, bytes)) or not isinstance(value, (str, bytes)):
            raise TypeError("env must map str (or bytes) names to str (or bytes) values")
    return dict(env)


def _check_input(data: object) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"input must be bytes, str or None, not {type(data).__name__}")


def _check_max_output(max_output: object) -> int:
    if isinstance(max_output, bool) or not isinstance(max_output, int):
        raise TypeError(f"max_output must be an int, not {type(max_output).__name__}")
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, not {max_output}")
    return max_output


def _check_grace(kill_grace: object) -> float:
    if isinstance(kill_grace, bool) or not isinstance(kill_grace, (int, float)):
        raise TypeError(f"kill_grace must be a number of seconds, not {kill_grace!r}")
    if not math.isfinite(kill_grace) or kill_grace < 0:
        raise ValueError(f"kill_grace must be finite and >= 0, not {kill_grace!r}")
    return float(kill_grace)


def _check_on_line(on_line: object) -> OnLine | None:
    if on_line is not None and not callable(on_line):
        raise TypeError(f"on_line must be callable or None, not {on_line!r}")
    return on_line


# -- the job's coroutine (loop thread) ---------------------------------------------


async def run_child(spec: ProcessSpec, slot: JobSlot, groups: ChildGroups) -> ProcessResult:
    """Run the child of *spec* to its end; the body of a process job.

    The child starts before the first ``await`` (a synchronous ``Popen`` on the
    loop thread), so a cancellation can never lose a half-started child: it
    arrives at the first ``await`` and ends the child's group.
    """
    started = time.monotonic()
    child = Child.start(spec, groups)  # the OSError of a missing program fails the job
    slot.set_pid(child.pid)
    try:
        returncode = await child.run()
    except asyncio.CancelledError:
        how = await child.end_group()
        raise asyncio.CancelledError(f"child pid {child.pid} {how}") from None
    except BaseException:
        await child.end_group()  # on_line raised: the job fails, its child ends
        raise
    finally:
        child.abandon()
    result = ProcessResult(
        spec.args,
        returncode,
        bytes(child.out.data),
        bytes(child.err.data),
        child.pid,
        time.monotonic() - started,
        child.out.truncated or child.err.truncated,
    )
    if spec.check:
        result.check_returncode()
    return result
