"""Tracing: the structlog events the bridge emits, and how it emits them.

The bridge logs through ``structlog.get_logger("bridge")``, a lazy proxy; each
bridge binds it once per structlog configuration (as structlog's
``cache_logger_on_first_use`` would, but bound again whenever structlog is
configured again), so whatever configuration (or ``capture_logs()``) is in force
when an event is emitted sees the event. The bridge never configures structlog or
the standard library's logging.

Per-job debug events are emitted only once the application has configured
structlog: an application that never did sees the bridge's warnings and errors,
not one line per job. Nor are they built while the configuration filters debug
out (``make_filtering_bound_logger`` above debug): their fields are never made.

Logging never breaks the bridge, and never fails silently. Each bridge emits
through its own :class:`EventLog`: when a processor (or a renderer, or the
logger behind them) raises, the event is lost, and the first such error of the
bridge is reported through :data:`sys.unraisablehook`, with the processor's
own error as ``exc_value`` and a :class:`LoggingFailure` naming the bridge and
the event as ``object`` (the default hook prints "Exception ignored in:
<bridge 'pbx' logging 'job.failed': ...>", then the traceback). Later errors
of the same bridge are not reported again. Not a warning: an application (or
a test suite) that turns warnings into errors would then see the finish path
of a job raise, and the job would never resolve.

A ``structlog.contextvars`` binding never collides with the logger's own
parameters (``event``, the event's name, and ``self``): such a binding keeps
its value under its name with an underscore appended (``event_``; one more
underscore while that name is taken too), and the event keeps the bridge's
name. A SIP application that binds ``event="INVITE"`` sees
``event='job.started' event_='INVITE'``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, final

import structlog
from structlog.contextvars import get_contextvars

from ._logconfig import CONFIG, Binding

__all__ = [
    "CLOSER_ERROR",
    "JOB_FAILED",
    "JOB_FINISHED",
    "JOB_STARTED",
    "JOB_SUBMITTED",
    "JOB_TIMED_OUT",
    "LOOP_BLOCKED",
    "LOOP_DIED",
    "OBSERVER_ERROR",
    "PINNED_ERROR",
    "RESERVED",
    "RESOURCE_ERROR",
    "EventLog",
    "LoggingFailure",
    "bindings",
    "emit",
    "safe_fields",
    "tracing",
]

JOB_SUBMITTED: Final = "job.submitted"
JOB_STARTED: Final = "job.started"
JOB_FINISHED: Final = "job.finished"
JOB_TIMED_OUT: Final = "job.timed_out"
JOB_FAILED: Final = "job.failed"
LOOP_BLOCKED: Final = "loop.blocked"
LOOP_DIED: Final = "loop.died"
OBSERVER_ERROR: Final = "observer.error"
CLOSER_ERROR: Final = "closer.error"
PINNED_ERROR: Final = "pinned.error"
RESOURCE_ERROR: Final = "resource.error"

#: The names a structlog logger method takes itself (``log.debug(event, **kw)``
#: is a bound method): a field by one of these names would be a ``TypeError``.
RESERVED: Final = frozenset({"event", "self"})

logger: Final = structlog.get_logger("bridge")


def tracing() -> bool:
    """Whether per-job debug events are wanted: structlog has been configured."""
    return structlog.is_configured()


def bindings() -> dict[str, Any]:
    """The ``structlog.contextvars`` bindings of the current context, safe to log.

    A binding named like one of :data:`RESERVED` is renamed (see the module's
    docstring). The result is a new dict, the caller's to change.
    """
    return safe_fields(get_contextvars())


def safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """*fields*, or a copy whose :data:`RESERVED` names have an ``_`` appended.

    A renamed field takes the first of ``name_``, ``name__`` ... that *fields*
    does not use. Returns *fields* itself when no name needs renaming.
    """
    if "event" not in fields and "self" not in fields:
        return fields  # the common case: two lookups
    renamed: dict[str, Any] = {}
    for name, value in fields.items():
        renamed[_free_name(name, fields, renamed) if name in RESERVED else name] = value
    return renamed


def _free_name(name: str, *taken: dict[str, Any]) -> str:
    new = name + "_"
    while any(new in names for names in taken):
        new += "_"
    return new


@final
class EventLog:
    """Emits one bridge's events; reports that bridge's first logging error.

    Create one per bridge (in ``Bridge.__init__``) and emit all of the
    bridge's events through it, from any thread, with :meth:`emit`.

    When logging an event raises (a processor, a renderer, the logger), the
    event is dropped and the error goes to :data:`sys.unraisablehook`, the
    first time only (see the module's docstring). :meth:`emit` itself never
    raises an :class:`Exception` and takes no lock it could wait on (a signal
    handler may call it).
    """

    __slots__ = ("_binding", "_name", "_reported")

    def __init__(self, bridge_name: str) -> None:
        self._name = bridge_name
        # Taken once and never released: the first failure to acquire it
        # reports. acquire(blocking=False) is atomic and never waits.
        self._reported = threading.Lock()
        # The logger bound from the configuration in force when it was bound:
        # replaced whole (one atomic assignment) when that changes.
        self._binding: Binding | None = None

    def __repr__(self) -> str:
        reported = "reported an error" if self._reported.locked() else "no error"
        return f"<EventLog of bridge {self._name!r}: {reported}>"

    def debug(self) -> Callable[..., Any] | None:
        """How to log a per-job debug event now, or ``None`` (any thread).

        ``None`` until structlog is configured, and while the configuration's
        debug method is structlog's no-op (a filtering bound logger above
        debug): the caller then builds no fields for an event nobody would
        see. Otherwise pass the result to :meth:`send`. Asked once per event,
        so a new configuration counts from the next event. Never raises: if
        the logger cannot be bound, the result raises that error when called,
        and :meth:`send` reports it.
        """
        if not CONFIG.is_configured:
            return None
        try:
            return self._current().debug
        except Exception:  # noqa: BLE001 - raised again by the call, then reported
            return self._debug_later

    def send(self, log: Callable[..., Any], event: str, fields: dict[str, Any]) -> None:
        """Log *event* with *fields* through *log*, what :meth:`debug` returned.

        As :meth:`emit` does, renaming and reporting alike; never raises an
        :class:`Exception`.
        """
        try:
            if "event" in fields or "self" in fields:
                fields = safe_fields(fields)
            log(event, **fields)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            self._failed(event, exc)

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """Log *event* at *level* (``"debug"``, ``"warning"``...) with *fields*.

        Callers put the job's submit-time bindings (:func:`bindings`) into
        *fields* themselves: ``capture_logs()`` drops ``merge_contextvars``.
        A field named like one of :data:`RESERVED` is renamed, never refused.
        An event at a level that structlog's configuration makes a no-op is
        not passed on (it would be dropped unseen).
        """
        try:
            method = self._current().method(level)
            if method is not None:
                if "event" in fields or "self" in fields:
                    fields = safe_fields(fields)
                method(event, **fields)
        except Exception as exc:  # noqa: BLE001 - reported below, never raised
            self._failed(event, exc)

    def _failed(self, event: str, error: Exception) -> None:
        """Report that *event* was lost, if it is this bridge's first loss."""
        if self._reported.acquire(blocking=False):
            LoggingFailure(self._name, event, error).report()

    def _debug_later(self, event: str, **fields: Any) -> None:
        """Bind the logger and log a debug event (raises if it cannot be bound)."""
        log = self._current().debug
        if log is not None:
            log(event, **fields)

    def _current(self) -> Binding:
        """The binding of structlog's configuration in force now.

        Bound once per configuration, not once per event: the lazy proxy
        (:data:`logger`) assembles a new bound logger at every call, half the
        cost of an event. Any ``structlog.configure()`` (``capture_logs()``
        entering or leaving included) installs new processors, so the next
        event binds again.
        """
        binding = self._binding
        if binding is None or not binding.is_of(CONFIG):
            return self._bind(CONFIG)
        return binding

    def _bind(self, config: Any) -> Binding:
        """Bind the logger from *config* now; keep it if nothing changed meanwhile.

        A logger bound while the configuration changed is used once and not
        kept: the next event binds again.
        """
        fresh = Binding(config, logger.bind)
        if (
            fresh.is_of(config)
            and getattr(fresh.logger, "_processors", fresh.processors) is fresh.processors
            and type(fresh.logger) is fresh.wrapper_class
        ):
            self._binding = fresh
        return fresh


def emit(level: str, event: str, fields: dict[str, Any]) -> None:
    """Log *event* outside any bridge's :class:`EventLog` (process-wide report).

    For code that has no bridge at hand; its first logging error in the
    process is reported, as :meth:`EventLog.emit` does per bridge.
    """
    _PROCESS_LOG.emit(level, event, fields)


_PROCESS_LOG: Final = EventLog("(no bridge)")


@final
class LoggingFailure:
    """What ``sys.unraisablehook`` receives as ``object`` for a lost event.

    Its ``repr()`` is what the default hook prints after "Exception ignored
    in:"; the hook's ``exc_value`` is the processor's own exception, with the
    processor's frames in its traceback.
    """

    __slots__ = ("_error", "bridge", "event")

    def __init__(self, bridge: str, event: str, error: BaseException) -> None:
        #: The name of the bridge whose event was lost.
        self.bridge: Final = bridge
        #: The event that was lost (``"job.failed"``...).
        self.event: Final = event
        self._error: BaseException | None = error

    def __repr__(self) -> str:
        return (
            f"<bridge {self.bridge!r} logging {self.event!r}: a structlog processor raised, "
            f"the event was dropped; later logging errors of this bridge are not reported>"
        )

    def report(self) -> None:
        """Pass the error to ``sys.unraisablehook``, once, on this thread.

        The interpreter's own path for an error nobody can catch does it: an
        exception raised by a weak reference's callback "is handled in exactly
        the same way as exceptions raised from an object's ``__del__()``"
        (the :mod:`weakref` documentation), so the hook gets a genuine
        ``UnraisableHookArgs`` (``sys.__unraisablehook__`` takes nothing else)
        and a hook that raises is handled by the interpreter as well. CPython
        calls the callback as soon as the referent is dropped, here and now.
        """
        referent = _Referent()
        ref = weakref.ref(referent, self)  # the hook's "object" is this instance
        del referent  # the callback runs: the hook sees the error
        del ref

    def __call__(self, _: object) -> None:
        """The weak reference's callback: raise the error (a second call does nothing)."""
        error, self._error = self._error, None
        if error is None:
            return
        try:
            raise error
        finally:
            del error  # no frame -> exception -> traceback -> frame cycle


@final
class _Referent:
    """Something to hold a weak reference to, and drop."""

    __slots__ = ("__weakref__",)
