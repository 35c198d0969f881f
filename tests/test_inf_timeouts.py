"""``math.inf`` is accepted everywhere a timeout is, and means "no limit"."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bridge import Bridge
from bridge._arguments import check_timeout

INF = math.inf
WAIT = 10.0
#: How long a thread that must block is given to raise instead (a negative check).
STILL_BLOCKED = 0.2


async def value(x: Any) -> Any:
    return x


async def wait_for(gate: concurrent.futures.Future[Any]) -> Any:
    return await asyncio.wrap_future(gate)


class Outcome:
    """Runs *fn* on a thread of its own and keeps what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name="inf-waiter")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:
            self.error = exc

    def assert_still_blocked(self) -> None:
        self.thread.join(STILL_BLOCKED)
        assert self.error is None, f"raised instead of waiting: {self.error!r}"
        assert self.thread.is_alive(), f"returned instead of waiting: {self.value!r}"

    def result(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.value


# -- the check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds",
    [INF, 1e300, 10**400, threading.TIMEOUT_MAX * 2],
    ids=["inf", "1e300", "10**400", "2*TIMEOUT_MAX"],
)
def test_check_timeout_turns_inf_into_no_limit(seconds: float) -> None:
    assert check_timeout("timeout", seconds) is None


@pytest.mark.parametrize("seconds", [0, 0.5, 30, threading.TIMEOUT_MAX])
def test_check_timeout_keeps_finite_values(seconds: float) -> None:
    assert check_timeout("timeout", seconds) == float(seconds)


@pytest.mark.parametrize(
    "seconds", [-INF, math.nan, -1, -(10**400)], ids=["-inf", "nan", "-1", "-10**400"]
)
def test_check_timeout_still_refuses_negative_and_nan(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"^block_timeout must be >= 0 seconds"):
        check_timeout("block_timeout", seconds)


# -- configuration --------------------------------------------------------------------------


def test_default_timeout_inf(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(default_timeout=INF)
    job = b.submit(value, 1)
    assert job.info().deadline is None
    assert job.result(timeout=WAIT) == 1


def test_per_kind_timeout_inf(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(timeouts={"tts": INF})
    job = b.submit(value, 2, kind="tts")
    assert job.info().deadline is None
    assert job.result(timeout=WAIT) == 2


def test_loop_block_warning_inf_turns_the_watchdog_off(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(name="no-watchdog", loop_block_warning=INF)
    assert b.call(value, 3) == 3
    assert "no-watchdog-watchdog" not in {t.name for t in threading.enumerate()}


# -- submitting -----------------------------------------------------------------------------


def test_submit_timeout_inf(bridge: Bridge) -> None:
    job = bridge.submit(value, 4, timeout=INF)
    assert job.info().deadline is None
    assert job.result(timeout=WAIT) == 4
    assert bridge.call(value, 5, timeout=INF) == 5
    assert bridge.blocking(value, timeout=INF)(6) == 6
    assert list(bridge.map(value, [7, 8], timeout=INF)) == [7, 8]


def test_block_timeout_inf_waits_for_room(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge(max_pending=1)
    gate: concurrent.futures.Future[Any] = concurrent.futures.Future()
    holder = b.submit(wait_for, gate)  # the bridge is full
    waiter = Outcome(lambda: b.submit(value, 9, block_timeout=INF))
    waiter.assert_still_blocked()  # not OverflowError, not Overloaded: it waits
    gate.set_result("room")
    assert holder.result(timeout=WAIT) == "room"
    assert waiter.result().result(timeout=WAIT) == 9


# -- waiting and shutting down ----------------------------------------------------------------


def test_job_result_and_exception_with_timeout_inf(bridge: Bridge) -> None:
    gate: concurrent.futures.Future[Any] = concurrent.futures.Future()
    job = bridge.submit(wait_for, gate)
    result = Outcome(lambda: job.result(timeout=INF))
    exception = Outcome(lambda: job.exception(timeout=INF))
    result.assert_still_blocked()
    exception.assert_still_blocked()
    gate.set_result("done")
    assert result.result() == "done"
    assert exception.result() is None


def test_shutdown_timeout_inf_waits_for_the_jobs(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    gate: concurrent.futures.Future[Any] = concurrent.futures.Future()
    job = b.submit(wait_for, gate)
    shutdown = Outcome(lambda: b.shutdown(timeout=INF))
    shutdown.assert_still_blocked()  # waiting for the job, without a limit
    gate.set_result("finished")
    report = shutdown.result()
    assert report.finished == 1
    assert report.cancelled == ()
    assert report.stuck == ()
    assert job.result() == "finished"
