"""Failures nobody retrieved: the records the registry keeps, and the watch
that logs one when its job is garbage-collected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

from ._job import JobInfo, Retrievable

__all__ = ["FailureRecord", "FailureWatch"]


@final
class FailureRecord:
    """A failure as the registry keeps it: the job's snapshot and its error.

    The registry keeps the latest records (never the jobs), so the pytest
    plugin can tell which failures nobody retrieved; :meth:`Job.result`,
    :meth:`Job.exception` and ``await`` mark the record retrieved.
    """

    __slots__ = ("_error", "_info", "retrieved")

    def __init__(self, info: JobInfo, error: BaseException | None) -> None:
        self._info = info
        self._error = error
        #: Whether somebody has retrieved the failure from the job.
        self.retrieved = False

    def info(self) -> JobInfo:
        """The job as it was when it failed."""
        return self._info

    def exception(self) -> BaseException | None:
        """What the job raised."""
        return self._error


@final
class FailureWatch:
    """Logs a failure nobody retrieved when its job is garbage-collected.

    Attached only to a failed job whose failure was not logged when it
    happened (a waiter or done callback was expected to look at it); the job
    is its only owner, so ``__del__`` runs when the job is collected.
    """

    __slots__ = ("_log", "_record")

    def __init__(self, record: Retrievable, log: Callable[[], object]) -> None:
        self._record = record
        self._log = log

    def __del__(self) -> None:
        if not self._record.retrieved:
            self._log()
