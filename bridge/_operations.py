"""What the operations layer (``bridge.ops``) reads from a bridge and attaches to it.

:class:`BridgeOperations` is one base of :class:`~bridge.Bridge`: the history
of finished jobs, :meth:`serve_ops`, and the private hooks ``bridge.ops``
uses (capacity snapshot, job observers, shutdown callbacks). Nothing of the
``ops`` extra is imported until :meth:`serve_ops` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ._job import JobInfo
from ._observers import JobObserver
from ._registry import Registry
from ._scheduler import Scheduler
from ._shutdown import Shutdown
from ._stats import Capacity, LaneStats
from ._workers import WorkerPool

if TYPE_CHECKING:
    from .ops import OpsServer
    from .ops._target import OpsTarget

__all__ = ["BridgeOperations"]


class BridgeOperations:
    """History and operations hooks; :class:`~bridge.Bridge` inherits them."""

    if TYPE_CHECKING:  # provided by Bridge
        _registry: Registry
        _scheduler: Scheduler
        _shutdown: Shutdown
        _workers: WorkerPool

    def history(self, kind: str | None = None) -> list[JobInfo]:
        """The latest finished jobs (``Bridge(history=N)``), newest first. Any thread.

        Each is a :class:`JobInfo` with ``outcome``, ``finished_at`` and
        ``error`` set; a job is in the history before anyone waiting for it
        sees its outcome. Empty while the history is off (the default).
        """
        self._scheduler.check_forked()
        return self._registry.history(kind)

    def serve_ops(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        lag_limit: float = 1.0,
        prefix: str = "",
    ) -> OpsServer:
        """Serve the operations dashboard and HTTP API (the ``ops`` extra).

        See :func:`bridge.ops.serve_ops`, which this calls.
        """
        from .ops import serve_ops

        target = cast("OpsTarget", self)  # a Bridge: BridgeOperations is one of its bases
        return serve_ops(
            target, host=host, port=port, token=token, lag_limit=lag_limit, prefix=prefix
        )

    def _capacity(self) -> Capacity:
        """Lanes, room and worker threads, as a snapshot. Any thread."""
        lanes = {
            kind: LaneStats(limit, running, waiting)
            for kind, (limit, running, waiting) in self._scheduler.lane_counts().items()
        }
        max_pending, used = self._registry.room()
        size, threads, idle = self._workers.counts()
        return Capacity(
            lanes=lanes,
            max_pending=max_pending,
            room_left=None if max_pending is None else max(0, max_pending - used),
            workers_max=size,
            workers_busy=threads - idle,
            workers_idle=idle,
        )

    def _observe(self, observer: JobObserver) -> None:
        """Tell *observer* about every job from now on (metrics, spans)."""
        self._scheduler.observers.add(observer)

    def _unobserve(self, observer: JobObserver) -> None:
        self._scheduler.observers.remove(observer)

    def _at_shutdown(self, closer: Callable[[], object]) -> None:
        """Call *closer()* when shutdown begins (at once if it has)."""
        self._shutdown.add_closer(closer)

    def _keep_history(self, size: int) -> None:
        """Turn the history on with *size* entries unless it is on already."""
        if self._registry.history_size == 0:
            self._registry.keep_history(size)
