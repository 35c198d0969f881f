"""The loop thread: one daemon thread running one asyncio event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["LoopThread"]

#: How long the loop may take to cancel leftover tasks while it closes.
_TASK_GRACE: Final = 0.2


class LoopThread:
    """Runs an event loop on a daemon thread of its own.

    The thread is a daemon so that a loop blocked by a misbehaving coroutine can
    never keep the process alive; :meth:`stop` joins it with a bound.
    """

    __slots__ = ("_failure", "_ready", "_thread", "_use_uvloop", "ident", "loop")

    def __init__(self, name: str, *, use_uvloop: bool) -> None:
        self._use_uvloop = use_uvloop
        self._ready = threading.Event()
        self._failure: BaseException | None = None
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

    def stop(self, before_stop: Callable[[], Awaitable[None]], timeout: float) -> bool:
        """Run *before_stop* on the loop, stop the loop and join the thread.

        Waits at most *timeout* seconds (the loop may be blocked). Any thread but
        the loop thread. Returns whether the thread has ended.
        """
        loop = self.loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed already
            loop.call_soon_threadsafe(self._begin_close, before_stop)
        self._thread.join(timeout)
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
            loop.run_forever()
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _begin_close(self, before_stop: Callable[[], Awaitable[None]]) -> None:
        assert self.loop is not None
        self.loop.create_task(self._close(before_stop))

    async def _close(self, before_stop: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await _cancel_leftover_tasks()  # tasks the jobs spawned, first
            await before_stop()
            await loop.shutdown_asyncgens()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(loop.shutdown_default_executor(), _TASK_GRACE)
        finally:
            loop.stop()


async def _cancel_leftover_tasks() -> None:
    """Cancel tasks the jobs left behind, so none is destroyed while pending."""
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
