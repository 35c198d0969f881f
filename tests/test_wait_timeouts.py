"""Job.result(timeout=)/exception(timeout=) that run out raise the builtin TimeoutError.

On Python 3.10 ``concurrent.futures.TimeoutError`` is a class of its own (3.11 made
it an alias of the builtin), so a wait that ran out escaped ``except TimeoutError``
there. The job's own exceptions are re-raised as they are, whatever their class.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from bridge import Bridge, Job, JobState, JobTimeout


async def open_gate(gate: asyncio.Event) -> None:
    gate.set()


def gated_job(b: Bridge, error: BaseException | None = None) -> tuple[Job[Any], asyncio.Event]:
    """A running job that waits for its gate, then raises *error* or returns 42."""
    started = threading.Event()
    gate = asyncio.Event()

    async def wait_for_gate() -> int:
        started.set()
        await gate.wait()
        if error is not None:
            raise error
        return 42

    job = b.submit(wait_for_gate)
    assert started.wait(10)
    return job, gate


def caught_by_except_timeout_error(wait: Any) -> BaseException:
    """Run *wait*; return what an ``except TimeoutError:`` clause caught."""
    try:
        wait()
    except TimeoutError as exc:
        return exc
    pytest.fail("the wait did not raise")


@pytest.mark.parametrize("timeout", [0, 0.01])
def test_result_wait_that_runs_out_raises_builtin_timeout_error(
    bridge: Bridge, timeout: float
) -> None:
    job, gate = gated_job(bridge)
    error = caught_by_except_timeout_error(lambda: job.result(timeout=timeout))
    assert type(error) is TimeoutError  # neither JobTimeout nor a futures class
    assert "keeps running" in str(error)
    assert job.state is JobState.RUNNING
    bridge.submit(open_gate, gate)
    assert job.result(timeout=10) == 42


@pytest.mark.parametrize("timeout", [0, 0.01])
def test_exception_wait_that_runs_out_raises_builtin_timeout_error(
    bridge: Bridge, timeout: float
) -> None:
    job, gate = gated_job(bridge)
    error = caught_by_except_timeout_error(lambda: job.exception(timeout=timeout))
    assert type(error) is TimeoutError
    assert "keeps running" in str(error)
    assert job.state is JobState.RUNNING
    bridge.submit(open_gate, gate)
    assert job.exception(timeout=10) is None


def test_wait_that_runs_out_is_not_a_job_timeout(bridge: Bridge) -> None:
    job, gate = gated_job(bridge)
    with pytest.raises(TimeoutError) as info:
        job.result(timeout=0.01)
    assert not isinstance(info.value, JobTimeout)
    bridge.submit(open_gate, gate)
    job.result(timeout=10)


@pytest.mark.parametrize(
    "own_error",
    [
        TimeoutError("the TTS service timed out"),
        concurrent.futures.TimeoutError("an upstream future timed out"),
        asyncio.TimeoutError("asyncio.wait_for ran out inside the job"),
    ],
    ids=["builtin", "concurrent.futures", "asyncio"],
)
def test_a_jobs_own_timeout_error_is_reraised_as_it_is_while_waited_for(
    bridge: Bridge, own_error: BaseException
) -> None:
    """A job that fails with any TimeoutError class while a thread waits for it.

    The waiting thread signals just before it blocks and the gate opens only
    after that, through the loop, so the failure almost always arrives during the
    wait (the path that tells a wait that ran out from the job's own error); if
    it arrives first, the same must hold.
    """
    job, gate = gated_job(bridge, own_error)
    about_to_wait = threading.Event()
    outcome: concurrent.futures.Future[BaseException | None] = concurrent.futures.Future()

    def waiter() -> None:
        about_to_wait.set()
        try:
            job.result(timeout=30)
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    thread = threading.Thread(target=waiter, name="waiter")
    thread.start()
    assert about_to_wait.wait(10)
    bridge.submit(open_gate, gate)
    thread.join(10)
    assert outcome.result(timeout=10) is own_error
    assert job.exception(timeout=10) is own_error
    assert job.state is JobState.FAILED
