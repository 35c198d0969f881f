"""Resources at shutdown: they exit while the loop and their own tasks still run.

Each exit gets a fair share of the budget, the exits run newest first, one
error (even a ``BaseException``) stays that resource's own, and the report is
made once the exits are over.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bridge import Bridge, BridgeClosed
from bridge._resources import ResourcesOutcome, ResourceStack

#: The resources' budget at shutdown, in all (the bridge's _RESOURCE_GRACE).
BUDGET = 1.0


class BatchWriter:
    """Writes records in batches: its own task writes what is queued when it closes."""

    def __init__(self, written: list[int]) -> None:
        self.written = written
        self._queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._flush = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BatchWriter:
        self._task = asyncio.get_running_loop().create_task(self._write_batches())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._queue.put(None)
        self._flush.set()
        assert self._task is not None
        await self._task  # cancelled by the old shutdown: CancelledError here

    def write(self, record: int) -> None:
        self._queue.put_nowait(record)

    async def _write_batches(self) -> None:
        await self._flush.wait()  # a batch goes out when the writer closes
        while (record := await self._queue.get()) is not None:
            await asyncio.sleep(0)  # the device takes a moment per record
            self.written.append(record)


class Closes:
    """A resource whose exit awaits (a flush) and then notes that it ran."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __aenter__(self) -> Closes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)  # a real exit awaits something: a flush, a socket close
        self.log.append(f"exit {self.name}")

    def __repr__(self) -> str:
        return f"<Closes {self.name}>"


class Raises:
    """A resource whose exit raises *error* (any BaseException)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def __aenter__(self) -> Raises:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
        raise self.error

    def __repr__(self) -> str:
        return f"<Raises {type(self.error).__name__}>"


class Hangs:
    """A resource whose exit never ends by itself (a pool that never drains)."""

    def __init__(self, name: str = "hangs") -> None:
        self.name = name
        self.ran_for: float | None = None

    async def __aenter__(self) -> Hangs:
        return self

    async def __aexit__(self, *exc: object) -> None:
        started = time.monotonic()
        try:
            await asyncio.Event().wait()  # never set
        finally:
            self.ran_for = time.monotonic() - started

    def __repr__(self) -> str:
        return f"<Hangs {self.name}>"


# -- #12: a resource's own tasks still run while it exits ------------------------------------


def test_a_writer_task_started_by_a_resource_drains_its_queue_at_shutdown(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    written: list[int] = []
    writer = b.resource(lambda: BatchWriter(written))

    async def queue_records() -> None:
        for record in range(5):
            writer.write(record)

    b.call(queue_records)
    report = b.shutdown(timeout=1)
    assert written == [0, 1, 2, 3, 4]
    assert report.resources_closed == 1
    assert report.resource_errors == ()


def test_tasks_nobody_owns_are_cancelled_only_after_the_resources_exit(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    orphans: list[asyncio.Task[None]] = []  # asyncio holds tasks weakly

    class NotesTheOrphan:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            await asyncio.sleep(0)
            log.append(f"exit: orphan cancelled={orphans[0].cancelled()} done={orphans[0].done()}")

    async def orphan() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            log.append("orphan unwound")

    async def spawn() -> None:
        orphans.append(asyncio.get_running_loop().create_task(orphan()))

    b.resource(NotesTheOrphan)
    b.call(spawn)  # the job ends; its task lives on, owned by nobody
    report = b.shutdown(timeout=1)
    assert log == ["exit: orphan cancelled=False done=False", "orphan unwound"]
    assert report.resources_closed == 1
    assert report.resource_errors == ()


@pytest.mark.parametrize(
    "error",
    [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(3), GeneratorExit()],
    ids=lambda e: type(e).__name__,
)
def test_a_base_exception_from_one_exit_is_that_resources_error_and_the_others_close(
    make_bridge: Callable[..., Bridge], error: BaseException
) -> None:
    b = make_bridge()
    log: list[str] = []
    b.resource(lambda: Closes("first", log))
    b.resource(lambda: Raises(error))
    b.resource(lambda: Closes("last", log))
    report = b.shutdown(timeout=1)
    assert log == ["exit last", "exit first"]
    assert report.resources_closed == 3
    assert report.resource_errors == ((f"<Raises {type(error).__name__}>", error),)
    assert not any(t.name == b.name for t in threading.enumerate())  # the loop ended


# -- #13: one slow exit does not stop the others ----------------------------------------------


def test_a_hanging_exit_is_the_only_one_reported_and_the_others_still_close(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    b.resource(lambda: Closes("first", log))
    b.resource(lambda: Closes("second", log))
    b.resource(Hangs)  # newest: exits first
    report = b.shutdown(timeout=1)
    assert log == ["exit second", "exit first"]
    assert report.resources_closed == 3
    [(what, error)] = report.resource_errors
    assert what == "<Hangs hangs>"
    assert isinstance(error, TimeoutError)


def test_each_hanging_exit_gets_a_fair_share_of_the_budget(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    b.resource(lambda: Closes("oldest", log))
    first, second = Hangs("first"), Hangs("second")
    b.resource(lambda: second)
    b.resource(lambda: first)
    report = b.shutdown(timeout=1)
    assert log == ["exit oldest"]
    assert [(what, type(error)) for what, error in report.resource_errors] == [
        ("<Hangs first>", TimeoutError),
        ("<Hangs second>", TimeoutError),
    ]
    # A third of the budget each, not all of it for the first and none for the next.
    assert first.ran_for is not None
    assert second.ran_for is not None
    third = BUDGET / 3
    assert 0.6 * third <= first.ran_for <= BUDGET / 2
    assert 0.6 * third <= second.ran_for <= BUDGET / 2


def test_an_exit_that_ignores_cancellation_does_not_hold_up_the_others(
    make_bridge: Callable[..., Bridge],
) -> None:
    b = make_bridge()
    log: list[str] = []
    older_closed = threading.Event()

    class Stubborn:
        """Swallows every cancellation until the older resource has closed."""

        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if older_closed.is_set():  # the sweep of leftover tasks: give in
                        log.append("stubborn gave in")
                        raise

        def __repr__(self) -> str:
            return "<Stubborn>"

    class Older:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            await asyncio.sleep(0)
            log.append("exit older")
            older_closed.set()

    b.resource(Older)
    b.resource(Stubborn)
    report = b.shutdown(timeout=1)
    assert log == ["exit older", "stubborn gave in"]
    assert report.resources_closed == 2
    [(what, error)] = report.resource_errors
    assert what == "<Stubborn>"
    assert isinstance(error, TimeoutError)


# -- the report is made once the resources are done ---------------------------------------------


def test_the_report_counts_a_resource_that_closes_once_a_stuck_loop_is_free(
    make_bridge: Callable[..., Bridge],
) -> None:
    """Fails against the old core: it stops waiting for the loop thread after half a second
    when a job was stuck, and builds the report while the resource is still exiting."""
    b = make_bridge()
    blocking = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    class SlowToClose:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            await asyncio.sleep(0.7)  # the work of closing: within the 1 s budget
            closed.set()

    async def blocks_the_loop() -> None:
        blocking.set()
        release.wait()  # deliberately blocks the loop thread until shutdown gives up on it

    b.resource(SlowToClose)
    job = b.submit(blocks_the_loop, timeout=None)
    assert blocking.wait(10)
    job.add_done_callback(lambda _: release.set())  # resolved as stuck: free the loop
    report = b.shutdown(timeout=0)
    assert len(report.stuck) == 1
    assert closed.is_set(), "the report was made before the resource had closed"
    assert report.resources_closed == 1
    assert report.resource_errors == ()


# -- ResourceStack: the API the shutdown uses ---------------------------------------------------


class Entered:
    async def __aenter__(self) -> str:
        return "value"

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return "<Entered>"


def test_resource_stack_reports_progress_and_when_it_is_done() -> None:
    stack = ResourceStack()
    assert stack.outcome == ResourcesOutcome()
    assert not stack.wait_closed(start_timeout=0)  # aclose has not begun

    async def scenario() -> list[ResourcesOutcome]:
        seen = [stack.outcome]
        assert await stack.enter(Entered) == "value"
        seen.append(stack.outcome)
        await stack.aclose(BUDGET)
        seen.append(stack.outcome)
        return seen

    before, entered, after = asyncio.run(scenario())
    assert before == ResourcesOutcome()
    assert entered == ResourcesOutcome(open=("<Entered>",))
    assert after == ResourcesOutcome(closed=1, finished=True)
    assert stack.wait_closed(start_timeout=0)
    assert (stack.closed, stack.errors) == (1, ())


def test_wait_closed_returns_once_the_exits_are_over_not_before() -> None:
    stack = ResourceStack()
    exiting = threading.Event()
    finish = threading.Event()

    class WaitsForTheTest:
        async def __aenter__(self) -> None:
            return None

        def __repr__(self) -> str:
            return "<WaitsForTheTest>"

        async def __aexit__(self, *exc: object) -> None:
            exiting.set()
            await asyncio.get_running_loop().run_in_executor(None, finish.wait, 20)

    async def scenario() -> None:
        await stack.enter(WaitsForTheTest)
        await stack.aclose(30)

    loop_thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    loop_thread.start()
    try:
        assert exiting.wait(10)
        assert stack.outcome == ResourcesOutcome(open=("<WaitsForTheTest>",))  # still exiting
    finally:
        finish.set()
    started = time.monotonic()
    assert stack.wait_closed(start_timeout=10)
    assert time.monotonic() - started < 10  # as soon as the exit ended, not at the budget's end
    loop_thread.join(10)
    assert stack.outcome == ResourcesOutcome(closed=1, finished=True)


def test_wait_closed_is_bounded_by_the_budget_when_the_loop_is_blocked() -> None:
    stack = ResourceStack()
    exiting = threading.Event()
    release = threading.Event()

    class BlocksTheLoop:
        async def __aenter__(self) -> None:
            return None

        def __repr__(self) -> str:
            return "<BlocksTheLoop>"

        async def __aexit__(self, *exc: object) -> None:
            exiting.set()
            release.wait(10)  # deliberately blocks the loop thread: no budget can stop it

    async def scenario() -> None:
        await stack.enter(BlocksTheLoop)
        await stack.aclose(0.2)

    loop_thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    loop_thread.start()
    try:
        assert exiting.wait(10)
        started = time.monotonic()
        assert not stack.wait_closed(start_timeout=10, slack=0.1)
        assert time.monotonic() - started < 1  # budget 0.2 plus slack 0.1, not 10
        assert not stack.outcome.finished
        assert stack.outcome.open == ("<BlocksTheLoop>",)
    finally:
        release.set()
        loop_thread.join(10)


def test_enter_after_the_exits_began_is_refused() -> None:
    stack = ResourceStack()
    called: list[str] = []

    def factory() -> Any:
        called.append("factory")
        return Entered()

    async def scenario() -> None:
        await stack.aclose(BUDGET)
        with pytest.raises(BridgeClosed, match="resources"):
            await stack.enter(factory)

    asyncio.run(scenario())
    assert called == []
    assert stack.outcome == ResourcesOutcome(finished=True)


def test_a_resource_entered_while_the_others_exit_is_exited_too() -> None:
    stack = ResourceStack()
    log: list[str] = []

    class EntersAnotherOnExit:
        async def __aexit__(self, *exc: object) -> None:
            log.append("exit first")

        async def __aenter__(self) -> None:
            return None

    class SlowEnter:
        async def __aenter__(self) -> None:
            await asyncio.sleep(0)
            log.append("late entered")

        async def __aexit__(self, *exc: object) -> None:
            log.append("exit late")

    async def scenario() -> None:
        await stack.enter(EntersAnotherOnExit)
        await stack.enter(Entered)
        late = asyncio.get_running_loop().create_task(stack.enter(SlowEnter))
        await asyncio.sleep(0)  # the late enter starts, and waits in __aenter__
        # SlowEnter began before aclose: it is exited once entered, by aclose.
        await stack.aclose(BUDGET)
        await late

    asyncio.run(scenario())
    assert "exit late" in log
    assert log[-1] == "exit first"
    assert stack.outcome.closed == 3


def test_an_unlimited_budget_waits_for_the_exits() -> None:
    stack = ResourceStack()

    async def scenario() -> None:
        await stack.enter(Entered)
        await stack.aclose(math.inf)

    asyncio.run(scenario())
    assert stack.wait_closed(start_timeout=math.inf, slack=math.inf)
    assert stack.outcome == ResourcesOutcome(closed=1, finished=True)
