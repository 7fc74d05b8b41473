"""``create_app(client, settings)``: the FastAPI application of docs/api.md.

The app does not own the client's worker: ``conveyor serve`` starts and drains it.
On startup the app opens the store (a store that is down is retried by the event hub
and reported by ``/api/health``) and subscribes to job events once; on shutdown it
closes every WebSocket (code 1001) and the subscription.

The dashboard mounts here: ``GET /`` serves ``api/static/index.html`` when it exists
(a placeholder page otherwise), and ``/static/*`` serves ``api/static/``. Neither
needs a token (the page shell holds no data; the data endpoints do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from conveyor.api import bulk, dashboard, limits, routes, search, websocket
from conveyor.api.auth import Authenticator
from conveyor.api.errors import error_body, install_error_handlers
from conveyor.api.metrics import Metrics
from conveyor.api.security import SecurityMiddleware
from conveyor.api.websocket import DEFAULT_BUFFER, EventHub
from conveyor.client import AsyncConveyor
from conveyor.core import codec
from conveyor.core.errors import ConveyorError
from conveyor.settings import Settings

logger = logging.getLogger("conveyor.api")

STATIC_DIR = Path(__file__).parent / "static"
# Room for the JSON around a payload of the maximum size (topic, options, metadata).
BODY_OVERHEAD = 64 * 1024
# The limit is on the payload's encoding as stored (compact UTF-8 JSON); a client may
# send it escaped (``\u00e9``: 6 bytes for 2) or indented. The raw body may be this many
# times larger; the real check runs on the decoded payload (PayloadTooLarge, 413).
BODY_EXPANSION = 6
# A request body must arrive within this many seconds (slow clients are cut off).
BODY_TIMEOUT = 30.0

PLACEHOLDER = """<!doctype html>
<html><head><meta charset="utf-8"><title>conveyor</title></head>
<body><h1>conveyor</h1>
<p>The HTTP API is running. See <a href="/api/openapi.json">/api/openapi.json</a>, <a href="/api/health">/api/health</a>.</p>
</body></html>
"""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


class BodyLimitMiddleware:
    """Reads the body of a POST/PUT/PATCH before the app sees it: rejects one larger
    than ``limit`` bytes with 413 (at once from ``Content-Length``, or while reading a
    chunked body), and one not received within ``timeout`` seconds with 408 (a client
    trickling its body must not hold a connection and a request slot forever)."""

    def __init__(self, app: ASGIApp, *, limit: int, timeout: float = BODY_TIMEOUT) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    break
                if length > self.limit:
                    await self._reject(send, length)
                    return
        chunks: list[Message] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    chunks.append(message)
                    if message["type"] != "http.request":
                        break
                    size += len(message.get("body", b""))
                    if size > self.limit:
                        await self._reject(send, size)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _send_error(send, 408, "request_timeout", f"request body not received within {self.timeout:g}s")
            return

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        message = f"request body of {size} bytes exceeds the limit of {self.limit} bytes"
        await _send_error(send, 413, "payload_too_large", message)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = codec.dumps(error_body(code, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 408:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    client: AsyncConveyor,
    settings: Settings | None = None,
    *,
    ws_buffer: int = DEFAULT_BUFFER,
) -> FastAPI:
    """The HTTP + WebSocket API over ``client``.

    Args:
        client: the conveyor client (its store is opened on startup).
        settings: tokens, allowed topics, payload limit, pending threshold (default:
            ``client.settings``).
        ws_buffer: undelivered messages a WebSocket client may have before it is
            disconnected as too slow (close code 1013).
    """
    settings = settings or client.settings
    hub = EventHub(client, buffer_size=ws_buffer)
    metrics = Metrics()
    hub.listeners.append(metrics.observe)

    startup_hooks: list[Hook] = []
    shutdown_hooks: list[Hook] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await client.connect()
        except ConveyorError as exc:
            client.outage.failed("api start-up", exc)
        await hub.start()
        for hook in startup_hooks:
            await hook()
        try:
            yield
        finally:
            await hub.close()
            for hook in shutdown_hooks:
                try:
                    await hook()
                except Exception:
                    logger.exception("shutdown step failed")

    app = FastAPI(
        title="conveyor",
        version=routes.version(),
        description='HTTP API of the conveyor job queue. Errors are `{"error": {"code", "message"}}`.',
        openapi_url="/api/openapi.json",
        # No Swagger page: it loads its assets from a CDN (the dashboard works offline).
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.client = client
    app.state.settings = settings
    app.state.auth = Authenticator(settings)
    app.state.hub = hub
    app.state.metrics = metrics
    # ``conveyor serve`` adds its embedded worker here (started after the event hub,
    # drained after every connection has closed).
    app.state.startup_hooks = startup_hooks
    app.state.shutdown_hooks = shutdown_hooks
    install_error_handlers(app)
    for router in (bulk.router, search.router, routes.router, dashboard.router):
        routes.document_common_errors(router.routes)
    # Before routes: /api/jobs/{id} and /api/jobs/{id}/cancel would take these for an id.
    app.include_router(bulk.router)
    app.include_router(search.router)
    app.include_router(routes.router)
    app.include_router(websocket.router)
    app.include_router(dashboard.router)
    # For the Allow header of a 405 (api.errors): every HTTP route of every router.
    app.state.http_routes = [
        route
        for router in (bulk.router, search.router, routes.router, dashboard.router)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse(PLACEHOLDER)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = limits.document_limits(default_openapi(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_payload_size * BODY_EXPANSION + BODY_OVERHEAD)
    # Outermost: refuses foreign hosts and cross-site state changes before anything runs.
    app.add_middleware(SecurityMiddleware, loopback_only=lambda: not app.state.auth.enabled)
    return app
