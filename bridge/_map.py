"""Bridge.map: a lazy, bounded map of an async function over an iterable.

This module knows nothing of the bridge: it is handed a function that submits
one item as a job, and a function that tells whether the calling thread is the
bridge's loop thread. It uses only the public side of :class:`Job`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sized
from typing import Final, Generic, TypeVar, final

from ._exceptions import WrongThread
from ._job import Job, JobState

__all__ = ["MapIterator", "SubmitItem", "map_jobs"]

T = TypeVar("T")
R = TypeVar("R")

#: ``submit(fn, item)`` submits ``fn(item)`` as one job and returns it; it may
#: raise what ``Bridge.submit`` raises. The caller binds everything else (kind,
#: timeout, no key) and submits the job as observed: the map retrieves every
#: outcome it yields, and cancels the jobs it will not yield.
SubmitItem = Callable[[Callable[[T], Awaitable[R]], T], Job[R]]

_SUCCEEDED: Final = JobState.SUCCEEDED


def map_jobs(
    submit: SubmitItem[T, R],
    on_loop_thread: Callable[[], bool],
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    concurrency: int,
    ordered: bool,
    on_progress: Callable[[int, int | None], object] | None,
) -> MapIterator[R]:
    """The iterator behind :meth:`Bridge.map` (arguments already checked).

    Args:
        submit: submits ``fn(item)`` as a job (see :data:`SubmitItem`).
        on_loop_thread: whether the calling thread is the bridge's loop
            thread; called at every ``next()``, so it must be cheap.
        fn: the async function of one argument.
        items: the items; read lazily, never ahead of the bound.
        concurrency: how many jobs may exist at once, counting finished ones
            whose results have not been yielded yet.
        ordered: yield in input order, or as jobs complete.
        on_progress: ``on_progress(done, total)`` after each result, on the
            iterating thread; *total* is ``len(items)`` when it has one.

    Returns:
        The results, as a :class:`MapIterator`. Nothing runs before the first
        ``next()``.
    """
    total = len(items) if isinstance(items, Sized) else None
    results = _results(submit, fn, items, concurrency, ordered, on_progress, total)
    return MapIterator(results, on_loop_thread, _REFUSAL)


_REFUSAL: Final = (
    "iterating a Bridge.map() iterator on the bridge's loop thread would "
    "block the loop while it waits for jobs that need it: a deadlock. "
    "Iterate it on another thread; inside coroutines use asyncio.gather "
    "or a task group."
)


@final
class MapIterator(Iterator[R], Generic[R]):
    """The results of one :meth:`Bridge.map` (or ``process_map``); refuses the loop thread.

    Iterating waits for work the loop must see done, which would block it:
    every ``next()`` on the loop thread raises :class:`WrongThread` with
    *refusal* as its message and leaves the iterator as it was, so its own
    thread can go on with it. :meth:`close` (also done by garbage collection)
    cancels the work in flight, from any thread.
    """

    __slots__ = ("_on_loop_thread", "_refusal", "_results")

    def __init__(
        self,
        results: Generator[R, None, None],
        on_loop_thread: Callable[[], bool],
        refusal: str,
    ) -> None:
        self._results: Final = results
        self._on_loop_thread: Final = on_loop_thread
        self._refusal: Final = refusal

    def __next__(self) -> R:
        if self._on_loop_thread():
            raise WrongThread(self._refusal)
        return next(self._results)

    def close(self) -> None:
        """Stop early: cancel the work in flight and pull no more items. Any thread."""
        self._results.close()


def _results(
    submit: SubmitItem[T, R],
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    concurrency: int,
    ordered: bool,
    on_progress: Callable[[int, int | None], object] | None,
    total: int | None,
) -> Generator[R, None, None]:
    """Submit items while there is room; yield every result as soon as it is due.

    A result that is due is yielded before another item is pulled, so a slow
    iterable never holds back a result that is ready. The first failure (in
    input order or not) is raised at once; leaving early, by a failure or by
    closing, cancels the jobs in flight.
    """
    iterator = iter(items)
    window: _Window[R] = _Window(ordered)
    exhausted = False
    done = 0
    try:
        while True:
            full = exhausted or len(window) >= concurrency
            if full and not window:
                return
            job = window.take(block=full)
            if job is None:  # nothing due, and room for one more item
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                else:
                    window.add(submit(fn, item))
                continue
            value = job.result()  # finished: a failure raises here
            done += 1
            if on_progress is not None:
                on_progress(done, total)
            yield value
    finally:
        window.cancel()


class _Window(Generic[R]):
    """The jobs of one map that have not been yielded, and which have finished.

    Used by the iterating thread only; the loop thread just puts finished jobs
    on ``_finished`` (a done callback), so nothing here needs a lock.
    """

    __slots__ = ("_finished", "_jobs", "_ordered")

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._jobs: deque[Job[R]] = deque()  # in input order
        self._finished: queue.SimpleQueue[Job[R]] = queue.SimpleQueue()  # each job once

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job[R]) -> None:
        self._jobs.append(job)
        job.add_done_callback(self._finished.put)

    def take(self, *, block: bool) -> Job[R] | None:
        """Remove and return a finished job whose outcome is due now.

        Due: a failure at once, in either mode; a result as soon as it is done
        (unordered) or once every earlier one has been taken (ordered). Returns
        ``None`` if none is due; with *block*, waits for one instead (then at
        least one job must be in the window).
        """
        jobs = self._jobs
        while True:
            if self._ordered and jobs and jobs[0].done():
                return jobs.popleft()
            if not block and self._finished.empty():
                return None
            job = self._finished.get()  # every job in the window is put here once
            if self._ordered and job.state is _SUCCEEDED:
                continue  # its turn comes when it reaches the head
            try:
                jobs.remove(job)
            except ValueError:  # ordered: already taken from the head
                continue
            return job

    def cancel(self) -> None:
        """Cancel every job not yet taken; their outcomes are the map's to drop.

        As :func:`asyncio.gather` does for the children it no longer reports,
        their failures are marked retrieved: nobody else holds these jobs, and
        the map has already raised the failure (or been closed) that ends it.
        """
        for job in self._jobs:
            job.cancel()
            job.add_done_callback(_retrieve)


def _retrieve(job: concurrent.futures.Future[R]) -> None:
    """Mark a dropped job's failure as retrieved (a done callback)."""
    with contextlib.suppress(concurrent.futures.CancelledError):
        job.exception()
