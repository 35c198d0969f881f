"""Lanes: per-kind concurrency limits, in FIFO order."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from ._job import Job

__all__ = ["HAS_PLACE", "QUEUED", "Lane"]

#: ``Job._lane``: the job waits in its lane's queue ...
QUEUED: Final = 1
#: ... or holds one of its lane's places.
HAS_PLACE: Final = 2


class Lane:
    """At most ``limit`` running jobs of one kind; the others wait their turn.

    A job that ends while it waits (cancelled, timed out) leaves the queue at
    once, so a lane blocked by a long job does not keep dead jobs alive.

    Only the loop thread touches a lane.
    """

    __slots__ = ("limit", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: How many places are taken.
        self.running = 0
        #: The jobs waiting for a place, oldest first, by id.
        self.waiting: OrderedDict[int, Job[Any]] = OrderedDict()

    def admit(self, job: Job[Any]) -> bool:
        """Give *job* a place now, or queue it; return whether it may start."""
        if self.running < self.limit:
            self.running += 1
            job._lane = HAS_PLACE
            return True
        self.waiting[job.id] = job
        job._lane = QUEUED
        return False

    def leave(self, job: Job[Any]) -> Job[Any] | None:
        """*job* has ended: drop it from the queue, or pass its place on.

        Returns:
            The next job to start, which now holds the place, if any.
        """
        where = job._lane
        job._lane = 0
        if where == QUEUED:
            del self.waiting[job.id]
        elif where == HAS_PLACE:
            if self.waiting:
                _, following = self.waiting.popitem(last=False)
                following._lane = HAS_PLACE
                return following
            self.running -= 1
        return None

    def clear(self) -> None:
        """Forget every waiting job (the loop has stopped)."""
        self.waiting.clear()
