"""A griffe extension: Sphinx roles in bridge's docstrings, as Markdown.

bridge's docstrings follow the Google style (``Args:``, ``Returns:``,
``Raises:``) and name other objects with Sphinx roles (``:meth:`shutdown```,
``:class:`~bridge.Job```), which Markdown would show literally. This turns
each role into inline code (``~a.b.C`` becomes ``C``, as Sphinx shows it) and
a paragraph's closing ``::`` (reST's "a literal block follows") into ``:``,
so that the indented block after it renders as code.

It also drops class members declared only for type checkers (under
``if TYPE_CHECKING:``): ``Bridge``'s mixins declare there the methods they
call on the bridge, and those stubs must not hide the real, documented
methods from the reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|data|mod|exc|obj|const):`([^`]+)`")
_LITERAL = re.compile(r"::\n\n")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring once, when its object has been loaded."""

    def on_class_members(self, *, cls: griffe.Class, **_: Any) -> None:
        for name in [name for name, member in cls.members.items() if not member.runtime]:
            del cls.members[name]

    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        text = _ROLE.sub(_role, docstring.value)
        docstring.value = _LITERAL.sub(":\n\n", text)
