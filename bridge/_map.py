"""Bridge.map: a lazy, bounded map of an async function over an iterable."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ._job import Job, JobState
from ._typing import DefaultType

if TYPE_CHECKING:
    from ._bridge import Bridge

__all__ = ["map_jobs"]

T = TypeVar("T")
R = TypeVar("R")


def map_jobs(
    bridge: Bridge,
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    concurrency: int,
    kind: str,
    timeout: float | DefaultType | None,
    ordered: bool,
    on_progress: Callable[[int, int | None], object] | None,
) -> Iterator[R]:
    """The generator behind :meth:`Bridge.map` (arguments already checked).

    At most *concurrency* jobs exist at once, counting finished ones whose
    results wait for an earlier item (ordered mode), so memory is bounded by
    *concurrency*, never by the length of *items*. Closing the generator (or
    the first failure) cancels the jobs in flight.
    """
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    iterator = iter(items)
    finished: queue.SimpleQueue[Job[R]] = queue.SimpleQueue()
    in_flight: deque[Job[R]] = deque()
    exhausted = False
    done = 0
    try:
        while True:
            while not exhausted and len(in_flight) < concurrency:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                job = bridge._submit(fn, (item,), None, kind, timeout, "reject", True)
                job.add_done_callback(finished.put)  # type: ignore[arg-type]
                in_flight.append(job)
            if not in_flight:
                return
            for job in _ready(finished.get(), in_flight, ordered):
                value = job.result()  # the first failure raises here
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                yield value
    finally:
        for job in in_flight:
            job.cancel()


def _ready(just_done: Job[R], in_flight: deque[Job[R]], ordered: bool) -> list[Job[R]]:
    """Remove and return the jobs whose results may be yielded now, in order."""
    if just_done._job_state is not JobState.SUCCEEDED:
        in_flight.remove(just_done)  # a failure is raised at once, in any mode
        return [just_done]
    if not ordered:
        in_flight.remove(just_done)
        return [just_done]
    ready = []
    while in_flight and in_flight[0].done():
        ready.append(in_flight.popleft())
    return ready
