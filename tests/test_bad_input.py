"""Bad input gets a clear error naming the argument, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from bridge import Bridge, BridgeClosed, DuplicateJob, WrongThread

NeverAwaitedCheck = Callable[[], contextlib.AbstractContextManager[None]]


async def work(x: int = 0) -> int:
    return x


async def forever() -> None:
    await asyncio.sleep(3600)


async def count_tasks() -> int:
    return len(asyncio.all_tasks())


class Footprint:
    """What a bridge holds: compared before and after a refused submission."""

    def __init__(self, b: Bridge, key: str) -> None:
        self.tasks = b.call(count_tasks) if b.thread is not None else None
        stats = b.stats()
        self.state = (stats.active, stats.submitted, b.jobs(), b.get(key))
        self.b = b
        self.key = key

    def assert_unchanged(self) -> None:
        stats = self.b.stats()
        assert (stats.active, stats.submitted, self.b.jobs(), self.b.get(self.key)) == self.state
        if self.tasks is not None:
            assert self.b.call(count_tasks) == self.tasks


def closed(coro: Coroutine[Any, Any, Any]) -> bool:
    return inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_the_never_awaited_check_can_fail(no_never_awaited: NeverAwaitedCheck) -> None:
    with pytest.raises(AssertionError), no_never_awaited():
        work()  # a coroutine nobody awaits


# -- fn ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [42, "work", None, [work]], ids=repr)
def test_not_callable_and_not_a_coroutine(bridge: Bridge, fn: Any) -> None:
    before = Footprint(bridge, "k")
    with pytest.raises(TypeError, match=r"\bfn\b"):
        bridge.submit(fn, key="k")
    before.assert_unchanged()


def sync_int() -> int:
    return 42


def sync_none() -> None:
    return None


def generator() -> Iterator[int]:
    yield 1


async def async_generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    "fn", [sync_int, sync_none, lambda: "text", dict, generator, async_generator], ids=repr
)
def test_callable_that_returns_no_awaitable(
    bridge: Bridge, fn: Callable[[], Any], no_never_awaited: NeverAwaitedCheck
) -> None:
    before = Footprint(bridge, "k")
    with no_never_awaited(), pytest.raises(TypeError, match=r"\bfn\b"):
        bridge.submit(fn, key="k")
    before.assert_unchanged()


def test_async_function_called_with_wrong_arguments_fails_the_job(bridge: Bridge) -> None:
    job = bridge.submit(work, 1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="argument"):
        job.result(timeout=10)
    assert bridge.stats().failed == 1
    assert bridge.stats().active == 0


def test_async_generator_object_is_refused(bridge: Bridge) -> None:
    agen = async_generator()
    with pytest.raises(TypeError, match=r"\bfn\b"):
        bridge.submit(agen)  # type: ignore[arg-type]
    assert bridge.stats().active == 0


def test_coroutine_object_plus_args_is_refused_and_closed(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    before = Footprint(bridge, "k")
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(TypeError, match="coroutine object"):
            bridge.submit(coro, 2, key="k")  # type: ignore[call-arg]
        assert closed(coro)
        del coro
    before.assert_unchanged()


def test_call_with_coroutine_object_plus_args_is_refused_and_closed(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(TypeError):
            bridge.call(coro, 2)  # type: ignore[call-arg]
        assert closed(coro)
        del coro
    assert bridge.stats().submitted == 0


# -- timeout, on_conflict, key, kind -------------------------------------------------------


BAD_OPTIONS = [
    ({"timeout": -1}, ValueError, r"\btimeout\b"),
    ({"timeout": -0.001}, ValueError, r"\btimeout\b"),
    ({"timeout": float("nan")}, ValueError, r"\btimeout\b"),
    ({"timeout": "5"}, TypeError, r"\btimeout\b"),
    ({"timeout": True}, TypeError, r"\btimeout\b"),
    ({"on_conflict": "ignore"}, ValueError, r"\bon_conflict\b"),
    ({"on_conflict": None}, ValueError, r"\bon_conflict\b"),
    ({"key": 42}, TypeError, r"\bkey\b"),
    ({"key": b"call:1"}, TypeError, r"\bkey\b"),
    ({"kind": 3}, TypeError, r"\bkind\b"),
    ({"kind": ""}, TypeError, r"\bkind\b"),
]


@pytest.mark.parametrize(("options", "error", "names"), BAD_OPTIONS, ids=repr)
def test_bad_option_with_async_function(
    bridge: Bridge, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    before = Footprint(bridge, "k")
    options.setdefault("key", "k")
    with pytest.raises(error, match=names):
        bridge.submit(work, 1, **options)
    before.assert_unchanged()


@pytest.mark.parametrize(("options", "error", "names"), BAD_OPTIONS, ids=repr)
def test_bad_option_with_coroutine_object_closes_it(
    bridge: Bridge,
    options: dict[str, Any],
    error: type[Exception],
    names: str,
    no_never_awaited: NeverAwaitedCheck,
) -> None:
    before = Footprint(bridge, "k")
    options.setdefault("key", "k")
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(error, match=names):
            bridge.submit(coro, **options)
        assert closed(coro)
        del coro
    before.assert_unchanged()


@pytest.mark.parametrize(("options", "error", "names"), BAD_OPTIONS, ids=repr)
def test_bad_option_with_plain_callable_closes_its_coroutine(
    bridge: Bridge,
    options: dict[str, Any],
    error: type[Exception],
    names: str,
    no_never_awaited: NeverAwaitedCheck,
) -> None:
    made: list[Coroutine[Any, Any, Any]] = []

    def factory() -> Coroutine[Any, Any, int]:
        made.append(work(1))
        return made[-1]

    options.setdefault("key", "k")
    with no_never_awaited():
        with pytest.raises(error, match=names):
            bridge.submit(factory, **options)
        assert all(closed(coro) for coro in made)
        made.clear()
    assert bridge.stats().active == 0


# call() has no on_conflict: it always rejects a taken key.
CALL_BAD_OPTIONS = [row for row in BAD_OPTIONS if "on_conflict" not in row[0]]


@pytest.mark.parametrize(("options", "error", "names"), CALL_BAD_OPTIONS, ids=repr)
def test_bad_option_with_call(
    bridge: Bridge,
    options: dict[str, Any],
    error: type[Exception],
    names: str,
    no_never_awaited: NeverAwaitedCheck,
) -> None:
    before = Footprint(bridge, "k")
    options.setdefault("key", "k")
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(error, match=names):
            bridge.call(coro, **options)
        assert closed(coro)
        del coro
    before.assert_unchanged()


def test_bad_input_on_a_never_started_bridge_does_not_start_it() -> None:
    b = Bridge(name="never-started")
    try:
        with pytest.raises(TypeError):
            b.submit(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            b.submit(work, timeout=-1)
        assert b.thread is None
    finally:
        b.shutdown(timeout=1)


# -- duplicate key -------------------------------------------------------------------------


def test_duplicate_key_rejected_leaves_nothing_and_closes_the_coroutine(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    first = bridge.submit(forever, key="call:1")
    before = Footprint(bridge, "call:1")
    rejected = bridge.stats().rejected
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(DuplicateJob, match="call:1") as info:
            bridge.submit(coro, key="call:1")
        assert closed(coro)
        del coro
    assert isinstance(info.value, KeyError)
    before.assert_unchanged()
    assert bridge.get("call:1") is first
    assert bridge.stats().rejected == rejected + 1
    with pytest.raises(DuplicateJob):
        bridge.call(work, key="call:1")
    assert bridge.get("call:1") is first


# -- after shutdown ------------------------------------------------------------------------


def test_submit_after_shutdown_raises_bridge_closed_and_closes_the_coroutine(
    no_never_awaited: NeverAwaitedCheck,
) -> None:
    b = Bridge(name="closed")
    b.start()
    b.shutdown(timeout=1)
    before = b.stats()
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(BridgeClosed, match="shut down"):
            b.submit(coro, key="k")
        assert closed(coro)
        with pytest.raises(BridgeClosed):
            b.submit(work, 1)
        with pytest.raises(BridgeClosed):
            b.call(work(2))
        del coro
    after = b.stats()
    assert after.submitted == before.submitted
    assert after.active == 0
    assert after.rejected == before.rejected + 3
    assert b.jobs() == []
    assert b.get("k") is None


def test_submit_after_shutdown_of_a_never_started_bridge(
    no_never_awaited: NeverAwaitedCheck,
) -> None:
    b = Bridge(name="never-started")
    b.shutdown(timeout=1)
    with no_never_awaited():
        coro = work(1)
        with pytest.raises(BridgeClosed):
            b.submit(coro)
        assert closed(coro)
        del coro
    assert b.thread is None


# -- on the loop thread --------------------------------------------------------------------


def test_call_on_the_loop_thread_raises_wrong_thread_and_closes_the_coroutine(
    bridge: Bridge, no_never_awaited: NeverAwaitedCheck
) -> None:
    async def inner() -> tuple[str, bool, int]:
        submitted = bridge.stats().submitted
        coro = work(1)
        try:
            bridge.call(coro)
        except WrongThread as exc:
            return str(exc), closed(coro), bridge.stats().submitted - submitted
        return "", False, -1

    with no_never_awaited():
        message, was_closed, new_jobs = bridge.call(inner)
    assert "deadlock" in message
    assert "call()" in message
    assert was_closed
    assert new_jobs == 0


def test_call_with_function_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    async def inner() -> None:
        bridge.call(work, 1)

    with pytest.raises(WrongThread, match="deadlock"):
        bridge.call(inner)
    assert bridge.stats().active == 0


def test_blocking_function_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    work_sync = bridge.blocking(work)

    async def inner() -> None:
        work_sync(1)

    with pytest.raises(WrongThread, match="deadlock"):
        bridge.call(inner)


def test_job_result_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    async def inner() -> None:
        other = bridge.submit(forever)
        try:
            other.result()
        finally:
            other.cancel()

    with pytest.raises(WrongThread, match="deadlock"):
        bridge.call(inner)


def test_shutdown_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    async def inner() -> None:
        bridge.shutdown(timeout=1)

    with pytest.raises(WrongThread, match="deadlock"):
        bridge.call(inner)
    assert bridge.call(work, 5) == 5  # still running


# -- the constructor and blocking() --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"name": ""}, TypeError, r"\bname\b"),
        ({"name": 1}, TypeError, r"\bname\b"),
        ({"default_timeout": -1}, ValueError, r"\bdefault_timeout\b"),
        ({"default_timeout": float("nan")}, ValueError, r"\bdefault_timeout\b"),
        ({"default_timeout": "30"}, TypeError, r"\bdefault_timeout\b"),
        ({"timeouts": {"hangup": -5}}, ValueError, r"timeouts\['hangup'\]"),
        ({"timeouts": {"hangup": "5"}}, TypeError, r"timeouts\['hangup'\]"),
        ({"timeouts": {1: 5.0}}, TypeError, r"\bkind\b"),
        ({"timeouts": [("hangup", 5.0)]}, TypeError, r"\btimeouts\b"),
    ],
    ids=repr,
)
def test_bad_bridge_options(options: dict[str, Any], error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):
        Bridge(**options)


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"timeout": -1}, ValueError, r"\btimeout\b"),
        ({"timeout": float("nan")}, ValueError, r"\btimeout\b"),
        ({"kind": ""}, TypeError, r"\bkind\b"),
    ],
    ids=repr,
)
def test_bad_blocking_options(
    bridge: Bridge, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        bridge.blocking(work, **options)


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_bad_shutdown_timeout(bridge: Bridge, timeout: float) -> None:
    with pytest.raises(ValueError, match=r"\btimeout\b"):
        bridge.shutdown(timeout=timeout)
    assert bridge.call(work, 3) == 3  # not shut down
