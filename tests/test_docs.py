"""Every Python snippet of the documentation runs: docs/**/*.md and README.md.

Sybil (https://sybil.readthedocs.io) parses each page; its ```python blocks run
in order in one namespace per page, as a reader would type them, so a page may
build on its own earlier blocks. Other blocks (console, text, toml) are not
run. A page is one test, so the plugin's leak checks (threads, never-awaited
coroutines, pending tasks) hold for the whole page: its snippets must clean up
after themselves, as the reader's program would.

A snippet that needs a SIP stack or a browser says so just before it, in an
HTML comment that the site does not show::

    <!-- skip: next if(not SIP_STACK, reason="needs pjsua2") -->
    <!-- skip: next if(not BROWSER, reason="needs Chromium") -->

A block whose first line is a file name, ``# test_<name>.py``, is a test
module: it is written to a temporary directory and run there by pytest in a
child process (the bridge plugin loads as it would for the reader), and all
its tests must pass.

The page's plain test skips such a snippet; a second test of the page, marked
``sip`` for the first kind, runs it where pjsua2 (or /usr/bin/chromium with
Playwright) is installed, and fails when it is missing and CI requires it
(``BRIDGE_REQUIRE_SIP=1``, ``BRIDGE_REQUIRE_BROWSER=1``).

The other tests here keep the reference pages complete: every public name has
a ``::: name`` entry, and every log event, metric and command-line option the
code defines is named in its page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import pytest
from sybil import Document
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])
CHROMIUM = Path("/usr/bin/chromium")

#: What a marked snippet needs: the namespace flag it tests, and a pytest mark.
NEEDS: dict[str, tuple[str, list[pytest.MarkDecorator]]] = {
    "sip": ("SIP_STACK", [pytest.mark.sip]),
    "browser": ("BROWSER", []),
}


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _missing(need: str) -> str | None:
    """Why *need* cannot be met here, or None."""
    if need == "sip":
        if importlib.util.find_spec("pjsua2") is None:
            return "pjsua2 is missing: pip install -e '.[sip]'"
        return None
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is missing: pip install -e '.[dev]'"
    return None


def _required(need: str) -> bool:
    variable = {"sip": "BRIDGE_REQUIRE_SIP", "browser": "BRIDGE_REQUIRE_BROWSER"}[need]
    return os.environ.get(variable) == "1"


def run_page(page: Path, flags: dict[str, bool]) -> tuple[int, int]:
    """Run the page's Python blocks in order; return (run, skipped)."""
    document = Document.parse(str(page), PythonCodeBlockParser(), SkipParser())
    document.namespace.update(flags)
    document.namespace["__name__"] = "docs_" + re.sub(r"\W", "_", page.stem)
    ran = skipped = 0
    for example in document.examples():
        try:
            if _is_test_module(example.region.parsed):
                run_test_module(str(example.region.parsed))
            else:
                example.evaluate()
        except unittest.SkipTest:
            skipped += 1
            continue
        except Exception as exc:
            raise AssertionError(
                f"{_page_id(page)}, the snippet at line {example.line} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        ran += isinstance(example.region.parsed, str)
    return ran, skipped


def _is_test_module(parsed: object) -> bool:
    return isinstance(parsed, str) and re.match(r"# test_\w+\.py\n", parsed) is not None


def run_test_module(source: str) -> None:
    """Run *source*, a test module, with pytest in a child process; it must pass."""
    name = source.split("\n", 1)[0][2:]
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / name).write_text(source, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", name],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, f"pytest {name} failed:\n{done.stdout}\n{done.stderr}"


def _no_flags() -> dict[str, bool]:
    return {flag: False for flag, _ in NEEDS.values()}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page(page: Path) -> None:
    """The page's snippets run, except those marked as needing SIP or a browser."""
    run_page(page, _no_flags())


def _marked_pages() -> list[Any]:
    params = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for need, (flag, marks) in NEEDS.items():
            if re.search(rf"(?m)^<!-- skip: next if\(not {flag}\b", text):
                params.append(pytest.param(page, need, marks=marks, id=f"{_page_id(page)}-{need}"))
    return params


@pytest.mark.parametrize(("page", "need"), _marked_pages())
def test_page_with(page: Path, need: str) -> None:
    """The page's snippets run, those that need SIP (or a browser) included."""
    missing = _missing(need)
    if missing is not None:
        if _required(need):
            pytest.fail(f"{need} is required here but {missing}", pytrace=False)
        pytest.skip(missing)
    flags = _no_flags() | {NEEDS[need][0]: True}
    ran, skipped = run_page(page, flags)
    assert ran > 0
    assert skipped == 0, f"{skipped} snippet(s) of {_page_id(page)} still skipped"


def test_every_page_is_in_the_nav() -> None:
    """mkdocs.yml lists every page of docs/ (the build warns on the others)."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert {p for p in pages if f": {p}\n" not in nav} == set()


def _reference_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))


@pytest.mark.parametrize("module", ["bridge", "bridge.testing", "bridge.ops"])
def test_reference_lists_every_public_name(module: str) -> None:
    """Each name in the module's ``__all__`` has its ``::: module.name`` entry."""
    names = __import__(module, fromlist=["__all__"]).__all__
    text = _reference_text()
    assert [n for n in names if f"::: {module}.{n}\n" not in text] == []


def test_reference_lists_every_bridge_method() -> None:
    """The ``::: bridge.Bridge`` entry names every public attribute of Bridge."""
    from bridge import Bridge

    text = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    entry = text.split("::: bridge.Bridge\n", 1)[1].split(":::", 1)[0]
    listed = set(re.findall(r"(?m)^ +- (\w+)$", entry))
    public = {name for name in dir(Bridge) if not name.startswith("_")}
    assert sorted(public - listed) == []


def _constants(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(encoding="utf-8")))


def test_reference_lists_every_log_event() -> None:
    """Every event name the package defines appears in the events page."""
    events = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        events |= _constants(path, r'(?m)^[A-Z_]+: Final = "([a-z]+\.[a-z_]+)"$')
    assert len(events) >= 10
    page = (DOCS / "reference" / "events.md").read_text(encoding="utf-8")
    assert sorted(e for e in events if f"`{e}`" not in page) == []


def test_reference_lists_every_metric() -> None:
    """Every Prometheus metric bridge.ops defines appears in the metrics page."""
    metrics = _constants(ROOT / "bridge" / "ops" / "_metrics.py", r'"(bridge_[a-z_]+)"')
    assert len(metrics) >= 5
    page = (DOCS / "reference" / "metrics.md").read_text(encoding="utf-8")
    assert sorted(m for m in metrics if f"`{m}" not in page) == []


CLIS = {
    "examples.telephony_flow simulate": ["-m", "examples.telephony_flow", "simulate", "--help"],
    "examples.telephony_flow sip": ["-m", "examples.telephony_flow", "sip", "--help"],
    "examples.telephony_flow cluster": ["-m", "examples.telephony_flow", "cluster", "--help"],
    "examples.script_runner": ["-m", "examples.script_runner", "--help"],
}


def test_cli_page_matches_the_programs() -> None:
    """Each option the CLI page documents is one the program's --help lists."""
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"(?m)^## ", page)[1:]
    checked = 0
    for section in sections:
        title = section.splitlines()[0].strip("` ")
        args = CLIS[title]
        help_text = subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        documented = set(re.findall(r"`(--[a-z][a-z-]*)", section))
        assert sorted(o for o in documented if o not in help_text) == [], title
        checked += len(documented)
    assert checked > 10
