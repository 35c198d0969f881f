"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured.

    ``capture_logs()`` leaves ``structlog.is_configured()`` true afterwards, which
    would switch the bridge's per-job debug events on for later tests.
    """
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
