"""The one place that relies on :mod:`concurrent.futures` internals.

:class:`~bridge.Job` is a :class:`concurrent.futures.Future`, so that
:func:`concurrent.futures.wait`, :func:`~concurrent.futures.as_completed` and
:func:`asyncio.wrap_future` accept it. Two things the public API does not
offer are done here, and only here:

- the base ``threading.Condition`` is made on first use rather than in
  ``__init__`` (most jobs are never waited for by a blocked thread, and a
  Condition is half a dozen objects for the garbage collector);
- the job is resolved by its owner through :meth:`SlimFuture._settle`, never
  by ``set_result()``.

What this leans on, unchanged from CPython 3.10 to 3.13 (checked by
``tests/test_future_internals.py``): the attributes ``_state``, ``_result``,
``_exception``, ``_waiters``, ``_done_callbacks`` and ``_condition`` that
``Future.__init__`` sets, the states ``PENDING`` and ``FINISHED`` of
``concurrent.futures._base``, the waiters' ``add_result``/``add_exception``,
and ``Future._invoke_callbacks()``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures._base import FINISHED, PENDING
from typing import Any, Final, Generic, TypeVar

__all__ = ["FINISHED", "PENDING", "SlimFuture"]

T = TypeVar("T")

# Guards the creation of a future's Condition, which is made on first use.
_CONDITION_LOCK: Final = threading.Lock()


class SlimFuture(concurrent.futures.Future[T], Generic[T]):
    """A Future with a lazy Condition that only its owner can resolve."""

    __slots__ = (
        "_done_callbacks",
        "_exception",
        "_lazy_condition",
        "_result",
        "_state",
        "_waiters",
    )

    def __init__(self) -> None:
        # Future.__init__ without its Condition (see the module docstring);
        # Job inlines these six assignments: keep the two in step.
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[T]], object]] = []
        self._lazy_condition: threading.Condition | None = None

    @property
    def _condition(self) -> threading.Condition:
        """The base class's Condition, made when something first needs it."""
        condition = self._lazy_condition
        if condition is None:
            with _CONDITION_LOCK:
                condition = self._lazy_condition
                if condition is None:
                    condition = self._lazy_condition = threading.Condition()
        return condition

    @_condition.setter
    def _condition(self, condition: threading.Condition) -> None:
        self._lazy_condition = condition

    def done(self) -> bool:
        """Whether the future is resolved."""
        return self._state == FINISHED

    def _settle(self, value: Any, error: BaseException | None) -> None:
        """Resolve the future (its owner calls this once). Any thread.

        Without a Condition nobody can be waiting: the state is set, and the
        Condition looked up again, in that order, so a waiter that makes one
        meanwhile either sees the future finished or is notified under its lock.
        Then the done callbacks run, on this thread.
        """
        self._result = value
        self._exception = error
        condition = self._lazy_condition
        if condition is None:
            self._state = FINISHED
            condition = self._lazy_condition
        if condition is not None:
            with condition:
                self._state = FINISHED
                for waiter in self._waiters:
                    if error is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]

    def _outcome(self) -> T:
        """The value, or raise the exception, of a resolved future."""
        error = self._exception
        if error is not None:
            try:
                raise error
            finally:
                del error  # no frame -> exception -> traceback -> frame cycle
        return self._result  # type: ignore[return-value]

    def _wait(self, timeout: float | None) -> bool:
        """Block until resolved or *timeout* passes; return whether resolved."""
        if self._state == FINISHED:
            return True
        with self._condition:
            if self._state != FINISHED:
                self._condition.wait(timeout)
            return bool(self._state == FINISHED)

    def set_result(self, result: T) -> None:
        """Not for these futures: the owner resolves them (``InvalidStateError``)."""
        raise concurrent.futures.InvalidStateError(
            f"a {type(self).__name__} is resolved by its bridge, not by set_result()"
        )

    def set_exception(self, exception: BaseException | None) -> None:
        """Not for these futures: the owner resolves them (``InvalidStateError``)."""
        raise concurrent.futures.InvalidStateError(
            f"a {type(self).__name__} is resolved by its bridge, not by set_exception()"
        )
