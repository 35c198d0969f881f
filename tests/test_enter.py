"""Bridge.enter: an async context manager entered and exited by one job."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import pytest

from bridge import Bridge, JobCancelled, JobState, JobTimeout, WrongThread

#: A generous bound for a wait that must end long before it (never reached when green).
GATE = 10.0

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


class Recorder:
    """An async context manager that records what its enter and exit saw."""

    def __init__(self, value: object = "resource", suppress: bool = False) -> None:
        self.value = value
        self.suppress = suppress
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.threads: list[str] = []
        self.exit_args: tuple[Any, ...] | None = None
        self.var_at_exit: str | None = None
        self.exited = threading.Event()
        self.exit_gate: asyncio.Event | None = None

    async def __aenter__(self) -> object:
        self.tasks.append(asyncio.current_task())
        self.threads.append(threading.current_thread().name)
        _var.set("set in __aenter__")
        return self.value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self.tasks.append(asyncio.current_task())
        self.threads.append(threading.current_thread().name)
        self.exit_args = (exc_type, exc, tb)
        self.var_at_exit = _var.get()
        self.exited.set()
        if self.exit_gate is not None:
            await self.exit_gate.wait()
        return self.suppress


def test_enter_and_exit_run_in_one_task_on_the_loop(bridge: Bridge) -> None:
    cm = Recorder()
    scope = bridge.enter(lambda: cm, key="ctx", kind="http")
    assert scope.job is None  # nothing runs before the with
    with scope as value:
        assert value == "resource"
        assert scope.job is not None
        assert scope.job.key == "ctx"
        assert scope.job.kind == "http"
        assert scope.job.state is JobState.RUNNING
        assert cm.exit_args is None
    assert cm.exit_args == (None, None, None)
    assert cm.tasks[0] is cm.tasks[1]
    assert cm.tasks[0] is not None
    assert cm.threads == [bridge.name, bridge.name]
    assert cm.var_at_exit == "set in __aenter__"  # the same task: the same context
    assert scope.job.state is JobState.SUCCEEDED
    assert bridge.jobs() == []


def test_works_with_asynccontextmanager(bridge: Bridge) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def session(name: str) -> AsyncIterator[str]:
        events.append("open")
        try:
            yield name
        finally:
            events.append("close")

    with bridge.enter(lambda: session("s1")) as name:
        assert name == "s1"
        assert events == ["open"]
    assert events == ["open", "close"]


def test_the_body_exception_reaches_aexit_and_propagates(bridge: Bridge) -> None:
    cm = Recorder()
    error = ValueError("in the body")
    with pytest.raises(ValueError, match="in the body") as caught, bridge.enter(lambda: cm):
        raise error
    assert caught.value is error
    assert cm.exit_args is not None
    assert cm.exit_args[0] is ValueError
    assert cm.exit_args[1] is error


def test_aexit_may_suppress_the_body_exception(bridge: Bridge) -> None:
    cm = Recorder(suppress=True)
    with bridge.enter(lambda: cm):
        raise ValueError("suppressed")
    assert cm.exit_args is not None
    assert cm.exit_args[0] is ValueError


def test_an_error_in_aexit_is_raised_with_the_body_error_as_context(bridge: Bridge) -> None:
    class Failing(Recorder):
        async def __aexit__(self, *exc_info: Any) -> bool:
            raise OSError("exit failed")

    with pytest.raises(OSError, match="exit failed") as caught, bridge.enter(Failing):
        raise ValueError("body")
    assert isinstance(caught.value.__context__, ValueError)


def test_an_error_in_aenter_is_raised_from_the_with(bridge: Bridge) -> None:
    class Refusing(Recorder):
        async def __aenter__(self) -> object:
            raise ConnectionError("refused")

    body_ran = False
    with pytest.raises(ConnectionError, match="refused"), bridge.enter(Refusing):
        body_ran = True
    assert not body_ran
    assert bridge._unretrieved_failures() == []


def test_a_factory_that_returns_no_context_manager(bridge: Bridge) -> None:
    with pytest.raises(TypeError, match="cm_factory must return an async context manager"):
        with bridge.enter(lambda: 42):  # type: ignore[arg-type, return-value]
            pass


def test_keyboard_interrupt_in_the_body_still_exits(bridge: Bridge) -> None:
    cm = Recorder()
    with pytest.raises(KeyboardInterrupt), bridge.enter(lambda: cm):
        raise KeyboardInterrupt
    assert cm.exit_args is not None
    assert cm.exit_args[0] is KeyboardInterrupt
    assert cm.threads == [bridge.name, bridge.name]


def interrupt_main_when(event: threading.Event) -> threading.Thread:
    """A thread that sends SIGINT to the main thread once *event* is set."""
    main = threading.main_thread().ident
    assert main is not None

    def run() -> None:
        if event.wait(GATE):
            signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_exit_goes_on_when_the_thread_is_interrupted_while_waiting(bridge: Bridge) -> None:
    cm = Recorder()

    async def make_gate() -> asyncio.Event:
        return asyncio.Event()

    gate = cm.exit_gate = bridge.call(make_gate)
    scope = bridge.enter(lambda: cm)
    interrupter = interrupt_main_when(cm.exited)
    with pytest.raises(KeyboardInterrupt), scope:
        pass  # leaving waits for __aexit__, which waits for the gate: Ctrl+C comes
    interrupter.join(GATE)
    job = scope.job
    assert job is not None
    assert not job.done()  # the exit is still running on the loop
    bridge._scheduler.call_soon(gate.set)
    assert job.result(timeout=GATE) is False
    assert cm.exit_args == (None, None, None)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_interrupted_while_entering_cancels_the_scope(bridge: Bridge) -> None:
    entering, cancelled = threading.Event(), threading.Event()

    class Slow(Recorder):
        async def __aenter__(self) -> object:
            entering.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return None  # pragma: no cover

    scope = bridge.enter(Slow)
    interrupter = interrupt_main_when(entering)
    with pytest.raises(KeyboardInterrupt), scope:
        pytest.fail("the body must not run")
    interrupter.join(GATE)
    assert cancelled.wait(GATE)
    assert scope.job is not None
    with pytest.raises(JobCancelled):
        scope.job.result(timeout=GATE)


def test_the_timeout_bounds_the_whole_scope(bridge: Bridge) -> None:
    cm = Recorder()
    with pytest.raises(JobTimeout), bridge.enter(lambda: cm, timeout=0.2):
        assert cm.exited.wait(GATE)  # the deadline exits the manager during the body
    assert cm.exit_args is not None
    assert cm.exit_args[0] is asyncio.CancelledError
    assert bridge.jobs() == []


def test_cancel_during_the_body_exits_with_the_cancellation(bridge: Bridge) -> None:
    cm = Recorder()
    scope = bridge.enter(lambda: cm)
    with pytest.raises(JobCancelled), scope:
        assert scope.job is not None
        assert scope.job.cancel()
        assert cm.exited.wait(GATE)
    assert cm.exit_args is not None
    assert cm.exit_args[0] is asyncio.CancelledError


def test_shutdown_exits_an_open_scope(make_bridge: Callable[..., Bridge]) -> None:
    b = make_bridge()
    cm = Recorder()
    with pytest.raises(JobCancelled), b.enter(lambda: cm):
        closer = threading.Thread(target=b.shutdown, kwargs={"timeout": 0.05})
        closer.start()
        assert cm.exited.wait(GATE)
        closer.join(GATE)
    assert cm.exit_args is not None
    assert cm.exit_args[0] is asyncio.CancelledError


def test_a_scope_is_entered_once(bridge: Bridge) -> None:
    scope = bridge.enter(Recorder)
    with scope:
        pass
    with pytest.raises(RuntimeError, match="only once"), scope:
        pass


def test_on_the_loop_thread_it_raises_wrong_thread(bridge: Bridge) -> None:
    async def inside() -> str:
        try:
            bridge.enter(Recorder)
        except WrongThread as exc:
            return str(exc)
        return "no error"

    assert "deadlock" in bridge.call(inside)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((42,), {}, TypeError, "cm_factory"),
        ((Recorder,), {"key": 1}, TypeError, "key"),
        ((Recorder,), {"kind": ""}, TypeError, "kind"),
        ((Recorder,), {"timeout": -1.0}, ValueError, "timeout"),
    ],
)
def test_bad_arguments_leave_nothing_behind(
    bridge: Bridge, args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        bridge.enter(*args, **kwargs)
    assert bridge.stats().submitted == 0


def test_a_coroutine_object_is_refused_and_closed(bridge: Bridge) -> None:
    async def not_a_factory() -> None:
        pass

    coro = not_a_factory()
    with pytest.raises(TypeError, match=r"cm_factory.*closed"):
        bridge.enter(coro)  # type: ignore[arg-type]
    assert coro.cr_frame is None
    assert bridge.stats().submitted == 0
