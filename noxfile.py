"""The suite on the other supported Pythons (3.11 is `make test`): `make test-all`.

Each version gets a virtualenv under .nox/, kept for the next run. Interpreters
are looked up here, not by nox: the first pythonX.Y on PATH that runs and says
it is X.Y (a pyenv shim of a version pyenv has not selected does not run), then
the newest $PYENV_ROOT/versions/X.Y* build. A version found nowhere skips its
session, or fails it when BRIDGE_REQUIRE_ALL_PYTHONS=1 (CI). Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import nox
from nox.logger import logger

VERSIONS = ("3.10", "3.12", "3.13")
REQUIRE_ALL = os.environ.get("BRIDGE_REQUIRE_ALL_PYTHONS") == "1"

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"
# Set either way: nox's own default fails a missing interpreter whenever CI is set.
nox.options.error_on_missing_interpreters = REQUIRE_ALL

_PROBE = "import sys; print(*sys.version_info[:2], sep='.'); print(sys.executable)"


def _probe(candidate: str, version: str) -> str | None:
    """The real executable behind *candidate* if it runs as Python *version*."""
    if not os.access(candidate, os.X_OK) or os.path.isdir(candidate):
        return None
    try:
        done = subprocess.run(
            [candidate, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    reported, _, executable = done.stdout.partition("\n")
    if done.returncode != 0 or reported != version:
        return None
    return executable.strip() or candidate


def _release(path: Path) -> tuple[int, ...]:
    """Sort key: ``.../versions/3.10.13/bin/python3.10`` -> ``(3, 10, 13)``."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parents[1].name))


def find_python(version: str) -> str | None:
    """The interpreter for *version*: ``PATH`` first, then pyenv's builds."""
    name = f"python{version}"
    on_path = [os.path.join(directory, name) for directory in os.get_exec_path()]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    builds = sorted(pyenv_root.glob(f"versions/{version}*/bin/{name}"), key=_release)
    for candidate in [*on_path, *map(str, reversed(builds))]:
        executable = _probe(candidate, version)
        if executable is not None:
            return executable
    return None


def _interpreter(version: str) -> str:
    found = find_python(version)
    if found is None:
        what = "fails" if REQUIRE_ALL else "is skipped"
        logger.warning(
            f"no working python{version} on PATH or in pyenv's versions/{version}*: "
            f"its session {what} (BRIDGE_REQUIRE_ALL_PYTHONS="
            f"{os.environ.get('BRIDGE_REQUIRE_ALL_PYTHONS', '')!r})"
        )
        return version  # nox reports it as a missing interpreter
    return found


#: Run by `make test` on 3.11 only: they exercise the examples, the docs and a
#: browser through the library, and add nothing version-specific to the
#: library's own tests, which run in full on every version.
ON_311_ONLY = (
    "tests/test_telephony_simulate.py",
    "tests/test_telephony_ops.py",
    "tests/test_telephony_media.py",
    "tests/test_script_runner.py",
    "tests/test_cluster.py",
    "tests/test_docs.py",
    "tests/ops/test_dashboard_browser.py",
)


@nox.session
@nox.parametrize("python", [_interpreter(v) for v in VERSIONS], ids=list(VERSIONS))
def tests(session: nox.Session) -> None:
    """The library's tests (not the sip tests: pjsua2 has wheels for 3.10-3.12 only).

    Arguments after ``--`` replace the selection: ``nox -- tests/test_docs.py``.
    """
    session.install("--quiet", "-e", ".[dev]")
    selection = session.posargs or [f"--ignore={path}" for path in ON_311_ONLY]
    session.run(
        "python",
        "-m",
        "pytest",
        "-m",
        "not sip",
        *selection,
        # CI requires the sip tests of `make test`; deselected here, their module
        # must still import without pjsua2.
        env={"BRIDGE_REQUIRE_SIP": "0"},
    )
