"""Resources: async context managers the bridge enters and exits on its loop.

At shutdown the exits run newest first, because a resource entered later may
use one entered earlier (a TTS client on top of an HTTP pool): running them
concurrently would close the pool under the client still flushing through it.
So one exit runs at a time, and the budget is shared fairly: each exit gets an
equal share of the time left, and whatever an exit does not use passes to the
ones after it. An exit that overruns its share is cancelled, reported as a
``TimeoutError``, and the next one starts; a slow exit costs the others nothing
but its own share.

Each exit runs in a task of its own, so an exit that ignores its cancellation
is left behind instead of holding up the others, and whatever it raises, a
``BaseException`` included, is recorded as that resource's error. Raising
``KeyboardInterrupt`` or ``SystemExit`` on the loop thread would only kill that
thread before the other resources close (a real Ctrl+C reaches the main
thread, never the loop's), so they are recorded like any other error.

The shutdown runs :meth:`ResourceStack.aclose` on the loop while the loop and
every task still run (the resources' own tasks too), and reads the
:attr:`ResourceStack.outcome` from its own thread once
:meth:`ResourceStack.wait_closed` returns.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar, final

from . import _log
from ._arguments import check_async_function
from ._exceptions import BridgeClosed

__all__ = ["ResourceStack", "ResourcesOutcome"]

T = TypeVar("T")

#: How an event is logged: ``emit(level, event, fields)`` (``EventLog.emit``).
Emit = Callable[[str, str, dict[str, Any]], None]

#: The part of its share after which an exit still running is cancelled: the
#: rest of the share is its time to unwind, so the budget is never exceeded.
_CANCEL_AT: Final = 0.9


@dataclass(frozen=True)
class ResourcesOutcome:
    """What the resources' exits came to so far (a snapshot; any thread)."""

    #: Resources exited, errors and overruns included.
    closed: int = 0
    #: ``(repr of the resource, exception)`` for each exit that raised or
    #: overran its share of the budget (a ``TimeoutError``), in exit order.
    errors: tuple[tuple[str, BaseException], ...] = ()
    #: Resources entered and not exited yet (the one exiting now included),
    #: oldest first.
    open: tuple[str, ...] = ()
    #: Whether :meth:`ResourceStack.aclose` has finished.
    finished: bool = False


@final
class ResourceStack:
    """The resources entered so far, exited in reverse order at shutdown.

    :meth:`enter` and :meth:`aclose` run on the loop thread. :attr:`outcome`,
    :attr:`closed`, :attr:`errors` and :meth:`wait_closed` may be used from any
    thread: the loop thread publishes every change as one new
    :class:`ResourcesOutcome`, so a reader never sees half of one.
    """

    __slots__ = ("_began", "_done", "_emit", "_entered", "_finish_by", "_outcome")

    def __init__(self, emit: Emit = _log.emit) -> None:
        self._emit = emit  # logs resource.error
        self._entered: list[tuple[AbstractAsyncContextManager[Any], str]] = []  # loop thread
        self._outcome = ResourcesOutcome()  # replaced whole by the loop thread
        self._began = threading.Event()  # aclose() has started; _finish_by is set
        self._done = threading.Event()  # aclose() has finished
        self._finish_by = 0.0  # time.monotonic() by which aclose() ends, loop permitting

    @property
    def outcome(self) -> ResourcesOutcome:
        """The exits so far; final once :meth:`wait_closed` returned True."""
        return self._outcome

    @property
    def closed(self) -> int:
        """How many resources have been exited, errors included."""
        return self._outcome.closed

    @property
    def errors(self) -> tuple[tuple[str, BaseException], ...]:
        """``(repr, exception)`` for each resource whose exit raised or overran."""
        return self._outcome.errors

    async def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Call *factory*, enter what it returns, and remember to exit it.

        Raises:
            TypeError: *factory* is not callable or returned no async context manager.
            BridgeClosed: the exits have begun; *factory* is not called. A
                resource whose ``__aenter__`` was still running when
                :meth:`aclose` finished is exited at once, then this is raised.
                (One entered while the exits run is exited by :meth:`aclose`.)
        """
        check_async_function(
            "factory", factory, expected="a callable that returns an async context manager"
        )
        if self._began.is_set():
            raise BridgeClosed("the bridge is closing its resources: no new one is entered")
        manager = factory()
        if not (hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")):
            _close_quietly(manager)
            raise TypeError(
                f"factory must return an async context manager (with __aenter__ and "
                f"__aexit__), not {type(manager).__name__}"
            )
        value = await manager.__aenter__()
        if self._done.is_set():  # too late for aclose() to exit it
            await manager.__aexit__(None, None, None)
            raise BridgeClosed("the bridge closed its resources while this one was entered")
        name = repr(manager)
        self._entered.append((manager, name))  # aclose(), if running, exits it next
        self._publish(open=(*self._outcome.open, name))
        return value

    async def aclose(self, budget: float) -> None:
        """Exit every resource, newest first, within *budget* seconds in all.

        Each exit gets an equal share of the time left; one that has not ended
        by 90% of its share is cancelled and given the rest to unwind, then
        recorded as a ``TimeoutError`` (left running if it ignores the
        cancellation). Errors are recorded and logged; none stops the other
        exits, and this never raises one. Only a cancellation of the task
        running ``aclose()`` itself stops it early. Later calls return at once.
        """
        if self._began.is_set():
            return
        deadline = time.monotonic() + budget
        self._finish_by = deadline
        self._began.set()
        try:
            while self._entered:
                manager, name = self._entered.pop()
                position = len(self._entered)  # in outcome.open; later enters only append
                share = max(0.0, deadline - time.monotonic()) / (position + 1)
                error = await _exit(manager, name, share)
                self._record(position, name, error)
        finally:
            self._publish(finished=True)
            self._done.set()

    def wait_closed(self, *, start_timeout: float | None, slack: float = 0.1) -> bool:
        """Wait until :meth:`aclose` has finished; return whether it has.

        Waits up to *start_timeout* seconds (``None`` or ``math.inf``: no
        limit) for the exits to begin, then until they end, but never beyond the
        end of their budget plus *slack* seconds: an exit that blocks the loop
        thread cannot be cut short, so the caller stops waiting for it. Any
        thread but the loop's.
        """
        if not self._began.wait(_finite(start_timeout)):
            return False
        return self._done.wait(_finite(max(0.0, self._finish_by + slack - time.monotonic())))

    def _record(self, position: int, name: str, error: BaseException | None) -> None:
        """The exit of the resource at *position* in ``outcome.open`` is over (loop thread)."""
        outcome = self._outcome
        errors = outcome.errors
        if error is not None:
            errors = (*errors, (name, error))
            self._emit("error", _log.RESOURCE_ERROR, {"resource": name, "exc_info": error})
        still_open = outcome.open[:position] + outcome.open[position + 1 :]
        self._publish(closed=outcome.closed + 1, errors=errors, open=still_open)

    def _publish(self, **changes: Any) -> None:
        """Replace the outcome in one assignment (loop thread), for readers on any thread."""
        self._outcome = replace(self._outcome, **changes)


async def _exit(
    manager: AbstractAsyncContextManager[Any], name: str, share: float
) -> BaseException | None:
    """Exit *manager* in a task of its own within *share* seconds; return its error."""
    task = asyncio.get_running_loop().create_task(
        _run_exit(manager), name=f"bridge resource exit {name}"
    )
    done, _ = await asyncio.wait({task}, timeout=share * _CANCEL_AT)
    if done:  # cancelled before its first step only by someone else: its error too
        return asyncio.CancelledError() if task.cancelled() else task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=share * (1 - _CANCEL_AT))  # its time to unwind
    return TimeoutError(
        f"the resource did not exit within its share of the shutdown budget ({share:.3f} s)"
    )


async def _run_exit(manager: AbstractAsyncContextManager[Any]) -> BaseException | None:
    try:
        await manager.__aexit__(None, None, None)
    except BaseException as exc:  # noqa: BLE001 - the resource's error, recorded in the report
        return exc
    return None


def _finite(timeout: float | None) -> float | None:
    """*timeout* for ``threading.Event.wait``, which refuses ``math.inf``."""
    return None if timeout is None or math.isinf(timeout) else timeout


def _close_quietly(obj: object) -> None:
    """Close a coroutine a factory returned by mistake, so it is not "never awaited"."""
    close = getattr(obj, "close", None)
    if callable(close) and hasattr(obj, "cr_frame"):
        close()
