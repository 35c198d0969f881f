"""The one place that relies on :mod:`concurrent.futures` internals.

:class:`~bridge.Job` is a :class:`concurrent.futures.Future`, so that
:func:`concurrent.futures.wait`, :func:`~concurrent.futures.as_completed` and
:func:`asyncio.wrap_future` accept it. Two things the public API does not
offer are done here, and only here:

- the base ``threading.Condition`` is made on first use rather than in
  ``__init__`` (most jobs are never waited for by a blocked thread), and it is
  a :class:`SlimCondition`: one slotted object around one ``RLock``, where a
  ``threading.Condition`` is an instance dict, five bound methods and a deque
  (about a kilobyte; :func:`concurrent.futures.wait` makes one for every
  future it is given);
- a future that is already resolved, and has no Condition yet, never gets
  one: its state can no longer change, so it hands out :data:`SETTLED`, a
  Condition whose lock does nothing (waiting on it returns at once);
- the lists of waiters and done callbacks are made on first use too;
- the job is resolved by its owner through :meth:`SlimFuture._settle`, never
  by ``set_result()``.

What this leans on, unchanged from CPython 3.10 to 3.13 (checked by
``tests/test_future_internals.py``): the attributes ``_state``, ``_result``,
``_exception``, ``_waiters``, ``_done_callbacks`` and ``_condition`` that
``Future.__init__`` sets, the states ``PENDING`` and ``FINISHED`` of
``concurrent.futures._base``, the waiters' ``add_result``/``add_exception``,
and ``Future._invoke_callbacks()``; and that ``concurrent.futures`` uses a
future's ``_condition`` only through ``acquire()``, ``release()``, ``with``,
``wait()`` and ``notify_all()``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures._base import FINISHED, PENDING
from typing import Any, Final, Generic, TypeVar, final

__all__ = ["FINISHED", "PENDING", "SETTLED", "SlimCondition", "SlimFuture"]

T = TypeVar("T")

# Guards the creation of a future's Condition, which is made on first use.
_CONDITION_LOCK: Final = threading.Lock()


@final
class SlimCondition:
    """The part of ``threading.Condition`` a future needs, in two objects. Any thread.

    A re-entrant lock (as ``threading.Condition()`` makes by default) and, once
    a thread waits, the list of the waiters' locks. ``wait()`` behaves as
    ``Condition.wait()``: it releases the lock (all recursion levels), blocks
    until notified or *timeout* passes, re-acquires it and returns whether it
    was notified.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiters: list[Any] | None = None  # made by the first wait()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock (as ``RLock.acquire``)."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock once."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notification, re-acquire; return whether notified."""
        lock: Any = self._lock
        if not lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _allocate_lock()
        waiter.acquire()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        saved = lock._release_save()
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            else:
                notified = waiter.acquire(True, timeout) if timeout > 0 else waiter.acquire(False)
            return notified
        finally:
            lock._acquire_restore(saved)
            if not notified:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass  # notified after the timeout: nobody else waits for it

    def notify_all(self) -> None:
        """Wake every waiting thread (the lock must be held)."""
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for waiter in waiters:
                waiter.release()

    def notify(self, n: int = 1) -> None:
        """Wake up to *n* waiting threads (the lock must be held)."""
        waiters = self._waiters
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1


@final
class _Settled:
    """The Condition of a resolved future: nothing left to guard or wait for."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        return None

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def notify_all(self) -> None:
        return None

    def notify(self, n: int = 1) -> None:
        return None


#: What a resolved future without a Condition hands out as its ``_condition``.
SETTLED: Final = _Settled()

_allocate_lock: Final = threading.Lock


class SlimFuture(concurrent.futures.Future[T], Generic[T]):
    """A Future with a lazy Condition that only its owner can resolve."""

    __slots__ = (
        "_exception",
        "_lazy_callbacks",
        "_lazy_condition",
        "_lazy_waiters",
        "_result",
        "_state",
    )

    def __init__(self) -> None:
        # Future.__init__ without its Condition and lists (see the module
        # docstring); Job inlines these six assignments: keep the two in step.
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._lazy_waiters: list[Any] | None = None
        self._lazy_callbacks: list[Callable[[Any], object]] | None = None
        self._lazy_condition: SlimCondition | None = None

    @property
    def _waiters(self) -> list[Any]:
        """The base class's waiters (``concurrent.futures.wait``), a list made on first use.

        Only read and changed with the Condition held (or once resolved, when
        nothing but the GIL-atomic ``append``/``remove`` of ``wait()`` touch it).
        Two threads waiting at once on a resolved future cannot each make a
        list: between the read and the store below there is no call and no
        backward jump, where CPython's eval loop could switch threads.
        """
        waiters = self._lazy_waiters
        if waiters is None:
            waiters = self._lazy_waiters = []
        return waiters

    @_waiters.setter
    def _waiters(self, waiters: list[Any]) -> None:
        self._lazy_waiters = waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:
        """The base class's done callbacks, a list made on first use (under the Condition)."""
        callbacks = self._lazy_callbacks
        if callbacks is None:
            callbacks = self._lazy_callbacks = []
        return callbacks

    @_done_callbacks.setter
    def _done_callbacks(self, callbacks: list[Callable[[Any], object]]) -> None:
        self._lazy_callbacks = callbacks

    @property
    def _condition(self) -> Any:
        """The base class's Condition, made when something first needs it.

        A future resolved before anyone needed one never gets one (:data:`SETTLED`).
        """
        condition = self._lazy_condition
        if condition is None:
            if self._state == FINISHED:
                return SETTLED  # final: nothing can change under a lock any more
            with _CONDITION_LOCK:
                condition = self._lazy_condition
                if condition is None:
                    condition = self._lazy_condition = SlimCondition()
        return condition

    @_condition.setter
    def _condition(self, condition: Any) -> None:
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
                for waiter in self._lazy_waiters or ():
                    if error is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                condition.notify_all()
        if self._lazy_callbacks:  # else nobody asked: the base class would find none
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
