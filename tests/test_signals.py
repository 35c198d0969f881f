"""Signal handlers may call shutdown() and the read-only calls (#14).

A handler runs on the main thread between two bytecodes of whatever frame it
interrupted, possibly one that holds the bridge's lock inside ``submit()``.
Each scenario runs in a subprocess, bounded by a timeout, so that a deadlock
fails the test instead of hanging it; the subprocess prints one ``RESULT``
line of JSON that the test checks.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest
from helpers import run_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Where the tests' own ``bridge`` package lives: the subprocess imports that one.


def run_scenario(body: str, timeout: float) -> dict[str, Any]:
    """Run PRELUDE, then *body*, in a fresh interpreter; return its ``RESULT`` JSON."""
    return run_script(textwrap.dedent(PRELUDE) + textwrap.dedent(body), timeout=timeout)


# What every script starts with: bookkeeping, and the one place that looks
# inside a bridge (bridge_locks). It names no private attribute: it collects
# the locks reachable through objects of the bridge package, so it finds the
# registry's lock wherever the core keeps it.
PRELUDE = """
    import asyncio
    import concurrent.futures
    import json
    import signal
    import sys
    import threading

    import bridge

    LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition)
    outcome = {"handler_calls": 0, "handler_errors": []}


    def bridge_locks(root):
        found, seen, todo = [], set(), [root]
        while todo:
            obj = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, LOCK_TYPES):
                found.append(obj)
                continue
            if not type(obj).__module__.startswith("bridge"):
                continue
            names = set(getattr(obj, "__dict__", {}))
            for cls in type(obj).__mro__:
                slots = cls.__dict__.get("__slots__", ())
                names.update([slots] if isinstance(slots, str) else slots)
            for name in names:
                try:
                    todo.append(getattr(obj, name))
                except AttributeError:
                    pass
        return found


    def held(lock):
        # A plain Lock has no owner; the scripts make sure that only the main
        # thread runs bridge code while they look (the loop is blocked).
        if isinstance(lock, type(threading.Lock())):
            return lock.locked()
        return lock._is_owned()


    def describe(report):
        return {
            "deferred": getattr(report, "deferred", None),
            "clean": report.clean,
            "finished": report.finished,
            "cancelled": len(report.cancelled),
            "stuck": len(report.stuck),
            "threads_left": list(getattr(report, "threads_left", ["<no threads_left>"])),
        }


    def state_name(b):
        state = getattr(b, "state", None)
        return None if state is None else state.name


    def probe_read_only(b, record):
        # Everything the contract calls safe in a signal handler, but shutdown.
        record["state"] = state_name(b)
        stats = b.stats()
        record["stats_adds_up"] = stats.submitted == (
            stats.succeeded + stats.failed + stats.cancelled + stats.timed_out + stats.active
        )
        record["jobs"] = len(b.jobs())
        record["get_first"] = b.get("first") is not None


    def emit():
        print("RESULT " + json.dumps(outcome), flush=True)


    async def noop():
        return "noop"
"""


INTERRUPTED_CRITICAL_SECTION = """
    b = bridge.Bridge(name="sig")
    loop_blocked = threading.Event()
    loop_free = threading.Event()


    async def block_loop():
        loop_blocked.set()
        loop_free.wait(60)  # blocks the loop thread: no other thread runs bridge code


    def handler(signum, frame):
        outcome["handler_calls"] += 1
        try:
            outcome["handler_report"] = describe(b.shutdown(timeout=30))
            probe_read_only(b, outcome.setdefault("handler_saw", {}))
            outcome["handler_cancel_all"] = b.cancel_all()
        except BaseException as exc:
            outcome["handler_errors"].append(repr(exc))


    armed = False


    def raise_signal_inside_the_critical_section(frame, event, arg):
        # Called at each Python call and after each C call: the points where
        # CPython runs a pending signal handler. The first one reached while
        # this thread holds a bridge lock gets the signal, synchronously.
        global armed
        if armed and event in ("call", "c_return") and any(held(lock) for lock in locks):
            armed = False
            signal.raise_signal(signal.SIGUSR1)


    signal.signal(signal.SIGUSR1, handler)
    first = b.submit(block_loop, key="first", timeout=None)
    assert loop_blocked.wait(30)
    locks = bridge_locks(b)
    outcome["locks"] = len(locks)
    second = None
    armed = True
    sys.setprofile(raise_signal_inside_the_critical_section)
    try:
        second = b.submit(noop, key="second", timeout=None)
        outcome["second"] = "accepted"
    except bridge.BridgeClosed:
        outcome["second"] = "BridgeClosed"
    finally:
        sys.setprofile(None)
    outcome["signal_raised"] = not armed
    loop_free.set()
    final = b.shutdown(timeout=30)
    outcome["final"] = describe(final)
    outcome["same_report_again"] = b.shutdown(timeout=30) == final
    outcome["state"] = state_name(b)
    outcome["jobs_done"] = all(job.done() for job in (first, second) if job is not None)
    outcome["loop_thread_alive"] = b.thread.is_alive()
    for thread in threading.enumerate():  # "sig-shutdown" may still be on its way out
        if thread.name.startswith("sig"):
            thread.join(10)
    outcome["threads"] = sorted(t.name for t in threading.enumerate() if t.name.startswith("sig"))
    emit()
"""


def test_shutdown_from_a_handler_that_interrupted_submit_under_the_lock() -> None:
    """The worst moment, made deterministic: the handler runs while submit() holds the lock.

    Before the fix the handler's shutdown() waited for the lock that the frame
    it interrupted holds: the process hung (here: the subprocess timeout).
    """
    out = run_script(
        textwrap.dedent(PRELUDE) + textwrap.dedent(INTERRUPTED_CRITICAL_SECTION), timeout=30
    )
    assert out["locks"] >= 1, out
    assert out["signal_raised"], "no call under a bridge lock during submit(): nothing provoked"
    assert out["handler_calls"] == 1
    assert out["handler_errors"] == []
    # The handler could not do the work on this thread: it was deferred.
    assert out["handler_report"]["deferred"] is True
    assert out["handler_report"]["clean"] is False
    saw = out["handler_saw"]
    # The deferred work may not have begun (it needs the lock this frame holds).
    assert saw["state"] in ("RUNNING", "CLOSING", "CLOSED")
    assert saw["stats_adds_up"]
    assert saw["get_first"] is True
    assert out["second"] in ("accepted", "BridgeClosed")
    # A later shutdown() outside the handler returns the final report.
    final = out["final"]
    assert final["deferred"] is False
    assert final["stuck"] == 0
    assert final["threads_left"] == []
    assert out["same_report_again"]
    assert out["state"] == "CLOSED"
    assert out["jobs_done"]
    assert not out["loop_thread_alive"]
    assert out["threads"] == []  # the loop thread and "sig-shutdown" have ended


REENTERED_SHUTDOWN = """
    b = bridge.Bridge(name="reenter")
    release = concurrent.futures.Future()
    depth = 0
    armed = False


    async def hold():  # the outer shutdown waits for it; the nested handler releases it
        await asyncio.wrap_future(release)
        return "held"


    def signal_again_while_shutdown_waits(frame, event, arg):
        # The outer handler's shutdown() is under way with the bridge closing,
        # about to wait for the jobs: a second signal arrives there
        # (synchronously, so it cannot slip in before the wait blocks and be
        # seen only after). The hook is the registry call just before that
        # wait: Python 3.10 may run a handler raised here only at a later
        # bytecode, and in a threading wait it would block first. On its return,
        # not its call: the job released by the nested handler must already be
        # in the snapshot the outer shutdown waits on, or it may finish first.
        global armed
        code = frame.f_code
        if armed and depth == 1 and event == "return" and code.co_name == "unfinished":
            if code.co_filename == bridge._registry.__file__ and state_name(b) == "CLOSING":
                armed = False
                signal.raise_signal(signal.SIGUSR1)


    def handler(signum, frame):
        global depth
        outcome["handler_calls"] += 1
        depth += 1
        try:
            if depth == 1:
                # Profiled from here, not from the module: Python 3.10 may run
                # this handler inside a profile hook, where nothing is profiled.
                sys.setprofile(signal_again_while_shutdown_waits)
                try:
                    outcome["outer_report"] = describe(b.shutdown(timeout=30))
                finally:
                    sys.setprofile(None)
            else:
                outcome["nested_report"] = describe(b.shutdown(timeout=30))
                probe_read_only(b, outcome.setdefault("nested_saw", {}))
                outcome["nested_cancel_all"] = b.cancel_all(kind="no-such-kind")
                release.set_result(None)
        except BaseException as exc:
            outcome["handler_errors"].append(repr(exc))
        finally:
            depth -= 1


    signal.signal(signal.SIGUSR1, handler)
    first = b.submit(hold, key="first", timeout=None)
    armed = True
    signal.raise_signal(signal.SIGUSR1)  # the outer handler: shutdown() here, on this thread
    final = b.shutdown(timeout=30)
    outcome["final"] = describe(final)
    outcome["first"] = first.result(timeout=0) if first.done() else "not done"
    outcome["state"] = state_name(b)
    outcome["loop_thread_alive"] = b.thread.is_alive()
    emit()
"""


def test_a_second_signal_reenters_a_running_shutdown() -> None:
    """The handler's shutdown() waits; a second signal re-enters it on the same thread.

    Before the fix the nested shutdown() waited for the outer one, which the
    nested handler itself holds up: the process hung.
    """
    out = run_scenario(REENTERED_SHUTDOWN, timeout=30)
    assert out["handler_errors"] == []
    assert out["handler_calls"] == 2
    assert out["nested_report"]["deferred"] is True
    assert out["nested_report"]["clean"] is False
    assert out["nested_saw"]["state"] == "CLOSING"
    assert out["nested_saw"]["stats_adds_up"]
    assert out["nested_saw"]["get_first"] is True
    assert out["nested_cancel_all"] == 0
    outer = out["outer_report"]
    assert outer["deferred"] is False
    assert outer["finished"] == 1  # "first", released by the nested handler
    assert outer["clean"] is True
    assert outer["threads_left"] == []
    assert out["final"] == outer
    assert out["first"] == "held"
    assert out["state"] == "CLOSED"
    assert not out["loop_thread_alive"]


SIGNAL_STORM = """
    import os

    ROUNDS = 40
    main_ident = threading.get_ident()
    rounds = []
    current = {}


    def handler(signum, frame):
        record = current["record"]
        record["handler_calls"] += 1
        current["entered"].set()
        try:
            b = current["bridge"]
            report = b.shutdown(timeout=5)
            record["deferred"] += bool(getattr(report, "deferred", False))
            probe_read_only(b, {})
            b.cancel_all()
        except BaseException as exc:
            outcome["handler_errors"].append(repr(exc))


    def storm(submitting, entered):
        submitting.wait(30)
        signal.pthread_kill(main_ident, signal.SIGUSR1)
        entered.wait(30)
        for _ in range(2):  # while the first handler runs: they may re-enter it
            signal.pthread_kill(main_ident, signal.SIGUSR1)


    signal.signal(signal.SIGUSR1, handler)
    for number in range(ROUNDS):
        print(f"round {number}", flush=True)
        b = bridge.Bridge(name=f"storm-{number}").start()
        record = {"handler_calls": 0, "deferred": 0}
        submitting = threading.Event()
        entered = threading.Event()
        current.update(bridge=b, record=record, entered=entered)
        sender = threading.Thread(target=storm, args=(submitting, entered))
        sender.start()
        jobs = []
        closed = False
        for i in range(1_000_000):
            if i == 50:
                submitting.set()
            try:
                jobs.append(b.submit(noop, timeout=None))
            except bridge.BridgeClosed:
                closed = True
                break
        sender.join(30)
        final = b.shutdown(timeout=10)
        stats = b.stats()
        record.update(
            closed=closed,
            final_deferred=getattr(final, "deferred", None),
            stuck=len(final.stuck),
            unresolved=sum(not job.done() for job in jobs),
            stats_adds_up=stats.submitted
            == stats.succeeded + stats.failed + stats.cancelled + stats.timed_out,
            active=stats.active,
            state=state_name(b),
        )
        rounds.append(record)
    outcome["rounds"] = rounds
    emit()
"""


@pytest.mark.stress
@pytest.mark.timeout(150)
def test_signals_during_a_stream_of_submits_never_hang() -> None:
    """Signals at random moments of many submits; some land under the lock.

    Before the fix about one round in six hung (here: the subprocess timeout).
    """
    out = run_scenario(SIGNAL_STORM, timeout=120)
    assert out["handler_errors"] == []
    for number, record in enumerate(out["rounds"]):
        assert record["handler_calls"] >= 1, (number, record)
        assert record["closed"], (number, record)  # the first handler's shutdown stopped intake
        assert record["final_deferred"] is False, (number, record)
        assert record["stuck"] == 0, (number, record)
        assert record["unresolved"] == 0, (number, record)
        assert record["stats_adds_up"], (number, record)
        assert record["active"] == 0, (number, record)
        assert record["state"] == "CLOSED", (number, record)
