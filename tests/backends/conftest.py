"""The ``backend_url`` / ``client`` fixtures: one conformance suite, every backend.

Isolation: memory is per client; SQLite a file in tmp_path; PostgreSQL a fresh schema
per test (``?schema=``), dropped afterwards; Redis a unique key prefix (``?prefix=``),
deleted afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.client import AsyncConveyor
from conveyor.settings import Settings
from tests import services

BACKENDS = ["memory", "sqlite", "postgres", "redis"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/conveyor.db"
    elif kind == "postgres":
        services.check_postgres()
        url, schema = services.new_postgres_url()
        yield url
        services.drop_postgres_schema(schema)
    elif kind == "redis":
        services.check_redis()
        url, prefix = services.new_redis_url()
        yield url
        services.delete_redis_prefix(prefix)


def fast_settings(url: str, **overrides: object) -> Settings:
    base = Settings(url=url, poll_interval=0.05, lock_duration=30.0, retry_delay=0.05, retention=0)
    return base.replace(**overrides)


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[AsyncConveyor]:
    app = AsyncConveyor(settings=fast_settings(backend_url))
    await app.store()
    yield app
    await app.close()
