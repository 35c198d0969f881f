"""One cancellation per job, whatever its sources (issue 9, symptom 4).

``Job.cancel()``, ``Bridge.cancel(key)``, ``cancel_all(kind)``, the deadline
and shutdown may all want to stop the same job; the coroutine must receive
exactly one cancellation, so that the ``except CancelledError:`` block that
awaits its own teardown (a BYE, a hangup) is never interrupted.

Each job counts the cancellation errors its coroutine sees and, on Python
3.11+, how many times its task was asked to cancel (``Task.cancelling()``),
which also catches two requests that asyncio folds into one error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge import Bridge, Job, JobCancelled, JobState, JobTimeout
from bridge.testing import hammer


async def nothing() -> None:
    return None


def round_trip(b: Bridge) -> None:
    """Return once the loop has run what other threads handed it before this call."""
    b.call(nothing, timeout=10)


def cancel_requests() -> int | None:
    """How many times the running task was asked to cancel (3.11+), else ``None``."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return None if cancelling is None else int(cancelling())


class Counting:
    """A job body that runs until cancelled, then awaits its own teardown.

    The teardown waits on a worker thread for :attr:`release` (or runs
    *cleanup*, when given). Every ``CancelledError`` the coroutine sees is
    counted; a second one interrupts the teardown and ends the job.
    """

    def __init__(self, b: Bridge, cleanup: Callable[[], Awaitable[object]] | None = None) -> None:
        self._bridge = b
        self._cleanup = cleanup
        self.release = threading.Event()
        self.started = threading.Event()
        self.first_cancel = threading.Event()
        self.cleaned_up = threading.Event()
        self.cancelled_errors = 0  # only the loop thread writes it
        self.requests: int | None = None

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled_errors += 1
            self.first_cancel.set()
            await self._teardown()
            raise

    async def _teardown(self) -> None:
        try:
            if self._cleanup is None:
                await self._bridge.to_thread(self.release.wait, 30)
            else:
                await self._cleanup()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled_errors += 1  # a second cancellation: the teardown is cut short
            raise
        finally:
            self.requests = cancel_requests()
        self.cleaned_up.set()

    def assert_cancelled_once(self) -> None:
        assert self.cancelled_errors == 1, (
            f"the coroutine received {self.cancelled_errors} CancelledErrors; "
            f"a second one interrupted its teardown"
        )
        assert self.cleaned_up.is_set(), "the teardown did not run to its end"
        if self.requests is not None:
            assert self.requests == 1, f"its task was asked to cancel {self.requests} times"


class Probe:
    """A second job that, once shutdown cancels it, lets the first finish its teardown.

    So the first job's teardown is still under way when shutdown's cancellations
    reach the loop, and ends right after them, within shutdown's grace.
    """

    def __init__(self, release: threading.Event) -> None:
        self._release = release
        self.started = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            self._release.set()


SOURCES = ["job.cancel()", "bridge.cancel(key)", "bridge.cancel_all(kind)"]


def cancel_by(b: Bridge, job: Job[Any], source: str) -> None:
    """Cancel *job* (of kind ``"call"``) through *source*, one of SOURCES."""
    if source == SOURCES[0]:
        assert job.cancel() is True  # an unfinished job: True, even if already cancelled
    elif source == SOURCES[1]:
        assert job.key is not None
        b.cancel(job.key)
    else:
        b.cancel_all(kind="call")


def cancel_at_once(b: Bridge, job: Job[Any]) -> None:
    """Six threads, released together by a barrier, cancel *job* through every source."""
    result = hammer(lambda t, _: cancel_by(b, job, SOURCES[t % 3]), threads=6, calls=1)
    result.raise_first()


def outcome(job: Job[Any]) -> BaseException | None:
    """The exception *job* ended with (``None`` if it succeeded), within 10 s."""
    try:
        job.result(timeout=10)
    except BaseException as exc:
        return exc
    return None


# -- the deadline, then cancel() --------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_cancel_after_the_deadline_does_not_interrupt_the_cleanup(
    bridge: Bridge, source: str
) -> None:
    body = Counting(bridge)
    try:
        job = bridge.submit(body, key="call:1", kind="call", timeout=0.5)
        assert body.first_cancel.wait(10), "the deadline did not cancel the job"
        cancel_by(bridge, job, source)
        round_trip(bridge)  # whatever the cancel handed the loop has run by now
        body.release.set()
        assert isinstance(outcome(job), JobTimeout)
        assert job.state is JobState.TIMED_OUT
        body.assert_cancelled_once()
    finally:
        body.release.set()


def test_deadline_during_the_cleanup_of_a_cancelled_job_delivers_nothing(bridge: Bridge) -> None:
    timeout = 0.3

    async def outlast_the_deadline() -> None:
        # Both are loop timers: the job's deadline comes due before this sleep ends.
        await asyncio.sleep(timeout + 0.2)

    body = Counting(bridge, outlast_the_deadline)
    job = bridge.submit(body, key="call:1", timeout=timeout)
    assert body.started.wait(10)
    assert job.cancel() is True
    assert isinstance(outcome(job), JobCancelled)
    assert job.state is JobState.CANCELLED  # it ends as the cancellation made it end
    body.assert_cancelled_once()


# -- several threads at the same moment ---------------------------------------------------


def test_cancels_from_many_threads_at_once_deliver_one(bridge: Bridge) -> None:
    for round_number in range(20):
        key = f"call:{round_number}"
        body = Counting(bridge)
        try:
            job = bridge.submit(body, key=key, kind="call", timeout=None)
            assert body.started.wait(10)
            cancel_at_once(bridge, job)
            round_trip(bridge)
            body.release.set()
            assert isinstance(outcome(job), JobCancelled)
            body.assert_cancelled_once()
        finally:
            body.release.set()


# -- shutdown, and every source together ----------------------------------------------------


def test_shutdown_does_not_cancel_an_unwinding_job_again(bridge: Bridge) -> None:
    body = Counting(bridge)
    probe = Probe(body.release)
    try:
        job = bridge.submit(body, key="call:1")
        bridge.submit(probe, kind="probe")
        assert probe.started.wait(10)
        assert job.cancel() is True
        assert body.first_cancel.wait(10)
        report = bridge.shutdown(timeout=0)  # cancels what is left: the probe, not the job again
        assert isinstance(outcome(job), JobCancelled)
        body.assert_cancelled_once()
        assert report.stuck == ()
    finally:
        body.release.set()


def test_every_source_together_delivers_one_cancellation(bridge: Bridge) -> None:
    body = Counting(bridge)
    probe = Probe(body.release)
    try:
        job = bridge.submit(body, key="call:1", kind="call", timeout=0.5)
        bridge.submit(probe, kind="probe", timeout=None)
        assert probe.started.wait(10)
        assert body.first_cancel.wait(10), "the deadline did not cancel the job"
        cancel_at_once(bridge, job)
        round_trip(bridge)
        report = bridge.shutdown(timeout=0)
        assert isinstance(outcome(job), JobTimeout)  # the deadline came first
        assert job.state is JobState.TIMED_OUT
        body.assert_cancelled_once()
        assert report.stuck == ()
    finally:
        body.release.set()
