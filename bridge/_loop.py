"""The loop thread: one daemon thread running one asyncio event loop.

It knows two ends. An orderly one: :meth:`LoopThread.request_stop` runs the
owner's closing coroutine on the loop, then stops it. And a death: the loop
stopped although nobody asked (a job called ``loop.stop()``), or a
``BaseException`` escaped from a task (``SystemExit`` in a task a job
spawned). Then the owner's ``on_death(reason)`` runs on this thread first, and
the closing coroutine after it, on the revived loop, so that pending tasks
unwind and are not destroyed while pending. Either way ``on_exit()`` runs last
on the thread: once it has, no other thread is the loop thread, even one that
is given the same thread identifier later.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ._job import one_line

__all__ = ["LoopThread", "cancel_leftover_tasks"]

#: How long the loop may take to cancel leftover tasks while it closes.
_TASK_GRACE: Final = 0.2
#: How many times a dead loop is revived to finish its closing coroutine.
_REVIVALS: Final = 3


class LoopThread:
    """Runs an event loop on a daemon thread of its own.

    The thread is a daemon so that a loop blocked by a misbehaving coroutine can
    never keep the process alive; :meth:`join` waits for it with a bound.
    """

    __slots__ = (
        "_closed_by_owner",
        "_closing",
        "_dying",
        "_failure",
        "_on_death",
        "_on_exit",
        "_ready",
        "_stop_posted",
        "_thread",
        "_use_uvloop",
        "ident",
        "loop",
    )

    def __init__(
        self,
        name: str,
        *,
        use_uvloop: bool,
        on_death: Callable[[str], object],
        closing: Callable[[], Awaitable[None]],
        on_exit: Callable[[], object],
    ) -> None:
        self._use_uvloop = use_uvloop
        self._on_death = on_death
        self._closing = closing
        self._on_exit = on_exit
        self._dying = False  # loop thread only: the loop died, closing runs once
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop_posted = False
        self._closed_by_owner = False  # set on the loop just before it stops
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ident: int | None = None

    @property
    def thread(self) -> threading.Thread:
        """The loop thread."""
        return self._thread

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the thread and return its loop once it runs. Any thread."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        assert self.loop is not None
        return self.loop

    def request_stop(self) -> None:
        """Run the closing coroutine on the loop, then stop it; once. Any thread."""
        if self._stop_posted:
            return
        self._stop_posted = True
        loop = self.loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed already
            loop.call_soon_threadsafe(self._begin_close)

    def join(self, deadline: float) -> bool:
        """Wait until the thread ends or *deadline* (monotonic); return whether it ended."""
        if self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            loop = _new_loop(self._use_uvloop)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._failure = exc
            self._ready.set()
            return
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.ident = threading.get_ident()
        self._ready.set()
        try:
            reason = self._run(loop)
            if reason is not None:
                self._dying = True
                self._on_death(reason)
                self._finish_dead_loop(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            self._on_exit()  # before the thread ends: its ident may be reused

    def _run(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """Run the loop; return why it died, or ``None`` if its owner closed it."""
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - the loop died of it: reported
            return f"died: {one_line(exc)} escaped from a task"
        if self._closed_by_owner:
            return None
        return "stopped without Bridge.shutdown() asking (something called loop.stop())"

    def _finish_dead_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Revive a dead loop just long enough to run the closing coroutine."""
        closing = asyncio.ensure_future(self._closing(), loop=loop)
        for _ in range(_REVIVALS):
            try:
                loop.run_until_complete(closing)
            except BaseException:  # noqa: BLE001 - stopped or killed again: try again
                if closing.done():
                    break
                continue
            break
        if not closing.done():
            closing.cancel()

    def _begin_close(self) -> None:
        if self._dying:
            return  # the closing coroutine already runs, on the revived loop
        assert self.loop is not None
        self.loop.create_task(self._close())

    async def _close(self) -> None:
        try:
            await self._closing()
        finally:
            self._closed_by_owner = True
            asyncio.get_running_loop().stop()


async def cancel_leftover_tasks() -> None:
    """Cancel every other task on this loop, so none is destroyed while pending."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_TASK_GRACE)


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
