"""Who may use the operations API: the bearer token and the same-origin rule.

Every route except ``/healthz`` and the page shell needs the token, sent as
``Authorization: Bearer <token>`` (the page reads ``?token=`` from its first
URL and sends the header itself, so the server never accepts a token from a
query string, where it would end up in logs and browser history).

Every POST also refuses a foreign ``Origin``: a browser names the page that
makes a request, and only a page served from this very host and port may
cancel jobs. That matters most when :func:`bridge.ops.asgi_app` runs without a
token of its own inside an application whose users log in with cookies.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["bearer_ok", "check_token", "is_loopback", "new_token", "same_origin"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def new_token() -> str:
    """A random token, URL-safe (256 bits from :mod:`secrets`)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """*token* if it can travel in a header and a URL; else :class:`ValueError`."""
    if not isinstance(token, str) or not token:
        raise ValueError(f"token must be a non-empty string, not {token!r}")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError("token must be printable ASCII without spaces (it goes into a header)")
    return token


def bearer_ok(request: Request, token: str) -> bool:
    """Whether *request* carries ``Authorization: Bearer <token>`` (constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def same_origin(request: Request) -> bool:
    """Whether *request* has no ``Origin``, or one naming the host and port it was sent to."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by a browser's cross-site machinery: curl, scripts
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return False  # "null", or no URL at all
    host, _, port = request.headers.get("host", "").rpartition(":")
    if not host or "]" in port:  # no port given: "example.com", "[::1]"
        host, port = request.headers.get("host", ""), ""
    try:
        host_port = int(port) if port else _DEFAULT_PORTS.get(request.url.scheme, 0)
    except ValueError:
        return False
    return (
        parts.hostname is not None
        and parts.hostname == host.strip("[]").lower()
        and origin_port == host_port
    )


def is_loopback(address: str) -> bool:
    """Whether *address* (an IP address, as bound) is on the loopback interface."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
