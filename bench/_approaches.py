"""The ways across the thread boundary, each as a blocking ``fn(value)``.

Every approach runs the same coroutine (:func:`bench._util.echo`) and blocks the
calling thread until its value is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bridge import Bridge

from ._util import echo, loop_kind, loop_thread

__all__ = ["APPROACHES", "FLOOR", "blocking_call", "floor_submit", "make_bridge"]

#: The floor of a cross-thread hop: ``loop.call_soon_threadsafe`` starts a task,
#: whose done callback resolves a plain ``concurrent.futures.Future``. No
#: bookkeeping at all: what any approach that returns a Future pays at least.
FLOOR = "floor: call_soon_threadsafe + Future"

#: Approach name -> loops it applies to.
APPROACHES: dict[str, tuple[str, ...]] = {
    "Bridge.call": ("asyncio", "uvloop"),
    "Bridge.submit().result()": ("asyncio", "uvloop"),
    "run_coroutine_threadsafe": ("asyncio", "uvloop"),
    FLOOR: ("asyncio", "uvloop"),
    "anyio BlockingPortal.call": ("asyncio", "uvloop"),
    "thread + asyncio.run": ("asyncio", "uvloop"),
}


@contextlib.contextmanager
def make_bridge(loop_name: str, **options: Any) -> Iterator[Bridge]:
    """A started Bridge on the named loop; fails loudly if uvloop was not used."""
    with Bridge(name="bench", use_uvloop=loop_name == "uvloop", **options) as b:
        actual = loop_kind(b._loop)  # type: ignore[arg-type]
        if actual != loop_name:
            raise RuntimeError(f"asked for a bridge on {loop_name}, got {actual}")
        yield b


@contextlib.contextmanager
def blocking_call(approach: str, loop_name: str) -> Iterator[Callable[[Any], Any]]:
    """Set up *approach* on *loop_name*; yield ``fn(value) -> value``."""
    if approach == "Bridge.call":
        with make_bridge(loop_name) as b:
            yield lambda value: b.call(echo, value)
    elif approach == "Bridge.submit().result()":
        with make_bridge(loop_name) as b:
            yield lambda value: b.submit(echo, value).result()
    elif approach == "run_coroutine_threadsafe":
        with loop_thread(loop_name) as loop:
            rcts = asyncio.run_coroutine_threadsafe
            yield lambda value: rcts(echo(value), loop).result()
    elif approach == FLOOR:
        with loop_thread(loop_name) as loop:
            submit = floor_submit(loop)
            yield lambda value: submit(echo(value)).result()
    elif approach == "anyio BlockingPortal.call":
        from anyio.from_thread import start_blocking_portal

        options = {"use_uvloop": loop_name == "uvloop"}
        with start_blocking_portal("asyncio", backend_options=options) as portal:
            yield lambda value: portal.call(echo, value)
    elif approach == "thread + asyncio.run":
        yield lambda value: _thread_and_run(value, loop_name)
    else:
        raise ValueError(f"unknown approach {approach!r}")


def floor_submit(
    loop: asyncio.AbstractEventLoop,
) -> Callable[[Coroutine[Any, Any, Any]], concurrent.futures.Future[Any]]:
    """``submit(coro) -> Future``: the floor (see :data:`FLOOR`) on *loop*."""
    call_soon_threadsafe = loop.call_soon_threadsafe
    create_task = loop.create_task

    def resolve(future: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            future.cancel()
            return
        error = task.exception()
        if error is None:
            future.set_result(task.result())
        else:
            future.set_exception(error)

    def start(coro: Coroutine[Any, Any, Any], future: concurrent.futures.Future[Any]) -> None:
        create_task(coro).add_done_callback(functools.partial(resolve, future))

    def submit(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call_soon_threadsafe(start, coro, future)
        return future

    return submit


def _thread_and_run(value: Any, loop_name: str) -> Any:
    """The seed application's pattern: a new thread running a new loop per call."""
    box: list[Any] = []

    def main() -> None:
        if loop_name == "uvloop":
            import uvloop

            box.append(uvloop.run(echo(value)))
        else:
            box.append(asyncio.run(echo(value)))

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    return box[0]
