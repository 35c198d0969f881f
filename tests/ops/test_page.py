"""The dashboard page as shipped (issue 10): self-contained, no HTML built from data.

What a browser shows is tested in test_dashboard_browser.py; these checks
read the file and need no browser.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from bridge.ops._page import page_html


def _inline(page: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    assert len(blocks) == 1, f"{len(blocks)} <{tag}> blocks"
    return str(blocks[0])


def test_the_page_ships_inside_the_package() -> None:
    assert resources.files("bridge.ops").joinpath("dashboard.html").is_file()


def test_the_policy_allows_exactly_the_inline_script_and_style() -> None:
    page = page_html()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None
    directives = dict(d.strip().split(" ", 1) for d in policy.group(1).split(";"))
    for tag in ("script", "style"):
        digest = hashlib.sha256(_inline(page, tag).encode()).digest()
        assert directives[f"{tag}-src"] == f"'sha256-{base64.b64encode(digest).decode()}'"
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert "{{" not in page


def test_nothing_is_loaded_from_elsewhere() -> None:
    page = page_html()
    assert "://" not in page  # no CDN, no web font, no absolute URL at all
    assert not re.search(r"<(link|img|iframe|object|embed)\b|@import|url\(|\bsrc=", page)
    assert "style=" not in page  # inline style attributes would need 'unsafe-inline'


def test_the_script_never_parses_html_nor_uses_browser_dialogs() -> None:
    script = _inline(page_html(), "script")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "new Function" not in script
    assert not re.search(r"\b(confirm|alert|prompt)\(", script)  # the in-page dialog instead


def test_the_page_knows_whether_the_api_wants_a_token() -> None:
    assert '<body data-auth="bearer">' in page_html()
    assert '<body data-auth="none">' in page_html(needs_token=False)
