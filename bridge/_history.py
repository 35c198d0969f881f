"""The history of finished jobs: a bounded ring of their ``info()`` fields.

``Bridge(history=N)`` (or an operations server) keeps the latest *N* finished
jobs for ``Bridge.history()``. The ring holds plain tuples, never the jobs, so
a finished job and its result are freed as soon as nobody else holds them.

Not thread-safe by itself: the registry calls every method but :meth:`infos`
with its lock held (it is the only module that takes that lock).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._job import Job, JobInfo

__all__ = ["History"]


class History:
    """The latest finished jobs' fields, oldest first; off when its size is 0."""

    __slots__ = ("_ring",)

    def __init__(self, size: int) -> None:
        self._ring: deque[tuple[Any, ...]] | None = deque(maxlen=size) if size else None

    @property
    def size(self) -> int:
        """How many finished jobs are kept (0: off). Any thread."""
        ring = self._ring
        return 0 if ring is None or ring.maxlen is None else ring.maxlen

    def record(self, job: Job[Any]) -> None:
        """Keep *job*'s fields (it has just finished). Under the registry's lock."""
        if self._ring is not None:
            self._ring.append(job._fields())

    def snapshot(self) -> list[tuple[Any, ...]]:
        """The fields kept, oldest first. Under the registry's lock."""
        return [] if self._ring is None else list(self._ring)

    def resize(self, size: int) -> None:
        """Keep the latest *size* from now on, keeping what fits. Under the lock."""
        kept = self.snapshot()
        self._ring = deque(kept, maxlen=size) if size else None

    @staticmethod
    def infos(kept: list[tuple[Any, ...]], kind: str | None) -> list[JobInfo]:
        """*kept* (a snapshot) as ``JobInfo``, newest first, of *kind* if given."""
        return [JobInfo(*fields) for fields in reversed(kept) if kind is None or fields[2] == kind]
