"""Observers: code that follows every job of a bridge (metrics, spans).

An observer is told when a job is admitted, when its coroutine starts and
when it finishes (after the registry recorded the outcome, before anyone
waiting for the job sees it). The bridge keeps its observers in a tuple that
is replaced whole, so the hot path pays one attribute read when there are none.

Observers run on the thread that admits, starts or finishes the job (any
thread), never under the registry's lock. They must be quick and must not
raise: an exception is reported through the bridge's event log and dropped.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from . import _log
from ._job import Job

__all__ = ["JobObserver", "Observers"]


class JobObserver(Protocol):
    """What the bridge calls for every job (see the module docstring)."""

    def job_submitted(self, job: Job[Any]) -> None:
        """*job* was admitted (on the submitting thread, before the loop sees it)."""

    def job_started(self, job: Job[Any]) -> None:
        """*job*'s coroutine is about to run (loop thread)."""

    def job_finished(self, job: Job[Any]) -> None:
        """*job* ended: ``job.info()`` has its outcome (any thread)."""


class Observers:
    """The observers of one bridge. Any thread."""

    __slots__ = ("_events", "_lock", "all")

    def __init__(self, events: _log.EventLog) -> None:
        self._events = events
        self._lock = threading.Lock()  # serializes add/remove; readers take the tuple
        #: The observers, replaced whole on every change; empty means none.
        self.all: tuple[JobObserver, ...] = ()

    def add(self, observer: JobObserver) -> None:
        """Start telling *observer* about jobs."""
        with self._lock:
            self.all = (*self.all, observer)

    def remove(self, observer: JobObserver) -> None:
        """Stop telling *observer* (nothing if it was not added)."""
        with self._lock:
            self.all = tuple(o for o in self.all if o is not observer)

    def submitted(self, job: Job[Any]) -> None:
        for observer in self.all:
            self._call(observer.job_submitted, job)

    def started(self, job: Job[Any]) -> None:
        for observer in self.all:
            self._call(observer.job_started, job)

    def finished(self, job: Job[Any]) -> None:
        for observer in self.all:
            self._call(observer.job_finished, job)

    def _call(self, method: Any, job: Job[Any]) -> None:
        try:
            method(job)
        except Exception as exc:  # noqa: BLE001 - an observer never breaks a job
            self._events.emit(
                "error", _log.OBSERVER_ERROR, {"observer": repr(method), "exc_info": exc}
            )
