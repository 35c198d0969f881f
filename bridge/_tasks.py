"""How a job's task is made: the Context it runs in, and eager start on 3.12+.

Loop thread only. Two rules hold for every job: its task runs in a Context
of its own (never another job's), and ``job._ctx`` keeps what ``submit()``
saw, for the job's events.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine
from typing import Any, Final

from ._job import Job

__all__ = ["EAGER", "EMPTY_CONTEXT", "create_eager_task", "create_task", "task_context"]

#: Whether the scheduler's drain starts tasks eagerly (Python 3.12+): the first
#: step of a job runs inside the drain, on the loop thread, instead of one loop
#: iteration later (one handle and one ready-queue round less per job; a job
#: that never suspends is done before the drain moves on). Never inside
#: ``submit()``: even on the loop thread, submit() only schedules the drain.
EAGER: Final = sys.version_info >= (3, 12)

#: The ``job._ctx`` of every started job whose submit-time context was empty:
#: a marker (the scheduler reads no bindings from it), never run, never the
#: context a task runs in.
EMPTY_CONTEXT: Final = contextvars.Context()


def task_context(job: Job[Any]) -> contextvars.Context:
    """The Context *job*'s task runs in: its own, never another job's.

    The task runs in a copy, so that ``job._ctx`` stays as ``submit()`` saw
    it, for tracing. When that context is empty (nothing to trace) the task
    takes it over instead, and ``job._ctx`` becomes the :data:`EMPTY_CONTEXT`
    marker: one copy less per job. Every task's context comes from its own
    job's ``copy_context()`` in ``submit()``, so no two jobs ever run in one.
    """
    ctx = job._ctx
    if len(ctx):
        return ctx.copy()
    job._ctx = EMPTY_CONTEXT
    return ctx


if sys.version_info >= (3, 12):

    def create_eager_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        """A task whose first step runs now, inside this call (3.12+)."""
        return asyncio.Task(coro, loop=loop, context=ctx, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:  # pragma: no cover - 3.10 and 3.11

    def create_eager_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        """Not before 3.12 (:data:`EAGER` is false there)."""
        raise NotImplementedError("eager tasks need Python 3.12")


if sys.version_info >= (3, 11):

    def create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        """A task running *coro* in *ctx*, first step at the loop's next turn."""
        return loop.create_task(coro, context=ctx)

else:  # pragma: no cover - 3.10 only

    def create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], ctx: contextvars.Context
    ) -> asyncio.Task[None]:
        """A task running *coro* in *ctx*, first step at the loop's next turn."""
        return ctx.run(loop.create_task, coro)
