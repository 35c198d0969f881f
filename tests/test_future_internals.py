"""The concurrent.futures internals that bridge/_future.py relies on, on this Python.

If a new Python changes them, this fails first, naming what moved.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures._base as base

import pytest

from bridge import Bridge, Job


def test_future_init_sets_the_fields_slimfuture_replaces() -> None:
    fields = set(vars(concurrent.futures.Future()))
    used = {"_state", "_result", "_exception", "_waiters", "_done_callbacks", "_condition"}
    assert used <= fields


def test_the_states_and_callback_helper_exist() -> None:
    assert base.PENDING != base.FINISHED
    assert callable(getattr(concurrent.futures.Future, "_invoke_callbacks", None))


def test_wait_and_as_completed_see_a_job_finish(bridge: Bridge) -> None:
    async def value() -> int:
        return 7

    jobs: list[Job[int]] = [bridge.submit(value) for _ in range(5)]
    _, not_done = concurrent.futures.wait(jobs, timeout=10)
    assert not not_done
    assert sorted(job.result() for job in concurrent.futures.as_completed(jobs, 10)) == [7] * 5


@pytest.mark.parametrize("method", ["set_result", "set_exception"])
def test_only_the_bridge_resolves_a_job(bridge: Bridge, method: str) -> None:
    async def value() -> int:
        return 7

    job = bridge.submit(value)
    with pytest.raises(concurrent.futures.InvalidStateError, match="resolved by its bridge"):
        getattr(job, method)(None)
    assert job.result(timeout=10) == 7
