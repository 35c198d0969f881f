"""Intake: turning one ``submit()`` call into an admitted job. Any thread.

It checks the arguments, builds the :class:`~bridge.Job`, has the registry
admit it (or refuse it, or name the job to join), logs ``job.submitted``
before the loop can see the job, delivers the cancellation of a job it
replaced, and wakes the loop once per burst. A refused submission leaves
nothing behind: no job, task or key, and a coroutine object passed in is
closed.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from . import _log
from ._arguments import check_kind, check_timeout, split_callable
from ._job import Job
from ._registry import Registry
from ._scheduler import Scheduler
from ._typing import USE_DEFAULT, DefaultType

__all__ = ["Intake"]

_ON_CONFLICT: Final = frozenset({"reject", "replace", "join"})


class Intake:
    """Admits jobs into one bridge's registry and hands them to its scheduler."""

    __slots__ = (
        "_default_timeout",
        "_events",
        "_registry",
        "_scheduler",
        "_start",
        "_timeouts",
        "_when_full",
    )

    def __init__(
        self,
        registry: Registry,
        scheduler: Scheduler,
        events: _log.EventLog,
        start: Callable[[], object],
        default_timeout: float | None,
        timeouts: Mapping[str, float | None],
        when_full: str,
    ) -> None:
        self._registry = registry
        self._scheduler = scheduler
        self._events = events
        self._start = start  # starts the bridge (at the first submission)
        self._default_timeout = default_timeout
        self._timeouts = timeouts
        self._when_full = when_full

    def submit(
        self,
        fn: Any,
        args: tuple[Any, ...],
        key: str | None,
        kind: str,
        timeout: float | DefaultType | None,
        on_conflict: str,
        observed: bool,
        block_timeout: float | None = None,
    ) -> Job[Any]:
        """Check, create and admit a job; return it (or the job it joined).

        Blocks only for room (``max_pending`` with ``when_full="block"``).
        """
        coro: Coroutine[Any, Any, Any] | None = None
        try:
            self._scheduler.check_forked()
            fn, coro = split_callable(fn, args)
            if fn is None:
                args = ()
            job = self._new_job(fn, args, coro, key, kind, timeout, on_conflict, observed)
            block_timeout = check_timeout("block_timeout", block_timeout)
            if self._scheduler.loop is None:
                self._start()
            joined = self._admit(job, on_conflict, block_timeout)
        except BaseException:
            if coro is not None:
                coro.close()
            raise
        if joined is not None:  # on_conflict="join"
            if coro is not None:
                coro.close()
            return joined
        return job

    def _new_job(
        self,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        coro: Coroutine[Any, Any, Any] | None,
        key: str | None,
        kind: str,
        timeout: float | DefaultType | None,
        on_conflict: str,
        observed: bool,
    ) -> Job[Any]:
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        check_kind(kind)
        if on_conflict not in _ON_CONFLICT:
            raise ValueError(
                f"on_conflict must be 'reject', 'replace' or 'join', not {on_conflict!r}"
            )
        if timeout is USE_DEFAULT:
            timeout = self._timeouts.get(kind, self._default_timeout)
        else:
            timeout = check_timeout("timeout", timeout)
        now = time.monotonic()
        return Job(
            self._scheduler,
            next(self._registry.ids),
            key,
            kind,
            fn,
            args,
            coro,
            contextvars.copy_context(),
            threading.current_thread().name,
            time.time(),
            now,
            None if timeout is None else now + timeout,
            observed,
        )

    def _admit(
        self, job: Job[Any], on_conflict: str, block_timeout: float | None
    ) -> Job[Any] | None:
        """Account for *job* and hand it to the loop; or return the job to join."""
        observers = self._scheduler.observers
        debug = self._events.debug()
        told = debug is not None or bool(observers.all)
        joined, replaced, wake = self._registry.admit(
            job, on_conflict, block_timeout, self._no_wait_reason, hand_over=not told
        )
        if joined is not None:
            return joined
        if told:
            # Before the loop can see the job: its start never precedes its submission.
            if debug is not None:
                self._events.send(debug, _log.JOB_SUBMITTED, self._scheduler.fields(job))
            if observers.all:
                observers.submitted(job)
            wake = self._registry.hand_over(job)
        if replaced is not None:
            self._scheduler.cancel_soon(replaced)
        if wake:
            self._scheduler.wake()
        return None

    def _no_wait_reason(self) -> str | None:
        """Why this submission may not wait for room (``None``: it may)."""
        if self._when_full == "reject":
            return ""
        if threading.get_ident() == self._scheduler.loop_ident:
            return "; submit() never blocks on the loop thread"
        return None
