"""The default bridge during and after its exit hook: BridgeClosed, no new bridge (#17)."""

from __future__ import annotations

from helpers import run_script

#: Where the tests' own ``bridge`` package lives: the subprocess imports that one.

# atexit runs its handlers last registered, first run. So:
#   after_the_hook   registered before the default bridge exists: runs last;
#   bridge's hook    registered when the default bridge is first made;
#   before_the_hook  registered after that: runs first, and marks the exit.
# A daemon thread waits until the bridge's hook has begun waiting for the
# jobs (the main thread's first threading wait once exiting), then submits
# through the module-level functions, and only then lets the held job end,
# so its submissions certainly fall inside the hook's shutdown.
EXIT_SCRIPT = """
    import asyncio
    import atexit
    import concurrent.futures
    import json
    import sys
    import threading

    import bridge

    outcome = {}
    accepted = []
    exiting = False
    hook_waiting = threading.Event()
    daemon_done = threading.Event()
    release = concurrent.futures.Future()


    async def noop():
        pass


    async def forever():
        await asyncio.sleep(3600)


    async def hold():
        await asyncio.wrap_future(release)
        return "held"


    def attempt(action):
        try:
            value = action()
        except bridge.BridgeClosed:
            return "BridgeClosed"
        except BaseException as exc:
            return repr(exc)
        if isinstance(value, bridge.Job):
            accepted.append(value)
            return "accepted"
        return f"returned {type(value).__name__}"


    def actions():
        return {
            "default": bridge.default,
            "submit": lambda: bridge.submit(forever, timeout=None),
            "call": lambda: bridge.call(noop, timeout=5),
            "blocking": lambda: bridge.blocking(noop, timeout=5)(),
        }


    def submit_during_exit():
        try:
            if not hook_waiting.wait(30):
                outcome["during"] = "the exit hook never waited for the held job"
                return
            during = {name: attempt(action) for name, action in actions().items()}
            during["submit x49"] = sorted(
                {attempt(lambda: bridge.submit(forever, timeout=None)) for _ in range(49)}
            )
            outcome["during"] = during
        finally:
            release.set_result(None)
            daemon_done.set()


    def notice_the_hook_waiting(frame, event, arg):
        code = frame.f_code
        if exiting and event == "call" and code.co_name == "wait":
            if code.co_filename == threading.__file__:
                hook_waiting.set()


    def before_the_hook():
        global exiting
        exiting = True


    def after_the_hook():
        sys.setprofile(None)
        daemon_done.wait(30)
        outcome["after"] = {name: attempt(action) for name, action in actions().items()}
        outcome["held"] = held.state.name
        outcome["accepted"] = len(accepted)
        outcome["unresolved"] = sum(not job.done() for job in accepted)
        print("RESULT " + json.dumps(outcome), flush=True)


    atexit.register(after_the_hook)
    bridge.call(noop)  # makes the default bridge, which registers its exit hook
    atexit.register(before_the_hook)
    held = bridge.submit(hold, timeout=None)  # the hook's shutdown waits for it
    threading.Thread(target=submit_during_exit, daemon=True).start()
    sys.setprofile(notice_the_hook_waiting)
"""


def test_module_level_functions_raise_bridge_closed_during_and_after_the_exit_hook() -> None:
    """Before the fix they made a new default bridge that nobody shut down.

    Its jobs never resolved (``unresolved`` was 51: 49 submits, one in the
    hook, one after), ``call()`` returned, and ``default()`` returned a bridge.
    """
    out = run_script(EXIT_SCRIPT, timeout=30)
    closed = "BridgeClosed"
    assert out["during"] == {
        "default": closed,
        "submit": closed,
        "call": closed,
        "blocking": closed,
        "submit x49": [closed],
    }
    assert out["after"] == {"default": closed, "submit": closed, "call": closed, "blocking": closed}
    assert out["accepted"] == 0
    assert out["unresolved"] == 0
    assert out["held"] == "SUCCEEDED"  # the hook's shutdown waited for it, as it should
