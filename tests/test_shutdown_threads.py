"""shutdown() and the bridge's own threads (issue 9, symptoms 6 and 11).

shutdown() called from one of the bridge's ``to_thread`` workers works and
returns a report, and later calls from any thread return the same report.
``ShutdownReport.threads_left`` names the bridge-owned threads (loop thread,
workers, watchdog) still alive when shutdown() returns, not counting its
caller; the report is not ``clean`` while it names any.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from bridge import Bridge, BridgeClosed, ShutdownReport


async def nothing() -> None:
    return None


def shut_down_from_a_worker(b: Bridge) -> tuple[concurrent.futures.Future[Any], list[str]]:
    """Have a job call ``b.shutdown()`` on one of *b*'s worker threads.

    Returns a future with what that call returned or raised, and a list that
    receives the worker thread's name.
    """
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
    caller: list[str] = []

    def shut_down_here() -> None:
        caller.append(threading.current_thread().name)
        try:
            outcome.set_result(b.shutdown(timeout=0.2))
        except BaseException as exc:
            outcome.set_exception(exc)

    async def stop_the_bridge() -> None:
        await b.to_thread(shut_down_here)

    b.submit(stop_the_bridge, kind="hangup")
    return outcome, caller


def call_in_new_thread(fn: Any) -> concurrent.futures.Future[Any]:
    """Call ``fn()`` on a new thread; a future with what it returned or raised."""
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(fn())
        except BaseException as exc:
            outcome.set_exception(exc)

    thread = threading.Thread(target=run, name="later-caller")
    thread.start()
    thread.join(30)
    return outcome


def call_on_a_thread_with_ident(ident: int, fn: Any) -> concurrent.futures.Future[Any] | None:
    """Call ``fn()`` on the first new thread that gets *ident*; ``None`` if none did.

    Threads reuse the identifiers of threads that have ended (glibc does so
    within a few threads); a bridge must not take such a thread for its dead
    loop thread.
    """
    not_it = object()
    for _ in range(200):
        outcome = call_in_new_thread(lambda: fn() if threading.get_ident() == ident else not_it)
        if outcome.exception(timeout=0) is not None or outcome.result(timeout=0) is not not_it:
            return outcome
    return None


# -- symptom 6: shutdown() from a worker thread ------------------------------------------------


def test_shutdown_from_a_worker_thread_returns_a_report(bridge: Bridge) -> None:
    outcome, caller = shut_down_from_a_worker(bridge)
    report = outcome.result(timeout=30)  # re-raises what the worker's shutdown() raised
    assert isinstance(report, ShutdownReport)
    assert caller[0] not in report.threads_left  # the caller itself is not counted
    assert report.threads_left == ()
    assert bridge.stats().active == 0  # every job resolved


def test_a_later_shutdown_returns_the_worker_threads_report(bridge: Bridge) -> None:
    outcome, _ = shut_down_from_a_worker(bridge)
    concurrent.futures.wait([outcome], timeout=30)
    assert outcome.done(), "shutdown() on the worker thread did not return"
    later = bridge.shutdown(timeout=1.0)  # from the main thread, whatever the first one did
    assert isinstance(later, ShutdownReport)
    assert later == outcome.result()
    # A thread started after the loop thread ended may get its identifier: still not the loop's.
    from_another_thread = call_in_new_thread(bridge.shutdown)
    assert from_another_thread.result(timeout=30) == later


def test_a_thread_that_reuses_the_loop_threads_identifier_may_call_shutdown(
    bridge: Bridge,
) -> None:
    bridge.call(nothing)
    loop_thread = bridge.thread
    assert loop_thread is not None
    assert loop_thread.ident is not None
    report = bridge.shutdown(timeout=5.0)
    assert not loop_thread.is_alive()

    def later_calls() -> ShutdownReport:
        with pytest.raises(BridgeClosed):  # not WrongThread: this is not the loop thread
            bridge.call(nothing)
        return bridge.shutdown()

    outcome = call_on_a_thread_with_ident(loop_thread.ident, later_calls)
    if outcome is None:
        pytest.skip("no new thread got the ended loop thread's identifier here")
    assert outcome.result(timeout=0) == report


# -- symptom 11: threads_left ------------------------------------------------------------------


def test_clean_shutdown_leaves_no_thread(bridge: Bridge) -> None:
    async def use_a_worker() -> str:
        return await bridge.to_thread(lambda: threading.current_thread().name)

    worker_name = bridge.call(use_a_worker)
    assert worker_name != bridge.name
    report = bridge.shutdown(timeout=5.0)
    assert report.threads_left == ()
    assert report.clean


def test_clean_shutdown_with_a_watchdog_leaves_no_thread(make_bridge: Any) -> None:
    b = make_bridge(loop_block_warning=30.0)
    b.call(nothing)
    report = b.shutdown(timeout=5.0)
    assert report.threads_left == ()
    assert report.clean


def test_a_worker_still_running_is_named_and_the_report_is_not_clean(bridge: Bridge) -> None:
    entered = threading.Event()
    release = threading.Event()
    worker: list[threading.Thread] = []
    leftover: list[asyncio.Future[object]] = []

    def blocked_call() -> None:  # a native call that ignores everything
        worker.append(threading.current_thread())
        entered.set()
        release.wait(30)

    async def start_a_blocked_call() -> None:
        # Fire and forget: the job itself ends, only the worker thread stays busy.
        leftover.append(asyncio.ensure_future(bridge.to_thread(blocked_call)))

    try:
        bridge.call(start_a_blocked_call)
        assert entered.wait(10)
        report = bridge.shutdown(timeout=1.0)
        assert worker[0].is_alive()
        assert report.threads_left == (worker[0].name,)
        assert (report.cancelled, report.stuck, report.resource_errors) == ((), (), ())
        assert not report.clean  # only because of the thread left behind
    finally:
        release.set()
    worker[0].join(10)
    assert not worker[0].is_alive()


def test_a_blocked_loop_thread_is_named(bridge: Bridge, loop_blocker: Any) -> None:
    loop_thread = bridge.thread
    assert loop_thread is not None
    loop_blocker.block(bridge)
    try:
        report = bridge.shutdown(timeout=0.1)
        assert loop_thread.name in report.threads_left
        assert not report.clean
    finally:
        loop_blocker.release()
    loop_thread.join(10)
    assert not loop_thread.is_alive()
