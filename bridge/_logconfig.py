"""structlog's configuration as the bridge reads it, once per event.

structlog offers ``get_config()``, a new dict at every call; an event of the
bridge checks whether the configuration changed since its logger was bound,
three times per job, so it reads the object ``configure()`` writes to instead
(:data:`CONFIG`), when that object agrees with ``get_config()``. A
:class:`Binding` is the logger bound from one configuration, with its level
methods, and knows which of them are structlog's no-op (a filtering bound
logger below its level), so that nothing is built for an event nobody sees.
For structlog's own filtering classes (:data:`NATIVE`) a level method is
``_proxy_to_logger`` with the level's name, what their methods call: one
frame and one copy of the fields less per event.

Any thread; nothing here takes a lock.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Final, final

import structlog

__all__ = ["CONFIG", "NATIVE", "NOP", "Binding", "PublicConfig", "config_state"]


def _structlog_nop() -> Any:
    """structlog's no-op level method, or ``None`` if this structlog has none.

    A filtering bound logger (``structlog.make_filtering_bound_logger``) has
    one function for every level below its minimum, which does nothing. It is
    that only if a logger filtering at NOTSET has another one for debug.
    """
    below = getattr(structlog.make_filtering_bound_logger(logging.CRITICAL), "debug", None)
    above = getattr(structlog.make_filtering_bound_logger(logging.NOTSET), "debug", None)
    return below if below is not None and below is not above else None


#: A level whose method is this function logs nothing, whatever its fields.
NOP: Final = _structlog_nop()


@final
class PublicConfig:
    """structlog's configuration read through ``structlog.get_config()``.

    The fallback of :data:`CONFIG`: the same attribute names as structlog's
    own configuration object, each read building the public dict.
    """

    __slots__ = ()

    @property
    def is_configured(self) -> bool:
        return structlog.is_configured()

    @property
    def default_processors(self) -> Any:
        return structlog.get_config()["processors"]

    @property
    def default_context_class(self) -> Any:
        return structlog.get_config()["context_class"]

    @property
    def default_wrapper_class(self) -> Any:
        return structlog.get_config()["wrapper_class"]

    @property
    def logger_factory(self) -> Any:
        return structlog.get_config()["logger_factory"]


#: (attribute of structlog's configuration object, key of ``get_config()``).
SETTINGS: Final = (
    ("default_processors", "processors"),
    ("default_context_class", "context_class"),
    ("default_wrapper_class", "wrapper_class"),
    ("logger_factory", "logger_factory"),
)


def config_state() -> Any:
    """The object that holds structlog's configuration, to read per event.

    structlog keeps it in one module-level object that ``configure()`` and
    ``reset_defaults()`` assign to; ``get_config()`` copies it into a new dict
    at every call. Reading the object's four attributes is a third of that
    (an event checks them every time). Used only when it agrees with
    ``get_config()`` now; otherwise (another structlog) the public view.
    """
    state = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
    public = structlog.get_config()
    try:
        agrees = all(getattr(state, attr) is public[key] for attr, key in SETTINGS)
        agrees = agrees and state.is_configured is structlog.is_configured()  # type: ignore[union-attr]
    except AttributeError:
        agrees = False
    return state if agrees else PublicConfig()


#: Where the configuration in force is read (see :func:`config_state`).
CONFIG: Any = config_state()


#: The level names the bridge logs at, and their numbers.
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _native_classes() -> frozenset[type[Any]]:
    """structlog's own filtering bound logger classes whose level methods only pass on.

    ``make_filtering_bound_logger(level)`` returns one class per standard
    level; a method of one at or above that level hands the event to the
    class's ``_proxy_to_logger(level_name, event, **fields)`` (which structlog
    documents as the method wrapper classes call), and does nothing else for
    an event without positional arguments. The bridge calls that method
    itself: one frame and one copy of the fields less, a sixth of an event.
    Empty (never bypassed) unless a trial event reaches the processors the
    same way both ways, with the same result.
    """
    classes: frozenset[Any] = frozenset(
        map(structlog.make_filtering_bound_logger, _LEVELS.values())
    )
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(_: object, method: str, event_dict: Any) -> Any:
        seen.append((method, dict(event_dict)))
        return event_dict

    for cls in classes:
        trial = cls(structlog.ReturnLogger(), processors=[record], context={"bound": 1})
        for name in _LEVELS:
            if getattr(getattr(trial, name), "__func__", None) is NOP:
                continue  # below the class's level: never called
            via_method = getattr(trial, name)("trial", field=2)
            via_proxy = getattr(trial, "_proxy_to_logger", None)
            if via_proxy is None or via_proxy(name, "trial", field=2) != via_method:
                return frozenset()
            if len(seen) != 2 or seen[0] != seen[1]:
                return frozenset()
            seen.clear()
    return classes


#: Filtering bound logger classes called through ``_proxy_to_logger`` (see
#: :func:`_native_classes`); a subclass, or any other wrapper class, is not.
NATIVE: Final = _native_classes()


@final
class Binding:
    """The logger bound from one structlog configuration, and its level methods.

    Made whole by one thread, then shared by the threads that emit and never
    changed, except :attr:`methods`, filled in on first use (two threads
    filling the same level store the same method).
    """

    __slots__ = (
        "context_class",
        "debug",
        "factory",
        "logger",
        "methods",
        "processors",
        "wrapper_class",
    )

    def __init__(self, config: Any, bind: Callable[[], Any]) -> None:
        # The configuration read before binding (see EventLog._bind).
        self.processors = config.default_processors
        self.context_class = config.default_context_class
        self.wrapper_class = config.default_wrapper_class
        self.factory = config.logger_factory
        self.logger = bind()
        #: level -> how to log at that level, or ``None`` when it is a no-op.
        self.methods: dict[str, Any] = {}
        #: How to log a debug event (``debug(event, **fields)``), or ``None``
        #: when it is structlog's no-op. A logger without a debug method gets
        #: one that raises what looking it up raises, for the caller to report.
        self.debug: Callable[..., Any] | None
        try:
            self.debug = self.method("debug")
        except Exception:  # noqa: BLE001 - raised again by each call
            self.debug = functools.partial(_call, self.logger, "debug")

    def is_of(self, config: Any) -> bool:
        """Whether *config* (structlog's configuration) is still the one bound from."""
        return (
            self.processors is config.default_processors
            and self.wrapper_class is config.default_wrapper_class
            and self.context_class is config.default_context_class
            and self.factory is config.logger_factory
        )

    def method(self, level: str) -> Any:
        """How to log at *level* (``method(event, **fields)``); ``None`` if a no-op.

        Raises what ``getattr(logger, level)`` raises (then nothing is kept).
        """
        try:
            return self.methods[level]
        except KeyError:
            pass
        logger = self.logger
        method = getattr(logger, level)
        if NOP is not None and getattr(method, "__func__", None) is NOP:
            method = None
        elif type(logger) in NATIVE and level in _LEVELS:
            method = functools.partial(logger._proxy_to_logger, level)
        self.methods[level] = method
        return method


def _call(logger: Any, level: str, event: str, **fields: Any) -> Any:
    """``logger.<level>(event, **fields)``, looked up at each call."""
    return getattr(logger, level)(event, **fields)
