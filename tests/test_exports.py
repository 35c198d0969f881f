"""The public surface: ``bridge.__all__`` is complete, sorted, importable and documented."""

from __future__ import annotations

import inspect
import types

import pytest

import bridge as bridge_pkg

CORE_NAMES = {
    "Bridge",
    "BridgeClosed",
    "BridgeError",
    "BridgeStats",
    "DuplicateJob",
    "Job",
    "JobCancelled",
    "JobInfo",
    "JobState",
    "JobTimeout",
    "ShutdownReport",
    "WrongThread",
    "blocking",
    "call",
    "default",
    "submit",
}


def _isort_key(name: str) -> tuple[int, str]:
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def _public_module_names() -> set[str]:
    """Names bound in ``bridge/__init__.py`` that do not start with an underscore."""
    return {
        name
        for name, value in vars(bridge_pkg).items()
        # ``annotations`` is the ``from __future__`` feature, not an export.
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)
    }


def test_all_is_a_sorted_tuple_without_duplicates() -> None:
    assert isinstance(bridge_pkg.__all__, tuple)
    # isort-style order, as ruff's RUF022 keeps it: CONSTANTS, Classes, functions.
    assert list(bridge_pkg.__all__) == sorted(bridge_pkg.__all__, key=_isort_key)
    assert len(set(bridge_pkg.__all__)) == len(bridge_pkg.__all__)


def test_all_lists_every_public_name() -> None:
    assert set(bridge_pkg.__all__) == _public_module_names()


def test_all_contains_the_core_contract() -> None:
    assert set(bridge_pkg.__all__) >= CORE_NAMES


@pytest.mark.parametrize("name", bridge_pkg.__all__)
def test_every_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from bridge import {name}", namespace)
    assert namespace[name] is getattr(bridge_pkg, name)


@pytest.mark.parametrize("name", bridge_pkg.__all__)
def test_every_public_name_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(bridge_pkg, name))
    assert doc, f"bridge.{name} has no docstring"
    assert doc.strip()


def _public_members(cls: type) -> list[tuple[str, object]]:
    members = []
    for name, attribute in vars(cls).items():
        if name.startswith("_") and name != "__await__":
            continue
        value = attribute
        if isinstance(attribute, (staticmethod, classmethod)):
            value = attribute.__func__
        if callable(value) or isinstance(value, property):
            members.append((name, value))
    return members


@pytest.mark.parametrize(
    "cls",
    [bridge_pkg.Bridge, bridge_pkg.Job, bridge_pkg.PinnedThread, bridge_pkg.ShutdownReport],
    ids=lambda cls: cls.__name__,
)
def test_every_public_method_has_a_docstring(cls: type) -> None:
    undocumented = [name for name, value in _public_members(cls) if not inspect.getdoc(value)]
    assert undocumented == []


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (bridge_pkg.BridgeClosed, RuntimeError),
        (bridge_pkg.WrongThread, RuntimeError),
        (bridge_pkg.DuplicateJob, KeyError),
    ],
    ids=lambda value: value.__name__,
)
def test_errors_inherit_the_builtin_they_mean(cls: type, builtin: type) -> None:
    assert issubclass(cls, bridge_pkg.BridgeError)
    assert issubclass(cls, builtin)


def test_timeout_and_cancelled_errors_are_stdlib_errors() -> None:
    import concurrent.futures

    assert issubclass(bridge_pkg.JobTimeout, TimeoutError)
    assert issubclass(bridge_pkg.JobTimeout, bridge_pkg.BridgeError)
    assert issubclass(bridge_pkg.JobCancelled, concurrent.futures.CancelledError)
    assert issubclass(bridge_pkg.JobCancelled, bridge_pkg.BridgeError)


def test_job_is_a_concurrent_future() -> None:
    import concurrent.futures

    assert issubclass(bridge_pkg.Job, concurrent.futures.Future)


def test_job_states() -> None:
    names = [state.name for state in bridge_pkg.JobState]
    assert names == ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"]
    finished = {state for state in bridge_pkg.JobState if state.finished}
    assert finished == {
        bridge_pkg.JobState.SUCCEEDED,
        bridge_pkg.JobState.FAILED,
        bridge_pkg.JobState.CANCELLED,
        bridge_pkg.JobState.TIMED_OUT,
    }


def test_py_typed_is_shipped() -> None:
    from pathlib import Path

    assert (Path(bridge_pkg.__file__).parent / "py.typed").is_file()
