"""The child process groups a bridge's process jobs have started.

Each child of :meth:`Bridge.run_process` leads a process group of its own
(``start_new_session=True``). The loop thread adds a group when the child
starts and discards it once the group is empty; shutdown reads the largest
``kill_grace`` of the live groups (a cancelled process job gets that plus one
second to end its group), and after the loop has stopped it SIGKILLs, from the
shutdown thread, every group still listed: no child outlives a bridge that
shut down, whatever its job was doing.

One lock guards the mapping; nothing here knows the bridge.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import final

__all__ = ["ChildGroups", "group_alive", "signal_group"]


def signal_group(pgid: int, signum: int) -> bool:
    """Send *signum* to process group *pgid*; return whether the group exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (it changed its uid): alive
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether process group *pgid* has a process that is not a zombie.

    A member that died after its parent did waits as a zombie until init
    reaps it, and some container inits never do: ``killpg(pgid, 0)`` alone
    would call such a group alive forever. On Linux ``/proc`` tells zombies
    apart; elsewhere the signal test is all there is.
    """
    if not signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    return any(_live_member(entry, pgid) for entry in entries if entry.isdigit())


def _live_member(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return False
    # After the command: state, ppid, pgrp, ...
    return len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X")


@final
class ChildGroups:
    """Live child process groups and their ``kill_grace``. Any thread."""

    __slots__ = ("_groups", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _groups (loop thread and shutdown thread)
        self._groups: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, pgid: int, kill_grace: float) -> None:
        """Account for the group a child leads (loop thread, as it starts)."""
        with self._lock:  # one insertion
            self._groups[pgid] = kill_grace

    def discard(self, pgid: int) -> None:
        """Forget a group once it is empty (loop thread)."""
        with self._lock:  # one removal
            self._groups.pop(pgid, None)

    def max_grace(self) -> float | None:
        """The largest ``kill_grace`` among live groups, or ``None`` if there are none."""
        with self._lock:  # a consistent snapshot of the values
            return max(self._groups.values(), default=None)

    def kill_all(self) -> list[int]:
        """SIGKILL every group still listed; reap its leader if it is ours.

        For the shutdown thread, after the loop has stopped: nothing on the
        loop can end these groups any more. Returns the groups that still
        had a process.
        """
        with self._lock:  # take them all; the loop no longer adds any
            groups, self._groups = list(self._groups), {}
        killed = [pgid for pgid in groups if group_alive(pgid)]
        for pgid in killed:
            signal_group(pgid, signal.SIGKILL)
        for pgid in killed:
            _reap(pgid)
        return killed


def _reap(pid: int) -> None:
    """Collect the exit status of child *pid* if nobody else has (no zombie).

    The loop's exit watch (``_child.py``) may reap it first (then ``ChildProcessError``).
    A process SIGKILLed a moment ago has exited within milliseconds; the short
    bounded wait covers that, never more.
    """
    for _ in range(50):
        try:
            reaped, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if reaped:
            return
        threading.Event().wait(0.01)
