"""After os.fork(), a bridge of the parent raises BridgeError in the child; default() works."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

import bridge as bridge_pkg
from bridge import Bridge, BridgeError

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    # Python 3.12+ warns that forking a process with threads may deadlock the child.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]


async def value(x: Any) -> Any:
    return x


def in_child(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *check* in a forked child; return what it reported through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                report = check()
            except BaseException as exc:
                report = {"unexpected": f"{type(exc).__name__}: {exc}"}
                code = 1
            os.write(write_end, json.dumps(report).encode())
            os.close(write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        chunks.append(pipe.read())
    _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks) or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except BridgeError as exc:
        return f"BridgeError: {exc}"
    return "no error"


def test_a_started_bridge_raises_bridge_error_in_the_child(bridge: Bridge) -> None:
    assert bridge.call(value, 1) == 1

    def check() -> dict[str, Any]:
        return {
            "submit": outcome(lambda: bridge.submit(value, 1)),
            "call": outcome(lambda: bridge.call(value, 1)),
            "coroutine": outcome(lambda: bridge.submit(value(2))),
            "stats": outcome(bridge.stats),
            "jobs": outcome(bridge.jobs),
            "shutdown": outcome(bridge.shutdown),
        }

    report = in_child(check)
    for what, result in report.items():
        assert result.startswith("BridgeError"), what
        assert "os.fork()" in result
    assert bridge.call(value, 2) == 2  # the parent's bridge is unaffected


def test_default_bridge_is_recreated_in_the_child() -> None:
    parent_default = bridge_pkg.default()
    assert bridge_pkg.call(value, "parent") == "parent"
    try:

        def check() -> dict[str, Any]:
            child_default = bridge_pkg.default()
            result = {
                "new": child_default is not parent_default,
                "call": bridge_pkg.call(value, "child"),
                "submit": bridge_pkg.submit(value, 3).result(timeout=10),
                "pid": os.getpid(),
            }
            child_default.shutdown(timeout=1)
            return result

        report = in_child(check)
        assert report["new"] is True
        assert report["call"] == "child"
        assert report["submit"] == 3
        assert report["pid"] != os.getpid()
        assert bridge_pkg.default() is parent_default
        assert bridge_pkg.call(value, "parent again") == "parent again"
    finally:
        parent_default.shutdown(timeout=1)


def test_a_new_bridge_works_in_the_child(bridge: Bridge) -> None:
    bridge.call(value, 0)

    def check() -> dict[str, Any]:
        with Bridge(name="child") as child:
            return {"call": child.call(value, "fresh")}

    assert in_child(check) == {"call": "fresh"}
