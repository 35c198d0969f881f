"""Tools for testing threaded code that uses the bridge.

:func:`hammer` calls a function from many threads released together and turns
a deadlock into a :class:`HammerTimeout` that shows every thread's stack. The
pytest plugin (:mod:`bridge.pytest_plugin`, loaded automatically) adds the
``bridge_instance`` and ``bridge_events`` fixtures and the leak checks.
"""

from __future__ import annotations

from ._hammer import HammerResult, HammerTimeout, hammer

__all__ = ("HammerResult", "HammerTimeout", "hammer")
