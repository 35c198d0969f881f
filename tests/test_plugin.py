"""The pytest plugin: its fixtures, and the leak checks that fail leaking tests.

Leaking test files run in a pytest subprocess (``pytester``): their leaks, the
hooks the plugin installs and the threads they leave must not touch this
session. Each check runs with pytest's ``filterwarnings = error`` and without.
"""

from __future__ import annotations

import pytest
import structlog

from bridge import Bridge
from bridge.testing import hammer

#: The two warning set-ups a project may have: the checks must work in both.
WARNING_MODES = {"error": 'filterwarnings = ["error"]', "default": ""}


@pytest.fixture(params=sorted(WARNING_MODES))
def warnings_mode(request: pytest.FixtureRequest, pytester: pytest.Pytester) -> str:
    """Give the inner project its ini: one of the warning modes, and a timeout."""
    mode: str = request.param
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\ntimeout = 30\n{WARNING_MODES[mode]}\n")
    return mode


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


def teardown_errors(result: pytest.RunResult) -> int:
    return result.parseoutcomes().get("errors", 0)


# -- never-awaited coroutines ------------------------------------------------------------

NEVER_AWAITED = """
import gc

async def leaky_greeting():
    pass

class Cycle:
    def __init__(self):
        self.me = self
        self.coroutine = leaky_greeting()

class Finalizer:
    def __del__(self):
        leaky_greeting()

def test_dropped_at_once():
    leaky_greeting()

def test_dropped_in_a_cycle():
    Cycle()  # collected by the plugin's gc.collect() at the end of the test

def test_created_in_a_finalizer():
    Finalizer()

def test_awaited():
    import asyncio
    asyncio.run(leaky_greeting())
"""


@pytest.mark.usefixtures("warnings_mode")
def test_a_never_awaited_coroutine_fails_the_test_and_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=NEVER_AWAITED)

    result = run(pytester, "--bridge-strict")

    result.assert_outcomes(passed=4, errors=3)
    for name in ("test_dropped_at_once", "test_dropped_in_a_cycle", "test_created_in_a_finalizer"):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at teardown of {name}*",
                "*left 1 leak(s) behind (bridge leak checks):",
                "- coroutine 'leaky_greeting' was never awaited (defined at *test_leaks.py:*)",
            ]
        )
    result.stdout.no_fnmatch_line("*ERROR*test_awaited*")


OTHER_UNRAISABLE = """
class Broken:
    def __init__(self):
        self.me = self  # a cycle: only the garbage collector frees it

    def __del__(self):
        raise ValueError("broken finalizer")

def test_drops_a_broken_cycle():
    Broken()

def test_next():
    pass
"""


def test_other_unraisable_exceptions_are_left_to_pytest_and_the_right_test(
    pytester: pytest.Pytester, warnings_mode: str
) -> None:
    pytester.makepyfile(test_other=OTHER_UNRAISABLE)

    result = run(pytester, "--bridge-strict")

    result.stdout.no_fnmatch_line("*bridge leak checks*")
    if warnings_mode == "error":
        result.assert_outcomes(passed=2, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_drops_a_broken_cycle*",
                "*ValueError: broken finalizer",
                "ERROR test_other.py::test_drops_a_broken_cycle*",
            ]
        )
    else:
        result.assert_outcomes(passed=2, warnings=1)
        result.stdout.fnmatch_lines(
            [
                "*warnings summary*",
                "test_other.py::test_drops_a_broken_cycle",
                "*PytestUnraisableExceptionWarning*",
            ]
        )


# -- asyncio tasks -------------------------------------------------------------------------

TASKS = """
import asyncio

async def ring_forever():
    await asyncio.Event().wait()

def test_pending_task_destroyed():
    loop = asyncio.new_event_loop()
    loop.create_task(ring_forever(), name="ringer")
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()

def test_task_finished():
    async def main():
        task = asyncio.create_task(ring_forever())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())
"""


@pytest.mark.usefixtures("warnings_mode")
def test_a_task_destroyed_while_pending_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tasks=TASKS)

    result = run(pytester, "--bridge-strict")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_pending_task_destroyed*",
            "- an asyncio task was destroyed while pending: Task was destroyed but it is pending!",
            "*task: <Task pending name='ringer' coro=<ring_forever()*",
        ]
    )


# -- strict mode: how it is turned on, and inert when it is not -----------------------------

ALL_LEAKS = """
import asyncio, threading

async def leaky():
    pass

def test_leaks_everything():
    leaky()
    threading.Thread(target=threading.Event().wait, name="leftover", daemon=True).start()
    loop = asyncio.new_event_loop()
    loop.create_task(asyncio.Event().wait())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
"""


def test_without_strict_mode_the_plugin_is_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_all=ALL_LEAKS)

    result = run(pytester)

    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*bridge leak checks*")


def test_strict_mode_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nbridge_strict = true\n")
    pytester.makepyfile(test_all=ALL_LEAKS)

    result = run(pytester)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*left 3 leak(s) behind (bridge leak checks):",
            "- coroutine 'leaky' was never awaited*",
            "- an asyncio task was destroyed while pending*",
            "- daemon thread 'leftover'*",
        ]
    )


def test_options_and_marker_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--bridge-strict*", "*bridge_strict (bool)*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.bridge(**kwargs): keyword arguments*"])


# -- bridge_instance -----------------------------------------------------------------------

JOBS = """
import asyncio
import concurrent.futures
import gc
import threading
import pytest
import bridge

async def ring_forever():
    await asyncio.Event().wait()

async def fail():
    raise ValueError("no route to 42")

async def echo(value):
    return value

def test_job_left_running(bridge_instance):
    job = bridge_instance.submit(ring_forever, key="call:42", kind="call")
    bridge_instance.call(echo, None)  # the loop has started ring_forever by now

@pytest.mark.bridge(allow_leftover_jobs=True)
def test_job_left_running_allowed(bridge_instance):
    bridge_instance.submit(ring_forever, key="call:43", kind="call")

@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # after the bridge's teardown: the loop thread may end now

def test_job_stuck(release, bridge_instance):
    started = threading.Event()
    async def block_the_loop():
        started.set()
        release.wait()  # blocks the loop thread itself
    bridge_instance.submit(block_the_loop, key="stuck:1", kind="media")
    assert started.wait(10)

def test_failure_never_retrieved(bridge_instance):
    concurrent.futures.wait([bridge_instance.submit(fail, key="route:42")])

def test_failure_dropped_and_collected(bridge_instance):
    job = bridge_instance.submit(fail, key="route:43")
    concurrent.futures.wait([job])
    bridge_instance.call(echo, None)  # by now the failed job's task has ended
    del job
    gc.collect()  # nothing holds the job now: only the plugin remembers it

def test_failure_retrieved(bridge_instance):
    job = bridge_instance.submit(fail, key="route:44")
    assert isinstance(job.exception(), ValueError)

def test_failure_raised_by_call(bridge_instance):
    with pytest.raises(ValueError):
        bridge_instance.call(fail)

@pytest.mark.bridge(name="pbx", timeouts={"hangup": 5.0}, default_timeout=None)
def test_marker_configures_the_bridge(bridge_instance):
    assert bridge_instance.name == "pbx"
    assert bridge_instance.thread.is_alive()
    hangup = bridge_instance.submit(ring_forever, kind="hangup")
    other = bridge_instance.submit(ring_forever)
    assert [info.deadline is None for info in bridge_instance.jobs()] == [False, True]
    for job in (hangup, other):
        job.cancel()
        with pytest.raises(bridge.JobCancelled):
            job.result()

def test_shuts_the_bridge_down_itself(bridge_instance):
    bridge_instance.submit(ring_forever, key="call:45")
    report = bridge_instance.shutdown(timeout=0)
    assert [info.key for info in report.cancelled] == ["call:45"]

def test_requested_late(request):
    late = request.getfixturevalue("bridge_instance")  # the watch starts now
    assert late.call(echo, 5) == 5

def test_default_name(bridge_instance):
    assert bridge_instance.name == "bridge[test_default_name]"
    assert bridge_instance.call(echo, 7) == 7

@pytest.mark.bridge("pbx")
def test_positional_marker_argument(bridge_instance):
    pass
"""


@pytest.mark.usefixtures("warnings_mode")
def test_bridge_instance_fails_tests_that_leave_jobs_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_jobs=JOBS)

    result = run(pytester)

    result.assert_outcomes(passed=11, errors=5)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_job_left_running*",
            "- bridge 'bridge[test_job_left_running]': 1 job(s) still unfinished 1.0 s after "
            "the test; cancelled at shutdown (opt out with "
            "@pytest.mark.bridge(allow_leftover_jobs=True)):",
            "    job 1 key='call:42' kind='call' state=RUNNING thread='MainThread' age=*.** s",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_job_stuck*",
            "- bridge 'bridge[[]test_job_stuck]': 1 job(s) stuck at shutdown: they block the "
            "loop or ignore cancellation*",
            "    job 1 key='stuck:1' kind='media' state=RUNNING thread='MainThread' age=*",
        ]
    )
    for name, key in (
        ("test_failure_never_retrieved", "route:42"),
        ("test_failure_dropped_and_collected", "route:43"),
    ):
        result.stdout.fnmatch_lines(
            [
                f"*ERROR at teardown of {name}*",
                f"- bridge 'bridge[[]{name}]': 1 job(s) failed and nobody retrieved the exception*",
                f"    job 1 key='{key}' kind='job' state=FAILED thread='MainThread' "
                f"age=*: ValueError('no route to 42')",
            ]
        )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_positional_marker_argument*",
            "*TypeError: @pytest.mark.bridge() takes keyword arguments only*",
        ]
    )
    for name in (
        "test_job_left_running_allowed",
        "test_failure_retrieved",
        "test_failure_raised_by_call",
        "test_marker_configures_the_bridge",
        "test_shuts_the_bridge_down_itself",
        "test_requested_late",
        "test_default_name",
    ):
        result.stdout.fnmatch_lines([f"PASSED test_jobs.py::{name}"])
        result.stdout.no_fnmatch_line(f"ERROR test_jobs.py::{name}*")


def test_bridge_instance_applies_the_leak_checks_without_strict_mode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_leak="""
        import threading

        async def greet():
            pass

        def test_uses_the_bridge(bridge_instance):
            greet()
            threading.Thread(target=threading.Event().wait, name="orphan", daemon=True).start()

        def test_does_not(request):
            greet()
        """
    )

    result = run(pytester)

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_uses_the_bridge*",
            "*left 2 leak(s) behind*",
            "- coroutine 'greet' was never awaited*",
            "- daemon thread 'orphan'*",
        ]
    )


def test_bridge_instance_is_shut_down_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shutdown="""
        import bridge

        seen = []

        async def nothing():
            pass

        def test_first(bridge_instance):
            seen.append(bridge_instance)

        def test_second():
            [first] = seen
            assert first.thread is not None and not first.thread.is_alive()
            try:
                first.submit(nothing)
            except bridge.BridgeClosed:
                pass
            else:
                raise AssertionError("the bridge still accepts jobs")
        """
    )

    run(pytester, "--bridge-strict").assert_outcomes(passed=2)


# -- bridge_events -------------------------------------------------------------------------


@pytest.mark.bridge(name="events")
def test_bridge_events_records_each_jobs_trace_from_many_threads(
    bridge_instance: Bridge, bridge_events: list[dict[str, object]]
) -> None:
    async def answer(call_id: str) -> str:
        return call_id

    def place_call(thread: int, call: int) -> str:
        with structlog.contextvars.bound_contextvars(call_id=f"c{thread}"):
            return bridge_instance.call(answer, f"c{thread}", key=f"call:{thread}", kind="call")

    hammer(place_call, threads=8, calls=1).raise_first()

    for thread in range(8):
        trace = [e for e in bridge_events if e.get("key") == f"call:{thread}"]
        assert [e["event"] for e in trace] == ["job.submitted", "job.started", "job.finished"]
        for event in trace:
            assert event["kind"] == "call"
            assert event["thread"] == f"hammer-{thread}"
            assert event["call_id"] == f"c{thread}"
            assert event["log_level"] == "debug"
        assert trace[-1]["outcome"] == "succeeded"


def test_bridge_events_is_thread_safe(bridge_events: list[dict[str, object]]) -> None:
    log = structlog.get_logger("bridge")
    result = hammer(lambda t, c: log.info("tick", n=t * 1000 + c), threads=16, calls=200)
    result.raise_first()
    assert sorted(e["n"] for e in bridge_events) == [  # type: ignore[type-var]
        t * 1000 + c for t in range(16) for c in range(200)
    ]


def test_bridge_events_keeps_only_the_bridges_events(
    bridge_events: list[dict[str, object]],
) -> None:
    structlog.get_logger("my.app").info("not the bridge's")
    structlog.get_logger().info("nor this")
    structlog.get_logger("bridge.channel").warning("a child logger's")
    assert [(e["event"], e["log_level"]) for e in bridge_events] == [
        ("a child logger's", "warning")
    ]


def test_bridge_events_restores_structlog(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_events="""
        import structlog

        def test_unconfigured_before(bridge_events):
            assert structlog.is_configured()

        def test_unconfigured_after():
            assert not structlog.is_configured()

        import pytest

        renderer = structlog.processors.KeyValueRenderer()

        @pytest.fixture
        def configured():
            structlog.configure(processors=[renderer])

        def test_configured_before(configured, bridge_events):
            assert renderer not in structlog.get_config()["processors"]

        def test_configured_after():
            assert structlog.is_configured()
            assert structlog.get_config()["processors"] == [renderer]
        """
    )

    run(pytester, "--bridge-strict").assert_outcomes(passed=4)


# -- hammer inside a test --------------------------------------------------------------------

DEADLOCK = """
import threading
from bridge.testing import hammer

def test_transfers():
    ledger, audit = threading.Lock(), threading.Lock()
    both = threading.Barrier(2)

    def transfer(thread, call):
        first, second = (ledger, audit) if thread == 0 else (audit, ledger)
        with first:
            both.wait()
            with second:
                pass

    hammer(transfer, threads=2, calls=1, timeout=1.0)

def test_clean():
    lock = threading.Lock()
    def fn(thread, call):
        with lock:
            return call
    assert hammer(fn, threads=4, calls=50).errors == ()
"""


def test_a_deadlocking_hammer_fails_with_both_stacks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_deadlock=DEADLOCK)

    result = run(pytester)

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*HammerTimeout: hammer(): 2 of 2 threads still running after 1.0 s*",
            "*Thread 'hammer-0' (thread index 0, call index 0), most recent call last:",
            "*in transfer*",
            "*with second:*",
            "*Thread 'hammer-1' (thread index 1, call index 0), most recent call last:",
            "*in transfer*",
            "*with second:*",
        ]
    )


# -- a clean file passes -----------------------------------------------------------------------

CLEAN = """
import asyncio
import threading
import pytest
from bridge.testing import hammer

async def echo(value):
    await asyncio.sleep(0)
    return value

def test_calls(bridge_instance):
    result = hammer(lambda t, c: bridge_instance.call(echo, c), threads=4, calls=20)
    result.raise_first()
    assert sorted(result.results) == sorted(list(range(20)) * 4)

def test_thread_joined():
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()

def test_asyncio_run():
    assert asyncio.run(echo(3)) == 3

def test_events(bridge_instance, bridge_events):
    assert bridge_instance.call(echo, 1, key="call:42") == 1
    assert [e["event"] for e in bridge_events] == ["job.submitted", "job.started", "job.finished"]
"""


@pytest.mark.usefixtures("warnings_mode")
def test_a_clean_file_passes_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)

    result = run(pytester, "--bridge-strict", "-W", "error")

    result.assert_outcomes(passed=4)
    assert teardown_errors(result) == 0


def test_this_session_is_strict(request: pytest.FixtureRequest) -> None:
    # The project's own suite runs under the plugin in strict mode.
    assert request.config.getini("bridge_strict") is True
