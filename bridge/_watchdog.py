"""The loop-block watchdog: a thread that notices when the loop stops turning."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import _log

__all__ = ["Watchdog"]


class Watchdog:
    """Pings the loop every ``threshold / 2`` seconds from a daemon thread.

    When a ping has not been answered for *threshold* seconds, it logs one
    ``loop.blocked`` warning naming the job that runs, how long the loop has
    been blocked and the loop thread's stack; then it waits for the loop to
    come back before pinging again. The jobs' hot path is not involved.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_ident: int,
        threshold: float,
        describe_task: Callable[[asyncio.Task[Any] | None], dict[str, Any]],
        name: str,
        events: _log.EventLog,
    ) -> None:
        self._loop = loop
        self._loop_ident = loop_ident
        self._threshold = threshold
        self._describe_task = describe_task
        self._events = events
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)
        #: How many times the loop was found blocked.
        self.blocks = 0

    @property
    def thread(self) -> threading.Thread:
        """The watchdog's thread."""
        return self._thread

    def start(self) -> None:
        """Start watching. Any thread."""
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Stop watching; wait for the thread until *deadline* (monotonic). Any thread."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _watch(self) -> None:
        interval = self._threshold / 2
        while not self._stop.wait(interval):
            pong = threading.Event()
            sent = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(pong.set)
            except RuntimeError:  # the loop has closed
                return
            if pong.wait(self._threshold):
                continue
            self._report(time.monotonic() - sent)
            while not pong.wait(interval):
                if self._stop.is_set():
                    return

    def _report(self, blocked_for: float) -> None:
        self.blocks += 1
        task = asyncio.current_task(self._loop)
        frame = sys._current_frames().get(self._loop_ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        fields = self._describe_task(task)
        fields["blocked_ms"] = round(blocked_for * 1000.0, 1)
        fields["threshold_ms"] = round(self._threshold * 1000.0, 1)
        fields["stack"] = stack
        self._events.emit("warning", _log.LOOP_BLOCKED, fields)
