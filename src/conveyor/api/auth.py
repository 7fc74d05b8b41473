"""Bearer-token authentication, roles and the allowed-topics rule (docs/api.md).

Tokens come from ``Settings`` (``CONVEYOR_ADMIN_TOKEN``, ``CONVEYOR_ENQUEUE_TOKENS``,
``CONVEYOR_READ_TOKENS``): requests carry ``Authorization: Bearer <token>``. Roles:

- ``admin``: everything;
- ``enqueue``: ``POST /api/jobs`` (and its alias) for allowed topics, ``GET /api/jobs/{id}``
  as ``{id, status}`` only (to follow the jobs it enqueued), and ``/metrics``;
- ``read``: every ``GET`` endpoint, ``/metrics`` and the WebSocket.

With no token configured at all the API is open (every request acts as admin); the
``serve`` command then refuses to listen beyond loopback. Tokens are compared in
constant time and never logged or echoed back. Imports no conveyor module but
``settings`` and ``api.errors``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.api.errors import ApiError
from conveyor.settings import Settings


class Role(StrEnum):
    ADMIN = "admin"
    ENQUEUE = "enqueue"
    READ = "read"


ANY_ROLE = frozenset(Role)
READERS = frozenset({Role.ADMIN, Role.READ})
ENQUEUERS = frozenset({Role.ADMIN, Role.ENQUEUE})
ADMINS = frozenset({Role.ADMIN})


def topic_allowed(topic: str, patterns: Iterable[str]) -> bool:
    """Whether ``topic`` matches one of ``patterns`` (exact, or a prefix with a trailing ``*``).
    No patterns means every topic is allowed."""
    patterns = tuple(patterns)
    if not patterns:
        return True
    for pattern in patterns:
        if pattern.endswith("*"):
            if topic.startswith(pattern[:-1]):
                return True
        elif topic == pattern:
            return True
    return False


class Authenticator:
    """Maps a bearer token to its role, in constant time per configured token."""

    def __init__(self, settings: Settings) -> None:
        tokens: list[tuple[bytes, Role]] = []
        if settings.admin_token:
            tokens.append((settings.admin_token.encode(), Role.ADMIN))
        tokens.extend((t.encode(), Role.ENQUEUE) for t in settings.enqueue_tokens if t)
        tokens.extend((t.encode(), Role.READ) for t in settings.read_tokens if t)
        self._tokens = tokens
        self.allowed_topics = tuple(settings.allowed_topics)

    @property
    def enabled(self) -> bool:
        """Whether any token is configured (else the API is open)."""
        return bool(self._tokens)

    def role_of(self, token: str | None) -> Role | None:
        """The role of ``token``, or None when it is unknown. With auth disabled: admin."""
        if not self.enabled:
            return Role.ADMIN
        if not token:
            return None
        given = token.encode("utf-8", "surrogateescape")
        found: Role | None = None
        # Compare against every token (no early exit) so timing says nothing about which matched.
        for secret, role in self._tokens:
            if hmac.compare_digest(given, secret) and found is None:
                found = role
        return found

    def authorize(self, token: str | None, allowed: frozenset[Role]) -> Role:
        """The caller's role when it may proceed.

        Raises:
            ApiError: 401 without a valid token, 403 when its role is not allowed.
        """
        role = self.role_of(token)
        if role is None:
            message = "missing bearer token" if not token else "invalid token"
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        if role not in allowed:
            raise ApiError(403, "forbidden", f"the {role.value} role may not do this")
        return role

    def check_topic(self, topic: str) -> None:
        """Raises: ApiError 403 when ``CONVEYOR_ALLOWED_TOPICS`` does not admit ``topic``."""
        if not topic_allowed(topic, self.allowed_topics):
            raise ApiError(403, "topic_not_allowed", f"topic {topic!r} is not allowed on this server")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# Declared for the OpenAPI security scheme; the header is parsed by ``bearer_token``.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token> (admin, enqueue or read token)")
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def require(allowed: frozenset[Role]) -> Callable[..., Awaitable[Role]]:
    """A FastAPI dependency admitting the ``allowed`` roles."""

    async def dependency(request: Request, _credentials: _Credentials) -> Role:
        auth: Authenticator = request.app.state.auth
        token = bearer_token(request.headers.get("authorization"))
        return auth.authorize(token, allowed)

    return dependency
