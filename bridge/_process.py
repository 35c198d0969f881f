"""Subprocess jobs: the engine behind :meth:`Bridge.run_process`.

A process job's coroutine starts one child with asyncio's subprocess API on
the bridge's loop, in a session (and process group) of its own, stdin from
``/dev/null`` unless *input* is given. It captures stdout and stderr up to
``max_output`` bytes each, calls ``on_line`` on the loop thread, and ends the
child's whole group whenever the job ends early (cancel, deadline,
``replace``, shutdown): SIGTERM, then SIGKILL after ``kill_grace``. The job
resolves only once the child is reaped and its group is empty; after a normal
exit, processes left in the group are ended the same way (unless
``kill_group_on_exit=False``). The message of the job's ``JobCancelled`` or
``JobTimeout`` says how the child ended.

The job is told its child's pid and program through a :class:`JobSlot`
(the job does not exist yet when its coroutine function is chosen). Live
groups are listed in the bridge's :class:`~bridge._children.ChildGroups`, which
shutdown consults.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from ._children import ChildGroups, group_alive, signal_group
from ._exceptions import ProcessFailed, exit_description
from ._job import Job

__all__ = ["LINE_LIMIT", "JobSlot", "ProcessResult", "ProcessSpec", "check_spec", "run_child"]

#: ``on_line`` receives lines of at most this many bytes; longer ones are split.
LINE_LIMIT: Final = 64 * 1024
_CHUNK: Final = 64 * 1024
#: After SIGKILL, how long to wait for the group to disappear before giving up
#: (a process in uninterruptible sleep; shutdown SIGKILLs it again).
_AFTER_KILL: Final = 2.0
#: How long output may still be read once the group is gone (a process that
#: left the group may hold the pipes open).
_DRAIN: Final = 1.0
_POLL: Final = 0.005  # the first interval of polling a group that has no leader left

OnLine = Callable[[str, str], object]


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


@dataclass(frozen=True)
class ProcessSpec:
    """A checked ``run_process`` call (made on the submitting thread)."""

    args: tuple[Any, ...]
    program: str
    cwd: Any
    env: dict[Any, Any] | None
    input: bytes | None
    check: bool
    max_output: int
    kill_grace: float
    kill_group_on_exit: bool
    on_line: OnLine | None


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
    """Run the child of *spec* to its end; the body of a process job."""
    started = time.monotonic()
    # Shielded: a cancellation while the child starts must not lose the child.
    starting = asyncio.ensure_future(_spawn(spec))
    try:
        proc, exited = await asyncio.shield(starting)
        cancelled = False
    except asyncio.CancelledError:
        proc, exited = await starting  # an OSError (no such program) wins: the job fails
        cancelled = True
    groups.add(proc.pid, spec.kill_grace)
    slot.set_pid(proc.pid)
    child = _Child(proc, exited, spec, groups)
    try:
        if cancelled:
            raise asyncio.CancelledError
        returncode = await child.run()
    except asyncio.CancelledError:
        how = await child.end_group()
        raise asyncio.CancelledError(f"child pid {proc.pid} {how}") from None
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
        proc.pid,
        time.monotonic() - started,
        child.out.truncated or child.err.truncated,
    )
    if spec.check:
        result.check_returncode()
    return result


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol, plus a future set when the child has exited (reaped).

    ``Process.wait()`` also waits for the output pipes to close, which a
    grandchild may keep open: the exit itself is what ends the job's wait.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _spawn(spec: ProcessSpec) -> tuple[asyncio.subprocess.Process, asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(loop),
        *spec.args,
        stdin=subprocess.DEVNULL if spec.input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=spec.cwd,
        env=spec.env,
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited


@final
class _Capture:
    """One output stream: the first *limit* bytes, and its lines for ``on_line``."""

    __slots__ = ("_decoder", "_limit", "_name", "_on_line", "_partial", "data", "truncated")

    def __init__(self, name: str, limit: int, on_line: OnLine | None) -> None:
        self._name = name
        self._limit = limit
        self._on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = bytearray()  # the current line, for on_line
        self.data = bytearray()
        self.truncated = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self._keep(chunk)
            if self._on_line is not None:
                self._lines(chunk)
        if self._on_line is not None and self._partial:
            self._emit(bytes(self._partial))
            self._partial.clear()

    def _keep(self, chunk: bytes) -> None:
        room = self._limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        if chunk:
            self.data += chunk

    def _lines(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._add(chunk[start : end + 1])
            self._emit(bytes(self._partial))
            self._partial.clear()
            start = end + 1
        self._add(chunk[start:])

    def _add(self, piece: bytes) -> None:
        """Append to the current line; emit 64 KiB pieces of an over-long one."""
        self._partial += piece
        while len(self._partial) > LINE_LIMIT:
            self._emit(bytes(self._partial[:LINE_LIMIT]))
            del self._partial[:LINE_LIMIT]

    def _emit(self, line: bytes) -> None:
        text = self._decoder.decode(line)
        assert self._on_line is not None
        self._on_line(self._name, text.rstrip("\r\n") if text.endswith("\n") else text)


@final
class _Child:
    """One running child, its group and its output (loop thread)."""

    __slots__ = ("_exited", "_gone", "_groups", "_proc", "_spec", "_tasks", "err", "out")

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Future[None],
        spec: ProcessSpec,
        groups: ChildGroups,
    ) -> None:
        self._proc = proc
        self._exited = exited
        self._spec = spec
        self._groups = groups
        self._gone = False  # the group is known to be empty
        self._tasks: list[asyncio.Future[Any]] = []
        self.out = _Capture("stdout", spec.max_output, spec.on_line)
        self.err = _Capture("stderr", spec.max_output, spec.on_line)

    async def run(self) -> int:
        """Feed stdin, read both streams, wait for the exit; return the status."""
        proc = self._proc
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._tasks = [
            asyncio.ensure_future(self.out.read(proc.stdout)),
            asyncio.ensure_future(self.err.read(proc.stderr)),
        ]
        if self._spec.input is not None:
            self._tasks.append(asyncio.ensure_future(self._feed(self._spec.input)))
        await _first_error_or(self._exited, [*self._tasks, self._exited])
        if self._spec.kill_group_on_exit:
            await self._end_after_exit()
            await self._drain(_DRAIN)
        else:
            self._gone = True  # what the child left in its group is not ours to end
            await _first_error_or(None, self._tasks)  # as subprocess.run: to EOF
        assert proc.returncode is not None
        return proc.returncode

    async def _feed(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child does not read its input: not an error (as subprocess.run)
        finally:
            stdin.close()

    async def _end_after_exit(self) -> None:
        """The leader exited by itself: end what it left in its group."""
        pgid = self._proc.pid
        if not group_alive(pgid):
            self._gone = True
            return
        await self._terminate(pgid)

    async def end_group(self) -> str:
        """SIGTERM the group, SIGKILL it after ``kill_grace``; say how the child ended."""
        how = await self._terminate(self._proc.pid)
        try:
            await self._drain(_DRAIN)
        except Exception:  # noqa: BLE001 - on_line failed while the job ends anyway
            pass
        return how

    async def _drain(self, timeout: float) -> None:
        """Read the output to EOF, for *timeout* at most once the group is gone.

        A process that left the group (``setsid``) may hold the pipes open:
        it must not hold the job. Raises what ``on_line`` raised.
        """
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        await _first_error_or(None, [task for task in self._tasks if task.done()])

    async def _terminate(self, pgid: int) -> str:
        signal_group(pgid, signal.SIGTERM)
        if await self._wait_gone(self._spec.kill_grace):
            return self._ended(killed=False)
        signal_group(pgid, signal.SIGKILL)
        await self._wait_gone(_AFTER_KILL)
        return self._ended(killed=True)

    def _ended(self, *, killed: bool) -> str:
        """How the child ended: ``"was terminated by SIGTERM"``, ``"was killed by ..."``."""
        code = self._proc.returncode
        after = f"SIGKILL after {self._spec.kill_grace} s"
        if code is None:
            return f"did not end after {after} (uninterruptible?)"
        if code == -signal.SIGKILL and killed:
            how = f"was killed by {after}"
        elif code == -signal.SIGTERM:
            how = "was terminated by SIGTERM"
        elif code < 0:
            how = exit_description(code)
        else:
            how = f"{exit_description(code)} after SIGTERM"
        if killed and code != -signal.SIGKILL:
            how += f"; what it left in its group was killed by {after}"
        return how

    async def _wait_gone(self, timeout: float) -> bool:
        """Wait until the leader is reaped and the group is empty; return whether it is."""
        deadline = time.monotonic() + timeout
        if not self._exited.done():
            await asyncio.wait([self._exited], timeout=timeout)
            if not self._exited.done():
                return False
        delay = _POLL
        while group_alive(self._proc.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        self._gone = True
        return True

    def abandon(self) -> None:
        """The coroutine is leaving: forget an empty group, else SIGKILL what is left.

        A group still listed is SIGKILLed again by shutdown (from its thread).
        """
        for task in self._tasks:
            task.cancel()
            task.add_done_callback(_consume)
        transport = self._proc._transport  # type: ignore[attr-defined]
        if transport.get_returncode() is not None:
            transport.close()  # pipes a process outside the group still holds
        pgid = self._proc.pid
        if self._gone or not group_alive(pgid):
            self._groups.discard(pgid)
        else:
            signal_group(pgid, signal.SIGKILL)


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a helper task's error (the first one was raised; no warning for the rest)."""
    if not task.cancelled():
        task.exception()


async def _first_error_or(
    wanted: asyncio.Future[Any] | None, tasks: list[asyncio.Future[Any]]
) -> None:
    """Wait for *wanted* (or all of *tasks* if ``None``); raise the first task error."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        if wanted is not None and wanted.done():
            break
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        pending = [t for t in pending if not t.done()]
