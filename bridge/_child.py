"""One child of a process job: started, watched, ended and reaped on the loop.

:meth:`Child.start` starts the program with :class:`subprocess.Popen` on the
loop thread, in a session (and process group) of its own, stdin from
``/dev/null`` unless there is input, stdout and stderr into pipes the loop
reads (``_output.py``). The exit is learnt from a pidfd the loop watches
(``os.pidfd_open``, Linux >= 5.3): no child watcher, no thread, no polling;
the child is reaped with ``os.waitpid(pid, WNOHANG)`` once the pidfd is
readable. Where pidfds are missing, a short-lived thread per child waits in
``os.waitpid`` instead (what asyncio's threaded child watcher does).

Ending the group early: SIGTERM, then SIGKILL after ``kill_grace``; the group
counts as gone once its leader is reaped and no other member is alive.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, final

from ._children import ChildGroups, group_alive, signal_group
from ._exceptions import exit_description
from ._output import Capture, OnLine, PipeReader, PipeWriter

__all__ = ["Child", "ExitWatch", "ProcessSpec"]

#: After SIGKILL, how long to wait for the group to disappear before giving up
#: (a process in uninterruptible sleep; shutdown SIGKILLs it again).
_AFTER_KILL: Final = 2.0
#: How long output may still be read once the group is gone (a process that
#: left the group may hold the pipes open).
_DRAIN: Final = 1.0
_POLL: Final = 0.005  # the first interval of polling a group that has no leader left
#: The status reported when someone else reaped the child (as asyncio does).
_UNKNOWN_STATUS: Final = 255


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
class ExitWatch:
    """Learns that child *pid* exited and reaps it; ``exited`` resolves then. Loop thread."""

    __slots__ = ("_loop", "_pid", "_pidfd", "exited", "returncode")

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int) -> None:
        self._loop = loop
        self._pid = pid
        self._pidfd = -1
        self.returncode: int | None = None
        self.exited: asyncio.Future[None] = loop.create_future()
        pidfd_open = getattr(os, "pidfd_open", None)
        try:
            self._pidfd = pidfd_open(pid) if pidfd_open is not None else -1
        except OSError:  # a kernel before 5.3, or a sandbox that refuses the call
            self._pidfd = -1
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._readable)
        else:
            name = f"bridge-child-waiter-{pid}"
            threading.Thread(target=self._wait_in_thread, name=name, daemon=True).start()

    def _readable(self) -> None:
        try:
            reaped, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            reaped, status = self._pid, _UNKNOWN_STATUS << 8  # someone else reaped it
        if reaped:
            self.close()
            self._set(os.waitstatus_to_exitcode(status))

    def _wait_in_thread(self) -> None:
        """The fallback's thread: wait for the exit, hand the status to the loop."""
        try:
            _, status = os.waitpid(self._pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = _UNKNOWN_STATUS
        try:
            self._loop.call_soon_threadsafe(self._set, code)
        except RuntimeError:
            pass  # the loop has closed: shutdown has accounted for the group

    def _set(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        """Stop watching (the exit was seen, or the job is leaving). Idempotent."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def _popen(spec: ProcessSpec, stdin: int, stdout: int, stderr: int) -> int:
    """Start the program; return its pid. Raises the ``OSError`` exec raised."""
    proc = subprocess.Popen(
        spec.args,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=spec.cwd,
        env=spec.env,
        start_new_session=True,
    )
    proc.returncode = 0  # the exit watch reaps it: Popen must neither poll nor warn
    return proc.pid


@final
class Child:
    """One running child, its group and its output (loop thread)."""

    __slots__ = ("_exit", "_feeder", "_gone", "_groups", "_readers", "_spec", "err", "out", "pid")

    def __init__(self, pid: int, spec: ProcessSpec, groups: ChildGroups) -> None:
        self.pid = pid
        self._spec = spec
        self._groups = groups
        self._gone = False  # the group is known to be empty
        self._readers: list[PipeReader] = []
        self._feeder: PipeWriter | None = None
        self.out = Capture("stdout", spec.max_output, spec.on_line)
        self.err = Capture("stderr", spec.max_output, spec.on_line)
        self._exit: ExitWatch

    @classmethod
    def start(cls, spec: ProcessSpec, groups: ChildGroups) -> Child:
        """Start *spec*'s program in a new session; listed in *groups* at once."""
        loop = asyncio.get_running_loop()
        pipes: list[int] = []  # every descriptor this call opened, until it hands them over
        try:
            out_r, out_w = _pipe(pipes)
            err_r, err_w = _pipe(pipes)
            in_r, in_w = _pipe(pipes) if spec.input is not None else (subprocess.DEVNULL, -1)
            pid = _popen(spec, in_r, out_w, err_w)
        except BaseException:
            for fd in pipes:
                os.close(fd)
            raise
        for fd in (out_w, err_w, in_r):
            if fd >= 0:
                os.close(fd)
        groups.add(pid, spec.kill_grace)
        child = cls(pid, spec, groups)
        child._exit = ExitWatch(loop, pid)
        child._readers = [PipeReader(loop, out_r, child.out), PipeReader(loop, err_r, child.err)]
        if spec.input is not None:
            child._feeder = PipeWriter(loop, in_w, spec.input)
        return child

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (``-N`` for signal N), else ``None``."""
        return self._exit.returncode

    def _streams(self) -> list[asyncio.Future[None]]:
        feeding = [self._feeder.done] if self._feeder is not None else []
        return [reader.done for reader in self._readers] + feeding

    async def run(self) -> int:
        """Read both streams (and feed stdin) until the exit; return the status."""
        exited = self._exit.exited
        await _first_error_or(exited, [*self._streams(), exited])
        if self._spec.kill_group_on_exit:
            await self._end_after_exit()
            await self._drain(_DRAIN)
        else:
            self._gone = True  # what the child left in its group is not ours to end
            await _first_error_or(None, self._streams())  # as subprocess.run: to EOF
        code = self._exit.returncode
        assert code is not None
        return code

    async def _end_after_exit(self) -> None:
        """The leader exited by itself: end what it left in its group."""
        if not group_alive(self.pid):
            self._gone = True
            return
        await self._terminate()

    async def end_group(self) -> str:
        """SIGTERM the group, SIGKILL it after ``kill_grace``; say how the child ended."""
        how = await self._terminate()
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
        pending = [done for done in self._streams() if not done.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        await _first_error_or(None, [done for done in self._streams() if done.done()])

    async def _terminate(self) -> str:
        signal_group(self.pid, signal.SIGTERM)
        if await self._wait_gone(self._spec.kill_grace):
            return self._ended(killed=False)
        signal_group(self.pid, signal.SIGKILL)
        await self._wait_gone(_AFTER_KILL)
        return self._ended(killed=True)

    def _ended(self, *, killed: bool) -> str:
        """How the child ended: ``"was terminated by SIGTERM"``, ``"was killed by ..."``."""
        code = self._exit.returncode
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
        exited = self._exit.exited
        if not exited.done():
            await asyncio.wait([exited], timeout=timeout)
            if not exited.done():
                return False
        delay = _POLL
        while group_alive(self.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        self._gone = True
        return True

    def abandon(self) -> None:
        """The coroutine is leaving: forget an empty group, else SIGKILL what is left.

        Closes the pipes (a process outside the group may still hold them) and
        the exit watch. A group still listed is SIGKILLed again, and its
        leader reaped, by shutdown (from its thread).
        """
        for done in self._streams():
            done.add_done_callback(_consume)
        for reader in self._readers:
            reader.close()
        if self._feeder is not None:
            self._feeder.close()
        self._exit.close()
        if self._gone or not group_alive(self.pid):
            self._groups.discard(self.pid)
        else:
            signal_group(self.pid, signal.SIGKILL)


def _pipe(opened: list[int]) -> tuple[int, int]:
    """A pipe (both ends close-on-exec), its ends added to *opened*."""
    read, write = os.pipe()
    opened += (read, write)
    return read, write


def _consume(done: asyncio.Future[Any]) -> None:
    """Retrieve a stream's error (the first one was raised; no warning for the rest)."""
    if not done.cancelled():
        done.exception()


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
