"""submit(), call() and blocking(): every form of async work, from any thread."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest

from bridge import Bridge, BridgeClosed, JobState

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


async def where() -> tuple[str, str]:
    return threading.current_thread().name, request_id.get()


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x * 10


class Service:
    def __init__(self) -> None:
        self.greeted: list[str] = []

    async def greet(self, name: str) -> str:
        self.greeted.append(name)
        return f"hello {name}"


class Ready:
    """An awaitable that is not a coroutine."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __await__(self) -> Generator[Any, None, Any]:
        yield from asyncio.sleep(0).__await__()
        return self.result


# -- the forms of work submit() accepts ---------------------------------------------------


def test_submit_async_function_with_positional_args(bridge: Bridge) -> None:
    assert bridge.submit(add, 2, 3).result(timeout=10) == 5


def test_submit_coroutine_object(bridge: Bridge) -> None:
    assert bridge.submit(add(2, 3, scale=10)).result(timeout=10) == 50


def test_submit_partial_with_keywords(bridge: Bridge) -> None:
    job = bridge.submit(functools.partial(add, scale=3), 1, 1)
    assert job.result(timeout=10) == 6
    nested = functools.partial(functools.partial(add, 1), scale=2)
    assert bridge.submit(nested, 4).result(timeout=10) == 10


def test_submit_plain_callable_returning_a_coroutine(bridge: Bridge) -> None:
    called_on: list[str] = []

    def make(a: int, b: int) -> Any:
        called_on.append(threading.current_thread().name)
        return add(a, b, scale=100)

    assert bridge.submit(make, 1, 2).result(timeout=10) == 300
    assert bridge.submit(lambda: add(1, 1)).result(timeout=10) == 2
    # Called at submit, on the submitting thread (it builds the awaitable).
    assert called_on == [threading.current_thread().name]


def test_submit_plain_callable_returning_another_awaitable(bridge: Bridge) -> None:
    assert bridge.submit(lambda: Ready("ready")).result(timeout=10) == "ready"


def test_submit_object_with_async_call(bridge: Bridge) -> None:
    assert bridge.submit(AsyncCallable(), 4).result(timeout=10) == 40


def test_submit_bound_async_method(bridge: Bridge) -> None:
    service = Service()
    assert bridge.submit(service.greet, "ana").result(timeout=10) == "hello ana"
    assert service.greeted == ["ana"]


def test_async_function_runs_on_the_loop_thread(bridge: Bridge) -> None:
    thread_name, _ = bridge.submit(where).result(timeout=10)
    assert thread_name == bridge.name
    assert bridge.thread is not None
    assert thread_name == bridge.thread.name


def test_submit_from_inside_a_job_does_not_block(bridge: Bridge) -> None:
    async def parent() -> int:
        job = bridge.submit(add, 20, 1)
        return await job * 2

    assert bridge.call(parent) == 42


def test_submit_never_blocks_on_a_busy_loop(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    jobs = [bridge.submit(add, i, 0) for i in range(50)]
    assert all(job.state is JobState.PENDING for job in jobs)
    loop_blocker.release()
    assert [job.result(timeout=10) for job in jobs] == list(range(50))


# -- call() and blocking() --------------------------------------------------------------------


def test_call_returns_the_value(bridge: Bridge) -> None:
    assert bridge.call(add, 1, 2) == 3
    assert bridge.call(add(1, 2, scale=2)) == 6
    assert bridge.call(functools.partial(add, scale=5), 1, 1) == 10


def test_call_reraises_the_coroutines_exception(bridge: Bridge) -> None:
    async def fails() -> None:
        raise LookupError("no such call")

    with pytest.raises(LookupError, match="no such call"):
        bridge.call(fails)


def test_call_with_key_and_kind(bridge: Bridge) -> None:
    async def me() -> tuple[str | None, str]:
        (info,) = [i for i in bridge.jobs() if i.key == "call:1"]
        return info.key, info.kind

    assert bridge.call(me, key="call:1", kind="tts") == ("call:1", "tts")
    assert bridge.get("call:1") is None


def test_blocking_has_the_same_positional_signature(bridge: Bridge) -> None:
    greet_sync = bridge.blocking(Service().greet)
    assert greet_sync("bo") == "hello bo"
    assert greet_sync.__name__ == "greet"
    add_sync: Callable[[int, int], int] = bridge.blocking(add)
    assert add_sync(2, 2) == 4


def test_blocking_applies_kind_and_timeout(bridge: Bridge) -> None:
    async def me() -> tuple[str, float | None]:
        (info,) = bridge.jobs(kind="hangup")
        assert info.deadline is not None
        return info.kind, info.deadline - info.submitted_at

    kind, timeout = bridge.blocking(me, kind="hangup", timeout=7.0)()
    assert kind == "hangup"
    assert timeout == pytest.approx(7.0, abs=0.01)


def test_blocking_rejects_a_non_callable(bridge: Bridge) -> None:
    with pytest.raises(TypeError, match="fn"):
        bridge.blocking(42)  # type: ignore[arg-type]


# -- threads not created by threading ---------------------------------------------------


def test_submit_and_call_from_a_thread_not_created_by_threading(bridge: Bridge) -> None:
    """A C library's callback thread (``Dummy-N``) can submit and call."""
    results: queue.Queue[Any] = queue.Queue()

    def pjsip_callback() -> None:
        try:
            job = bridge.submit(add, 1, 2, key="dummy")
            results.put(("submit", job.result(timeout=10), job.info().thread))
            results.put(("call", bridge.call(add, 3, 4), None))
            results.put(("blocking", bridge.blocking(add)(5, 6), None))
        except BaseException as exc:
            results.put(("error", exc, None))

    _thread.start_new_thread(pjsip_callback, ())
    got = [results.get(timeout=10) for _ in range(3)]
    assert got[0][:2] == ("submit", 3)
    assert got[0][2].startswith("Dummy-")
    assert got[1:] == [("call", 7, None), ("blocking", 11, None)]


def test_many_foreign_threads_call_at_once(bridge: Bridge) -> None:
    results: queue.Queue[Any] = queue.Queue()
    start = threading.Barrier(8)

    def callback(n: int) -> None:
        try:
            start.wait(10)
            results.put(sum(bridge.call(add, n, i) for i in range(20)))
        except BaseException as exc:
            results.put(exc)

    for n in range(8):
        _thread.start_new_thread(callback, (n,))
    got = sorted(results.get(timeout=20) for _ in range(8))
    assert got == sorted(20 * n + 190 for n in range(8))


# -- contextvars --------------------------------------------------------------------------------


def test_contextvars_are_copied_at_submit(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    token = request_id.set("call-7")
    try:
        job = bridge.submit(where)
        request_id.set("changed after submit")
    finally:
        request_id.reset(token)
    loop_blocker.release()
    assert job.result(timeout=10) == (bridge.name, "call-7")


def test_contextvars_of_each_submitting_thread(bridge: Bridge) -> None:
    results: dict[str, Any] = {}

    def worker(name: str) -> None:
        request_id.set(name)
        results[name] = bridge.call(where)[1]

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {f"t{i}": f"t{i}" for i in range(4)}


def test_changes_inside_the_job_do_not_leak_out(bridge: Bridge) -> None:
    async def change() -> str:
        request_id.set("inside")
        return request_id.get()

    assert bridge.call(change) == "inside"
    assert request_id.get() == "unset"
    assert bridge.call(where)[1] == "unset"


def test_contextvars_default_when_unset(bridge: Bridge) -> None:
    assert bridge.call(where)[1] == "unset"


# -- starting ------------------------------------------------------------------------------


def test_submit_starts_a_bridge_that_was_never_started() -> None:
    b = Bridge(name="lazy")
    assert b.thread is None
    try:
        assert b.submit(add, 1, 1).result(timeout=10) == 2
        assert b.thread is not None
        assert b.thread.name == "lazy"
        assert b.thread.daemon
        assert b.thread.is_alive()
    finally:
        b.shutdown(timeout=1)


def test_call_starts_a_bridge_that_was_never_started() -> None:
    b = Bridge(name="lazy-call")
    try:
        assert b.call(add, 2, 2) == 4
    finally:
        b.shutdown(timeout=1)


def test_start_is_idempotent() -> None:
    b = Bridge(name="pbx")
    try:
        assert b.start() is b
        thread = b.thread
        assert b.start() is b
        assert b.thread is thread
        assert b.name == "pbx"
    finally:
        b.shutdown(timeout=1)


def test_start_from_many_threads_starts_one_loop() -> None:
    b = Bridge(name="racy-start")
    barrier = threading.Barrier(6)
    threads_seen: list[threading.Thread | None] = []

    def starter() -> None:
        barrier.wait(10)
        threads_seen.append(b.start().thread)

    workers = [threading.Thread(target=starter) for _ in range(6)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(threads_seen) == 6
        assert len({id(thread) for thread in threads_seen}) == 1
    finally:
        b.shutdown(timeout=1)


def test_context_manager_starts_and_shuts_down() -> None:
    with Bridge(name="ctx") as b:
        assert b.call(add, 1, 2) == 3
        thread = b.thread
        assert thread is not None
    assert not thread.is_alive()
    with pytest.raises(BridgeClosed):
        b.submit(add, 1, 2)


def test_start_after_shutdown_raises_bridge_closed() -> None:
    b = Bridge(name="done")
    b.start()
    b.shutdown(timeout=1)
    with pytest.raises(BridgeClosed):
        b.start()


def test_uvloop_is_used_when_asked() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    with Bridge(name="uv", use_uvloop=True) as b:
        assert b.call(loop_type) is uvloop.Loop
    with Bridge(name="plain") as b:
        assert not issubclass(b.call(loop_type), uvloop.Loop)
