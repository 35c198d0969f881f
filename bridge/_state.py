"""The life of a bridge: :class:`BridgeState`.

The registry (``_registry.py``) holds a bridge's state and changes it under
its lock; everything else only reads it.
"""

from __future__ import annotations

import enum

__all__ = ["BridgeState"]


class BridgeState(enum.Enum):
    """Where a bridge is in its life (:attr:`Bridge.state`)."""

    #: Created; the loop thread starts at the first ``start()`` or ``submit()``.
    NEW = "has not been started"
    #: The loop runs and jobs are accepted.
    RUNNING = "is running"
    #: ``shutdown()`` has begun: no new jobs; the unfinished ones are ending.
    CLOSING = "is shutting down"
    #: ``shutdown()`` has returned its report.
    CLOSED = "has been shut down"
    #: The event loop stopped, or its thread died, without ``shutdown()``
    #: asking: unfinished jobs failed, no new jobs; ``shutdown()`` still returns
    #: a report (and leaves the bridge CLOSED).
    BROKEN = "is broken: its event loop died"

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"BridgeState.{self.name}"
