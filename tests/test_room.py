"""Room under max_pending: taken keys, replace, and who gets woken (issue 9, symptoms 1-3).

A submit() that cannot use the room must not wait for it: a taken key is
refused at once (``DuplicateJob``, never ``Overloaded`` after waiting), a
``replace`` frees the old job's room for its replacement, and a waiter that
cannot use a wake-up passes it on, so room never goes unused while someone
waits.

The calls that must not wait run on a thread of their own with a long
``block_timeout`` (or none); the test waits for their outcome for
:data:`PROMPT` seconds. A correct core answers at once; a core that waits for
room fails the test after PROMPT seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge import Bridge, DuplicateJob, Job, JobCancelled, Overloaded

#: Seconds a submit() that must not wait for room gets to return or raise.
PROMPT = 5.0
#: Seconds to look for a submitting thread parked in a wait (see wait_until_parked).
PARK_LIMIT = 5.0

BLOCK_TIMEOUTS = [
    pytest.param(30.0, id="block_timeout=30"),
    pytest.param(None, id="block_timeout=None"),
]


async def answer() -> int:
    return 42


class Gate:
    """A job body that keeps its place until the test opens the gate.

    It waits on one of the bridge's worker threads, so opening the gate needs
    no job: the bridge may be full.
    """

    def __init__(self, b: Bridge) -> None:
        self._bridge = b
        self._open = threading.Event()

    async def __call__(self) -> str:
        await self._bridge.to_thread(self._open.wait, 30)
        return "released"

    def open(self) -> None:
        self._open.set()


class Unwinding:
    """A job body that runs until cancelled, then unwinds until the test lets it.

    Its ``except CancelledError`` block awaits its own teardown (a BYE, say),
    on a worker thread, so the job stays unfinished for as long as the test
    wants after the cancellation reached it.
    """

    def __init__(self, b: Bridge) -> None:
        self._bridge = b
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self._unwind = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            await self._bridge.to_thread(self._unwind.wait, 30)
            raise

    def finish(self) -> None:
        self._unwind.set()


class Scene:
    """Bridges, gates and submitting threads of one test, all released at teardown."""

    def __init__(self, make_bridge: Callable[..., Bridge]) -> None:
        self._make_bridge = make_bridge
        self._bridges: list[Bridge] = []
        self._releases: list[Callable[[], object]] = []
        self._threads: list[threading.Thread] = []

    def bridge(self, **options: Any) -> Bridge:
        b = self._make_bridge(**options)
        self._bridges.append(b)
        return b

    def gate(self, b: Bridge) -> Gate:
        gate = Gate(b)
        self._releases.append(gate.open)
        return gate

    def unwinding(self, b: Bridge) -> Unwinding:
        body = Unwinding(b)
        self._releases.append(body.finish)
        return body

    def in_thread(
        self, fn: Callable[[], Any], name: str
    ) -> tuple[concurrent.futures.Future[Any], threading.Thread]:
        """Run ``fn()`` on a new thread; its outcome arrives in the future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return future, thread

    def close(self) -> None:
        """Open every gate, shut the bridges down (which wakes blocked submitters), join."""
        for release in self._releases:
            release()
        for b in self._bridges:
            b.shutdown(timeout=2.0)
        for thread in self._threads:
            thread.join(10)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert alive == [], f"submitting threads still blocked after shutdown: {alive}"


@pytest.fixture
def scene(make_bridge: Callable[..., Bridge]) -> Iterator[Scene]:
    s = Scene(make_bridge)
    try:
        yield s
    finally:
        s.close()


def settled(future: concurrent.futures.Future[Any], what: str) -> concurrent.futures.Future[Any]:
    """*future* once it is done; fail the test if it is not within PROMPT seconds."""
    done, _ = concurrent.futures.wait([future], timeout=PROMPT)
    if not done:
        pytest.fail(f"{what}: still blocked after {PROMPT} s", pytrace=False)
    return future


def _parked(thread: threading.Thread) -> bool:
    """Whether *thread* is blocked in ``threading``'s Condition/Event ``wait``.

    A white-box peek, kept here alone: it reads the thread's innermost Python
    frame (``sys._current_frames()``), not the bridge's private state, so it
    does not depend on how the core names its condition or its waiters.
    """
    frame = sys._current_frames().get(thread.ident or -1)
    return (
        frame is not None
        and frame.f_code.co_name == "wait"
        and frame.f_code.co_filename == threading.__file__
    )


def wait_until_parked(thread: threading.Thread, future: concurrent.futures.Future[Any]) -> None:
    """Return once *thread* waits for room, or its submit() is over.

    Used to line the waiters up in a known order. Only the reproduction of the
    old lost wake-up depends on that order (the first waiter must be the one
    that cannot use the room); a correct core passes whatever the order, so
    giving up after PARK_LIMIT seconds is not a failure.
    """
    deadline = time.monotonic() + PARK_LIMIT
    while not _parked(thread) and time.monotonic() < deadline:
        if concurrent.futures.wait([future], timeout=0.001).done:
            return


# -- symptom 1: a taken key on a full bridge is refused at once -------------------------------


@pytest.mark.parametrize("block_timeout", BLOCK_TIMEOUTS)
def test_taken_key_on_a_full_bridge_is_refused_at_once(
    scene: Scene, block_timeout: float | None
) -> None:
    b = scene.bridge(max_pending=1)
    holder = b.submit(scene.gate(b), key="call:1")  # the bridge is full now
    attempt, _ = scene.in_thread(
        lambda: b.submit(answer, key="call:1", block_timeout=block_timeout), "submitter"
    )
    what = "submit() with a key taken by an unfinished job, on a full bridge"
    with pytest.raises(DuplicateJob, match="call:1"):
        settled(attempt, what).result()
    stats = b.stats()
    assert (stats.overloaded, stats.rejected, stats.active) == (0, 1, 1)
    assert b.get("call:1") is holder
    assert not holder.done()


def test_taken_key_on_a_full_reject_mode_bridge_is_a_duplicate_not_overloaded(
    scene: Scene,
) -> None:
    b = scene.bridge(max_pending=1, when_full="reject")
    holder = b.submit(scene.gate(b), key="call:1")
    with pytest.raises(DuplicateJob, match="call:1"):
        b.submit(answer, key="call:1")
    assert b.stats().overloaded == 0
    assert b.get("call:1") is holder


def test_taken_key_on_a_full_bridge_is_a_duplicate_on_the_loop_thread(scene: Scene) -> None:
    b = scene.bridge(max_pending=2)  # the holder and the job that submits
    b.submit(scene.gate(b), key="call:1")

    async def submit_the_taken_key() -> str:
        try:
            b.submit(answer, key="call:1")
        except DuplicateJob:
            return "DuplicateJob"
        except Overloaded as exc:
            return f"Overloaded: {exc}"
        return "accepted"

    assert b.submit(submit_the_taken_key).result(timeout=10) == "DuplicateJob"


# -- symptom 2: a waiter that cannot use the room passes the wake-up on ----------------------


@pytest.mark.parametrize("block_timeout", BLOCK_TIMEOUTS)
def test_room_goes_to_the_waiter_that_can_use_it(scene: Scene, block_timeout: float | None) -> None:
    b = scene.bridge(max_pending=2)
    holder = b.submit(scene.gate(b), key="call:1")
    finisher_gate = scene.gate(b)
    finisher = b.submit(finisher_gate)  # the bridge is full now
    # The first waiter wants the taken key: it can never use the room ...
    duplicate, first = scene.in_thread(
        lambda: b.submit(answer, key="call:1", block_timeout=block_timeout), "waiter-1"
    )
    wait_until_parked(first, duplicate)
    # ... the second could, as soon as there is some.
    admitted, second = scene.in_thread(
        lambda: b.submit(answer, block_timeout=block_timeout), "waiter-2"
    )
    wait_until_parked(second, admitted)
    assert not admitted.done(), "submit() returned although the bridge was full"

    finisher_gate.open()  # one place frees up; the key stays taken
    assert finisher.result(timeout=10) == "released"

    what = "the second waiter for room, once a job had finished (a lost wake-up)"
    job = settled(admitted, what).result()
    assert isinstance(job, Job)
    assert job.result(timeout=10) == 42
    with pytest.raises(DuplicateJob, match="call:1"):
        settled(duplicate, "the waiter whose key is taken").result()
    assert not holder.done()  # the room came from the finisher alone
    assert b.stats().overloaded == 0


# -- symptom 3: replace frees the old job's room for its replacement -------------------------


@pytest.mark.parametrize("block_timeout", BLOCK_TIMEOUTS)
def test_replace_on_a_full_bridge_admits_the_replacement_at_once(
    scene: Scene, block_timeout: float | None
) -> None:
    b = scene.bridge(max_pending=1)
    old_body = scene.unwinding(b)
    old = b.submit(old_body, key="call:1")  # the bridge is full now
    assert old_body.started.wait(10)
    attempt, _ = scene.in_thread(
        lambda: b.submit(answer, key="call:1", on_conflict="replace", block_timeout=block_timeout),
        "replacer",
    )
    what = "submit(on_conflict='replace') of the job that fills the bridge"
    replacement = settled(attempt, what).result()
    assert replacement is not old
    assert old_body.cancelled.wait(10), "the replaced job was not cancelled"
    # The old job is still unwinding: it gave up its key and its room all the same.
    assert not old.done()
    assert replacement.result(timeout=10) == 42
    old_body.finish()
    with pytest.raises(JobCancelled):
        old.result(timeout=10)
    assert b.stats().overloaded == 0
