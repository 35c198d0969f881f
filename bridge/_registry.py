"""The registry: every unfinished job, and the one lock that guards them.

This is the only module that takes the bridge's lock. It owns:

- the bridge's state (:class:`BridgeState`);
- the unfinished jobs by id, and the keys they hold;
- the intake list (jobs accepted, not yet seen by the loop) and whether the
  loop has been woken for it;
- the room (``max_pending``) and the Condition that submitters wait on;
- the counters behind ``stats()``, a bounded ring of the latest failures
  (records of them: the jobs themselves are never kept once finished), and
  the history of finished jobs (``_history.py``, changed only under the lock).

Its state enum, :class:`BridgeState`, lives in ``_state.py``.

Every change of a job's state goes through :meth:`Registry.begin`,
:meth:`Registry.claim_cancel` or :meth:`Registry.finish`, each of which
decides under the lock and returns whether this caller won: a job is started
at most once, receives at most one cancellation, and is finished exactly once.

**The lock rule.** The lock is held only for a few dictionary and counter
operations: no user code runs under it (no coroutine, done callback, log
processor, resource factory or ``on_progress``), nothing blocks under it
except :meth:`admit`'s wait for room (which releases it), and no other lock is
taken while it is held. So it is a leaf in the lock order: a job's Condition
(``_future.py``), the worker pool's lock and the shutdown lock are always
taken without it, or before it.

It is re-entrant for one reason: a signal handler runs on the main thread
between two bytecodes, possibly while that thread holds the lock. The
read-only calls (:meth:`stats`, :meth:`unfinished`, :meth:`get`) and
:meth:`claim_cancel` may then re-enter it and see the interrupted update half
done, which is harmless for a snapshot; :meth:`held_here` lets ``shutdown()``
notice the case and hand its work to another thread instead of waiting for
jobs that need this lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, KeysView
from typing import Any, Final

from ._exceptions import BridgeClosed, DuplicateJob, Overloaded
from ._failures import FailureRecord
from ._history import History
from ._job import FINAL_STATES, CancelReason, Job, JobInfo, JobState
from ._state import BridgeState
from ._stats import BridgeStats

__all__ = ["Registry"]

#: How many of the latest failures the registry keeps (for the pytest plugin).
FAILURES_KEPT: Final = 256

_PENDING: Final = JobState.PENDING
_RUNNING: Final = JobState.RUNNING
_FAILED: Final = JobState.FAILED


_ACCEPTING: Final = BridgeState.RUNNING


class Registry:
    """The unfinished jobs of one bridge, under one lock. Any thread."""

    __slots__ = (
        "_active",
        "_closed_refusals",
        "_counts",
        "_duplicates",
        "_failures",
        "_history",
        "_incoming",
        "_keys",
        "_lock",
        "_max_pending",
        "_name",
        "_overloaded",
        "_rejected",
        "_room",
        "_room_used",
        "_submitted",
        "_wake_pending",
        "ids",
        "state",
    )

    def __init__(self, name: str, max_pending: int | None, history: int = 0) -> None:
        self._name = name
        self._max_pending = max_pending
        self._lock = threading.RLock()  # guards every field below
        self._room = threading.Condition(self._lock)  # room for a job came free
        #: The bridge's state; written under the lock, read anywhere.
        self.state = BridgeState.NEW
        #: Job ids (``next()`` of a C iterator is atomic under the GIL).
        self.ids = itertools.count(1)
        self._active: dict[int, Job[Any]] = {}
        self._keys: dict[str, Job[Any]] = {}
        self._incoming: list[Job[Any]] = []  # accepted, not yet seen by the loop
        self._wake_pending = False  # a drain is scheduled on the loop
        self._room_used = 0  # unfinished jobs holding room (replaced ones do not)
        self._counts: dict[JobState, int] = dict.fromkeys(FINAL_STATES, 0)
        self._submitted = 0
        self._rejected = 0
        self._overloaded = 0
        self._duplicates = 0
        self._closed_refusals = 0
        self._history = History(history)  # the latest finished jobs (Bridge(history=N))
        # Held strongly so that a dropped job still counts; bounded so that a
        # long-running process does not grow.
        self._failures: deque[FailureRecord] = deque(maxlen=FAILURES_KEPT)

    # -- lifecycle -------------------------------------------------------------

    def start(self, launch: Callable[[], object]) -> bool:
        """Run *launch* and enter RUNNING, once; return whether this call did.

        *launch* starts the loop thread; it runs under the lock so that two
        first submitters do not both start one.
        """
        with self._lock:  # one start: the check and the transition together
            if self.state is BridgeState.RUNNING:
                return False
            if self.state is not BridgeState.NEW:
                raise self._closed_error()
            launch()
            self.state = BridgeState.RUNNING
            return True

    def begin_close(self) -> BridgeState:
        """Stop intake; return the state before. NEW goes straight to CLOSED."""
        with self._lock:  # the state and the waiters' wake-up together
            previous = self.state
            if previous is BridgeState.RUNNING:
                self.state = BridgeState.CLOSING
                self._room.notify_all()  # blocked submitters raise BridgeClosed
            elif previous is BridgeState.NEW:
                self.state = BridgeState.CLOSED
            return previous

    def mark_broken(self) -> list[Job[Any]] | None:
        """Enter BROKEN (the loop died); return the unfinished jobs to fail.

        ``None`` if the bridge is already CLOSED or BROKEN.
        """
        with self._lock:  # no job is accepted after the snapshot
            if self.state in (BridgeState.CLOSED, BridgeState.BROKEN):
                return None
            self.state = BridgeState.BROKEN
            self._room.notify_all()
            self._incoming = []
            return list(self._active.values())

    def mark_closed(self) -> None:
        """Enter CLOSED (``shutdown()`` has its report)."""
        with self._lock:
            self.state = BridgeState.CLOSED

    def held_here(self) -> bool:
        """Whether this thread holds the lock (a signal handler interrupted it)."""
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    # -- intake ------------------------------------------------------------------

    def admit(
        self,
        job: Job[Any],
        on_conflict: str,
        block_timeout: float | None,
        no_wait: Callable[[], str | None],
        hand_over: bool = True,
    ) -> tuple[Job[Any] | None, Job[Any] | None, bool]:
        """Account for *job*, or find the job to join instead.

        The key is checked before room: a taken key with ``"reject"`` raises
        :class:`DuplicateJob` at once, and ``"replace"`` takes the old job's
        key and room, so it never waits for room only the old job could free.
        *no_wait()*, asked only when there is no room, returns ``None`` if the
        caller may wait for it (up to *block_timeout*), else the reason it may
        not, for the error message.

        Returns:
            ``(joined, replaced, wake)``: the job to return instead of *job*
            (``"join"``), the job whose cancellation this call decided
            (``"replace"``: the caller delivers it), and whether the caller
            must wake the loop (with *hand_over*: *job* is queued for it).

        Raises:
            DuplicateJob, Overloaded, BridgeClosed: nothing was accounted for.
        """
        with self._lock:  # the checks and the accounting together
            waited = taken = False
            try:
                deadline: float | None = None
                while True:  # the common case (no key, no bound) passes in one round
                    if self.state is not _ACCEPTING:
                        self._check_accepting()
                    holder = None if job.key is None else self._conflict(job.key, on_conflict)
                    if holder is not None and on_conflict == "join":
                        return holder, None, False
                    if self._max_pending is None or self._has_room(holder):
                        break
                    if deadline is None:
                        deadline = self._room_deadline(block_timeout, no_wait)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._overload("; no room came in time")
                    waited = True
                    self._room.wait(None if remaining == float("inf") else remaining)
                replaced = None if holder is None else self._displace(holder)
                self._account(job)
                taken = True
                if not hand_over:
                    return None, replaced, False
                self._incoming.append(job)  # _queue(), inlined: once per job
                wake = not self._wake_pending
                self._wake_pending = True
                return None, replaced, wake
            finally:
                if waited and not taken and self._has_room(None):
                    self._room.notify()  # pass the wake-up on: room never idles

    def hand_over(self, job: Job[Any]) -> bool:
        """Queue an admitted *job* for the loop; return whether to wake it."""
        with self._lock:
            if job._job_state is not _PENDING or self.state is BridgeState.BROKEN:
                return False
            return self._queue(job)

    def take_intake(self) -> list[Job[Any]]:
        """Loop thread: every job queued since the last call."""
        with self._lock:
            batch = self._incoming
            self._incoming = []
            self._wake_pending = False
            return batch

    # -- transitions ---------------------------------------------------------------

    def begin(self, job: Job[Any]) -> bool:
        """PENDING -> RUNNING, unless the job ended or its cancellation was decided."""
        with self._lock:
            if job._job_state is not _PENDING or job._cancel is not None:
                return False
            job._job_state = _RUNNING
            return True

    def claim_cancel(self, job: Job[Any], reason: CancelReason) -> bool:
        """Decide *job*'s one cancellation; return whether this call did."""
        with self._lock:
            if job._cancel is not None or job._job_state in FINAL_STATES:
                return False
            job._cancel = reason
            return True

    def finish(
        self,
        job: Job[Any],
        state: JobState,
        error: BaseException | None = None,
        error_line: str | None = None,
    ) -> JobState | None:
        """Record that *job* ended in *state*, once; return its previous state.

        ``None`` if it had ended already. Frees its key and its room; a
        failure (*error*) is recorded in the ring of the latest failures.
        """
        with self._lock:
            previous = job._job_state
            if previous in FINAL_STATES:
                return None
            job._job_state = state
            job._finished_at = time.time()
            job._error = error
            job._error_line = error_line
            del self._active[job.id]
            key = job.key
            if key is not None and self._keys.get(key) is job:
                del self._keys[key]
            self._counts[state] += 1
            if job._holds_room:
                self._release_room(job)
            if state is _FAILED:
                job._failure = FailureRecord(job.info(), error)
                self._failures.append(job._failure)
            self._history.record(job)  # before anyone sees the outcome
            return previous

    # -- snapshots -------------------------------------------------------------------

    @property
    def active_ids(self) -> KeysView[int]:
        """The ids of the unfinished jobs: a live view, for lock-free ``in`` tests."""
        return self._active.keys()

    def find(self, job_id: int) -> Job[Any] | None:
        """The unfinished job *job_id*, without the lock (one atomic dict lookup)."""
        return self._active.get(job_id)

    def get(self, key: str) -> Job[Any] | None:
        """The unfinished job holding *key*."""
        with self._lock:
            return self._keys.get(key)

    def unfinished(self, kind: str | None = None) -> list[Job[Any]]:
        """The unfinished jobs (of *kind*), oldest first."""
        with self._lock:
            jobs = list(self._active.values())
        if kind is None:
            return jobs
        return [job for job in jobs if job.kind == kind]

    def stats(self) -> BridgeStats:
        """A snapshot of the counters."""
        with self._lock:
            counts = self._counts
            jobs = list(self._active.values())
            return BridgeStats(
                submitted=self._submitted,
                succeeded=counts[JobState.SUCCEEDED],
                failed=counts[_FAILED],
                cancelled=counts[JobState.CANCELLED],
                timed_out=counts[JobState.TIMED_OUT],
                rejected=self._rejected,
                active=len(jobs),
                pending_by_kind=_count_by_kind(jobs, _PENDING),
                running_by_kind=_count_by_kind(jobs, _RUNNING),
                overloaded=self._overloaded,
                duplicate=self._duplicates,
                closed=self._closed_refusals,
            )

    def history(self, kind: str | None = None) -> list[JobInfo]:
        """The latest finished jobs kept (of *kind*), newest first."""
        with self._lock:
            kept = self._history.snapshot()
        return History.infos(kept, kind)

    def keep_history(self, size: int) -> None:
        """Keep the latest *size* finished jobs from now on (0: none)."""
        with self._lock:
            self._history.resize(size)

    @property
    def history_size(self) -> int:
        """How many finished jobs the history keeps (0: off)."""
        return self._history.size

    def room(self) -> tuple[int | None, int]:
        """``(max_pending, jobs holding room)``: the room left is their difference."""
        with self._lock:
            return self._max_pending, self._room_used

    def unretrieved_failures(self) -> list[FailureRecord]:
        """The latest failures (those kept) that nobody retrieved."""
        with self._lock:
            records = list(self._failures)
        return [record for record in records if not record.retrieved]

    # -- helpers: all called with the lock held ------------------------------------------

    def _check_accepting(self) -> None:
        if self.state is not BridgeState.RUNNING:
            self._rejected += 1
            self._closed_refusals += 1
            raise BridgeClosed(f"bridge {self._name!r} {self.state.value}: it accepts no new jobs")

    def _closed_error(self) -> BridgeClosed:
        return BridgeClosed(f"bridge {self._name!r} {self.state.value}")

    def _conflict(self, key: str | None, on_conflict: str) -> Job[Any] | None:
        """The job holding *key*; raises DuplicateJob for ``"reject"``."""
        if key is None:
            return None
        holder = self._keys.get(key)
        if holder is not None and on_conflict == "reject":
            self._rejected += 1
            self._duplicates += 1
            raise DuplicateJob(f"key {key!r} is already used by {holder!r}")
        return holder

    def _has_room(self, replaced: Job[Any] | None) -> bool:
        limit = self._max_pending
        if limit is None:
            return True
        freed = 1 if replaced is not None and replaced._holds_room else 0
        return self._room_used - freed < limit

    def _room_deadline(
        self, block_timeout: float | None, no_wait: Callable[[], str | None]
    ) -> float:
        why = no_wait()
        if why is not None:
            raise self._overload(why)
        if block_timeout is None:
            return float("inf")
        return time.monotonic() + block_timeout

    def _overload(self, why: str) -> Overloaded:
        self._rejected += 1
        self._overloaded += 1
        return Overloaded(
            f"bridge {self._name!r} has max_pending={self._max_pending} unfinished jobs{why}"
        )

    def _displace(self, old: Job[Any]) -> Job[Any] | None:
        """Take *old*'s key and room for its replacement; decide its cancellation."""
        assert old.key is not None
        del self._keys[old.key]
        if old._holds_room:
            self._release_room(old)
        if old._cancel is not None:
            return None  # already being cancelled: no second cancellation
        old._cancel = CancelReason.CANCEL
        return old

    def _account(self, job: Job[Any]) -> None:
        if job.key is not None:
            self._keys[job.key] = job
        self._active[job.id] = job
        job._holds_room = True
        self._room_used += 1
        self._submitted += 1

    def _queue(self, job: Job[Any]) -> bool:
        self._incoming.append(job)
        wake = not self._wake_pending
        self._wake_pending = True
        return wake

    def _release_room(self, job: Job[Any]) -> None:
        job._holds_room = False
        self._room_used -= 1
        if self._max_pending is not None:
            self._room.notify()


def _count_by_kind(jobs: Iterable[Job[Any]], state: JobState) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        if job._job_state is state:
            counts[job.kind] = counts.get(job.kind, 0) + 1
    return counts
