"""Frozen snapshots the bridge hands out: statistics and the shutdown report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._job import JobInfo

__all__ = ["BridgeStats", "Capacity", "LaneStats", "ShutdownReport"]


@dataclass(frozen=True)
class BridgeStats:
    """Counters of one bridge since it was created (a snapshot)."""

    #: Jobs accepted.
    submitted: int
    #: Jobs whose coroutine returned.
    succeeded: int
    #: Jobs whose coroutine raised.
    failed: int
    #: Jobs that ended cancelled.
    cancelled: int
    #: Jobs whose deadline expired.
    timed_out: int
    #: Submissions refused (closed bridge, duplicate key, overload).
    rejected: int
    #: Jobs not finished yet (pending or running).
    active: int
    #: Of those, how many wait for the loop or for a place in their lane, by kind.
    pending_by_kind: Mapping[str, int] = field(default_factory=dict)
    #: Of those, how many are running now, by kind.
    running_by_kind: Mapping[str, int] = field(default_factory=dict)
    #: Submissions refused with :class:`~bridge.Overloaded` (part of ``rejected``).
    overloaded: int = 0
    #: Submissions refused with :class:`~bridge.DuplicateJob` (part of ``rejected``).
    duplicate: int = 0
    #: Submissions refused with :class:`~bridge.BridgeClosed` (part of ``rejected``).
    closed: int = 0


@dataclass(frozen=True)
class LaneStats:
    """One kind's lane (``Bridge(limits=...)``), as the operations view shows it."""

    #: At most this many jobs of the kind run at once.
    limit: int
    #: How many run now.
    running: int
    #: How many wait for a place.
    waiting: int


@dataclass(frozen=True)
class Capacity:
    """How full a bridge is: lanes, room and worker threads (a snapshot)."""

    #: The lanes by kind.
    lanes: Mapping[str, LaneStats]
    #: ``Bridge(max_pending=...)``, or ``None`` for no bound.
    max_pending: int | None
    #: How many more jobs fit now (``None`` without ``max_pending``).
    room_left: int | None
    #: ``Bridge(thread_workers=...)``.
    workers_max: int
    #: Worker threads running a task now.
    workers_busy: int
    #: Worker threads waiting for a task.
    workers_idle: int


@dataclass(frozen=True)
class ShutdownReport:
    """What :meth:`Bridge.shutdown` found and did."""

    #: Jobs that finished by themselves while shutdown waited for them.
    finished: int
    #: Jobs shutdown cancelled once its timeout had passed, as they ended.
    cancelled: tuple[JobInfo, ...]
    #: Jobs that did not end even when cancelled (they block the loop thread or
    #: ignore cancellation), as they were; they are resolved with ``JobCancelled``.
    stuck: tuple[JobInfo, ...]
    #: Seconds the shutdown took.
    duration: float
    #: Resources exited (see :meth:`Bridge.resource`), errors included.
    resources_closed: int = 0
    #: ``(repr of the resource, exception)`` for each resource whose exit raised.
    resource_errors: tuple[tuple[str, BaseException], ...] = ()
    #: Names of the bridge's own threads (loop thread, worker threads,
    #: watchdog) still alive when shutdown returned, not counting the thread
    #: that called it.
    threads_left: tuple[str, ...] = ()
    #: ``True`` only for the placeholder a signal handler gets when the
    #: shutdown had to go on in another thread (see :meth:`Bridge.shutdown`):
    #: the counts above are then empty; call ``shutdown()`` again for them.
    deferred: bool = False

    @property
    def clean(self) -> bool:
        """Whether every job ended by itself, every resource closed cleanly and
        every thread of the bridge stopped."""
        return (
            not (self.cancelled or self.stuck or self.resource_errors or self.threads_left)
            and not self.deferred
        )
