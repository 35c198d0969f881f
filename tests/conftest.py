"""Shared fixtures of the test suite."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import settings

from bridge import Bridge

pytest_plugins = ["pytester"]

# Hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:
# "ci" (CI and `make test`: a fixed set of examples), "long" (`make test-long`),
# "dev" (the default: the same budget as ci, fresh examples each run).
settings.register_profile("ci", derandomize=True, max_examples=200)
settings.register_profile("long", max_examples=5_000)
settings.register_profile("dev", max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured.

    ``capture_logs()`` leaves ``structlog.is_configured()`` true afterwards, which
    would switch the bridge's per-job debug events on for later tests.
    """
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def make_bridge() -> Iterator[Callable[..., Bridge]]:
    """A factory of started bridges; every one is shut down after the test."""
    made: list[Bridge] = []

    def make(**options: Any) -> Bridge:
        options.setdefault("name", f"test-bridge-{len(made)}")
        b = Bridge(**options)
        made.append(b)
        return b.start()

    yield make
    for b in made:  # jobs still running are cancelled after a short drain
        b.shutdown(timeout=0.2)


@pytest.fixture
def bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    """A started bridge with the default settings, shut down after the test."""
    return make_bridge()


class LoopBlocker:
    """Blocks bridges' loop threads on purpose, until :meth:`release` (or teardown)."""

    def __init__(self) -> None:
        self._release = threading.Event()

    def block(self, b: Bridge) -> Any:
        """Submit a job that blocks *b*'s loop thread; return it once it does."""
        entered = threading.Event()
        release = self._release

        async def block_the_loop() -> None:
            entered.set()
            release.wait()  # blocks the loop thread, deliberately

        job = b.submit(block_the_loop, timeout=None)
        assert entered.wait(10), "the blocking job did not start"
        return job

    def release(self) -> None:
        """Let every blocked loop run again."""
        self._release.set()


@pytest.fixture
def loop_blocker(make_bridge: Callable[..., Bridge]) -> Iterator[LoopBlocker]:
    """Block a bridge's loop; released at teardown, before the bridges shut down."""
    blocker = LoopBlocker()
    yield blocker
    blocker.release()


@contextlib.contextmanager
def _no_never_awaited() -> Iterator[None]:
    unraisable: list[Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    messages = [str(w.message) for w in caught] + [repr(u.exc_value) for u in unraisable]
    assert [m for m in messages if "never awaited" in m] == []


@pytest.fixture
def no_never_awaited() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``with no_never_awaited(): ...`` fails if a coroutine was left never awaited.

    Finalizer warnings do not reach pytest's ``filterwarnings = error``; this
    collects garbage inside the block and checks both warnings and unraisables.
    """
    return _no_never_awaited
