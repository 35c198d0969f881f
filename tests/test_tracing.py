"""Tracing through structlog: per-job events, context bindings, unobserved failures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, get_contextvars
from structlog.testing import capture_logs

from bridge import Bridge, Job, JobCancelled, JobTimeout

JOB_EVENTS = ("job.submitted", "job.started", "job.finished")


class Boom(Exception):
    """The failure the test jobs raise."""


async def value(x: Any) -> Any:
    return x


async def fail() -> None:
    raise Boom("boom")


async def forever() -> None:
    await asyncio.sleep(3600)


def events_of(
    logs: list[MutableMapping[str, Any]], job: Job[Any]
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry.get("job_id") == job.id]


def names(entries: list[MutableMapping[str, Any]]) -> list[str]:
    return [entry["event"] for entry in entries]


def test_three_debug_events_per_job(bridge: Bridge) -> None:
    with capture_logs() as logs:
        job = bridge.submit(value, 1, key="call:1", kind="tts")
        assert job.result(timeout=10) == 1
        # job.finished is logged before the job resolves.
        entries = events_of(logs, job)
        assert names(entries) == list(JOB_EVENTS)
    for entry in entries:
        assert entry["log_level"] == "debug"
        assert entry["job_id"] == job.id
        assert entry["key"] == "call:1"
        assert entry["kind"] == "tts"
        assert entry["thread"] == threading.current_thread().name
    submitted, started, finished = entries
    assert "queue_ms" not in submitted
    assert started["queue_ms"] >= 0
    assert finished["run_ms"] >= 0
    assert finished["outcome"] == "succeeded"


def test_thread_is_the_submitting_threads_name(bridge: Bridge) -> None:
    jobs: list[Job[Any]] = []
    with capture_logs() as logs:
        thread = threading.Thread(
            target=lambda: jobs.append(bridge.submit(value, 1)), name="pjsip-worker"
        )
        thread.start()
        thread.join()
        jobs[0].result(timeout=10)
    entries = events_of(logs, jobs[0])
    assert names(entries) == list(JOB_EVENTS)
    assert {entry["thread"] for entry in entries} == {"pjsip-worker"}


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled", "timed_out"])
def test_finished_outcome(bridge: Bridge, outcome: str) -> None:
    started = threading.Event()

    async def runs() -> None:
        started.set()
        await asyncio.sleep(3600)

    with capture_logs() as logs:
        if outcome == "succeeded":
            job = bridge.submit(value, 1)
        elif outcome == "failed":
            job = bridge.submit(fail)
        elif outcome == "cancelled":
            job = bridge.submit(runs)
            assert started.wait(10)
            job.cancel()
        else:
            job = bridge.submit(runs, timeout=0.01)
        expected = (Boom, JobCancelled, JobTimeout)
        with contextlib.nullcontext() if outcome == "succeeded" else pytest.raises(expected):
            job.result(timeout=10)
    (finished,) = [e for e in events_of(logs, job) if e["event"] == "job.finished"]
    assert finished["outcome"] == outcome
    assert finished["log_level"] == "debug"


def test_events_are_in_order_for_many_jobs_from_many_threads(bridge: Bridge) -> None:
    jobs: list[Job[Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def submitter() -> None:
        barrier.wait(10)
        for i in range(150):
            job = bridge.submit(value, i)
            with lock:
                jobs.append(job)

    with capture_logs() as logs:
        for i in range(1500):  # one at a time: an idle loop starts each job at once
            assert bridge.call(value, i) == i
        threads = [threading.Thread(target=submitter) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent.futures.wait(jobs, timeout=20)
    by_job: dict[int, list[str]] = {}
    for entry in logs:
        if entry["event"] in JOB_EVENTS:
            by_job.setdefault(entry["job_id"], []).append(entry["event"])
    assert len(by_job) == 2100
    out_of_order = {job_id: seen for job_id, seen in by_job.items() if seen != list(JOB_EVENTS)}
    assert out_of_order == {}


def test_timeout_is_logged_at_warning(bridge: Bridge) -> None:
    with capture_logs() as logs:
        job = bridge.submit(forever, key="hangup:1", kind="hangup", timeout=0.01)
        with pytest.raises(JobTimeout):
            job.result(timeout=10)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning["event"] == "job.timed_out"
    assert (warning["job_id"], warning["key"], warning["kind"]) == (job.id, "hangup:1", "hangup")


def test_contextvars_bindings_appear_in_events_and_inside_the_coroutine(bridge: Bridge) -> None:
    async def inside() -> dict[str, Any]:
        return get_contextvars()

    with capture_logs() as logs, bound_contextvars(call_id="c-42", caller="+4930123"):
        job = bridge.submit(inside)
        seen_inside = job.result(timeout=10)
    assert seen_inside == {"call_id": "c-42", "caller": "+4930123"}
    entries = events_of(logs, job)
    assert names(entries) == list(JOB_EVENTS)
    for entry in entries:
        assert entry["call_id"] == "c-42"
        assert entry["caller"] == "+4930123"


def test_bindings_are_those_of_submit_time(bridge: Bridge, loop_blocker: Any) -> None:
    loop_blocker.block(bridge)
    with capture_logs() as logs, bound_contextvars(call_id="at-submit"):
        job = bridge.submit(get_contextvars_async)
        bind_contextvars(call_id="later")
        loop_blocker.release()
        assert job.result(timeout=10) == {"call_id": "at-submit"}
    assert {entry["call_id"] for entry in events_of(logs, job)} == {"at-submit"}


async def get_contextvars_async() -> dict[str, Any]:
    return get_contextvars()


def test_bindings_of_each_submitting_thread(bridge: Bridge) -> None:
    jobs: dict[str, Job[Any]] = {}

    def handle(call_id: str) -> None:
        bind_contextvars(call_id=call_id)
        jobs[call_id] = bridge.submit(get_contextvars_async)

    with capture_logs() as logs:
        threads = [threading.Thread(target=handle, args=(f"call-{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for call_id, job in jobs.items():
            assert job.result(timeout=10) == {"call_id": call_id}
    for call_id, job in jobs.items():
        assert {entry["call_id"] for entry in events_of(logs, job)} == {call_id}


# -- failures nobody waits for ----------------------------------------------------------------


def test_unobserved_failure_is_logged_at_error_when_it_fails(bridge: Bridge) -> None:
    with capture_logs() as logs, bound_contextvars(call_id="c-7"):
        job = bridge.submit(fail, key="tts:1")
        concurrent.futures.wait([job], timeout=10)  # waits, but retrieves nothing
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1  # logged already, while the job is still referenced
    (error,) = errors
    assert error["event"] == "job.failed"
    assert (error["job_id"], error["key"], error["call_id"]) == (job.id, "tts:1", "c-7")
    assert isinstance(error["exc_info"], Boom)
    assert error["exc_info"] is job.exception()


def test_failure_from_call_is_not_logged(bridge: Bridge) -> None:
    with capture_logs() as logs:
        with pytest.raises(Boom):
            bridge.call(fail)
        with pytest.raises(Boom):
            bridge.blocking(fail)()
    assert [e for e in logs if e["log_level"] == "error"] == []


def test_failure_with_a_done_callback_is_not_logged(bridge: Bridge) -> None:
    gate = asyncio.Event()

    async def fails_later() -> None:
        await gate.wait()
        raise Boom("later")

    async def open_gate() -> None:
        gate.set()

    seen: list[object] = []
    called = threading.Event()
    with capture_logs() as logs:
        job = bridge.submit(fails_later)
        job.add_done_callback(lambda j: (seen.append(j.exception()), called.set()))
        bridge.submit(open_gate)
        assert called.wait(10)
    assert isinstance(seen[0], Boom)
    assert [e for e in logs if e["log_level"] == "error"] == []


def test_failure_awaited_by_another_job_is_not_logged(bridge: Bridge) -> None:
    gate = asyncio.Event()

    async def fails_later() -> None:
        await gate.wait()
        raise Boom("later")

    with capture_logs() as logs:
        failing = bridge.submit(fails_later)

        async def awaits_it() -> str:
            waiting = asyncio.ensure_future(_await(failing))
            await asyncio.sleep(0)  # the waiter is registered before the gate opens
            gate.set()
            try:
                await waiting
            except Boom:
                return "caught"
            return "not raised"

        assert bridge.call(awaits_it) == "caught"
    assert [e for e in logs if e["log_level"] == "error"] == []


def test_failure_awaited_from_another_loop_is_not_logged(bridge: Bridge) -> None:
    gate = asyncio.Event()

    async def fails_later() -> None:
        await gate.wait()
        raise Boom("later")

    async def open_gate() -> None:
        gate.set()

    with capture_logs() as logs:
        failing = bridge.submit(fails_later)

        async def main() -> str:
            waiting = asyncio.ensure_future(_await(failing))
            await asyncio.sleep(0)  # the waiter is registered before the gate opens
            bridge.submit(open_gate)
            try:
                await waiting
            except Boom:
                return "caught"
            return "not raised"

        assert asyncio.run(main()) == "caught"
    assert [e for e in logs if e["log_level"] == "error"] == []


async def _await(job: Job[Any]) -> Any:
    return await job


# -- structlog not configured -------------------------------------------------------------------


def test_unconfigured_structlog_sees_warnings_but_no_job_lines(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not structlog.is_configured()
    assert bridge.call(value, 1) == 1
    job = bridge.submit(forever, kind="hangup", timeout=0.01)
    with pytest.raises(JobTimeout):
        job.result(timeout=10)
    out = capsys.readouterr().out
    assert "job.timed_out" in out
    for event in JOB_EVENTS:
        assert event not in out
    assert not structlog.is_configured()  # the bridge configured nothing
