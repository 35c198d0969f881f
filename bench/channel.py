"""Case 4: moving many small items thread -> loop and loop -> thread.

``Bridge.channel`` against a raw janus queue created on a plain loop thread.
The same producer and consumer code runs in both; only the set-up differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import janus

from ._approaches import make_bridge
from ._util import loop_thread

__all__ = ["run"]

APPROACHES = ("Bridge.channel", "janus")
DIRECTIONS = ("thread->loop", "loop->thread")


def run(approach: str, loop_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Items per second for ``params["n"]`` items in ``params["direction"]``."""
    n = params["n"]
    with _setup(approach, loop_name, params["maxsize"]) as (queue, start_coro):
        if params["direction"] == "thread->loop":
            wall = _thread_to_loop(queue, start_coro, n)
        else:
            wall = _loop_to_thread(queue, start_coro, n)
    return {"n": n, "wall_s": wall, "items_per_s": n / wall}


Starter = Callable[[Any], "Any"]


@contextlib.contextmanager
def _setup(approach: str, loop_name: str, maxsize: int) -> Iterator[tuple[Any, Starter]]:
    """Yield (an object with sync_q/async_q, a function running a coroutine on the loop)."""
    if approach == "Bridge.channel":
        with make_bridge(loop_name) as b:
            yield b.channel(maxsize), lambda coro: b.submit(coro, timeout=None)
    elif approach == "janus":
        with loop_thread(loop_name) as loop:

            async def create() -> janus.Queue[Any]:
                queue: janus.Queue[Any] = janus.Queue(maxsize)
                await queue.async_q.put(None)  # binds the queue to this loop
                await queue.async_q.get()
                return queue

            queue = asyncio.run_coroutine_threadsafe(create(), loop).result()
            yield queue, lambda coro: asyncio.run_coroutine_threadsafe(coro, loop)
            queue.close()
    else:
        raise ValueError(f"unknown approach {approach!r}")


def _thread_to_loop(queue: Any, start_coro: Starter, n: int) -> float:
    ready = threading.Event()

    async def consume(async_q: janus.AsyncQueue[int]) -> float:
        ready.set()
        get = async_q.get
        for _ in range(n):
            await get()
        return time.perf_counter()

    done = start_coro(consume(queue.async_q))
    ready.wait()
    put = queue.sync_q.put
    start = time.perf_counter()
    for i in range(n):
        put(i)
    return float(done.result()) - start


def _loop_to_thread(queue: Any, start_coro: Starter, n: int) -> float:
    async def produce(async_q: janus.AsyncQueue[int]) -> None:
        put = async_q.put
        for i in range(n):
            await put(i)

    get = queue.sync_q.get
    start = time.perf_counter()
    done = start_coro(produce(queue.async_q))
    for i in range(n):
        if get() != i:
            raise AssertionError("items out of order")
    end = time.perf_counter()
    done.result()
    return end - start
