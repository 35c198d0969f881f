"""A shutdown() that raised is finished by a later one; math.inf means no limit (#16)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from helpers import run_script

from bridge import Bridge, BridgeClosed, Job, JobState

#: Where the tests' own ``bridge`` package lives: the subprocess imports that one.


async def noop() -> None:
    pass


def _holder() -> tuple[concurrent.futures.Future[None], Callable[[], Any]]:
    """An async function that runs until the returned future is resolved."""
    release: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def hold() -> str:
        await asyncio.wrap_future(release)
        return "finished"

    return release, hold


# -- Ctrl+C during shutdown() ---------------------------------------------------------

CTRL_C_DURING_SHUTDOWN = """
    import asyncio
    import concurrent.futures
    import json
    import signal
    import sys
    import threading

    import bridge

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores it
    THEN = sys.argv[1]
    outcome = {}


    def describe(report):
        return {
            "clean": report.clean,
            "finished": report.finished,
            "cancelled": [info.id for info in report.cancelled],
            "stuck": len(report.stuck),
            "threads_left": list(getattr(report, "threads_left", ["<no threads_left>"])),
        }


    def state_name(b):
        state = getattr(b, "state", None)
        return None if state is None else state.name


    b = bridge.Bridge(name="ctrl-c")
    release = concurrent.futures.Future()
    started = threading.Event()
    armed = False


    async def call_in_progress():
        started.set()
        await asyncio.wrap_future(release)
        return "finished"


    def press_ctrl_c_while_shutdown_waits(frame, event, arg):
        # The first threading wait of this thread once the bridge is closing:
        # Ctrl+C arrives there, exactly as a real one would (synchronously,
        # so it cannot slip in before the wait blocks and be seen only after).
        # None: a core from before BridgeState; its first wait is for the jobs.
        global armed
        code = frame.f_code
        if armed and event == "call" and code.co_name == "wait":
            if code.co_filename == threading.__file__ and state_name(b) in ("CLOSING", None):
                armed = False
                signal.raise_signal(signal.SIGINT)


    job = b.submit(call_in_progress, timeout=None)
    assert started.wait(30)
    armed = True
    sys.setprofile(press_ctrl_c_while_shutdown_waits)
    try:
        b.shutdown(5)
        outcome["first_shutdown"] = "returned"
    except KeyboardInterrupt:
        outcome["first_shutdown"] = "KeyboardInterrupt"
    finally:
        sys.setprofile(None)
    outcome["state_after_interrupt"] = state_name(b)
    outcome["job_done_after_interrupt"] = job.done()
    outcome["loop_alive_after_interrupt"] = b.thread.is_alive()
    try:
        if THEN == "finished":
            release.set_result(None)
            report = b.shutdown(5)
        else:
            report = b.shutdown(0.1)  # the job is cancelled
        outcome["report"] = describe(report)
        outcome["same_report_again"] = b.shutdown(5) == report
    except BaseException as exc:
        outcome["later_shutdown_error"] = repr(exc)
    outcome["job_id"] = job.id
    outcome["job_state"] = job.state.name
    outcome["state"] = state_name(b)
    outcome["loop_alive"] = b.thread.is_alive()
    print("RESULT " + json.dumps(outcome), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("then", ["finished", "cancelled"])
def test_ctrl_c_during_shutdown_then_a_later_shutdown_finishes_the_work(then: str) -> None:
    """Ctrl+C while shutdown(5) waits for a job: the bridge stays CLOSING, not half closed.

    Before the fix the interrupted shutdown marked the bridge CLOSED with no
    report, the job kept running with the loop thread, and every later
    shutdown() raised a bare AssertionError.
    """
    out = run_script(CTRL_C_DURING_SHUTDOWN, then, timeout=30)
    assert out["first_shutdown"] == "KeyboardInterrupt"
    assert "later_shutdown_error" not in out, out["later_shutdown_error"]
    assert out["state_after_interrupt"] == "CLOSING"
    assert out["job_done_after_interrupt"] is False
    assert out["loop_alive_after_interrupt"] is True
    report = out["report"]
    if then == "finished":
        assert out["job_state"] == "SUCCEEDED"
        assert report["finished"] == 1
        assert report["clean"] is True
    else:
        assert out["job_state"] == "CANCELLED"
        assert report["cancelled"] == [out["job_id"]]
    assert report["stuck"] == 0
    assert report["threads_left"] == []
    assert out["same_report_again"] is True
    assert out["state"] == "CLOSED"
    assert out["loop_alive"] is False


# -- math.inf means no limit ----------------------------------------------------------


def test_shutdown_with_an_infinite_timeout_waits_for_the_job(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(max_pending=1)
    release, hold = _holder()
    job = b.submit(hold, timeout=None)  # holds the only room
    seen: list[str] = []

    def release_once_closing() -> None:
        try:  # room comes only from shutdown: BridgeClosed once it has begun
            b.submit(noop, block_timeout=30)
            seen.append("accepted")
        except BridgeClosed:
            seen.append("BridgeClosed")
        finally:
            release.set_result(None)

    releaser = threading.Thread(target=release_once_closing)
    releaser.start()
    report = b.shutdown(timeout=math.inf)
    releaser.join(10)
    assert seen == ["BridgeClosed"]
    assert job.result(timeout=0) == "finished"
    assert report.finished == 1
    assert report.clean
    assert report.stuck == ()
    assert b.thread is not None
    assert not b.thread.is_alive()


def test_submit_with_an_infinite_block_timeout_waits_for_room(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(max_pending=1)
    release, hold = _holder()
    first = b.submit(hold, timeout=None)  # holds the only room
    waiting = threading.Event()
    got: list[object] = []

    def notice_the_wait(frame: FrameType, event: str, arg: object) -> None:
        # submit() waits for room on the bridge's room condition.
        code = frame.f_code
        if event == "call" and code.co_name == "wait" and code.co_filename == threading.__file__:
            waiting.set()

    def submit_when_full() -> None:
        sys.setprofile(notice_the_wait)  # this thread only
        try:
            got.append(b.submit(noop, key="second", block_timeout=math.inf))
        except BaseException as exc:
            got.append(exc)
        finally:
            sys.setprofile(None)

    submitter = threading.Thread(target=submit_when_full)
    submitter.start()
    try:
        assert waiting.wait(10), "submit() did not wait for room"
    finally:
        release.set_result(None)  # the first job ends: room for the second
    submitter.join(10)
    assert first.result(timeout=10) == "finished"
    assert len(got) == 1
    second = got[0]
    assert isinstance(second, Job), second
    assert second.key == "second"
    second.result(timeout=10)
    assert second.state is JobState.SUCCEEDED
    assert b.stats().overloaded == 0


def test_loop_block_warning_inf_turns_the_watchdog_off(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge(name="no-limit", loop_block_warning=math.inf)
    assert b.call(noop, timeout=10) is None
    names = [thread.name for thread in threading.enumerate()]
    assert "no-limit" in names  # the loop thread
    assert not [name for name in names if "watchdog" in name and name.startswith("no-limit")]
    report = b.shutdown(timeout=10)
    assert report.clean
