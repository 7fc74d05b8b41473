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
    with services.isolated_store(request.param, tmp_path) as url:
        yield url


def fast_settings(url: str, **overrides: object) -> Settings:
    base = Settings(url=url, poll_interval=0.05, lock_duration=30.0, retry_delay=0.05, retention=0)
    return base.replace(**overrides)


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[AsyncConveyor]:
    app = AsyncConveyor(settings=fast_settings(backend_url))
    await app.store()
    yield app
    await app.close()
