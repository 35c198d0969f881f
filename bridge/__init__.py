"""bridge: run async code safely from threaded voice and telephony applications.

One background event-loop thread, a submit API any thread may call, and every
coroutine accounted for until it ends.
"""

from __future__ import annotations

from ._bridge import Bridge as Bridge
from ._channel import Channel as Channel
from ._default import blocking as blocking
from ._default import call as call
from ._default import default as default
from ._default import submit as submit
from ._exceptions import BridgeClosed as BridgeClosed
from ._exceptions import BridgeError as BridgeError
from ._exceptions import DuplicateJob as DuplicateJob
from ._exceptions import JobCancelled as JobCancelled
from ._exceptions import JobTimeout as JobTimeout
from ._exceptions import Overloaded as Overloaded
from ._exceptions import ProcessFailed as ProcessFailed
from ._exceptions import WrongThread as WrongThread
from ._iterate import JobIterator as JobIterator
from ._job import Job as Job
from ._job import JobInfo as JobInfo
from ._job import JobState as JobState
from ._pinned import PinnedThread as PinnedThread
from ._process import ProcessResult as ProcessResult
from ._signals import handle_signals as handle_signals
from ._state import BridgeState as BridgeState
from ._stats import BridgeStats as BridgeStats
from ._stats import ShutdownReport as ShutdownReport
from ._typing import USE_DEFAULT as USE_DEFAULT

__all__ = (
    "USE_DEFAULT",
    "Bridge",
    "BridgeClosed",
    "BridgeError",
    "BridgeState",
    "BridgeStats",
    "Channel",
    "DuplicateJob",
    "Job",
    "JobCancelled",
    "JobInfo",
    "JobIterator",
    "JobState",
    "JobTimeout",
    "Overloaded",
    "PinnedThread",
    "ProcessFailed",
    "ProcessResult",
    "ShutdownReport",
    "WrongThread",
    "blocking",
    "call",
    "default",
    "handle_signals",
    "submit",
)

__version__ = "0.1.0.dev0"
