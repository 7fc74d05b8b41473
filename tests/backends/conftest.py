"""The ``backend_url`` / ``client`` fixtures: one conformance suite, every backend.

Isolation: memory is per client; SQLite a file in tmp_path; PostgreSQL a fresh schema
per test (``?schema=``), dropped afterwards, directly and through PgBouncer in
transaction pooling mode (no CONVEYOR_LISTEN_URL: workers poll); Redis (one server, or the 3-master Cluster
the suite starts) a unique key prefix (``?prefix=``), deleted afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.client import AsyncConveyor
from conveyor.settings import Settings
from tests import services

BACKENDS = ["memory", "sqlite", "postgres", "postgres-pgbouncer", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # The Cluster and PgBouncer are started once per session, by the first test that needs them.
    base = None
    if request.param == "redis-cluster":
        base = request.getfixturevalue("redis_cluster").url
    elif request.param == "postgres-pgbouncer":
        base = request.getfixturevalue("pgbouncer").url("__SCHEMA__")
    with services.isolated_store(request.param, tmp_path, base_url=base) as url:
        yield url


def fast_settings(url: str, **overrides: object) -> Settings:
    base = Settings(url=url, poll_interval=0.05, lock_duration=30.0, retry_delay=0.05, retention=0)
    return base.replace(**overrides)


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[AsyncConveyor]:
    app = AsyncConveyor(settings=fast_settings(backend_url))
    await app.connect()
    yield app
    await app.close()
