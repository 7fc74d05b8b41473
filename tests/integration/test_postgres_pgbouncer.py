"""PostgreSQL behind PgBouncer in transaction pooling mode (the suite starts its own):
worker processes drain through it exactly once, waking up through CONVEYOR_LISTEN_URL
(a direct connection) when it is set, polling when it is not (said once in the log);
no session state is kept in pooled connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.rows import load_migrations
from conveyor.core import lifecycle
from conveyor.core.errors import ConfigurationError
from conveyor.core.options import JobDefaults, build_job
from conveyor.settings import Settings
from tests import services
from tests.integration._workers import check_exactly_once

pytestmark = pytest.mark.slow


@pytest.fixture
def bounced(pgbouncer: services.PgBouncerService) -> Iterator[tuple[str, str]]:
    """(a URL through PgBouncer, the direct URL of the same schema); the schema is dropped after."""
    services.check_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        yield pgbouncer.url(schema), f"{services.POSTGRES_URL}?schema={schema}"
    finally:
        services.drop_postgres_schema(schema)


def test_four_processes_drain_exactly_once_through_pgbouncer_polling(bounced: tuple[str, str], tmp_path: Path) -> None:
    url, _ = bounced
    check_exactly_once(url, tmp_path / "ledger", 2000, timeout=180, poll=0.2, woken_within=10)


def test_four_processes_drain_exactly_once_through_pgbouncer_woken_by_the_listen_url(
    bounced: tuple[str, str], tmp_path: Path
) -> None:
    url, direct = bounced
    # A poll interval far longer than the wake-up bound: the LISTEN connection wakes them.
    check_exactly_once(
        url,
        tmp_path / "ledger",
        2000,
        timeout=180,
        poll=30,
        extra_env={"CONVEYOR_LISTEN_URL": direct},
        woken_within=10,
    )


async def test_a_pooled_store_keeps_no_session_state_and_says_once_that_it_polls(
    bounced: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, direct = bounced
    caplog.set_level(logging.WARNING, logger="conveyor.backends.postgres")
    b = PostgresBackend(url)
    try:
        await b.connect()
        assert b.pooled
        assert not b._connections.prepare  # PgBouncer 1.18 cannot route prepared statements
        await b.wait_for_jobs(0)  # an idle worker's wait: where a direct store would start listening
        assert b._listener is None  # LISTEN would pin a pooled server connection
        t = datetime.now(UTC)
        for _ in range(3):  # several round trips: each may land on another server connection
            await b.enqueue([build_job("t", {}, now=t, defaults=JobDefaults())])
            [job] = await b.claim(worker_id="w", topics=["t"], limit=1, now=t, locked_until=t + timedelta(seconds=9))
            await b.finish([lifecycle.completed(job, "w", None)], now=t)
        assert (await b.stats()).by_status["completed"] == 3
        await b.close()
        await b.connect()
        assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 2  # once per connect
        assert "CONVEYOR_LISTEN_URL is not set" in caplog.records[0].getMessage()
    finally:
        await b.close()
    direct_backend = PostgresBackend(direct)
    try:
        await direct_backend.connect()
        assert not direct_backend.pooled and direct_backend._connections.prepare
    finally:
        await direct_backend.close()


async def test_with_a_listen_url_a_pooled_store_listens_on_the_direct_connection(bounced: tuple[str, str]) -> None:
    url, direct = bounced
    b = PostgresBackend(url, listen_url=direct)
    try:
        await b.connect()
        assert b.pooled and b._listener is None  # until a worker waits or somebody subscribes
        await b.wait_for_jobs(0)
        assert b._listener is not None and b._listening is not None
        await asyncio.wait_for(b._listening.wait(), 10)
        await b.wait_for_jobs(0)  # the wake-up given once it listens
        woken = asyncio.ensure_future(b.wait_for_jobs(10))
        other = PostgresBackend(url)
        try:
            t = datetime.now(UTC)
            await other.enqueue([build_job("t", {}, now=t, defaults=JobDefaults())])
        finally:
            await other.close()
        assert await woken
    finally:
        await b.close()


def test_settings_validate_the_postgres_options() -> None:
    s = Settings.from_env({"CONVEYOR_PG_ASYNC_ACK": "false", "CONVEYOR_LISTEN_URL": "postgresql://h/db"})
    assert s.pg_async_ack is False and s.listen_url == "postgresql://h/db"
    assert Settings(url="postgresql://h/db").store_options() == {"listen_url": None, "async_ack": True}
    assert Settings(url="sqlite:///x.db").store_options() == {}
    for env in ({"CONVEYOR_PG_ASYNC_ACK": "maybe"}, {"CONVEYOR_LISTEN_URL": "redis://h"}):
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env(env)
        assert info.value.variable == next(iter(env))


async def test_timestamps_load_as_utc_datetimes_directly_and_through_pgbouncer(bounced: tuple[str, str]) -> None:
    # The pool's connections SET TimeZone TO 'UTC' (pool.py): psycopg then loads
    # timestamptz as datetime.UTC, with nothing for rows.utc() to convert. PgBouncer keeps
    # TimeZone per client, so it holds on whichever server connection a statement lands.
    for url in bounced:
        b = PostgresBackend(url)
        try:
            await b.connect()
            t = datetime.now(UTC)
            for _ in range(3):
                [job] = await b.enqueue([build_job("t", {}, now=t, defaults=JobDefaults())])
                [row] = await b._db.fetch("get_job", {"id": job.id})
                assert row["run_at"].tzinfo is UTC and row["created_at"].tzinfo is UTC
                assert row["run_at"] == job.run_at
        finally:
            await b.close()


async def test_async_ack_is_the_finish_statement_s_own_setting(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[tuple[str, object]] = []
    for async_ack in (True, False):
        b = PostgresBackend(pg_url, async_ack=async_ack)
        fetch = b._db.fetch_with_events

        async def spy(query: str, params: Any, fetch: Any = fetch) -> Any:
            if params["outcomes"] != "[]":  # a round trip that stores outcomes
                used.append((query, params["async_ack"]))
            return await fetch(query, params)

        monkeypatch.setattr(b._db, "fetch_with_events", spy)
        try:
            t = datetime.now(UTC)
            await b.enqueue([build_job("t", {}, now=t, defaults=JobDefaults())])
            [job] = await b.claim(worker_id="w", topics=["t"], limit=1, now=t, locked_until=t + timedelta(seconds=9))
            [done] = await b.finish([lifecycle.completed(job, "w", 1)], now=t)
            assert done is not None and done.result == 1
        finally:
            await b.close()
    assert used == [("take_work", True), ("take_work", False)]
    take_work = [m for m in load_migrations() if "CREATE FUNCTION take_work" in m.sql][-1]  # the one in force
    assert "PERFORM set_config('synchronous_commit', 'off', true)" in take_work.sql


async def test_a_pooler_is_told_from_a_direct_server_by_the_backend_s_process_id(bounced: tuple[str, str]) -> None:
    """Not by client ports: PgBouncer's own connection to the server may get the same
    ephemeral port as ours (it did, once, in CI), and a TCP proxy or NAT keeps the
    session anyway."""
    import psycopg
    from psycopg.rows import dict_row

    from conveyor.backends.postgres.pool import reached_directly

    url, direct = bounced
    for target, expected in ((direct, True), (url, False)):
        conninfo = target.split("?")[0]
        for _ in range(5):
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, prepare_threshold=None, row_factory=dict_row
            ) as conn:
                assert await reached_directly(conn) is expected
