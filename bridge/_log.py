"""Tracing: the structlog events the bridge emits, and how it emits them.

The bridge logs through ``structlog.get_logger("bridge")``, a lazy proxy that is
resolved at every call, so whatever configuration (or ``capture_logs()``) is in
force at that moment sees the event. The bridge never configures structlog or
the standard library's logging.

Per-job debug events are emitted only once the application has configured
structlog: an application that never did sees the bridge's warnings and errors,
not one line per job.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from structlog.contextvars import get_contextvars

__all__ = [
    "JOB_FAILED",
    "JOB_FINISHED",
    "JOB_STARTED",
    "JOB_SUBMITTED",
    "JOB_TIMED_OUT",
    "LOOP_BLOCKED",
    "RESOURCE_ERROR",
    "bindings",
    "emit",
    "tracing",
]

JOB_SUBMITTED: Final = "job.submitted"
JOB_STARTED: Final = "job.started"
JOB_FINISHED: Final = "job.finished"
JOB_TIMED_OUT: Final = "job.timed_out"
JOB_FAILED: Final = "job.failed"
LOOP_BLOCKED: Final = "loop.blocked"
RESOURCE_ERROR: Final = "resource.error"

logger: Final = structlog.get_logger("bridge")


def tracing() -> bool:
    """Whether per-job debug events are wanted: structlog has been configured."""
    return structlog.is_configured()


def bindings() -> dict[str, Any]:
    """The ``structlog.contextvars`` bindings of the current context."""
    return get_contextvars()


def emit(level: str, event: str, fields: dict[str, Any]) -> None:
    """Log *event* at *level*; a failing processor never breaks the bridge.

    Callers put the job's submit-time ``structlog.contextvars`` bindings into
    *fields* themselves: ``capture_logs()`` drops ``merge_contextvars``.
    """
    try:
        getattr(logger, level)(event, **fields)
    except Exception:  # noqa: BLE001 - a logging failure must not lose a job
        pass
