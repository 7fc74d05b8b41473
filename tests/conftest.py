"""Keeps the developer's CONVEYOR_* environment out of the tests; the Redis key-prefix
fixture shared by the Redis-only tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import services


@pytest.fixture(autouse=True)
def _clean_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONVEYOR_") and not key.startswith("CONVEYOR_TEST_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL under a fresh key prefix, deleted afterwards (fails if Redis is down)."""
    services.check_redis()
    url, prefix = services.new_redis_url()
    yield url
    services.delete_redis_prefix(prefix)
