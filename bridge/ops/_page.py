"""The dashboard: one HTML file, ``dashboard.html``, with its CSS and script inline.

No build step and nothing fetched from elsewhere (no CDN, no web fonts): the
page works on a machine with no internet. Its Content-Security-Policy allows
exactly its own inline ``<script>`` and ``<style>``, by hash, and requests to
its own origin only; the hashes are computed here, from the file as shipped,
so that editing the page cannot leave a stale policy behind.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Final

__all__ = ["page_html"]

#: The inline blocks the policy names; the page has exactly one of each.
_INLINE: Final = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def page_html(*, needs_token: bool = True) -> str:
    """The dashboard's HTML, its policy's hashes filled in. Any thread.

    Args:
        needs_token: whether the API wants ``Authorization: Bearer``. The page
            then takes the token from its first URL's ``?token=`` (or the
            tab's ``sessionStorage``) and, without one, says "token required"
            and fetches nothing. ``False`` for an API without a token of its
            own (``asgi_app(token=None)``, behind the host's authentication):
            the page sends no token.

    Reads the file each time (about 27 kB); callers that serve it often keep
    the string.
    """
    page = resources.files("bridge.ops").joinpath("dashboard.html").read_text(encoding="utf-8")
    blocks = dict(_INLINE.findall(page))
    for tag in ("script", "style"):
        page = page.replace("{{" + tag + "_hash}}", _csp_hash(blocks[tag]))
    return page.replace("{{auth}}", "bearer" if needs_token else "none")


def _csp_hash(source: str) -> str:
    """The CSP source expression that allows the inline block *source*."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")
