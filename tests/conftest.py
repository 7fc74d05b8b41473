"""Keeps the developer's CONVEYOR_* environment out of the tests; the Redis and PostgreSQL
store fixtures shared by the backend-specific tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services


@pytest.fixture(autouse=True)
def _clean_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONVEYOR_") and not key.startswith("CONVEYOR_TEST_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis URL under a fresh key prefix, deleted afterwards (fails if Redis is down)."""
    with services.isolated_store("redis", tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema, dropped afterwards (fails if PostgreSQL is down)."""
    with services.isolated_store("postgres", tmp_path) as url:
        yield url
