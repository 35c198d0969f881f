"""How a job's ending is told: its one-line description and the errors of a cancelled job.

Any thread; pure functions of the job's identity (its id, key and kind), so
the scheduler and the shutdown procedure word a job's end alike.
"""

from __future__ import annotations

from typing import Any

from ._exceptions import JobCancelled, JobTimeout
from ._job import Job

__all__ = ["cancelled_error", "describe", "timeout_error"]


def describe(job: Job[Any]) -> str:
    """``job 7 (key='call:42', kind='call')``."""
    return f"job {job.id} (key={job.key!r}, kind={job.kind!r})"


def timeout_error(
    job: Job[Any], cause: BaseException | None = None, detail: object = None
) -> JobTimeout:
    """The ``JobTimeout`` of *job*; *cause*: what its coroutine raised while it unwound."""
    message = f"{describe(job)} did not finish before its deadline; it was cancelled"
    error = JobTimeout(message + _detail(detail))
    if cause is not None and not isinstance(cause, JobCancelled):
        error.__cause__ = cause  # what the coroutine raised while it unwound
    return error


def cancelled_error(job: Job[Any], detail: object = None) -> JobCancelled:
    """The ``JobCancelled`` of *job*; *detail*, a str, says how it unwound."""
    return JobCancelled(f"{describe(job)} was cancelled{_detail(detail)}")


def _detail(detail: object) -> str:
    return f"; {detail}" if isinstance(detail, str) and detail else ""
