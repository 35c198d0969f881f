"""The plugin's failed-job check: a failure nobody retrieved fails the test.

asyncio's rule: ``result()``, ``exception()`` or ``await`` retrieve a failure
(and so ``asyncio.wrap_future``, whose callback calls ``exception()``); a done
callback that never looks does not. Each scenario runs in a pytest subprocess.
"""

from __future__ import annotations

import pytest

INI = '[tool.pytest.ini_options]\ntimeout = 30\nfilterwarnings = ["error"]\n'

COMMON = """
import asyncio
import concurrent.futures
import threading
import pytest

async def fail(number):
    raise ValueError(f"no route to {number}")
"""


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(INI)


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


UNRETRIEVED = (
    COMMON
    + """
async def fail_when(gate, number):
    await asyncio.wrap_future(gate)  # the callbacks are attached by then
    await fail(number)

def test_done_callback_only(bridge_instance):
    gate, done = concurrent.futures.Future(), threading.Event()
    job = bridge_instance.submit(fail_when, gate, 46, key="route:46")
    job.add_done_callback(lambda _: done.set())
    gate.set_result(None)
    assert done.wait(10)

def test_one_of_two_retrieved(bridge_instance):
    gate = concurrent.futures.Future()
    looked, ignored = (
        bridge_instance.submit(fail_when, gate, n, key=f"route:{n}") for n in (47, 48)
    )
    done = [threading.Event(), threading.Event()]
    for job, event in zip((looked, ignored), done):
        job.add_done_callback(lambda _, event=event: event.set())
    gate.set_result(None)
    assert all(event.wait(10) for event in done)
    assert isinstance(looked.exception(), ValueError)
"""
)


def test_a_done_callback_does_not_retrieve_a_failure(pytester: pytest.Pytester) -> None:
    # The old rule counted a done callback as "observed": both tests passed.
    pytester.makepyfile(test_unretrieved=UNRETRIEVED)

    result = run(pytester)

    result.assert_outcomes(passed=2, errors=2)
    for name, number, job_id in (
        ("test_done_callback_only", 46, 1),
        ("test_one_of_two_retrieved", 48, 2),
    ):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at teardown of {name}*",
                f"- bridge 'bridge[[]{name}]': 1 job(s) failed and nobody retrieved the "
                "exception (call result() or exception(), or await the job; a done callback "
                "that does neither does not count):",
                f"    job {job_id} key='route:{number}' kind='job' state=FAILED "
                f"thread='MainThread' age=*: ValueError('no route to {number}')",
            ]
        )
    result.stdout.no_fnmatch_line("*key='route:47'*")


RETRIEVED = (
    COMMON
    + """
def test_exception(bridge_instance):
    assert isinstance(bridge_instance.submit(fail, 1).exception(timeout=10), ValueError)

def test_result(bridge_instance):
    with pytest.raises(ValueError):
        bridge_instance.submit(fail, 2).result(timeout=10)

def test_done_callback_that_looks(bridge_instance):
    looked = concurrent.futures.Future()
    job = bridge_instance.submit(fail, 3)
    job.add_done_callback(lambda job: looked.set_result(job.exception()))
    assert isinstance(looked.result(10), ValueError)

def test_done_callback_then_exception(bridge_instance):
    done = threading.Event()
    job = bridge_instance.submit(fail, 4)
    job.add_done_callback(lambda _: done.set())
    assert done.wait(10)
    assert isinstance(job.exception(), ValueError)

def test_await_from_another_loop(bridge_instance):
    job = bridge_instance.submit(fail, 5)
    async def main():
        with pytest.raises(ValueError):
            await job
    asyncio.run(main())

def test_await_inside_a_job(bridge_instance):
    job = bridge_instance.submit(fail, 6)
    async def supervise():
        try:
            await job
        except ValueError as exc:
            return str(exc)
    assert bridge_instance.call(supervise) == "no route to 6"

def test_wrap_future(bridge_instance):
    job = bridge_instance.submit(fail, 7)
    async def main():
        with pytest.raises(ValueError):
            await asyncio.wrap_future(job)
    asyncio.run(main())

def test_as_completed_then_result(bridge_instance):
    jobs = [bridge_instance.submit(fail, n) for n in (8, 9)]
    for job in concurrent.futures.as_completed(jobs, timeout=10):
        with pytest.raises(ValueError):
            job.result()
"""
)


def test_result_exception_await_and_wrap_future_retrieve_a_failure(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_retrieved=RETRIEVED)

    result = run(pytester)

    result.assert_outcomes(passed=8)
    result.stdout.no_fnmatch_line("*nobody retrieved*")
