"""MkDocs hooks: put the committed benchmark results into the Performance page.

The results live in ``bench/results/`` (written by ``make bench``), outside
``docs/``. Rather than copy them, this hook

- adds ``bench/results/latency_cdf.png`` to the site as ``img/latency_cdf.png``;
- replaces the line ``<!-- bench-headline -->`` of a page with the text of
  ``bench/results/headline.md``, its image link pointing at that copy.

It also replaces ``<!-- exceptions-tree -->`` with the tree of
:class:`bridge.BridgeError` and its subclasses, drawn from the classes
themselves, each with the builtins it also derives from.

A page that asks for the headline while a file is missing fails the build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MARKER = "<!-- bench-headline -->"
TREE = "<!-- exceptions-tree -->"
PLOT = "img/latency_cdf.png"


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add the latency plot to the site."""
    files.append(File.generated(config, PLOT, abs_src_path=str(RESULTS / "latency_cdf.png")))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Put the benchmark headline, or the exceptions tree, where a page asks."""
    if TREE in markdown:
        markdown = markdown.replace(TREE, exceptions_tree())
    if MARKER not in markdown:
        return markdown
    headline = (RESULTS / "headline.md").read_text(encoding="utf-8")
    depth = page.file.src_uri.count("/")
    plot = "../" * depth + PLOT
    headline = headline.replace("](bench/results/latency_cdf.png)", f"]({plot})")
    return markdown.replace(MARKER, headline)


def exceptions_tree() -> str:
    """The exceptions of ``bridge`` and ``bridge.testing`` as a text tree (a code block)."""
    import bridge
    import bridge.testing

    where = {
        getattr(module, name): module.__name__
        for module in (bridge.testing, bridge)
        for name in module.__all__
    }
    public = [
        cls
        for cls in where
        if isinstance(cls, type)
        and issubclass(cls, bridge.BridgeError)
        and cls is not bridge.BridgeError
    ]
    lines = [_label(bridge.BridgeError, where)]
    children = sorted(public, key=lambda cls: cls.__name__)
    for index, cls in enumerate(children):
        branch = "└── " if index == len(children) - 1 else "├── "
        lines.append(branch + _label(cls, where))
    return "```text\n" + "\n".join(lines) + "\n```"


def _label(cls: type, where: dict[Any, str]) -> str:
    """``module.Name (builtin bases)``, each under the name its users import."""
    others = [base for base in cls.__bases__ if base not in where]
    also = ", ".join(_public_name(base) for base in others)
    return f"{where[cls]}.{cls.__qualname__}" + (f" ({also})" if also else "")


def _public_name(cls: type) -> str:
    """``TimeoutError``, ``concurrent.futures.CancelledError``: no private modules."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    parts = [part for part in cls.__module__.split(".") if not part.startswith("_")]
    return ".".join([*parts, cls.__qualname__])
