"""``handle_signals``: opt-in clean shutdown on SIGINT/SIGTERM for applications.

A library must not take signal handlers over, so nothing here runs unless the
application calls :func:`handle_signals`. The handler itself does the least a
handler can: the first signal sets an event that wakes a helper thread; a
second signal ends the process at once (``os._exit(128 + signum)``), after
SIGKILLing the worker processes of the bridges' pools. The handler never
takes the bridge's lock, so a signal that lands while a thread holds it cannot
deadlock.

The helper thread runs ``on_signal()``, then ``shutdown(timeout)`` on the
bridge, logs the report (``signal.shutdown``), runs the interpreter's exit
functions (so multiprocessing's finalizers run: no ``resource_tracker``
warning), and has the signal delivered again with its default disposition,
so the parent sees the process die by that signal; or, when ``on_signal``
returned an exit status (a server that drained its calls), exits with it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import structlog

from ._exceptions import WrongThread
from ._procpool import kill_all_now

if TYPE_CHECKING:
    from ._bridge import Bridge

__all__ = ["SIGNAL_SHUTDOWN", "handle_signals"]

#: The event logged once the shutdown a signal asked for is done.
SIGNAL_SHUTDOWN: Final = "signal.shutdown"
#: The event logged when ``on_signal`` or the shutdown raised.
SIGNAL_ERROR: Final = "signal.error"
#: How long the helper waits for the main thread to die by the re-raised signal.
_REDELIVERY_GRACE: Final = 2.0

_logger = structlog.get_logger("bridge")


class _Handling:
    """One ``handle_signals`` call: the handler's state and the helper thread."""

    def __init__(
        self,
        bridge: Bridge | None,
        timeout: float | None,
        on_signal: Callable[[], object] | None,
    ) -> None:
        self.bridge = bridge
        self.timeout = timeout
        self.on_signal = on_signal
        self.wake = threading.Event()
        # Written by the handler (main thread) before wake.set(), read by the helper after wait().
        self.signum: int | None = None
        self.done = False  # the helper finished; the next delivery is its own
        self.status: int | None = None  # what on_signal returned, if an exit status

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: wake the helper; a second signal exits at once."""
        if self.done:  # the helper re-raised it: die by it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.signum is not None:
            kill_all_now()  # worker processes would run on, orphaned, until their call ends
            os._exit(128 + signum)
        self.signum = signum
        self.wake.set()

    def at_exit(self) -> None:
        """Interpreter exit (threading's hook): end an idle helper."""
        if self.signum is None:
            self.wake.set()

    def run(self) -> None:
        """The helper thread: wait for a signal, shut down, end the process."""
        self.wake.wait()
        signum = self.signum
        if signum is None:  # restored: no signal came
            return
        self._shutdown(signum)
        atexit._run_exitfuncs()  # what a normal exit would run: logging, multiprocessing
        atexit._clear()  # run once, even if the main thread exits normally meanwhile
        if self.status is not None:
            _flush_and_exit(self.status)
        self.done = True
        # To the main thread, so that a blocking call there is interrupted and
        # its handler re-raises the signal with the default disposition.
        signal.pthread_kill(threading.main_thread().ident or 0, signum)
        threading.Event().wait(_REDELIVERY_GRACE)  # the main thread may be stuck in C code
        os._exit(128 + signum)

    def _shutdown(self, signum: int) -> None:
        name = signal.Signals(signum).name
        try:
            if self.on_signal is not None:
                self.status = _exit_status(self.on_signal())
        except Exception as exc:
            _logger.error(SIGNAL_ERROR, signal=name, stage="on_signal", exc_info=exc)
        try:
            bridge = self.bridge if self.bridge is not None else _default_bridge()
            if bridge is None:
                _logger.info(SIGNAL_SHUTDOWN, signal=name, bridge=None)
                return
            report = bridge.shutdown(self.timeout)
        except Exception as exc:
            _logger.error(SIGNAL_ERROR, signal=name, stage="shutdown", exc_info=exc)
            return
        _logger.info(
            SIGNAL_SHUTDOWN,
            signal=name,
            bridge=bridge.name,
            finished=report.finished,
            cancelled=len(report.cancelled),
            stuck=[info.id for info in report.stuck],
            threads_left=list(report.threads_left),
            duration=round(report.duration, 3),
        )


def _exit_status(returned: object) -> int | None:
    """*returned* (what ``on_signal`` returned) if it is an exit status."""
    if isinstance(returned, int) and not isinstance(returned, bool):
        return returned
    return None


def _flush_and_exit(status: int) -> None:
    """End the process with *status*, what was printed flushed (``os._exit`` does not)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # closed or broken: nothing more can reach it
    os._exit(status)


def _default_bridge() -> Bridge | None:
    """The default bridge if one exists (never creates one: nothing to shut down)."""
    from ._default import _state

    return _state.bridge


def handle_signals(
    b: Bridge | None = None,
    signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
    timeout: float | None = 5.0,
    on_signal: Callable[[], object] | None = None,
) -> Callable[[], None]:
    """Make *signals* shut the bridge down cleanly, then end the process.

    On the first of *signals*: ``on_signal()`` (if given, e.g. to drain calls),
    then ``b.shutdown(timeout)`` (jobs get up to *timeout* to finish, then
    are cancelled; worker processes are terminated), the report logged as
    ``signal.shutdown``, the interpreter's exit functions, and the process
    dies by that signal (the parent sees it: ``-2`` from ``subprocess``, or
    status 130 from a shell; 143 for SIGTERM); if the main thread cannot run
    the re-delivered signal's handler within two seconds (stuck in C code),
    it exits with status ``128 + signum`` instead. If ``on_signal()`` returned an
    ``int``, the process exits with that status instead, after flushing
    ``sys.stdout`` and ``sys.stderr`` (a server that drained its calls on
    SIGTERM returns 0: it stopped as asked). Either way the main thread's
    ``finally`` blocks do not run. A second signal meanwhile exits
    at once with status ``128 + signum``: worker processes are SIGKILLed, and
    nothing else is cleaned up (subprocess jobs' children may survive).

    Args:
        b: the bridge; ``None`` means the default bridge, looked up when the
            signal arrives (if none exists then, only *on_signal* runs).
        signals: the signals to handle.
        timeout: passed to :meth:`Bridge.shutdown`.
        on_signal: called first, on a helper thread; may return the exit
            status (an ``int``; anything else is ignored).

    Returns:
        A function that puts the previous handlers back (the helper thread
        then ends unused).

    Raises:
        WrongThread: not called from the main thread (Python runs signal
            handlers there only).

    **Thread safety:** main thread only. The handler only sets an event; all
    the work happens on the helper thread ``bridge-signals``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise WrongThread(
            "bridge.handle_signals() must be called from the main thread: Python "
            "installs signal handlers and runs them there only"
        )
    numbers = [signal.Signals(s) for s in signals]
    if on_signal is not None and not callable(on_signal):
        raise TypeError(f"on_signal must be callable or None, not {on_signal!r}")
    handling = _Handling(b, timeout, on_signal)
    previous: dict[int, Any] = {s: signal.signal(s, handling.handler) for s in numbers}
    # Not a daemon: if the main thread reaches interpreter exit while the helper
    # shuts down, the exit waits for it (and then dies by the signal). With no
    # signal by then, the exit hook lets it end.
    helper = threading.Thread(target=handling.run, name="bridge-signals")
    helper.start()
    threading._register_atexit(handling.at_exit)  # type: ignore[attr-defined]

    def restore() -> None:
        for number, old in previous.items():
            if signal.getsignal(number) == handling.handler:
                signal.signal(number, old)
        if handling.signum is None:
            handling.wake.set()  # the helper ends: no signal came
            helper.join()

    return restore
