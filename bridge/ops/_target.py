"""What ``bridge.ops`` needs from a bridge: the :class:`OpsTarget` protocol.

The operations layer sits above the core and must not import
:class:`bridge.Bridge` (``bridge._operations`` imports this package lazily;
a module-level import back would be a cycle). It types the bridge with this
protocol instead, which lists exactly the members the ops modules use.
Everything here is safe to call from any thread, except where noted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from bridge._job import Job, JobInfo
from bridge._observers import JobObserver
from bridge._state import BridgeState
from bridge._stats import BridgeStats, Capacity

__all__ = ["JobLookup", "OpsTarget"]


class JobLookup(Protocol):
    """The one registry call ops makes: an unfinished job by id, lock-free."""

    def find(self, job_id: int) -> Job[Any] | None:
        """The unfinished job *job_id*, or ``None``."""


class OpsTarget(Protocol):
    """The members of :class:`bridge.Bridge` that ``bridge.ops`` reads or calls."""

    @property
    def name(self) -> str:
        """The bridge's name (metric label, ``/stats``)."""

    @property
    def state(self) -> BridgeState:
        """NEW, RUNNING, CLOSING, CLOSED or BROKEN (``/healthz``, ``/stats``)."""

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        """The bridge's event loop, for lag pings with ``call_soon_threadsafe``."""

    @property
    def _registry(self) -> JobLookup:
        """Where cancel-by-id finds the job's handle."""

    def jobs(self, kind: str | None = None) -> list[JobInfo]:
        """Unfinished jobs, oldest first."""

    def history(self, kind: str | None = None) -> list[JobInfo]:
        """Finished jobs kept, newest first."""

    def get(self, key: str) -> Job[Any] | None:
        """The unfinished job holding *key*."""

    def cancel_all(self, kind: str | None = None) -> int:
        """Cancel every unfinished job (of *kind*); how many were asked to stop."""

    def stats(self) -> BridgeStats:
        """The counters."""

    def _capacity(self) -> Capacity:
        """Lanes, room and worker threads."""

    def _observe(self, observer: JobObserver) -> None:
        """Tell *observer* about every job from now on."""

    def _unobserve(self, observer: JobObserver) -> None:
        """Stop telling *observer*."""

    def _at_shutdown(self, closer: Callable[[], object]) -> None:
        """Call *closer()* when the bridge's shutdown begins (at once if it has)."""

    def _keep_history(self, size: int) -> None:
        """Turn the history on with *size* entries unless it is on already."""
