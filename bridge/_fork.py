"""Fork detection: a counter of the ``os.fork()`` calls this process came out of.

Cheaper on the hot path than ``os.getpid()`` (a system call): a bridge records
the counter when it starts and compares it at each use.
"""

from __future__ import annotations

import os

__all__ = ["generation"]

#: Incremented in the child after each os.fork().
generation = 0


def _after_fork_in_child() -> None:
    global generation
    generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
