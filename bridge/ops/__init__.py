"""bridge.ops: see and stop a bridge's jobs (placeholder: being built)."""

from __future__ import annotations

from typing import Any


class OpsServer:
    """Placeholder until the operations helper lands."""


def serve_ops(bridge: Any, **options: Any) -> OpsServer:
    raise NotImplementedError
