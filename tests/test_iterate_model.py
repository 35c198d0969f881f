"""A model-based test of Bridge.iterate's buffer, consumption, cancel and close.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives one real
:class:`JobIterator` per example with random sequences of: a permit for the
generator to produce one more item, ``next()``, ``job.cancel()`` and
``close()``; and checks it after every step against a model of a few
counters. The generator (``N`` items, a random ``buffer``) awaits one permit
per item, so nothing depends on the clock.

Invariants: items come in order, each once; the generator is never asked for
an item more than ``buffer`` ahead of what was taken; after ``cancel()`` the
next ``next()`` raises :class:`JobCancelled` (unless the stream had already
ended by itself), after ``close()`` it stops; the generator's ``finally`` runs
at most once, on the loop, and has run once the job is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from typing import Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bridge import Bridge, JobCancelled, JobIterator, JobState

N: Final = 6
GATE: Final = 10.0


class IterateMachine(RuleBasedStateMachine):
    """One stream per example, on the bridge of the test."""

    bridge: Bridge  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []  # the item indexes the generator was asked for
        self.finally_threads: list[str] = []
        self.released = 0
        self.taken = 0
        self.ended = False  # next() must raise StopIteration from now on
        self.cancelled = False  # the next next() must raise JobCancelled
        self.it: JobIterator[int] | None = None
        self.buffer = 1

    @initialize(buffer=st.integers(min_value=1, max_value=5))
    def start(self, buffer: int) -> None:
        self.buffer = buffer
        self.permits = self.bridge.call(_new_semaphore)
        asked, threads, permits = self.asked, self.finally_threads, self.permits

        async def gen() -> AsyncIterator[int]:
            try:
                for i in range(N):
                    asked.append(i)
                    await permits.acquire()
                    yield i
            finally:
                threads.append(threading.current_thread().name)

        self.it = self.bridge.iterate(gen, buffer=buffer)

    @property
    def iterator(self) -> JobIterator[int]:
        assert self.it is not None
        return self.it

    @rule()
    def release(self) -> None:
        self.released += 1
        self.bridge.call(_release, self.permits)

    @precondition(
        lambda self: (
            not self.ended
            and (self.cancelled or self.taken == N or self.taken < min(self.released, N))
        )
    )
    @rule()
    def take(self) -> None:
        if self.cancelled:
            with pytest.raises(JobCancelled):
                next(self.iterator)
            self.ended = True
        elif self.taken == N:
            with pytest.raises(StopIteration):
                next(self.iterator)
            self.ended = True
        else:
            assert next(self.iterator) == self.taken
            self.taken += 1

    @precondition(lambda self: self.ended)
    @rule()
    def take_after_the_end(self) -> None:
        with pytest.raises(StopIteration):
            next(self.iterator)

    @precondition(lambda self: not self.ended)
    @rule()
    def cancel(self) -> None:
        job = self.iterator.job
        job.cancel()
        concurrent.futures.wait([job], GATE)
        assert job.done()
        # A stream that had ended by itself is delivered to the end all the same.
        self.cancelled = job.state is JobState.CANCELLED

    @rule()
    def close(self) -> None:
        self.iterator.close()
        self.ended = True
        assert self.iterator.job.done()

    @invariant()
    def never_more_than_buffer_ahead(self) -> None:
        if self.it is not None and self.asked:
            # asked[-1] is the item being computed: asked only while the buffer had room.
            assert self.asked[-1] - self.taken < self.buffer

    @invariant()
    def finally_runs_once_on_the_loop(self) -> None:
        assert self.finally_threads in ([], [self.bridge.name])
        if self.it is not None and self.it.job.done() and self.asked:
            assert self.finally_threads == [self.bridge.name]

    def teardown(self) -> None:
        if self.it is not None:
            self.it.close()
            assert self.it.job.done()
        assert self.bridge.jobs() == []


async def _new_semaphore() -> asyncio.Semaphore:
    return asyncio.Semaphore(0)


async def _release(permits: asyncio.Semaphore) -> None:
    permits.release()


@pytest.mark.timeout(600)
def test_iterate_agrees_with_its_model(bridge: Bridge) -> None:
    IterateMachine.bridge = bridge
    run_state_machine_as_test(
        IterateMachine,
        settings=settings(
            deadline=None,
            stateful_step_count=25,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
