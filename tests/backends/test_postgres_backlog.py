"""PostgreSQL under a backlog: every query on the worker's path is served in index order
at a cost that does not depend on how many jobs wait (EXPLAIN ANALYZE on a store of
200,000 jobs, right after it was filled, so without planner statistics, and again after
ANALYZE); exact counters; a store of the first schema upgraded in place."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conveyor.backends.postgres import queries as q
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.migrate import apply_migrations
from conveyor.backends.postgres.rows import load_migrations
from conveyor.core import lifecycle
from conveyor.core.job import JobStatus
from conveyor.core.options import JobDefaults, build_job
from tests import services

TOPICS = [f"t{i}" for i in range(100)]
JOBS = 200_000
LIMIT = 10
RUNNING = JOBS // 1000  # jobs left processing by FILL


def now() -> datetime:
    return datetime.now(UTC)


# 100 topics; per topic: due jobs of three priorities, twice as many delayed an hour at a
# higher priority (the rows a naive claim would wade through), finished jobs, a few
# running ones.
FILL = """
INSERT INTO {jobs} (id, topic, status, priority, run_at, created_at, updated_at, finished_at, locked_by,
                    locked_until, attempts)
SELECT
    'job-' || lpad(g::text, 7, '0'),
    't' || (g %% 100),
    CASE WHEN g %% 10 < 3 THEN 'pending' WHEN g %% 10 < 8 THEN 'pending' WHEN g %% 10 = 8 THEN 'completed'
         WHEN g %% 1000 = 9 THEN 'processing' ELSE 'failed' END,
    CASE WHEN g %% 10 BETWEEN 3 AND 7 THEN 5 ELSE (g / 100) %% 3 - 1 END,
    CASE WHEN g %% 10 BETWEEN 3 AND 7 THEN now() + interval '1 hour' ELSE now() - interval '1 minute' END,
    now(), now(),
    CASE WHEN g %% 10 = 8 OR (g %% 10 = 9 AND g %% 1000 <> 9) THEN now() - interval '1 day' END,
    CASE WHEN g %% 1000 = 9 THEN 'w' END,
    CASE WHEN g %% 1000 = 9 THEN now() - interval '1 second' END,
    CASE WHEN g %% 1000 = 9 THEN 1 ELSE 0 END
FROM generate_series(1, %s) AS g
"""


# One more topic whose due jobs share one priority: the claim's one-group path.
SOLO = 5_000
FILL_SOLO = """
INSERT INTO {jobs} (id, topic, status, priority, run_at, created_at, updated_at)
SELECT 'solo-' || lpad(g::text, 7, '0'), 'solo', 'pending', 0, now() - interval '1 minute', now(), now()
FROM generate_series(1, %s) AS g
"""


@pytest.fixture(scope="module")
def store() -> Iterator[PostgresBackend]:
    services.check_postgres()
    url, schema = services.new_postgres_url()
    backend = PostgresBackend(url)
    try:
        asyncio.run(backend.migrate())
        with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
            conn.execute(backend._sql(FILL), [JOBS])
            conn.execute(backend._sql(FILL_SOLO), [SOLO])
        yield backend
    finally:
        services.drop_postgres_schema(schema)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def explain(backend: PostgresBackend, template: str, params: list[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of every executed plan of the statement, the statements inside the
    functions it calls included (auto_explain, sent to us as notices; rolled back:
    claims write)."""
    notices: list[str] = []
    with psycopg.connect(services.POSTGRES_URL) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        try:
            conn.execute("LOAD 'auto_explain'")
            for setting, value in (
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_nested_statements", "on"),
                ("auto_explain.log_format", "json"),
                ("client_min_messages", "log"),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", [setting, value])
            conn.execute(backend._sql(template), params)
        finally:
            conn.rollback()
    nodes: list[dict[str, Any]] = []
    for message in notices:
        _, _, text = message.partition("plan:")
        if text.strip():
            nodes.extend(_nodes(json.loads(text)["Plan"]))
    assert nodes, notices
    return nodes


def assert_served_by_indexes(nodes: list[dict[str, Any]], *, max_rows_read: int) -> None:
    """No scan of the whole table, no sort of more than the claim's candidates, and no
    more index entries read than the answer needs (delayed jobs are not read)."""
    read = 0
    for node in nodes:
        kind = node["Node Type"]
        if node.get("Relation Name") == "jobs":
            # A bitmap scan is fine when its index condition bounds it: counted below.
            assert kind in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan", "ModifyTable", "LockRows"), node
            if kind != "ModifyTable" and kind != "LockRows":
                removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
                read += node["Actual Rows"] * node["Actual Loops"] + removed
        if kind == "Sort":
            assert node["Actual Rows"] <= len(TOPICS) * 3 * LIMIT, node
    assert read <= max_rows_read, f"{read} index entries read"


def _processing_ids(backend: PostgresBackend) -> list[str]:
    with psycopg.connect(services.POSTGRES_URL) as conn:
        sql = backend._sql("SELECT id FROM {jobs} WHERE status = 'processing' ORDER BY id LIMIT 10")
        return [r[0] for r in conn.execute(sql).fetchall()]


def completions(held: list[tuple[str, int]], holder: str = "w") -> str:
    """take_work's ``outcomes``: each (job id, attempt) held by ``holder`` completed."""
    keys = {"run_at": None, "result": '{"ok": true}', "last_error": None, "refund": False, "snooze": False}
    return json.dumps(
        [{"id": i, "locked_by": holder, "attempts": a, "status": "completed", **keys, "entry": None} for i, a in held]
    )


def worker_path(backend: PostgresBackend) -> dict[str, tuple[str, dict[str, Any], int]]:
    """Every query on the worker's path: (query name, params, most index entries it may read)."""
    t = now()
    until = t + timedelta(seconds=30)
    running = _processing_ids(backend)
    assert running
    groups = len(TOPICS) * 4  # (topic, priority) groups, plus the seek that ends each topic

    n = len(running)
    # The worker's round trip (take_work): a claim alone, outcomes alone, and both.
    no_outcomes: dict[str, Any] = {"outcomes": "[]"}
    outcomes: dict[str, Any] = {"outcomes": completions([(job_id, 1) for job_id in running])}
    no_claim: dict[str, Any] = {"topics": [], "limit": 0, "worker_id": "", "locked_until": None}

    def claim(topics: list[str]) -> dict[str, Any]:
        return {"topics": topics, "limit": LIMIT, "worker_id": "w2", "locked_until": until}

    def round_trip(outcomes: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
        return {"channel": "c", "events": ["e"], "async_ack": True, "now": t, **outcomes, **claim}

    return {
        "claim, 100 topics": (
            "take_work",
            round_trip(no_outcomes, claim(TOPICS)),
            groups + 2 * len(TOPICS) * 3 * LIMIT,
        ),
        "claim, one topic": ("take_work", round_trip(no_outcomes, claim(["t7"])), 4 + 6 * LIMIT),
        "claim, one group": ("take_work", round_trip(no_outcomes, claim(["solo"])), 2 + 2 * LIMIT),
        "next_run_at": ("next_run_at", {"topics": TOPICS}, groups * 2),
        # Heartbeat and finish: by primary key, or (after ANALYZE) through the leases of
        # running jobs: bounded by the jobs running, never by the backlog.
        "heartbeat": (
            "heartbeat",
            {"locked_until": until, "ids": running, "worker_id": "w"},
            RUNNING + n,
        ),
        "finish": ("take_work", round_trip(outcomes, no_claim), RUNNING + n),
        "finish and claim": ("take_work", round_trip(outcomes, claim(["solo"])), RUNNING + n + 2 + 2 * LIMIT),
        # Lease recovery: the running jobs through (status, id), expired ones sorted
        # (migration 0013): bounded by the jobs running, never by the backlog.
        "expired": ("expired_jobs", {"now": t, "limit": 100}, RUNNING + n),
        "prune": ("prune_jobs", {"finished_before": t - timedelta(hours=1), "limit": 1000}, 2 * 1000),
        "get": ("get_job", {"id": running[0]}, 1),
    }


def listings(backend: PostgresBackend) -> dict[str, tuple[str, dict[str, Any], int]]:
    """The listing shapes: first pages with each filter, and keyset pages deep in the
    store (template, params, most index entries they may read): a page of each range
    they merge (one with no filter or with both, one per status with a topic alone, one
    per topic holding jobs of the status with a status alone), twice (the page and the
    check behind the cursor read at most as much)."""
    page = 51
    deep = "job-0100000"
    with psycopg.connect(services.POSTGRES_URL) as conn:
        sql = backend._sql("SELECT status, count(DISTINCT topic) FROM {jobs} GROUP BY status")
        topics_holding = dict(conn.execute(sql).fetchall())
    out: dict[str, tuple[str, dict[str, Any], int]] = {}
    for status in (None, "pending", "failed"):
        for topic in (None, "t42"):
            ranges = 5 if status is None and topic is not None else 1
            if status is not None and topic is None:
                ranges = topics_holding[status]
            for cursor in (None, "after", "before"):
                sql = q.list_jobs(by_status=status is not None, by_topic=topic is not None, cursor=cursor)
                params = {"status": status, "topic": topic, "limit": page, "offset": 0, "cursor": deep}
                out[f"list status={status} topic={topic} cursor={cursor}"] = (sql, params, ranges * (page + 1) * 2)
    return out


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_worker_path_and_listing_queries_use_indexes_without_sorting_the_backlog(
    store: PostgresBackend, analyzed: bool
) -> None:
    if analyzed:
        with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
            conn.execute(store._sql("ANALYZE {jobs}"))
    for name, (template, params, max_read) in {**worker_path(store), **listings(store)}.items():
        nodes = explain(store, template, params)
        try:
            assert_served_by_indexes(nodes, max_rows_read=max_read)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def test_claim_takes_due_jobs_in_order_past_delayed_higher_priority_ones(store: PostgresBackend) -> None:
    with psycopg.connect(services.POSTGRES_URL) as conn:
        expected = conn.execute(
            store._sql(
                "SELECT priority, id FROM {jobs} WHERE status = 'pending' AND run_at <= now()"
                " ORDER BY priority DESC, run_at, id LIMIT %s"
            ),
            [LIMIT],
        ).fetchall()

    async def run() -> list[tuple[int, str]]:
        b = PostgresBackend(store.url)
        try:
            t = now()
            jobs = await b.claim(
                worker_id="w3", topics=TOPICS, limit=LIMIT, now=t, locked_until=t + timedelta(seconds=30)
            )
            # Give them back so that the other tests see the store as it was.
            await b.finish([lifecycle.released(j, "w3", t) for j in jobs], now=t)
            return [(j.priority, j.id) for j in jobs]
        finally:
            await b.close()

    claimed = asyncio.run(run())
    assert claimed == [tuple(r) for r in expected]
    assert all(p == 1 for p, _ in claimed)


def test_stats_are_exact_counters(store: PostgresBackend) -> None:
    async def run() -> Any:
        b = PostgresBackend(store.url)
        try:
            return await b.stats()
        finally:
            await b.close()

    stats = asyncio.run(run())
    with psycopg.connect(services.POSTGRES_URL) as conn:
        rows = conn.execute(store._sql("SELECT topic, status, count(*) FROM {jobs} GROUP BY 1, 2")).fetchall()
    assert {(t, s): n for t, s, n in rows} == {
        (t, s): n for t, by_status in stats.by_topic.items() for s, n in by_status.items()
    }
    assert sum(stats.by_status.values()) == JOBS + SOLO


# -- counters under concurrency, rollbacks and crashes -------------------------------


def _count_rows(pg_url: str) -> dict[tuple[str, str], int]:
    _, schema = pg_url.split("schema=")
    with psycopg.connect(services.POSTGRES_URL) as conn:
        rows = conn.execute(f'SELECT topic, status, count(*) FROM "{schema}".jobs GROUP BY 1, 2').fetchall()
    return {(t, s): n for t, s, n in rows}


def _stats_rows(stats: Any) -> dict[tuple[str, str], int]:
    return {(t, s): n for t, by_status in stats.by_topic.items() for s, n in by_status.items() if n}


async def test_counters_stay_exact_under_concurrent_workers_and_rollbacks(pg_url: str) -> None:
    backends = [PostgresBackend(pg_url, pool_max_size=3) for _ in range(4)]
    for b in backends:
        await b.connect()
    try:
        t = now()
        jobs = [build_job(f"c{i % 3}", {"i": i}, now=t, defaults=JobDefaults()) for i in range(600)]
        await backends[0].enqueue(jobs[:300])
        await backends[1].enqueue(jobs[300:])

        async def drain(b: PostgresBackend, worker: str) -> None:
            while True:
                t = now()
                got = await b.claim(
                    worker_id=worker, topics=["c0", "c1", "c2"], limit=7, now=t, locked_until=t + timedelta(seconds=30)
                )
                if not got:
                    return
                outcomes = [
                    lifecycle.completed(j, worker, None) if k % 3 else lifecycle.failed(j, worker, "boom", t)
                    for k, j in enumerate(got)
                ]
                await b.finish(outcomes, now=t)
                await b.stats()  # compactions race with the writers

        await asyncio.gather(*(drain(b, f"w{i}") for i, b in enumerate(backends)))
        # A rolled-back enqueue through the caller's connection counts nothing.
        conn = await psycopg.AsyncConnection.connect(services.POSTGRES_URL)
        async with conn, conn.transaction(force_rollback=True):
            await backends[0].enqueue([build_job("c0", {}, now=t, defaults=JobDefaults())], connection=conn)
        assert _stats_rows(await backends[2].stats()) == _count_rows(pg_url)
        pruned = await backends[3].prune(finished_before=now() + timedelta(seconds=1), limit=250)
        assert pruned == 250
        assert _stats_rows(await backends[0].stats()) == _count_rows(pg_url)
        assert sum((await backends[1].stats()).by_status.values()) == 350
    finally:
        for b in backends:
            await b.close()


async def test_a_store_of_the_first_schema_upgraded_in_place_keeps_every_job(pg_url: str) -> None:
    b = PostgresBackend(pg_url)
    first = [m for m in load_migrations() if m.version == 1]
    conn = await psycopg.AsyncConnection.connect(services.POSTGRES_URL, autocommit=True)
    try:
        await apply_migrations(conn, first, schema=b.schema, jobs_channel=b.jobs_channel, sql=b._sql)
        await conn.execute(
            b._sql(
                """INSERT INTO {jobs} (id, topic, status, priority, run_at, created_at, updated_at, finished_at)
                SELECT 'old-' || g, 'u' || (g % 4), CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'completed' END,
                       g % 3, now() - interval '1 second', now(), now(),
                       CASE WHEN g % 2 = 1 THEN now() END
                FROM generate_series(1, 1000) AS g"""
            )
        )
    finally:
        await conn.close()
    before = _count_rows(pg_url)
    try:
        await b.connect()  # applies the later migrations
        assert _count_rows(pg_url) == before
        assert _stats_rows(await b.stats()) == before
        t = now()
        claimed = await b.claim(
            worker_id="w", topics=["u0", "u1", "u2", "u3"], limit=1000, now=t, locked_until=t + timedelta(seconds=9)
        )
        assert len(claimed) == 500
        assert all(j.status is JobStatus.PROCESSING for j in claimed)
        assert (await b.stats()).by_status["processing"] == 500
    finally:
        await b.close()


# The bench's shape (bench_backlog.py): 10 topics of one priority, half the jobs due.
WIDE = 300_000
FILL_WIDE = """
INSERT INTO {jobs} (id, topic, status, priority, run_at, created_at, updated_at)
SELECT 'wide-' || lpad(g::text, 7, '0'), 'w' || (g %% 10), 'pending', 0,
       CASE WHEN g %% 2 = 0 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END, now(), now()
FROM generate_series(1, %s) AS g
"""


def test_an_analyzed_claim_over_many_due_jobs_updates_the_picked_rows_by_id() -> None:
    # With statistics, LIMIT quota was estimated at a tenth of each group's due rows: the
    # planner hashed the whole table to update the 10 picked rows (~500 ms a claim at
    # 1,000,000 jobs). Migration 0010 updates them through id = ANY(ARRAY(...)).
    services.check_postgres()
    url, schema = services.new_postgres_url()
    backend = PostgresBackend(url)
    try:
        asyncio.run(backend.migrate())
        with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
            conn.execute(backend._sql(FILL_WIDE), [WIDE])
            conn.execute(backend._sql("ANALYZE {jobs}"))
        claim = {"topics": [f"w{i}" for i in range(10)], "limit": LIMIT, "worker_id": "w", "locked_until": now()}
        params = {
            "channel": "c",
            "events": [],
            "async_ack": True,
            "now": now(),
            "outcomes": "[]",
            **claim,
        }
        nodes = explain(backend, "take_work", params)
        assert_served_by_indexes(nodes, max_rows_read=10 * 3 * LIMIT + 2 * 10 + 2 * LIMIT)
    finally:
        services.drop_postgres_schema(schema)


async def test_a_connection_plans_the_claim_once_not_once_per_claim(pg_url: str) -> None:
    # Migration 0011: claim_jobs() takes generic plans (kept on the indexes by its
    # settings, see the tests above); before, its walk of the groups was planned for
    # every claim. log_planner_stats reports each planning to the client: per round trip
    # only the statement sent is planned (never prepared here).
    backend = PostgresBackend(pg_url)
    await backend.connect()
    try:
        t = now()
        jobs = [build_job(topic, {}, now=t, defaults=JobDefaults()) for topic in ("a", "b") for _ in range(60)]
        await backend.enqueue(jobs)
    finally:
        await backend.close()
    plannings: list[int] = []
    with psycopg.connect(services.POSTGRES_URL, autocommit=True, prepare_threshold=None, row_factory=dict_row) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("SET client_min_messages = log")
        conn.execute("SET log_planner_stats = on")
        claimed: list[tuple[str, int]] = []
        for i in range(12):
            t = now()
            params = {
                "channel": "c",
                "events": [],
                "async_ack": False,
                "now": t,
                "outcomes": completions(claimed),
                # One topic (the one-group path), then both (several groups).
                "topics": ["a"] if i % 2 else ["a", "b"],
                "limit": 5,
                "worker_id": "w",
                "locked_until": t + timedelta(seconds=30),
            }
            notices.clear()
            rows = conn.execute(backend._sql("take_work"), params).fetchall()
            plannings.append(sum("PLANNER STATISTICS" in n for n in notices))
            claimed = [(row["id"], row["attempts"]) for row in rows if row["claimed"]]
            assert len(claimed) == 5
    # Any statement runs with custom plans 5 times before its plan cache may settle on
    # a generic one (the acknowledgement's UPDATE does): the last rounds show the rest.
    assert plannings[-4:] == [1] * 4, plannings
