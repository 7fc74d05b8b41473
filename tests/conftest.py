"""Keeps the developer's CONVEYOR_* environment out of the tests; the Redis and PostgreSQL
store fixtures shared by the backend-specific tests; the private Redis Cluster and
Sentinel setups (started once per session, see ``services.py``)."""

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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisClusterService]:
    """A 3-master Redis Cluster on free loopback ports for the whole session (``.url``)."""
    cluster = services.RedisClusterService(tmp_path_factory.mktemp("redis-cluster"))
    with services.running(cluster, "a local Redis Cluster"):
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisSentinelService]:
    """A primary, a replica and a Sentinel on free loopback ports for the session (``.url``)."""
    setup = services.RedisSentinelService(tmp_path_factory.mktemp("redis-sentinel"))
    with services.running(setup, "a local Redis Sentinel setup"):
        yield setup


@pytest.fixture(scope="session")
def pgbouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PgBouncerService]:
    """PgBouncer in transaction pooling mode in front of the test PostgreSQL, on a free
    loopback port for the session (``.url(schema)``)."""
    bouncer = services.PgBouncerService(tmp_path_factory.mktemp("pgbouncer"))
    with services.running(bouncer, "a local PgBouncer"):
        yield bouncer
