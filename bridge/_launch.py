"""Starting a bridge: its loop thread, then the watchdog that watches that loop.

Called once per bridge, by the registry's ``start`` (under no lock of ours),
on whichever thread started the bridge. Knows the jobs only through the
registry's snapshot of the unfinished ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _log
from ._job import Job
from ._loop import LoopThread
from ._registry import Registry
from ._scheduler import Scheduler
from ._shutdown import Shutdown
from ._watchdog import Watchdog

__all__ = ["job_of_task", "launch"]


def launch(
    name: str,
    registry: Registry,
    scheduler: Scheduler,
    shutdown: Shutdown,
    events: _log.EventLog,
    *,
    use_uvloop: bool,
    block_warning: float | None,
) -> None:
    """Start the loop thread (and a watchdog if *block_warning* is set); hand both to *shutdown*."""
    runner = LoopThread(
        name,
        use_uvloop=use_uvloop,
        on_death=scheduler.loop_died,
        closing=shutdown.close_on_loop,
        on_exit=scheduler.detach,
    )
    loop = runner.start()
    assert runner.ident is not None
    scheduler.attach(loop, runner.ident)
    shutdown.runner = runner
    if block_warning is None:
        return

    def describe(task: asyncio.Task[Any] | None) -> dict[str, Any]:
        job = job_of_task(registry, task)
        if job is None:
            return {"job_id": None, "key": None, "kind": None}
        return scheduler.fields(job)

    watchdog = Watchdog(loop, runner.ident, block_warning, describe, f"{name}-watchdog", events)
    shutdown.watchdog = watchdog
    watchdog.start()


def job_of_task(registry: Registry, task: asyncio.Task[Any] | None) -> Job[Any] | None:
    """The unfinished job whose task is *task*, or ``None``. Any thread (a snapshot)."""
    if task is None:
        return None
    for job in registry.unfinished():
        if job._task is task:
            return job
    return None
