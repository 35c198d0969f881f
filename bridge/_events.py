"""A thread-safe capture of the bridge's structlog events, for tests.

structlog's own ``capture_logs()`` appends from whatever thread logs, without a
lock, and drops ``merge_contextvars``. :class:`EventCapture` configures
structlog with a chain that ends in a lock-protected recorder, and puts the
previous configuration back when it stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from typing import Any, final

import structlog

__all__ = ["EventCapture"]

#: The logger name the bridge logs under (``structlog.get_logger("bridge")``).
BRIDGE_LOGGER = "bridge"

#: Logger methods whose level has another name (as ``capture_logs()`` records it).
_LEVEL_ALIASES = {"warn": "warning", "exception": "error", "msg": "info", "fatal": "critical"}


@final
class _NamedLogger:
    """The innermost logger: it only carries its name to the processors."""

    __slots__ = ("name",)

    def __init__(self, name: str | None) -> None:
        self.name = name

    def msg(self, *args: object, **kwargs: object) -> None:  # pragma: no cover
        """Never reached: the capture processor drops every event."""


def _named_logger(*args: Any) -> _NamedLogger:
    return _NamedLogger(args[0] if args and isinstance(args[0], str) else None)


@final
class EventCapture:
    """Records the events of the ``bridge`` logger (and ``bridge.*``) as dicts.

    Each event gets ``log_level``, as ``structlog.testing.capture_logs()`` does.
    A structlog configuration with ``cache_logger_on_first_use=True`` in force
    before the capture may have pinned the bridge's logger to it already.

    Other structlog events are dropped while the capture runs. :meth:`start`
    and :meth:`stop` are for the test's thread; events may come from any thread.
    """

    __slots__ = ("_lock", "_previous", "_was_configured", "events")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards appends to events
        #: The captured events, oldest first; each has ``event`` and ``log_level``.
        self.events: list[dict[str, Any]] = []
        self._previous: dict[str, Any] = {}
        self._was_configured = False

    def start(self) -> None:
        """Configure structlog to record into :attr:`events`."""
        self._was_configured = structlog.is_configured()
        self._previous = structlog.get_config()
        structlog.configure(
            processors=[self._record],
            wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
            logger_factory=_named_logger,
            cache_logger_on_first_use=False,
        )

    def stop(self) -> None:
        """Put structlog's previous configuration back."""
        if self._was_configured:
            structlog.configure(**self._previous)
        else:
            structlog.reset_defaults()

    def _record(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> Any:
        name = getattr(logger, "name", None)
        if name == BRIDGE_LOGGER or (name or "").startswith(BRIDGE_LOGGER + "."):
            event = dict(event_dict)
            event["log_level"] = _LEVEL_ALIASES.get(method_name, method_name)
            with self._lock:
                self.events.append(event)
        raise structlog.DropEvent
