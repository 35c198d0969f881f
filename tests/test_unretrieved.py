"""Failures nobody retrieves: kept as records for the plugin, logged when the job is collected.

A done callback means somebody will look, so the failure is not logged when it
happens (``asyncio.wrap_future`` and ``as_completed`` look only after their
callback ran); if nobody ever retrieves it, it is logged when the job is
garbage-collected, as asyncio does for a Future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import weakref
from typing import Any

from bridge import Bridge
from bridge._events import EventCapture


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom("no answer from the directory")


async def fail_when(gate: concurrent.futures.Future[None]) -> None:
    await asyncio.wrap_future(gate)
    raise Boom("no answer from the directory")


def _failed_job_with_callback(b: Bridge) -> Any:
    """A job that fails only once its done callback is attached."""
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()
    done = threading.Event()
    job = b.submit(fail_when, gate)
    job.add_done_callback(lambda _: done.set())
    gate.set_result(None)
    assert done.wait(10)
    return job


def test_an_unretrieved_failure_is_logged_when_the_job_is_collected(bridge: Bridge) -> None:
    capture = EventCapture()
    capture.start()
    try:
        job = _failed_job_with_callback(bridge)
        assert [e for e in capture.events if e["event"] == "job.failed"] == []
        ref = weakref.ref(job)
        del job
        gc.collect()
        assert ref() is None, "the bridge keeps a finished job alive"
        failed = [e for e in capture.events if e["event"] == "job.failed"]
    finally:
        capture.stop()
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["unretrieved"] is True
    assert isinstance(failed[0]["exc_info"], Boom)
    # The record stays for the plugin's end-of-test check; retrieve it there.
    records = bridge._unretrieved_failures()
    assert [type(r.exception()) for r in records] == [Boom]
    records[0].retrieved = True


def test_a_retrieved_failure_is_not_logged_at_collection(bridge: Bridge) -> None:
    capture = EventCapture()
    capture.start()
    try:
        job = _failed_job_with_callback(bridge)
        assert isinstance(job.exception(), Boom)
        ref = weakref.ref(job)
        del job
        gc.collect()
        assert ref() is None
        failed = [e for e in capture.events if e["event"] == "job.failed"]
    finally:
        capture.stop()
    assert failed == []
    assert bridge._unretrieved_failures() == []


def test_wrap_future_retrieves_the_failure(bridge: Bridge) -> None:
    async def watch() -> BaseException | None:
        job = bridge.submit(fail)
        try:
            await asyncio.wrap_future(job)
        except Boom as exc:
            return exc
        return None

    assert isinstance(asyncio.run(watch()), Boom)
    assert bridge._unretrieved_failures() == []


def test_a_failure_with_no_waiter_is_logged_at_once_and_kept_for_the_plugin(
    bridge: Bridge,
) -> None:
    capture = EventCapture()
    capture.start()
    try:
        ref = _submit_and_drop(bridge)
        failed = [e for e in capture.events if e["event"] == "job.failed"]
    finally:
        capture.stop()
    assert len(failed) == 1
    assert "unretrieved" not in failed[0]
    gc.collect()
    assert ref() is None
    records = bridge._unretrieved_failures()
    assert len(records) == 1
    assert records[0].info().state.name == "FAILED"
    records[0].retrieved = True


def _submit_and_drop(b: Bridge) -> weakref.ref[Any]:
    job = b.submit(fail)
    concurrent.futures.wait([job], timeout=10)  # waits without observing the job
    assert job.done()
    return weakref.ref(job)
