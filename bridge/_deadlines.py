"""Deadlines: every job's deadline in one heap, behind a single loop timer."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Container

__all__ = ["Deadlines"]


class Deadlines:
    """A heap of ``(deadline, job_id)`` and one timer armed for the earliest.

    Far cheaper than a ``TimerHandle`` per job: pushing a tuple compares in C,
    and the timer is re-armed only when a new deadline is the earliest. A job
    that finishes is not removed (that would cost a search); its entry is
    skipped when it comes due, and the heap is compacted whenever it holds more
    than twice as many entries as there are unfinished jobs.

    Only the loop thread touches it.
    """

    __slots__ = ("_heap", "_live", "_loop", "_on_expiry", "_timer", "_timer_at")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        live: Container[int],
        on_expiry: Callable[[int], object],
    ) -> None:
        self._loop = loop
        self._live = live  # the ids of unfinished jobs (the bridge's registry)
        self._on_expiry = on_expiry
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, deadline: float, job_id: int, live_count: int) -> None:
        """Expire *job_id* at *deadline* (a ``time.monotonic()`` value)."""
        heap = self._heap
        heapq.heappush(heap, (deadline, job_id))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        if len(heap) > 2 * live_count + 1024:
            self._heap = [entry for entry in heap if entry[1] in self._live]
            heapq.heapify(self._heap)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_later(deadline - time.monotonic(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        heap = self._heap
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            if job_id in self._live:
                self._on_expiry(job_id)
        if heap:
            self._arm(heap[0][0])
