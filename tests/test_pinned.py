"""Pinned threads: ``Bridge.pinned_thread`` and :class:`PinnedThread`."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from bridge import Bridge, BridgeClosed, JobCancelled, PinnedThread, WrongThread, _pinned

WAIT = 10.0
R = TypeVar("R")


class Recorder:
    """Records what ran on which thread, in order (list.append is atomic)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []

    def __call__(self, what: str) -> str:
        self.entries.append((what, threading.get_ident()))
        return what

    @property
    def names(self) -> list[str]:
        return [what for what, _ in self.entries]

    @property
    def threads(self) -> set[int]:
        return {ident for _, ident in self.entries}


class WaitingCondition(threading.Condition):
    """A condition that says when a thread starts waiting on it (instrumentation)."""

    def __init__(self, lock: Any, waiting: threading.Event) -> None:
        super().__init__(lock)
        self.waiting = waiting

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run *fn* on a new thread; its result or exception lands in the list."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


@pytest.fixture
def blocker() -> Iterator[threading.Event]:
    """An event that blocking calls wait for; set at teardown so nothing hangs."""
    event = threading.Event()
    yield event
    event.set()


def block_pinned(pinned: PinnedThread, release: threading.Event) -> threading.Thread:
    """Occupy the pinned thread with a call that waits for *release*; return the caller."""
    running = threading.Event()

    def hold() -> None:
        running.set()
        release.wait(WAIT)

    thread, _ = in_thread(lambda: pinned.call(hold))
    assert running.wait(WAIT)
    return thread


# -- calls ---------------------------------------------------------------------------


def test_every_call_runs_on_the_same_named_thread(bridge: Bridge) -> None:
    record = Recorder()
    pinned = bridge.pinned_thread("lib")
    assert pinned.name == f"{bridge.name}-lib"
    assert pinned.thread in bridge._owned_threads()
    threads = [in_thread(lambda i=i: pinned.call(record, f"t{i}"))[0] for i in range(4)]
    for thread in threads:
        thread.join(WAIT)
    assert bridge.call(_run_on, pinned, record, "job") == "job"
    assert pinned.call(record, "main") == "main"
    assert sorted(record.names) == ["job", "main", "t0", "t1", "t2", "t3"]
    assert record.threads == {pinned.thread.ident}
    assert pinned.thread.name == f"{bridge.name}-lib"


def test_options_may_be_passed_by_position_as_the_issue_writes_them(bridge: Bridge) -> None:
    ran = threading.Event()
    pinned = bridge.pinned_thread("lib", ran.set)  # initializer, second in the signature
    assert pinned.call(ran.is_set) is True


async def _run_on(pinned: PinnedThread, fn: Callable[[str], R], arg: str) -> R:
    return await pinned.run(fn, arg)


def test_call_returns_the_value_and_reraises_the_exception(bridge: Bridge) -> None:
    pinned = bridge.pinned_thread("lib")

    def fail() -> None:
        raise KeyError("no such call")

    with pytest.raises(KeyError, match="no such call"):
        pinned.call(fail)
    assert pinned.call(pow, 2, 10) == 1024  # the thread goes on


def test_run_from_a_job_does_not_block_the_loop(bridge: Bridge, blocker: threading.Event) -> None:
    pinned = bridge.pinned_thread("lib")
    started = threading.Event()

    def slow() -> str:
        started.set()
        blocker.wait(WAIT)
        return "done"

    job = bridge.submit(_run_on, pinned, lambda _: slow(), "x", timeout=None)
    assert started.wait(WAIT)
    assert bridge.call(_value, 7) == 7  # the loop runs while run() awaits
    blocker.set()
    assert job.result(WAIT) == "done"


async def _value(value: int) -> int:
    return value


def test_run_reraises_the_functions_exception(bridge: Bridge) -> None:
    pinned = bridge.pinned_thread("lib")

    async def job() -> str:
        try:
            await pinned.run(int, "not a number")
        except ValueError as exc:
            return type(exc).__name__
        return "no error"

    assert bridge.call(job) == "ValueError"


def test_call_on_the_pinned_thread_runs_at_once(bridge: Bridge) -> None:
    record = Recorder()
    pinned = bridge.pinned_thread("lib")

    def callback() -> str:  # as a native callback would, on the pinned thread
        return pinned.call(record, "inner") + "+outer"

    assert pinned.call(callback) == "inner+outer"
    assert record.threads == {pinned.thread.ident}


def test_call_on_the_loop_thread_raises_wrong_thread(bridge: Bridge) -> None:
    ran = threading.Event()
    pinned = bridge.pinned_thread("lib")

    async def job() -> None:
        pinned.call(ran.set)

    with pytest.raises(WrongThread, match=r"PinnedThread.call\(\).*loop thread"):
        bridge.call(job)

    async def close_on_loop() -> None:
        pinned.close()

    with pytest.raises(WrongThread, match=r"PinnedThread.close\(\)"):
        bridge.call(close_on_loop)
    assert not ran.is_set()
    assert pinned.call(lambda: "still open") == "still open"


def test_calls_keep_their_order_under_eight_concurrent_callers(bridge: Bridge) -> None:
    pinned = bridge.pinned_thread("lib", max_queue=4)
    record = Recorder()
    barrier = threading.Barrier(8)

    def caller(n: int) -> None:
        barrier.wait(WAIT)
        for i in range(200):
            pinned.call(record, f"{n}:{i}")

    threads = [in_thread(lambda n=n: caller(n))[0] for n in range(8)]
    for thread in threads:
        thread.join(WAIT)
    assert record.threads == {pinned.thread.ident}
    assert len(record.names) == 8 * 200
    for n in range(8):
        mine = [int(name.split(":")[1]) for name in record.names if name.startswith(f"{n}:")]
        assert mine == list(range(200))


def test_calls_run_in_a_copy_of_the_callers_context(bridge: Bridge) -> None:
    import contextvars

    call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")
    pinned = bridge.pinned_thread("lib")
    call_id.set("call-42")
    assert pinned.call(call_id.get) == "call-42"


# -- idle and the initializer -----------------------------------------------------------


def test_idle_is_called_on_the_pinned_thread_while_idle(bridge: Bridge) -> None:
    idled: list[int] = []
    three = threading.Event()

    def idle() -> None:
        idled.append(threading.get_ident())
        if len(idled) >= 3:
            three.set()

    pinned = bridge.pinned_thread("lib", idle=idle, idle_interval=0.001)
    assert three.wait(WAIT)
    assert set(idled) == {pinned.thread.ident}


def test_idle_is_due_between_calls_that_keep_coming(bridge: Bridge) -> None:
    log: list[str] = []
    interval = 0.005
    pinned = bridge.pinned_thread("lib", idle=lambda: log.append("idle"), idle_interval=interval)
    release = threading.Event()
    entered = threading.Event()

    def first() -> None:
        entered.set()
        release.wait(WAIT)
        log.append("first")
        until = time.monotonic() + interval
        while time.monotonic() < until:  # let idle() fall due while this call runs
            pass

    caller, _ = in_thread(lambda: pinned.call(first))
    assert entered.wait(WAIT)
    others = [in_thread(lambda i=i: pinned.call(log.append, f"call{i}"))[0] for i in range(5)]
    while len(pinned._calls) < 5:  # all five queued behind the running call
        pass  # the threads queue within microseconds
    log.clear()
    release.set()
    for thread in [caller, *others]:
        thread.join(WAIT)
    # idle() fell due during "first": it runs before the five calls queued behind it.
    calls = [entry for entry in log if entry != "idle"]
    assert calls[0] == "first"
    assert log[log.index("first") + 1] == "idle"
    assert sorted(calls[1:]) == [f"call{i}" for i in range(5)]


def test_the_initializer_runs_first_on_the_pinned_thread(
    bridge: Bridge, blocker: threading.Event
) -> None:
    record = Recorder()
    local = threading.local()

    def initializer() -> None:
        blocker.wait(WAIT)
        local.registered = True  # as libRegisterThread would, for this thread only
        record("init")

    pinned = bridge.pinned_thread("lib", initializer=initializer)
    assert "STARTING" in repr(pinned)
    caller, out = in_thread(lambda: pinned.call(lambda: getattr(local, "registered", False)))
    blocker.set()
    caller.join(WAIT)
    assert out == [True]
    assert record.names == ["init"]
    assert record.threads == {pinned.thread.ident}


def test_a_failing_initializer_fails_every_call_clearly(
    bridge: Bridge, blocker: threading.Event, bridge_events: list[dict[str, Any]]
) -> None:
    finalized = threading.Event()

    def initializer() -> None:
        blocker.wait(WAIT)
        raise OSError("port 5060 in use")

    pinned = bridge.pinned_thread("sip", initializer=initializer, finalizer=finalized.set)
    queued, out = in_thread(lambda: pinned.call(lambda: "never"))
    blocker.set()
    queued.join(WAIT)
    pinned.thread.join(WAIT)
    assert not pinned.thread.is_alive()
    errors = [out[0]]
    with pytest.raises(BridgeClosed) as later:
        pinned.call(lambda: "never")
    errors.append(later.value)
    errors.append(bridge.call(_error_of_run, pinned))
    for error in errors:
        assert isinstance(error, BridgeClosed)
        assert "initializer raised OSError('port 5060 in use')" in str(error)
        assert isinstance(error.__cause__, OSError)
    assert not finalized.is_set()  # the initializer undoes its own partial work
    assert "FAILED" in repr(pinned)
    logged = [e for e in bridge_events if e["event"] == "pinned.error"]
    assert [(e["stage"], e["thread"]) for e in logged] == [("initializer", pinned.name)]
    assert pinned.close() is True


async def _error_of_run(pinned: PinnedThread) -> BaseException | None:
    try:
        await pinned.run(lambda: "never")
    except BaseException as exc:
        return exc
    return None


def test_idle_errors_are_logged_once_per_run_of_failures(
    bridge: Bridge, bridge_events: list[dict[str, Any]]
) -> None:
    outcomes = iter([True, True, False, True, False])  # True: raise
    done = threading.Event()

    def idle() -> None:
        fail = next(outcomes, None)
        if fail is None:
            done.set()
        elif fail:
            raise RuntimeError("pump failed")

    bridge.pinned_thread("lib", idle=idle, idle_interval=0.001)
    assert done.wait(WAIT)
    logged = [e for e in bridge_events if e["event"] == "pinned.error"]
    assert [e["stage"] for e in logged] == ["idle", "idle"]


# -- backpressure --------------------------------------------------------------------


def test_a_full_queue_blocks_call_and_makes_run_wait(
    bridge: Bridge, blocker: threading.Event
) -> None:
    pinned = bridge.pinned_thread("lib", max_queue=2)
    record = Recorder()
    waiting = threading.Event()
    pinned._calls._room = WaitingCondition(pinned._calls._lock, waiting)
    holder = block_pinned(pinned, blocker)
    queued = [in_thread(lambda i=i: pinned.call(record, f"q{i}"))[0] for i in (1, 2)]
    while len(pinned._calls) < 2:
        pass  # both calls are queued within microseconds
    late, late_out = in_thread(lambda: pinned.call(record, "late"))
    assert waiting.wait(WAIT)  # call() waits for room
    entered = threading.Event()

    async def job() -> str:
        entered.set()
        return await pinned.run(record, "job")

    job_handle = bridge.submit(job, timeout=None)
    assert entered.wait(WAIT)
    assert bridge.call(_value, 1) == 1  # the loop is free while run() waits for room
    assert len(pinned._calls._async_room) == 1
    assert len(pinned._calls) == 2
    assert late.is_alive()
    blocker.set()
    for thread in [holder, *queued, late]:
        thread.join(WAIT)
    assert job_handle.result(WAIT) == "job"
    assert late_out == ["late"]
    assert sorted(record.names) == ["job", "late", "q1", "q2"]
    assert sorted(record.names[:2]) == ["q1", "q2"]  # queued first, run first


def test_cancelling_run_drops_a_queued_call_and_discards_a_running_one(
    bridge: Bridge, blocker: threading.Event
) -> None:
    pinned = bridge.pinned_thread("lib")
    ran: list[str] = []
    holder = block_pinned(pinned, blocker)
    entered = threading.Event()

    async def queued_job() -> None:
        entered.set()
        await pinned.run(ran.append, "queued")

    job = bridge.submit(queued_job, timeout=None)
    assert entered.wait(WAIT)
    assert bridge.call(_value, 1) == 1  # the job has queued its call by now
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(WAIT)
    blocker.set()
    holder.join(WAIT)
    pinned.call(ran.append, "barrier")
    assert ran == ["barrier"]  # the cancelled call never ran

    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def running() -> str:
        started.set()
        release.wait(WAIT)
        finished.set()
        return "discarded"

    job = bridge.submit(_run_on, pinned, lambda _: running(), "x", timeout=None)
    assert started.wait(WAIT)
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(WAIT)  # the await ends while the call still runs
    assert not finished.is_set()
    release.set()
    pinned.call(ran.append, "after")
    assert finished.is_set()


def test_cancelling_run_while_it_waits_for_room_queues_nothing(
    bridge: Bridge, blocker: threading.Event
) -> None:
    pinned = bridge.pinned_thread("lib", max_queue=1)
    ran: list[str] = []
    holder = block_pinned(pinned, blocker)
    filler, _ = in_thread(lambda: pinned.call(ran.append, "filler"))
    while len(pinned._calls) < 1:
        pass
    job = bridge.submit(_run_on, pinned, ran.append, "dropped", timeout=None)
    assert bridge.call(_value, 1) == 1
    assert len(pinned._calls._async_room) == 1
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(WAIT)
    assert pinned._calls._async_room == []
    blocker.set()
    for thread in (holder, filler):
        thread.join(WAIT)
    pinned.call(ran.append, "barrier")
    assert ran == ["filler", "barrier"]


# -- closing -------------------------------------------------------------------------


def test_close_drains_then_finalizes_and_is_idempotent(
    bridge: Bridge, blocker: threading.Event
) -> None:
    record = Recorder()
    pinned = bridge.pinned_thread("lib", finalizer=lambda: record("finalizer"))
    holder = block_pinned(pinned, blocker)
    queued, out = in_thread(lambda: pinned.call(record, "queued"))
    while len(pinned._calls) < 1:
        pass
    closer, closed = in_thread(lambda: pinned.close(timeout=WAIT))
    blocker.set()
    for thread in (holder, queued, closer):
        thread.join(WAIT)
    assert closed == [True]
    assert out == ["queued"]  # accepted before close(): run, not dropped
    assert record.names == ["queued", "finalizer"]
    assert record.threads == {pinned.thread.ident}
    assert pinned.close() is True
    assert pinned.shutdown(timeout=1) is True
    assert record.names == ["queued", "finalizer"]
    assert not pinned.thread.is_alive()
    assert "CLOSED" in repr(pinned)
    with pytest.raises(BridgeClosed, match="has been closed"):
        pinned.call(record, "late")
    with pytest.raises(BridgeClosed):
        bridge.call(_run_on, pinned, record, "late")


def test_a_finalizer_error_is_logged_and_the_thread_ends(
    bridge: Bridge, bridge_events: list[dict[str, Any]]
) -> None:
    def finalizer() -> None:
        raise RuntimeError("libDestroy failed")

    pinned = bridge.pinned_thread("lib", finalizer=finalizer)
    assert pinned.close(timeout=WAIT) is True
    logged = [e for e in bridge_events if e["event"] == "pinned.error"]
    assert [e["stage"] for e in logged] == ["finalizer"]


def test_close_on_the_pinned_thread_does_not_wait_for_itself(bridge: Bridge) -> None:
    pinned = bridge.pinned_thread("lib")
    assert pinned.call(pinned.close) is False
    pinned.thread.join(WAIT)
    assert not pinned.thread.is_alive()


def test_shutdown_closes_it_after_the_jobs_and_before_the_resources() -> None:
    b = Bridge("pinned-order").start()
    log: list[str] = []
    pinned = b.pinned_thread("lib", finalizer=lambda: log.append("finalizer"))

    @asynccontextmanager
    async def resource() -> AsyncIterator[None]:
        yield
        log.append("resource exit")

    b.resource(resource)
    channel = b.channel()

    async def job() -> None:
        try:
            await channel.async_q.get()  # ends when shutdown closes the channels
        except Exception:  # the channel was shut down
            pass
        log.append(await pinned.run(lambda: "job's last call"))

    job_handle = b.submit(job, timeout=None)
    report = b.shutdown(timeout=WAIT)
    assert job_handle.result(0) is None
    assert log == ["job's last call", "finalizer", "resource exit"]
    assert not pinned.thread.is_alive()
    assert pinned.name not in report.threads_left
    with pytest.raises(BridgeClosed):
        pinned.call(log.append, "late")


def test_shutdown_names_a_pinned_thread_that_does_not_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pinned, "CLOSE_GRACE", 0.05)
    b = Bridge("pinned-stuck").start()
    entered, release, finalized = threading.Event(), threading.Event(), threading.Event()

    def idle() -> None:  # never returns until the test releases it
        entered.set()
        release.wait(WAIT)

    pinned = b.pinned_thread("pjsua", idle=idle, finalizer=finalized.set)
    try:
        assert entered.wait(WAIT)
        report = b.shutdown(timeout=1)
        assert report.threads_left == (f"{b.name}-pjsua",)
        assert not finalized.is_set()
    finally:
        release.set()
        pinned.thread.join(WAIT)
    assert finalized.is_set()  # it closes once idle() returns
    assert not pinned.thread.is_alive()


def test_pinned_thread_on_a_shut_down_bridge_starts_nothing() -> None:
    b = Bridge("pinned-closed").start()
    b.shutdown()
    with pytest.raises(BridgeClosed):
        b.pinned_thread("lib")
    assert [t for t in threading.enumerate() if t.name == f"{b.name}-lib"] == []
    assert b._pinned.threads() == []


def test_closing_the_set_refuses_new_pinned_threads(bridge: Bridge) -> None:
    bridge._pinned.close_all()
    with pytest.raises(BridgeClosed, match="no pinned thread is started"):
        bridge.pinned_thread("late")
    assert bridge._pinned.threads() == []


# -- bad arguments ---------------------------------------------------------------------


async def _async_fn() -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 5}, TypeError, "name must be a str"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"initializer": "libRegisterThread"}, TypeError, "initializer must be callable"),
        ({"idle": 10}, TypeError, "idle must be callable"),
        ({"idle": _async_fn}, TypeError, "idle must be a plain"),
        ({"finalizer": object()}, TypeError, "finalizer must be callable"),
        ({"idle_interval": 0}, ValueError, "idle_interval must be a finite number"),
        ({"idle_interval": -0.01}, ValueError, "idle_interval"),
        ({"idle_interval": math.nan}, ValueError, "idle_interval"),
        ({"idle_interval": math.inf}, ValueError, "idle_interval"),
        ({"idle_interval": "0.01"}, TypeError, "idle_interval must be a number"),
        ({"idle_interval": True}, TypeError, "idle_interval"),
        ({"max_queue": 0}, ValueError, "max_queue must be >= 1"),
        ({"max_queue": 1.5}, TypeError, "max_queue must be an int"),
    ],
)
def test_bad_arguments_raise_at_once_and_start_no_thread(
    bridge: Bridge, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    name = kwargs.pop("name", "lib")
    before = bridge._owned_threads()
    with pytest.raises(error, match=match):
        bridge.pinned_thread(name, **kwargs)
    assert bridge._owned_threads() == before
    assert bridge._pinned.threads() == []


def test_bad_functions_in_call_and_run_name_fn(bridge: Bridge) -> None:
    pinned = bridge.pinned_thread("lib")
    with pytest.raises(TypeError, match="fn must be callable"):
        pinned.call(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be a plain"):
        bridge.call(_run_on, pinned, _async_fn, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        pinned.close(timeout=-1)
    assert len(pinned._calls) == 0
    assert pinned.call(lambda: "fine") == "fine"


# -- a model of the lifecycle -------------------------------------------------------------


class PinnedMachine(RuleBasedStateMachine):
    """Calls (sync, from a job, nested on the pinned thread) and closes, against a model.

    The model: the values run so far, in order, and whether the thread was closed.
    After each step the thread has run exactly the model's values, on itself, and
    the finalizer has run once if closed, never otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bridge = Bridge("pinned-machine").start()
        self.record = Recorder()
        self.finalized: list[int] = []
        self.pinned = self.bridge.pinned_thread(
            "lib",
            idle=lambda: None,
            idle_interval=0.001,
            finalizer=lambda: self.finalized.append(1),
        )
        self.model: list[str] = []
        self.closed = False

    def _expect(self, value: str, attempt: Callable[[], object]) -> None:
        if self.closed:
            with pytest.raises(BridgeClosed):
                attempt()
        else:
            assert attempt() == value
            self.model.append(value)

    @rule(value=st.text(max_size=3))
    def call(self, value: str) -> None:
        self._expect(value, lambda: self.pinned.call(self.record, value))

    @rule(value=st.text(max_size=3))
    def run_from_a_job(self, value: str) -> None:
        self._expect(value, lambda: self.bridge.call(_run_on, self.pinned, self.record, value))

    @rule(value=st.text(max_size=3))
    def nested_call(self, value: str) -> None:
        self._expect(value, lambda: self.pinned.call(self.pinned.call, self.record, value))

    @rule()
    def close(self) -> None:
        assert self.pinned.close(timeout=WAIT) is True
        self.closed = True

    @invariant()
    def matches_the_model(self) -> None:
        assert self.record.names == self.model
        assert self.record.threads <= {self.pinned.thread.ident}
        assert self.finalized == ([1] if self.closed else [])
        assert self.pinned.thread.is_alive() is not self.closed

    def teardown(self) -> None:
        self.bridge.shutdown(timeout=1)
        assert not self.pinned.thread.is_alive()
        assert self.finalized == [1]


def test_the_lifecycle_follows_the_model() -> None:
    run_state_machine_as_test(
        PinnedMachine, settings=settings(max_examples=40, stateful_step_count=15, deadline=None)
    )
