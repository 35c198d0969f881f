"""The bridge's pytest plugin: fixtures for bridges, and tests that fail on leaks.

Loaded automatically (the ``pytest11`` entry point ``bridge``) and inert unless
a test uses one of its fixtures or its marker, or the session turns strict mode
on with ``pytest --bridge-strict`` or the ini option ``bridge_strict = true``.

Fixtures:
    ``bridge_instance``: a started :class:`~bridge.Bridge`, shut down at
        teardown; configured with ``@pytest.mark.bridge(**kwargs)``. The test
        fails at teardown if jobs were left unfinished (unless
        ``allow_leftover_jobs=True``) or a job failed and nobody retrieved its
        failure (below).
    ``bridge_events``: the structlog events the bridge emitted during the test,
        a list of dicts captured thread-safely.

Failed jobs. A failure is retrieved, as asyncio has it, by ``job.result()``,
``job.exception()`` or ``await job``, and so by what calls them:
``asyncio.wrap_future(job)`` (its callback calls ``exception()``), and
``concurrent.futures.wait()`` or ``as_completed()`` followed by ``result()``.
A done callback alone does not retrieve it: ``job.add_done_callback(lambda _:
done.set())`` only learns that the job ended. Every job of the
``bridge_instance`` bridge that failed and whose failure was not retrieved by
the end of the test fails the test, named with its exception.

Leak checks, for every test that uses ``bridge_instance`` and, in strict mode,
every test: a coroutine never awaited, an asyncio task destroyed while pending,
and a thread the test left running. Threads count whoever started them:
``threading``, ``_thread.start_new_thread()`` or native code (shown as
``Dummy-N``, or not at all, by ``threading.enumerate()``). A thread running
after the test's teardown, once the test's threads have had about a second in
all to end, fails the test unless it was running when the test started, or it
outlives the test by design:

- it is the default bridge's (its loop thread, worker threads, watchdog),
  which lives until the interpreter exits;
- it is a wider-scoped fixture's (class, module, package or session scope)
  while the fixture is set up: started during the fixture's setup, or held by
  the fixture's value, a ``threading.Thread`` among its attributes and
  containers (the workers a pool starts lazily during a test) or a thread of a
  :class:`~bridge.Bridge` there. A bridge names its threads itself; names are
  never matched. Such a thread is attributed to the fixture, not to the test:
  it must have ended after the fixture's teardown, or the test whose teardown
  ended the fixture fails, naming the fixture. (A thread that threading did
  not start has no object to be held by: it is the fixture's only if it
  started during the fixture's setup.)
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any, Final, final

import pytest

from . import Bridge, BridgeState, JobInfo
from ._events import EventCapture
from ._leaks import LeakWatch, Threads, default_bridge_threads, threads_held_by

__all__ = [
    "bridge_events",
    "bridge_instance",
    "pytest_addoption",
    "pytest_configure",
    "pytest_fixture_post_finalizer",
    "pytest_fixture_setup",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
]

#: Seconds the jobs a test left behind get to finish before they are cancelled.
DRAIN_TIMEOUT: Final = 1.0

_MARKER: Final = "bridge"
_OPT_OUT: Final = "allow_leftover_jobs"
_strict_key: Final = pytest.StashKey[bool]()
_watch_key: Final = pytest.StashKey[LeakWatch]()
_current_key: Final = pytest.StashKey[LeakWatch | None]()
_flush_key: Final = pytest.StashKey[bool]()
_fixtures_key: Final = pytest.StashKey["dict[pytest.FixtureDef[Any], _WiderFixture]"]()

#: What a fixture's value is not searched through for threads: pytest's own
#: objects lead to every test's fixtures.
_PYTEST_OBJECTS: Final = (
    pytest.Config,
    pytest.Item,
    pytest.Collector,
    pytest.FixtureRequest,
    pytest.PytestPluginManager,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--bridge-strict`` and the ini option ``bridge_strict``."""
    help_text = (
        "apply the bridge leak checks (never-awaited coroutines, leftover threads, "
        "tasks destroyed while pending) to every test, not only to tests that use "
        "the bridge_instance fixture"
    )
    group = parser.getgroup("bridge")
    group.addoption("--bridge-strict", action="store_true", default=False, help=help_text)
    parser.addini("bridge_strict", help=help_text, type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``bridge`` marker and read the strict-mode settings."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**kwargs): keyword arguments for the Bridge of the bridge_instance "
        f"fixture; {_OPT_OUT}=True lets the test end with jobs still running",
    )
    strict = bool(config.getoption("bridge_strict")) or bool(config.getini("bridge_strict"))
    config.stash[_strict_key] = strict
    config.stash[_current_key] = None
    config.stash[_fixtures_key] = {}


# -- the leak watch around each test ----------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Start watching a test before its fixtures are set up."""
    if item.config.stash.get(_strict_key, False) or "bridge_instance" in getattr(
        item, "fixturenames", ()
    ):
        _watch(item)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Stop watching a test after its teardown; fail the teardown on leaks."""
    try:
        outcome = yield
    except BaseException as exc:
        problems = _unwatch(item)
        if problems and hasattr(exc, "add_note"):
            exc.add_note(_leak_report(item, problems))
        raise
    problems = _unwatch(item)
    if problems:
        pytest.fail(_leak_report(item, problems), pytrace=False)
    return outcome


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Make sure the watch is flushed at teardown (a test without fixtures)."""
    watch = item.stash.get(_watch_key, None)
    if watch is not None:
        _flush_after_fixtures(item, watch)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Order the watch's flush; note the threads of fixtures that outlive the test."""
    if fixturedef.scope == "function":
        watch = request.config.stash.get(_current_key, None)
        if watch is not None:
            _flush_after_fixtures(request.node, watch)
        return (yield)
    before = Threads.running()
    value = yield
    fixture = _WiderFixture(fixturedef, value, before, Threads.running() - before)
    request.config.stash[_fixtures_key][fixturedef] = fixture
    return value


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """Have a wider-scoped fixture's threads checked once its teardown is over."""
    fixture = request.config.stash[_fixtures_key].pop(fixturedef, None)
    watch = request.config.stash.get(_current_key, None)
    if fixture is not None and watch is not None:
        threads = fixture.threads() - fixture.before - _outliving(request.config)
        watch.expect_ended(threads, fixture.name)


@final
class _WiderFixture:
    """A fixture of wider scope than a test's, while it is set up: its threads."""

    __slots__ = ("_threads", "before", "name", "value")

    def __init__(
        self, fixturedef: pytest.FixtureDef[Any], value: object, before: Threads, started: Threads
    ) -> None:
        self.name = f"the {fixturedef.scope}-scoped fixture {fixturedef.argname!r}"
        self.value = value
        self.before = before  # running before its setup: not its, even if its value holds them
        self._threads = started

    def threads(self) -> Threads:
        """Its threads so far: those started in its setup, and those its value holds."""
        self._threads |= threads_held_by(self.value, opaque=_PYTEST_OBJECTS) - self.before
        return self._threads


def _outliving(config: pytest.Config) -> Threads:
    """The threads meant to outlive the current test."""
    threads = default_bridge_threads()
    for fixture in config.stash[_fixtures_key].values():
        threads |= fixture.threads()
    return threads


def _watch(item: pytest.Item) -> LeakWatch:
    """The item's watch, started now if it is not running yet."""
    watch = item.stash.get(_watch_key, None)
    if watch is None:
        config = item.config
        watch = LeakWatch(lambda: _outliving(config))
        watch.start()
        item.stash[_watch_key] = watch
        item.config.stash[_current_key] = watch
    return watch


def _flush_after_fixtures(item: pytest.Item, watch: LeakWatch) -> None:
    """Have *watch* flushed right after the test's function-scoped fixtures end.

    Registered (once) before the first of them is set up, the finalizer runs
    after all their teardowns, and before pytest collects the unraisable
    exceptions of the teardown: one the flush brings up is this test's.
    """
    if not item.stash.get(_flush_key, False):
        item.stash[_flush_key] = True
        item.addfinalizer(watch.flush)


def _unwatch(item: pytest.Item) -> list[str]:
    watch = item.stash.get(_watch_key, None)
    if watch is None:
        return []
    del item.stash[_watch_key]
    if _flush_key in item.stash:
        del item.stash[_flush_key]
    item.config.stash[_current_key] = None
    return watch.stop()


def _leak_report(item: pytest.Item, problems: list[str]) -> str:
    lines = [f"{item.nodeid} left {len(problems)} leak(s) behind (bridge leak checks):"]
    for problem in problems:
        first, *rest = problem.splitlines()
        lines.append(f"- {first}")
        lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def bridge_instance(request: pytest.FixtureRequest) -> Iterator[Bridge]:
    """A started Bridge for this test, shut down at its teardown.

    Configure it with ``@pytest.mark.bridge(**kwargs)`` (the keyword arguments
    of :class:`~bridge.Bridge`); by default it is named after the test.

    At teardown the bridge gets a short drain, then is shut down, and the test
    fails, listing each offending job (id, key, kind, state, submitting thread,
    age), when:

    - jobs were still unfinished and had to be cancelled, or were stuck
      (``@pytest.mark.bridge(allow_leftover_jobs=True)`` turns this off, and
      so does a test that shuts the bridge down itself);
    - a job failed and nobody retrieved its exception.

    The test is also under the leak checks (see the module's docstring).
    """
    kwargs, allow_leftover = _marker_kwargs(request)
    kwargs.setdefault("name", f"bridge[{request.node.name}]")
    watch = _watch(request.node)
    _flush_after_fixtures(request.node, watch)  # a watch started just now
    bridge = Bridge(**kwargs)
    bridge.start()
    try:
        yield bridge
    finally:
        for problem in _shutdown_problems(bridge, allow_leftover):
            watch.add(problem)


@pytest.fixture
def bridge_events() -> Iterator[list[dict[str, Any]]]:
    """The structlog events the bridge emits during this test, as dicts.

    Each dict has the event's fields, ``event`` (e.g. ``"job.finished"``) and
    ``log_level``. The list is appended to under a lock from whichever thread
    logs (the loop thread, submitting threads). structlog is configured for the
    test (which turns the per-job debug events on) and restored afterwards;
    other loggers' structlog events are dropped meanwhile. (A configuration
    with ``cache_logger_on_first_use=True`` made earlier in the process may
    have pinned the bridge's logger to itself: do not cache in tests.)
    """
    capture = EventCapture()
    capture.start()
    try:
        yield capture.events
    finally:
        capture.stop()


def _marker_kwargs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], bool]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}, False
    if marker.args:
        raise TypeError(
            f"@pytest.mark.{_MARKER}() takes keyword arguments only (those of Bridge, "
            f"and {_OPT_OUT}), not positional {marker.args!r}"
        )
    kwargs = dict(marker.kwargs)
    allow_leftover = kwargs.pop(_OPT_OUT, False)
    if not isinstance(allow_leftover, bool):
        raise TypeError(f"{_OPT_OUT} must be True or False, not {allow_leftover!r}")
    return kwargs, allow_leftover


def _shutdown_problems(bridge: Bridge, allow_leftover: bool) -> list[str]:
    """Shut *bridge* down; describe the jobs it should not have had to deal with."""
    shut_by_test = _shut_down_by_test(bridge)
    at_teardown = {info.id: info for info in bridge.jobs()}
    report = bridge.shutdown(timeout=0.0 if allow_leftover else DRAIN_TIMEOUT)
    now = time.time()
    problems = []
    if not (allow_leftover or shut_by_test):
        for what, infos in (("cancelled", report.cancelled), ("stuck", report.stuck)):
            if infos:
                lines = [_describe_job(at_teardown.get(i.id, i), now) for i in infos]
                problems.append(_leftover_message(bridge, what, len(infos), lines))
    failures = bridge._unretrieved_failures()
    if failures:
        lines = [_describe_job(f.info(), now) + f": {f.exception()!r}" for f in failures]
        problems.append(
            f"bridge {bridge.name!r}: {len(failures)} job(s) failed and nobody retrieved "
            f"the exception (call result() or exception(), or await the job; a done "
            f"callback that does neither does not count):\n" + "\n".join(lines)
        )
    return problems


def _shut_down_by_test(bridge: Bridge) -> bool:
    """Whether the test shut *bridge* down itself: it owns that shutdown's report."""
    return bridge.state in (BridgeState.CLOSING, BridgeState.CLOSED)


def _leftover_message(bridge: Bridge, what: str, count: int, lines: list[str]) -> str:
    if what == "cancelled":
        why = f"still unfinished {DRAIN_TIMEOUT} s after the test; cancelled at shutdown"
    else:
        why = "stuck at shutdown: they block the loop or ignore cancellation"
    return (
        f"bridge {bridge.name!r}: {count} job(s) {why} (opt out with "
        f"@pytest.mark.{_MARKER}({_OPT_OUT}=True)):\n" + "\n".join(lines)
    )


def _describe_job(info: JobInfo, now: float) -> str:
    return (
        f"job {info.id} key={info.key!r} kind={info.kind!r} state={info.state.name} "
        f"thread={info.thread!r} age={now - info.submitted_at:.2f} s"
    )
