"""Small helpers shared by test modules (import them: ``from helpers import ...``)."""

from __future__ import annotations

import asyncio
import threading


class Watched:
    """An async callable that runs until cancelled and records what happened to it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.got_cancelled = threading.Event()
        self.unwound = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.got_cancelled.set()
            raise
        finally:
            self.unwound.set()
