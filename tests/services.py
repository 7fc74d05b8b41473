"""Where the test suite finds PostgreSQL and Redis, and how it isolates each test.

Outside CI an unreachable service skips with a reason; with CI=true it fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(service: str, exc: BaseException) -> None:
    message = f"{service} is not reachable: {exc}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _with_query(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def new_postgres_url() -> tuple[str, str]:
    """A URL isolated in a fresh schema, and that schema's name."""
    schema = "t_" + uuid.uuid4().hex[:12]
    return _with_query(POSTGRES_URL, "schema", schema), schema


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def check_postgres() -> None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        unavailable("PostgreSQL", exc)


def new_redis_url() -> tuple[str, str]:
    prefix = "t" + uuid.uuid4().hex[:12]
    return _with_query(REDIS_URL, "prefix", prefix), prefix


def delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def check_redis() -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        unavailable("Redis", exc)


@contextlib.contextmanager
def isolated_store(kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL of ``kind`` (memory, sqlite, postgres, redis) isolated for one test,
    cleaned up afterwards."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/conveyor.db"
    elif kind == "postgres":
        check_postgres()
        url, schema = new_postgres_url()
        try:
            yield url
        finally:
            drop_postgres_schema(schema)
    elif kind == "redis":
        check_redis()
        url, prefix = new_redis_url()
        try:
            yield url
        finally:
            delete_redis_prefix(prefix)
    else:
        raise ValueError(f"unknown store kind {kind!r}")
