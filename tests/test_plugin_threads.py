"""The plugin's thread check: which threads left running are the test's.

Each scenario runs in a pytest subprocess (``pytester``) in strict mode: the
threads it leaves must not touch this session. The rule is in the docstring of
``bridge.pytest_plugin``.
"""

from __future__ import annotations

import pytest

INI = '[tool.pytest.ini_options]\ntimeout = 30\nfilterwarnings = ["error"]\n'


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(INI)


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--bridge-strict")


def assert_clean(result: pytest.RunResult, *names: str) -> None:
    """Each of the tests *names* passed and its teardown found nothing."""
    for name in names:
        result.stdout.fnmatch_lines([f"PASSED *::{name}"])
        result.stdout.no_fnmatch_line(f"*ERROR at teardown of {name}*")


# -- threading's threads -----------------------------------------------------------------------

THREADS = """
import threading
import pytest

forever = threading.Event()

def wait_for_the_hangup():
    forever.wait()

@pytest.fixture(scope="session")
def session_worker():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="session-worker", daemon=True)
    thread.start()
    yield thread
    stop.set()

def test_thread_left_running():
    threading.Thread(target=wait_for_the_hangup, name="call-timer-42", daemon=True).start()

def test_thread_ending_by_itself():
    go = threading.Event()
    threading.Thread(target=go.wait, name="quick").start()
    go.set()  # it ends soon, not joined by the test: the grace covers it

def test_session_fixture_thread_is_not_the_tests(session_worker):
    assert session_worker.is_alive()
"""


def test_a_thread_left_alive_fails_the_test_and_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_threads=THREADS)

    result = run(pytester)

    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_thread_left_running*",
            "- daemon thread 'call-timer-42' (ident *) was started during the test and is "
            "still alive after its teardown; its stack:",
            "*in wait_for_the_hangup",
            "*forever.wait()",
        ]
    )
    assert_clean(
        result, "test_thread_ending_by_itself", "test_session_fixture_thread_is_not_the_tests"
    )


# -- threads that threading did not start (false negative) ------------------------------------

FOREIGN = """
import _thread
import threading
import pytest

forever = threading.Event()

def wait_for_the_hangup():
    forever.wait()

def test_raw_thread_left_running():
    started = threading.Event()
    def rtp_receiver():
        started.set()
        wait_for_the_hangup()
    ident = _thread.start_new_thread(rtp_receiver, ())
    assert started.wait(10)
    assert ident not in {t.ident for t in threading.enumerate()}  # invisible there

def test_dummy_thread_left_running():
    started = threading.Event()
    def media_callback():
        threading.current_thread()  # threading shows it from now on, as Dummy-N
        started.set()
        wait_for_the_hangup()
    _thread.start_new_thread(media_callback, ())
    assert started.wait(10)

def test_raw_thread_ending_by_itself():
    go = threading.Event()
    _thread.start_new_thread(go.wait, ())
    go.set()  # it ends soon: the grace covers it, though it cannot be joined

@pytest.fixture(scope="module")
def native_stack():
    stop, started = threading.Event(), threading.Event()
    def transport():
        started.set()
        stop.wait()
    _thread.start_new_thread(transport, ())
    assert started.wait(10)
    yield
    stop.set()

def test_raw_thread_of_a_module_fixture(native_stack):
    pass
"""


def test_a_thread_not_started_by_threading_is_counted(pytester: pytest.Pytester) -> None:
    # The old check skipped Dummy-N threads and never saw the others.
    pytester.makepyfile(test_foreign=FOREIGN)

    result = run(pytester)

    result.assert_outcomes(passed=4, errors=2)
    how = "not started by threading: _thread.start_new_thread() or native code"
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_raw_thread_left_running*",
            f"- a thread unknown to threading (ident *, {how}) was started during the test "
            "and is still alive after its teardown; its stack:",
            "*in rtp_receiver",
            "*in wait_for_the_hangup",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_dummy_thread_left_running*",
            f"- thread 'Dummy-*' (ident *, {how}) was started during the test and is still "
            "alive after its teardown; its stack:",
            "*in media_callback",
            "*in wait_for_the_hangup",
        ]
    )
    assert_clean(result, "test_raw_thread_ending_by_itself", "test_raw_thread_of_a_module_fixture")


# -- threads of bridges that outlive the test (false positives) -------------------------------

DEFAULT_BRIDGE = """
import threading
import bridge

async def worker_name(b):
    thread = await b.to_thread(threading.current_thread)
    return thread.name

def test_default_bridge_starts_a_worker():
    default = bridge.default()
    assert bridge.call(worker_name, default).startswith("bridge-default-worker")

def test_a_bridge_the_test_left_running_is_the_tests():
    forgotten = bridge.Bridge("forgotten").start()
    assert forgotten.call(worker_name, forgotten).startswith("forgotten-worker")
"""


def test_the_default_bridges_worker_threads_are_not_the_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_default=DEFAULT_BRIDGE)

    result = run(pytester)

    result.assert_outcomes(passed=2, errors=1)
    assert_clean(result, "test_default_bridge_starts_a_worker")
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_bridge_the_test_left_running_is_the_tests*",
            "*left 2 leak(s) behind*",
            "- daemon thread 'forgotten' (ident *) was started during the test*",
            "- daemon thread 'forgotten-worker*' (ident *) was started during the test*",
        ]
    )


WIDER_BRIDGES = """
import threading
import pytest
from bridge import Bridge

async def worker_name(b):
    thread = await b.to_thread(threading.current_thread)
    return thread.name

@pytest.fixture(scope="module")
def pbx():
    b = Bridge("pbx").start()
    yield b
    b.shutdown(timeout=10)

@pytest.fixture(scope="session")
def lazy_pbx():
    b = Bridge("lazy-pbx", loop_block_warning=60.0)  # started by its first job
    yield b
    b.shutdown(timeout=10)

class Softphone:
    def __init__(self):
        self.lines = {"media": Bridge("softphone")}  # held, not the fixture's value

@pytest.fixture(scope="class")
def softphone():
    phone = Softphone()
    yield phone
    phone.lines["media"].shutdown(timeout=10)

def test_module_bridge_starts_a_worker(pbx):
    assert pbx.call(worker_name, pbx).startswith("pbx-worker")

def test_session_bridge_starts_during_the_test(lazy_pbx):
    assert lazy_pbx.call(worker_name, lazy_pbx).startswith("lazy-pbx-worker")
    names = {thread.name for thread in threading.enumerate()}
    assert {"lazy-pbx", "lazy-pbx-watchdog"} <= names

class TestSoftphone:
    def test_bridge_held_by_a_class_fixture(self, softphone):
        media = softphone.lines["media"]
        assert media.call(worker_name, media).startswith("softphone-worker")

def test_last(pbx, lazy_pbx):
    pass  # the module and session fixtures end after it: their bridges are shut down
"""


def test_threads_of_a_wider_scoped_bridge_fixture_are_not_the_tests(
    pytester: pytest.Pytester,
) -> None:
    # Worker threads, and a loop thread and watchdog started by the test's job.
    pytester.makepyfile(test_wider=WIDER_BRIDGES)

    result = run(pytester)

    result.assert_outcomes(passed=4)
    assert_clean(
        result,
        "test_module_bridge_starts_a_worker",
        "test_session_bridge_starts_during_the_test",
        "TestSoftphone::test_bridge_held_by_a_class_fixture",
        "test_last",
    )


# -- threads of other fixtures that outlive the test (false positive) -------------------------

POOLS = """
import threading
from concurrent.futures import ThreadPoolExecutor
import pytest

@pytest.fixture(scope="module")
def media_pool():
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="media") as pool:
        yield pool

def current_name(both):
    both.wait(10)  # two tasks at once: the pool needs its second thread
    return threading.current_thread().name

def test_pool_starts_a_worker(media_pool):
    assert media_pool.submit(current_name, threading.Barrier(1)).result(10).startswith("media")

def test_pool_starts_another_worker(media_pool):
    both = threading.Barrier(2)
    names = list(media_pool.map(current_name, [both, both], timeout=10))
    assert len(set(names)) == 2
"""


def test_threads_a_wider_scoped_fixtures_pool_starts_during_a_test_are_not_the_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_pools=POOLS)

    result = run(pytester)

    result.assert_outcomes(passed=2)
    assert_clean(result, "test_pool_starts_a_worker", "test_pool_starts_another_worker")


OUTLIVING_FIXTURES = """
import threading
import pytest
from bridge import Bridge

forever = threading.Event()

class CallRegistry:
    def __init__(self):
        self.calls = []

    def place(self, name):
        thread = threading.Thread(target=forever.wait, name=name, daemon=True)
        thread.start()
        self.calls.append(thread)

@pytest.fixture(scope="module")
def registry():
    return CallRegistry()  # never hangs its calls up

@pytest.fixture(scope="module")
def sip_stack():
    threading.Thread(target=forever.wait, name="sip-transport", daemon=True).start()

@pytest.fixture(scope="module")
def forgotten_pbx():
    return Bridge("forgotten-pbx").start()  # never shut down

def test_places_a_call(registry, sip_stack, forgotten_pbx):
    registry.place("call-1")

def test_last(registry):
    pass  # the module's fixtures end after it, their threads still running
"""


def test_a_wider_scoped_fixtures_threads_must_end_with_it(pytester: pytest.Pytester) -> None:
    # The threads are the fixture's, not the test's that started them; they are
    # checked when the fixture is torn down, and the fixture is named.
    pytester.makepyfile(test_outliving=OUTLIVING_FIXTURES)

    result = run(pytester)

    result.assert_outcomes(passed=2, errors=1)
    assert_clean(result, "test_places_a_call")
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_last*", "*left 3 leak(s) behind*"])
    for thread, fixture in (
        ("call-1", "registry"),
        ("sip-transport", "sip_stack"),
        ("forgotten-pbx", "forgotten_pbx"),
    ):
        result.stdout.fnmatch_lines(
            [
                f"- daemon thread '{thread}' (ident *) belongs to the module-scoped fixture "
                f"'{fixture}' and is still alive after its teardown; its stack:"
            ]
        )
