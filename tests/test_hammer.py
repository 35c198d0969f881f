"""bridge.testing.hammer: many threads released together, deadlocks reported."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import pytest

import bridge.testing
from bridge import Bridge, BridgeError
from bridge.testing import HammerResult, HammerTimeout, hammer

#: A generous bound for a wait that must end long before it (never reached when green).
GATE = 10.0


def test_public_names() -> None:
    assert bridge.testing.__all__ == ("HammerResult", "HammerTimeout", "hammer")
    for name in bridge.testing.__all__:
        assert getattr(bridge.testing, name).__doc__


def test_every_call_returns_its_value_in_thread_then_call_order() -> None:
    result = hammer(lambda t, c: (t, c), threads=6, calls=25)

    assert result.results == tuple((t, c) for t in range(6) for c in range(25))
    assert result.errors == ()
    assert result.duration >= 0.0
    result.raise_first()  # no error: nothing raised


def test_threads_are_released_together() -> None:
    # Every thread must be inside its first call at the same time, or the
    # barrier inside fn breaks (and its error is recorded).
    inside = threading.Barrier(8)
    idents: dict[int, int] = {}

    def fn(thread: int, call: int) -> None:
        idents[thread] = threading.get_ident()
        inside.wait(GATE)

    result = hammer(fn, threads=8, calls=1)

    result.raise_first()
    assert len(set(idents.values())) == 8
    assert threading.get_ident() not in idents.values()


def test_errors_are_recorded_and_threads_go_on() -> None:
    def fn(thread: int, call: int) -> int:
        if call % 3 == 0:
            raise ValueError(f"{thread}/{call}")
        return call

    result = hammer(fn, threads=4, calls=10)

    failed = {(t, c) for t, c, _ in result.errors}
    assert failed == {(t, c) for t in range(4) for c in (0, 3, 6, 9)}
    for t, c, exc in result.errors:
        assert isinstance(exc, ValueError)
        assert str(exc) == f"{t}/{c}"
    assert result.results == tuple(c for _ in range(4) for c in range(10) if c % 3)


def test_raise_first_raises_the_earliest_error() -> None:
    def fn(thread: int, call: int) -> None:
        if call in (2, 5):
            raise KeyError(call)

    result = hammer(fn, threads=1, calls=8)

    assert [(t, c) for t, c, _ in result.errors] == [(0, 2), (0, 5)]
    with pytest.raises(KeyError) as info:
        result.raise_first()
    assert info.value is result.errors[0][2]


def test_result_is_frozen_and_has_a_short_repr() -> None:
    result = hammer(lambda t, c: None, threads=2, calls=3)

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.duration = 1.0  # type: ignore[misc]
    assert repr(result).startswith("<HammerResult 6 results, 0 errors in ")
    assert isinstance(result, HammerResult)


def test_hammer_timeout_is_a_timeout_and_a_bridge_error() -> None:
    assert issubclass(HammerTimeout, TimeoutError)
    assert issubclass(HammerTimeout, BridgeError)


def test_a_lock_order_deadlock_is_reported_with_both_stacks() -> None:
    lock_a, lock_b = threading.Lock(), threading.Lock()
    both_hold_one = threading.Barrier(2)
    rescued = threading.Event()
    workers: list[threading.Thread] = []

    def transfer(thread: int, call: int) -> None:
        workers.append(threading.current_thread())
        first, second = (lock_a, lock_b) if thread == 0 else (lock_b, lock_a)
        first.acquire()
        both_hold_one.wait(GATE)  # each holds one lock: the deadlock is certain
        second.acquire()  # deadlock: each waits for the lock the other holds
        second.release()
        if not rescued.is_set():
            first.release()

    started = time.monotonic()
    with pytest.raises(HammerTimeout) as info:
        hammer(transfer, threads=2, calls=1, timeout=0.5)
    elapsed = time.monotonic() - started

    try:
        message = str(info.value)
        assert "2 of 2 threads still running after 0.5 s" in message
        assert "Thread 'hammer-0' (thread index 0, call index 0)" in message
        assert "Thread 'hammer-1' (thread index 1, call index 0)" in message
        # Both stacks end in the blocking acquire, inside the function under test.
        assert message.count("in transfer") == 2
        assert message.count("second.acquire()  # deadlock") == 2
        assert elapsed < 0.5 + GATE  # it did not wait for the deadlock to end
        assert all(worker.is_alive() for worker in workers)
    finally:
        # Break the deadlock from here: a plain Lock may be released by any
        # thread. Each worker then gets its second lock and leaves.
        rescued.set()
        lock_a.release()
        lock_b.release()
        for worker in workers:
            worker.join(GATE)
    assert not any(worker.is_alive() for worker in workers)
    assert not lock_a.locked()
    assert not lock_b.locked()


def test_timeout_names_only_the_threads_still_running() -> None:
    gate = threading.Event()
    workers: dict[int, threading.Thread] = {}

    def fn(thread: int, call: int) -> None:
        workers[thread] = threading.current_thread()
        if thread == 2:
            gate.wait()

    try:
        with pytest.raises(HammerTimeout) as info:
            hammer(fn, threads=4, calls=2, timeout=0.3)
        message = str(info.value)
        assert "1 of 4 threads still running" in message
        assert "'hammer-2'" in message
        assert "gate.wait()" in message
        for name in ("'hammer-0'", "'hammer-1'", "'hammer-3'"):
            assert name not in message
        # The threads that finished have been joined.
        assert not any(workers[i].is_alive() for i in (0, 1, 3))
    finally:
        gate.set()
        workers[2].join(GATE)
    assert not workers[2].is_alive()


def test_hammer_threads_are_daemons() -> None:
    daemons: list[bool] = []
    hammer(lambda t, c: daemons.append(threading.current_thread().daemon), threads=3, calls=1)
    assert daemons == [True, True, True]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"threads": 0}, ValueError, "threads must be >= 1"),
        ({"threads": -3}, ValueError, "threads must be >= 1"),
        ({"threads": 2.0}, TypeError, "threads must be an int"),
        ({"threads": True}, TypeError, "threads must be an int"),
        ({"calls": 0}, ValueError, "calls must be >= 1"),
        ({"calls": "5"}, TypeError, "calls must be an int"),
        ({"timeout": 0}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"timeout": -1.0}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"timeout": math.nan}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"timeout": math.inf}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"timeout": None}, TypeError, "timeout must be a number of seconds"),
    ],
)
def test_bad_arguments_are_refused_before_any_thread_starts(
    kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    called: list[int] = []
    before = threading.active_count()

    with pytest.raises(error, match=words):
        hammer(lambda t, c: called.append(t), **kwargs)  # type: ignore[arg-type]

    assert called == []
    assert threading.active_count() == before


def test_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        hammer(42)  # type: ignore[arg-type]


@pytest.fixture
def third_thread_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "hammer-2":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)


@pytest.mark.usefixtures("third_thread_cannot_start")
def test_a_thread_that_cannot_start_leaves_no_thread_behind() -> None:
    called: list[int] = []
    before = set(threading.enumerate())

    with pytest.raises(RuntimeError, match="can't start new thread"):
        hammer(lambda t, c: called.append(t), threads=5, calls=1)

    assert called == []  # the threads that did start were released without a call
    assert set(threading.enumerate()) == before


@pytest.mark.stress
def test_hammering_a_bridge_loses_nothing(bridge_instance: Bridge) -> None:
    async def echo(value: int) -> int:
        return value

    result = hammer(lambda t, c: bridge_instance.call(echo, t * 1000 + c), threads=32, calls=50)

    result.raise_first()
    assert result.results == tuple(t * 1000 + c for t in range(32) for c in range(50))
    stats = bridge_instance.stats()
    assert (stats.submitted, stats.succeeded, stats.active) == (1600, 1600, 0)
