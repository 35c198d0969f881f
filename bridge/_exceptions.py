"""The exceptions bridge raises.

Every class derives from :class:`BridgeError` and also from the builtin whose
meaning it shares, so code that only knows the standard library still catches
it::

    BridgeError (Exception)
    ├── BridgeClosed (RuntimeError)    the bridge no longer accepts work
    ├── WrongThread (RuntimeError)     a blocking call on the loop thread
    ├── DuplicateJob (KeyError)        a key already names an unfinished job
    ├── Overloaded                     no room for another job (backpressure)
    ├── JobTimeout (TimeoutError)      a job's deadline expired
    └── JobCancelled (concurrent.futures.CancelledError)
                                       a job was cancelled before it finished
"""

from __future__ import annotations

import concurrent.futures

__all__ = [
    "BridgeClosed",
    "BridgeError",
    "DuplicateJob",
    "JobCancelled",
    "JobTimeout",
    "Overloaded",
    "WrongThread",
]


class BridgeError(Exception):
    """Base class of every error the bridge itself raises."""


class BridgeClosed(BridgeError, RuntimeError):
    """Raised when work is offered to a bridge that is shutting down or shut down."""


class WrongThread(BridgeError, RuntimeError):
    """Raised when a blocking call is made on the bridge's own loop thread.

    Blocking there would wait for the loop while holding it: a deadlock.
    """


class DuplicateJob(BridgeError, KeyError):
    """Raised when a key is already used by an unfinished job (``on_conflict="reject"``)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better unquoted.
        return str(self.args[0]) if self.args else ""


class Overloaded(BridgeError):
    """Raised when the bridge has no room for another job (``max_pending`` reached)."""


class JobTimeout(BridgeError, TimeoutError):
    """Raised when a job's deadline expired; its coroutine was cancelled."""


class JobCancelled(BridgeError, concurrent.futures.CancelledError):
    """Raised when a job was cancelled before it finished."""
