"""Browser-facing protections of the HTTP + WebSocket API (an ASGI middleware).

- ``Host``: with no token configured the API is open to whoever reaches it, so it
  answers only loopback host names (``localhost``, ``*.localhost``, ``127.0.0.1``,
  ``[::1]``): a DNS-rebinding page that resolves its own name to 127.0.0.1 gets 403.
- Cross-site requests: the WebSocket handshake and every state-changing request
  (``POST``, ``PUT``, ``PATCH``, ``DELETE``) are refused with 403 when the browser says
  they come from another site (an ``Origin`` that is not this server's host, or
  ``Sec-Fetch-Site: cross-site``). Browsers send ``Origin`` on every cross-origin POST,
  simple ones (a form, a bodiless ``fetch``) included; non-browser clients send
  neither header and are not affected.
- Every HTTP response carries a ``Content-Security-Policy`` without inline script and
  with ``frame-ancestors 'none'``, ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.
- ``HEAD`` is answered wherever ``GET`` is (the GET response without its body).

Imports only ``api.errors`` and ``core.codec``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from conveyor.api.errors import error_body
from conveyor.core import codec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) → lower-case host name and port (None when absent
    or not a number)."""
    try:
        parts = urlsplit("//" + value.strip())
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def is_loopback_host(value: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback interface."""
    host, _port = split_host(value)
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, hosts: list[str], scheme: str) -> bool:
    """Whether the ``Origin`` header names one of ``hosts`` (the request's ``Host`` and
    ``X-Forwarded-Host``), default ports made explicit."""
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, file://) and anything odd
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}
    origin_key = (parts.hostname.lower(), origin_port or default[parts.scheme])
    for value in hosts:
        host, port = split_host(value)
        if (host, port or default.get(scheme, 80)) == origin_key:
            return True
        # Behind a TLS-terminating proxy the Host's implied port is the public one.
        if port is None and host == origin_key[0]:
            return True
    return False


class SecurityMiddleware:
    """The checks and headers of the module docstring, in front of the whole app."""

    def __init__(self, app: ASGIApp, *, loopback_only: Callable[[], bool]) -> None:
        self.app = app
        # Asked per request: tests and embedders may change the app's settings later.
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if kind == "websocket":
                # Refused before the handshake completes: the client sees HTTP 403.
                await send({"type": "websocket.close", "code": 1008, "reason": refusal})
            else:
                await _send_json(send, 403, error_body("forbidden", refusal))
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        head = scope.get("method") == "HEAD"
        if head:
            scope = dict(scope, method="GET")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                present = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            elif head and message["type"] == "http.response.body":
                message = dict(message, body=b"")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> str | None:
        host = headers.get("host", "")
        if self.loopback_only() and not is_loopback_host(host):
            return (
                f"host {host!r} is not allowed: a server without tokens answers only loopback host names "
                "(configure CONVEYOR_ADMIN_TOKEN to serve other names)"
            )
        if scope["type"] == "http" and scope.get("method") not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        hosts = [h for h in (host, headers.get("x-forwarded-host", "").split(",")[0]) if h]
        scheme = str(scope.get("scheme", "http"))
        if origin is not None and not same_origin(origin, hosts, scheme):
            return f"cross-origin request refused (Origin {origin!r} is not this server)"
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return "cross-site request refused"
        return None


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name not in out:
            out[name] = value.decode("latin-1")
    return out


async def _send_json(send: Send, status: int, body: Any) -> None:
    data = codec.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
