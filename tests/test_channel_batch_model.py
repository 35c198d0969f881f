"""Channel batches against a deque: hypothesis drives the real channel from one thread.

Every operation is one that cannot block (a timeout of 0), so one thread can
drive the channel through full, empty and closed; after every step the
channel's items must be exactly the model's, in order.
"""

from __future__ import annotations

from collections import deque

import janus
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from bridge import Bridge, Channel

ITEMS = st.lists(st.integers(min_value=0, max_value=999), max_size=8)


class BatchMachine(RuleBasedStateMachine):
    """One channel per example, on the bridge of the test."""

    bridge: Bridge  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.model: deque[int] = deque()
        self.maxsize = 0
        self.closed = False
        self.ch: Channel[int] | None = None

    @initialize(maxsize=st.integers(min_value=0, max_value=6))
    def open(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.ch = self.bridge.channel(maxsize)

    @property
    def channel(self) -> Channel[int]:
        assert self.ch is not None
        return self.ch

    def room(self) -> int:
        return 1_000 if self.maxsize == 0 else self.maxsize - len(self.model)

    @rule(items=ITEMS)
    def put_many(self, items: list[int]) -> None:
        fits = min(self.room(), len(items))
        try:
            self.channel.put_many(items, timeout=0)
            outcome: tuple[str, tuple[object, ...]] = ("put", ())
        except janus.SyncQueueShutDown as exc:
            outcome = ("closed", exc.args)
        except janus.SyncQueueFull as exc:
            outcome = ("full", exc.args)
        if self.closed:
            assert outcome == ("closed", (0,))
            return
        assert outcome == (("full", (fits,)) if fits < len(items) else ("put", ()))
        self.model.extend(items[:fits])  # the first ones, whatever the outcome

    @rule(max_items=st.none() | st.integers(min_value=1, max_value=5))
    def get_many(self, max_items: int | None) -> None:
        try:
            got = self.channel.get_many(max_items, timeout=0)
        except janus.SyncQueueShutDown:
            assert self.closed
            assert not self.model
            return
        except janus.SyncQueueEmpty:
            assert not self.closed
            assert not self.model
            return
        n = len(self.model) if max_items is None else min(max_items, len(self.model))
        assert got == [self.model.popleft() for _ in range(n)]
        assert got  # never an empty batch

    @rule(item=st.integers(min_value=0, max_value=999))
    def put_one(self, item: int) -> None:
        try:
            self.channel.sync_q.put_nowait(item)
        except janus.SyncQueueShutDown:
            assert self.closed
        except janus.SyncQueueFull:
            assert self.room() == 0
        else:
            self.model.append(item)

    @rule()
    def get_one(self) -> None:
        try:
            item = self.channel.sync_q.get_nowait()
        except (janus.SyncQueueShutDown, janus.SyncQueueEmpty):
            assert not self.model
        else:
            assert item == self.model.popleft()

    @rule()
    def close(self) -> None:
        self.channel.close()
        self.closed = True

    @invariant()
    def same_items(self) -> None:
        if self.ch is None:
            return
        assert list(self.ch._queue._queue) == list(self.model)
        assert self.ch.closed is self.closed
        assert self.ch._queue._sync_not_full_waiting == 0


def test_batches_agree_with_a_deque(bridge: Bridge) -> None:
    BatchMachine.bridge = bridge
    run_state_machine_as_test(
        BatchMachine,
        settings=settings(
            max_examples=150,
            deadline=None,
            stateful_step_count=30,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
