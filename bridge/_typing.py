"""Typing helpers shared by the modules (nothing here is public)."""

from __future__ import annotations

import enum
import sys
from typing import Final

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:  # pragma: no cover - exercised on 3.10 only
    from typing_extensions import TypeVarTuple, Unpack

__all__ = ["USE_DEFAULT", "DefaultType", "TypeVarTuple", "Unpack"]


class DefaultType(enum.Enum):
    """The type of :data:`USE_DEFAULT`."""

    USE_DEFAULT = enum.auto()

    def __repr__(self) -> str:
        return "USE_DEFAULT"


#: "Use the bridge's default" (as opposed to ``None``, which means "no timeout").
USE_DEFAULT: Final = DefaultType.USE_DEFAULT
