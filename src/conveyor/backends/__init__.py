"""``open_backend(url)``: URL scheme → backend class, imported lazily so that a missing
optional driver only matters to those who use it."""

from __future__ import annotations

from typing import Any

from conveyor.backends.base import Backend
from conveyor.core.errors import ConfigurationError

SCHEMES = (
    "memory://",
    "sqlite://",
    "postgresql://",
    "postgres://",
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)


def open_backend(url: str, **options: Any) -> Backend:
    """Create (not connect) the backend for ``url``.

    Raises:
        ConfigurationError: unknown scheme or malformed URL.
        MissingDependencyError: the backend's driver is not installed.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid store URL {url!r}: expected memory://, sqlite:///path.db, postgresql://... or redis://..."
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from conveyor.backends.memory import MemoryBackend

        return MemoryBackend(url, **options)
    if scheme == "sqlite":
        from conveyor.backends.sqlite.backend import SqliteBackend

        return SqliteBackend(url, **options)
    if scheme in ("postgresql", "postgres"):
        from conveyor.backends.postgres.backend import PostgresBackend

        return PostgresBackend(url, **options)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        from conveyor.backends.redis.backend import RedisBackend

        return RedisBackend(url, **options)
    raise ConfigurationError(
        f"unsupported store URL scheme {scheme!r} in {url!r}: use memory://, sqlite://, postgresql:// or redis://"
    )
