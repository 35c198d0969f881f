"""Backpressure: Bridge(max_pending=..., when_full=...)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from bridge import Bridge, BridgeClosed, Overloaded


def _gate(b: Bridge) -> tuple[Callable[[], object], Callable[[], None]]:
    """(a coroutine function that waits for the gate, the opener).

    The waiting happens on a worker thread, so opening the gate needs no job:
    these tests fill the bridge up to max_pending.
    """
    release = threading.Event()

    async def wait() -> None:
        await b.to_thread(release.wait)

    return wait, release.set


def test_reject_mode_raises_overloaded_and_closes_the_coroutine(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(max_pending=2, when_full="reject")
    wait, open_gate = _gate(b)
    held = [b.submit(wait), b.submit(wait)]

    async def extra() -> None:
        raise AssertionError("must never run")

    coro = extra()
    with pytest.raises(Overloaded, match="max_pending=2"):
        b.submit(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    stats = b.stats()
    assert (stats.active, stats.overloaded, stats.rejected) == (2, 1, 1)
    open_gate()
    for job in held:
        job.result(timeout=10)


def test_block_mode_times_out_with_overloaded(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(max_pending=1)
    wait, open_gate = _gate(b)
    held = b.submit(wait)
    with pytest.raises(Overloaded, match="no room came in time"):
        b.submit(wait, block_timeout=0.05)
    assert b.stats().active == 1
    open_gate()
    held.result(timeout=10)


def test_block_mode_waits_for_room(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(max_pending=1)
    wait, open_gate = _gate(b)
    held = b.submit(wait)
    submitting = threading.Event()
    accepted = threading.Event()

    async def answer() -> int:
        return 42

    box: list[int] = []

    def submitter() -> None:
        submitting.set()
        box.append(b.submit(answer).result(timeout=10))
        accepted.set()

    thread = threading.Thread(target=submitter)
    thread.start()
    assert submitting.wait(10)
    assert not accepted.wait(0.1), "submit() returned although the bridge was full"
    open_gate()
    assert accepted.wait(10)
    thread.join(10)
    assert box == [42]
    held.result(timeout=10)


def test_shutdown_wakes_a_blocked_submitter_with_bridge_closed(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(max_pending=1)
    wait, open_gate = _gate(b)
    b.submit(wait)
    submitting = threading.Event()
    errors: list[BaseException] = []

    def submitter() -> None:
        submitting.set()
        try:
            b.submit(wait)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=submitter)
    thread.start()
    assert submitting.wait(10)
    b.shutdown(timeout=0.05)
    open_gate()  # the worker thread the held job used can end now
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], BridgeClosed)


def test_loop_thread_never_blocks_it_is_refused_at_once(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(max_pending=3)  # when_full="block"; the caller job is one of 3
    wait, open_gate = _gate(b)
    held = b.submit(wait)

    async def submit_two_from_the_loop() -> str:
        b.submit(wait)  # takes the last place
        try:
            b.submit(wait)
        except Overloaded as exc:
            return str(exc)
        return "not refused"

    assert "never blocks on the loop thread" in b.call(submit_two_from_the_loop, timeout=10)
    open_gate()
    held.result(timeout=10)


@pytest.mark.stress
def test_bound_holds_under_sixteen_submitting_threads(make_bridge: Callable[..., Bridge]) -> None:
    limit, threads, per_thread = 100, 16, 200
    b = make_bridge(max_pending=limit)
    seen_active: list[int] = []
    barrier = threading.Barrier(threads)

    async def job(i: int) -> int:
        seen_active.append(b.stats().active)
        await asyncio.sleep(0)
        return i

    results: list[list[int]] = [[] for _ in range(threads)]

    def submitter(t: int) -> None:
        barrier.wait()
        jobs = [b.submit(job, t * per_thread + i) for i in range(per_thread)]
        results[t] = [j.result(timeout=30) for j in jobs]

    workers = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sorted(v for r in results for v in r) == list(range(threads * per_thread))
    assert max(seen_active) <= limit
    assert max(seen_active) > 1  # the submitters really ran concurrently


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"max_pending": -5}, ValueError, "max_pending"),
        ({"max_pending": 2.5}, TypeError, "max_pending"),
        ({"when_full": "drop"}, ValueError, "when_full"),
        ({"thread_workers": 0}, ValueError, "thread_workers"),
        ({"thread_initializer": 3}, TypeError, "thread_initializer"),
        ({"loop_block_warning": 0}, ValueError, "loop_block_warning"),
        ({"loop_block_warning": -1.0}, ValueError, "loop_block_warning"),
    ],
)
def test_bad_options_are_refused(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=match):
        Bridge(**kwargs)  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_bad_block_timeout_is_refused(bridge: Bridge) -> None:
    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(ValueError, match="block_timeout"):
        bridge.submit(coro, block_timeout=-1)
    assert coro.cr_frame is None
    assert bridge.stats().active == 0
