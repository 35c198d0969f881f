"""Lanes: per-kind concurrency limits, in FIFO order."""

from __future__ import annotations

from collections import deque
from typing import Any

from ._job import Job, JobState

__all__ = ["Lane"]


class Lane:
    """At most ``limit`` running jobs of one kind; the others wait their turn.

    Only the loop thread touches a lane.
    """

    __slots__ = ("limit", "running", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: deque[Job[Any]] = deque()

    def admit(self, job: Job[Any]) -> bool:
        """Take a place for *job* now, or queue it; return whether it may start."""
        if self.running < self.limit:
            self.running += 1
            return True
        self.waiting.append(job)
        return False

    def release(self) -> Job[Any] | None:
        """Give back a place; return the next waiting job to start, if any."""
        while self.waiting:
            job = self.waiting.popleft()
            if job._job_state is JobState.PENDING:  # skip those that ended waiting
                return job
        self.running -= 1
        return None
