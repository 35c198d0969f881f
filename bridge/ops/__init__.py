"""bridge.ops: see and stop a bridge's jobs over HTTP, with metrics and spans.

The ``ops`` extra (``pip install "bridge[ops]"``): Starlette, uvicorn,
``prometheus_client`` and ``opentelemetry-api``. Nothing of it is imported
until this package is.

- :func:`serve_ops` (or :meth:`bridge.Bridge.serve_ops`): the dashboard and
  HTTP API on a server thread of their own, with a bearer token.
- :func:`asgi_app`: the same routes, to mount in an existing ASGI application.
- :func:`register_metrics`: the bridge's Prometheus metrics in a registry the
  application already serves.
- :func:`instrument`: an OpenTelemetry span per job.

Every function here may be called from any thread. :meth:`OpsServer.close`
waits up to about a second for the server's thread: not a call for the
bridge's loop thread, whose jobs would wait meanwhile.
"""

from __future__ import annotations

try:
    import prometheus_client as _prometheus_client
    import starlette as _starlette
    import uvicorn as _uvicorn
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        f'bridge.ops needs the "ops" extra ({exc.name} is missing): pip install "bridge[ops]"'
    ) from exc

from ._app import asgi_app as asgi_app
from ._metrics import Metrics as Metrics
from ._metrics import register_metrics as register_metrics
from ._server import OpsServer as OpsServer
from ._server import serve_ops as serve_ops
from ._spans import Instrumentation as Instrumentation
from ._spans import instrument as instrument

del _prometheus_client, _starlette, _uvicorn

__all__ = (
    "Instrumentation",
    "Metrics",
    "OpsServer",
    "asgi_app",
    "instrument",
    "register_metrics",
    "serve_ops",
)
