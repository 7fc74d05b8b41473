"""SQLite under a backlog: every query of the worker's path, listing and stats read in
index order (EXPLAIN QUERY PLAN), their cost does not grow with the number of jobs
(counted in SQLite VM steps, not time), the maintained counts stay exact, and an
existing store is upgraded in place."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._setup import migrations as _migrations
from conveyor.backends.sqlite._setup import split_statements
from conveyor.backends.sqlite.backend import SqliteBackend
from conveyor.core import lifecycle, operation
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import JobDefaults, build_job

pytestmark = pytest.mark.slow

TOPICS = [f"t{i}" for i in range(10)]


def _jobs(n: int, *, start: int = 0, now: datetime | None = None) -> list[Job]:
    """Half due, half delayed an hour, over 10 topics, three priorities."""
    t = now or datetime.now(UTC)
    return [
        build_job(
            TOPICS[i % 10],
            {"i": i},
            now=t,
            defaults=JobDefaults(),
            priority=(i // 10) % 3,
            run_at=t + timedelta(hours=1) if i % 2 else t - timedelta(seconds=1),
        )
        for i in range(start, start + n)
    ]


async def _fill(b: SqliteBackend, n: int) -> None:
    for start in range(0, n, 5000):
        await b.enqueue(_jobs(min(5000, n - start), start=start))


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(f"sqlite:///{tmp_path / 'backlog.db'}")
    await b.connect()
    yield b
    await b.close()


def _raw(b: SqliteBackend) -> sqlite3.Connection:
    assert b._db is not None
    return b._db


# -- query plans ----------------------------------------------------------------------------


def _statements() -> dict[str, str]:
    """Every statement of the worker's path, of listing and of stats."""
    out = {
        "claim_levels": q.CLAIM_LEVELS,
        "claim_1_level": q.claim_jobs(1),
        "claim_30_levels": q.claim_jobs(30),
        "heartbeat": q.HEARTBEAT,
        "finish_read": q.FINISH_READ,
        "finish": q.FINISH_JOB,
        "expired": q.EXPIRED_JOBS,
        "prune": q.PRUNE_JOBS,
        "stats": q.STATS,
        "get": q.GET_JOB,
        "enqueue_unique_holder": q.GET_ACTIVE_BY_UNIQUE_KEY,
    }
    for by_status in (False, True):
        for by_topic in (False, True):
            for cursor in (None, "after", "before"):
                count, page, beyond, _ = q.list_jobs(by_status=by_status, by_topic=by_topic, cursor=cursor)
                name = f"list status={by_status} topic={by_topic} cursor={cursor}"
                out[f"{name} count"] = count
                out[f"{name} page"] = page
                if beyond is not None:
                    out[f"{name} beyond"] = beyond
    return out


# A full scan of the jobs table (under the names the statements give it). Scans of the
# topics' JSON array, of the claim's priority levels (a row per level) or of job_counts
# (a row per topic and status) are not scans of the backlog.
_BACKLOG_SCAN = re.compile(r"^SCAN (jobs|j)( |$)")


def _plan(db: sqlite3.Connection, sql: str) -> list[str]:
    params = [None] * sql.count("?")
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
async def test_every_backlog_query_reads_in_index_order(backend: SqliteBackend, analyzed: bool) -> None:
    await _fill(backend, 3000)
    db = _raw(backend)
    if analyzed:  # statistics must not turn a seek into a scan either
        db.execute("ANALYZE")
    for name, sql in _statements().items():
        plan = _plan(db, sql)
        assert not [line for line in plan if "TEMP B-TREE" in line], (name, plan)
        scans = [line for line in plan if _BACKLOG_SCAN.match(line)]
        if name == "list status=False topic=False cursor=None page":
            # The unfiltered first page walks the primary key from its end and stops
            # after LIMIT (+ OFFSET) rows: a scan in index order, not of the backlog.
            assert scans == ["SCAN jobs USING INDEX sqlite_autoindex_jobs_1"], plan
            continue
        assert not scans, (name, plan)


async def test_the_claim_merges_priority_levels_without_sorting(backend: SqliteBackend) -> None:
    plan = _plan(_raw(backend), q.claim_jobs(3))
    assert any("MERGE (UNION ALL)" in line for line in plan), plan
    assert all("jobs_claim" in line for line in plan if line.startswith("SEARCH jobs USING") and "id=?" not in line)


# -- cost does not grow with the backlog -------------------------------------------------------


async def _steps(db: sqlite3.Connection, call: Callable[[], Awaitable[Any]]) -> int:
    """SQLite VM instructions (in hundreds) that ``call`` runs on ``db``."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    db.set_progress_handler(tick, 100)
    try:
        await call()
    finally:
        db.set_progress_handler(None, 0)
    return count


async def _costs(b: SqliteBackend) -> dict[str, int]:
    db = _raw(b)
    now = datetime.now(UTC)
    first = (await b.list_jobs(limit=1)).items[0].id
    deep = (await b.list_jobs(limit=1, offset=(await b.list_jobs()).total // 2)).items[0].id
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "stats": b.stats,
        "list": lambda: b.list_jobs(limit=50),
        "list_status": lambda: b.list_jobs(status=JobStatus.PENDING, limit=50),
        "list_topic": lambda: b.list_jobs(topic="t3", limit=50),
        "list_status_topic": lambda: b.list_jobs(status=JobStatus.COMPLETED, topic="t3", limit=50),
        "keyset_deep": lambda: b.list_jobs(limit=50, after=deep),
        "keyset_deep_topic": lambda: b.list_jobs(topic="t3", limit=50, before=deep),
        "get": lambda: b.get(first),
        "next_run_at": lambda: b.next_run_at(topics=TOPICS),
        "claim": lambda: b.claim(worker_id="w", topics=TOPICS, limit=10, now=now, locked_until=now),
        "expired": lambda: b.expired(now=now, limit=100),
        "prune": lambda: b.prune(finished_before=now - timedelta(days=1), limit=100),
    }
    return {name: await _steps(db, call) for name, call in calls.items()}


async def test_costs_do_not_grow_with_the_backlog(backend: SqliteBackend) -> None:
    await _fill(backend, 2_000)
    small = await _costs(backend)
    await _fill(backend, 38_000)
    large = await _costs(backend)
    for name, steps in small.items():
        # B-tree depth may add a level; a scan of 20x the jobs would not fit this bound.
        assert large[name] <= 2 * steps + 10, (name, small, large)


async def test_a_claim_skips_delayed_higher_priorities_across_100_topics(backend: SqliteBackend) -> None:
    now = datetime.now(UTC)
    topics = [f"topic-{i}" for i in range(100)]
    later = now + timedelta(hours=1)
    delayed = [build_job(t, None, now=now, defaults=JobDefaults(), priority=9, run_at=later) for t in topics]
    due = [
        build_job(t, i, now=now, defaults=JobDefaults(), priority=i % 4, run_at=now - timedelta(seconds=i))
        for i, t in enumerate(topics)
    ]
    await backend.enqueue(delayed + due)
    for _ in range(30):  # many delayed jobs at the top priority of every topic
        await backend.enqueue(
            [build_job(t, None, now=now, defaults=JobDefaults(), priority=9, run_at=later) for t in topics]
        )
    claimed = await backend.claim(worker_id="w", topics=topics, limit=30, now=now, locked_until=later)
    best = sorted(due, key=lambda j: (-j.priority, j.run_at, j.id))[:30]
    assert [j.id for j in claimed] == [j.id for j in best]
    left = [j for j in due if j not in best]
    assert await backend.next_run_at(topics=topics) == min(j.run_at for j in left)


# -- counts ----------------------------------------------------------------------------------


def _counted(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = db.execute("SELECT status, topic, count(*) FROM jobs GROUP BY status, topic").fetchall()
    return {(s, t): n for s, t, n in rows}


async def _stats(b: SqliteBackend) -> dict[tuple[str, str], int]:
    s = await b.stats()
    return {(status, topic): n for topic, counts in s.by_topic.items() for status, n in counts.items()}


async def test_counts_follow_every_change_and_rolled_back_ones_do_not_count(
    backend: SqliteBackend, tmp_path: Path
) -> None:
    await _fill(backend, 200)
    now = datetime.now(UTC)
    claimed = await backend.claim(worker_id="w", topics=TOPICS, limit=40, now=now, locked_until=now)
    await backend.finish([lifecycle.completed(j, "w", None) for j in claimed[:10]], now=now)
    await backend.finish([lifecycle.failed(j, "w", "x", now, permanent=True) for j in claimed[10:20]], now=now)
    pending = (await backend.list_jobs(status=JobStatus.PENDING, limit=5)).items
    await backend.apply_many([operation.delete(job.id) for job in pending[:3]], now=now)
    await backend.prune(finished_before=now + timedelta(seconds=1), limit=5)
    conn = sqlite3.connect(tmp_path / "backlog.db")
    try:
        await backend.enqueue(_jobs(7, start=1000), connection=conn)
        conn.rollback()
    finally:
        conn.close()
    assert await _stats(backend) == _counted(_raw(backend))
    page = await backend.list_jobs(topic="t1", limit=1)
    assert page.total == sum(n for (_, t), n in _counted(_raw(backend)).items() if t == "t1")


def _child_worker(url: str, rounds: int) -> None:
    async def main() -> None:
        b = SqliteBackend(url)
        try:
            for _ in range(rounds):
                now = datetime.now(UTC)
                jobs = await b.claim(worker_id="w", topics=TOPICS, limit=5, now=now, locked_until=now)
                await b.finish([lifecycle.completed(j, "w", None) for j in jobs], now=now)
                await b.enqueue(_jobs(3, start=5000))
        finally:
            await b.close()

    asyncio.run(main())


async def test_counts_stay_exact_under_concurrent_worker_processes(backend: SqliteBackend, tmp_path: Path) -> None:
    import multiprocessing as mp

    await _fill(backend, 400)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child_worker, args=(backend.url, 30)) for _ in range(3)]
    for p in procs:
        p.start()
    killed = ctx.Process(target=_child_worker, args=(backend.url, 10_000))
    killed.start()
    await asyncio.sleep(1.0)
    killed.kill()  # a crash mid-work: its open transaction rolls back with its counts
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    killed.join(10)
    assert await _stats(backend) == _counted(_raw(backend))


# -- upgrading an existing store ---------------------------------------------------------------


def test_a_store_of_the_previous_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade = next(v for v, name, _ in _migrations() if name.endswith("_backlog"))
    url = f"sqlite:///{path}"

    async def seed() -> dict[tuple[str, str], int]:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(q.CREATE_MIGRATIONS_TABLE)
        for version, name, sql in _migrations():
            # The job columns of a later migration too: the seed inserts with today's code.
            if version < upgrade or name.endswith("_errors_snoozes"):
                for statement in split_statements(sql):
                    db.execute(statement)
                db.execute(q.RECORD_MIGRATION, (version, name, 0))
        db.close()
        old = SqliteBackend(url)
        # Inserts straight into the old schema: the backend would run every migration.
        old._migrate_now = _no_migrations  # type: ignore[method-assign]
        try:
            await old.connect()
            await _fill(old, 1000)
            now = datetime.now(UTC)
            claimed = await old.claim(worker_id="w", topics=TOPICS, limit=30, now=now, locked_until=now)
            await old.finish([lifecycle.completed(j, "w", None) for j in claimed[:20]], now=now)
            return _counted(_raw(old))
        finally:
            await old.close()

    async def upgraded(before: dict[tuple[str, str], int]) -> None:
        b = SqliteBackend(url)
        try:
            await b.connect()
            db = _raw(b)
            assert _counted(db) == before  # every job kept
            assert await _stats(b) == before
            now = datetime.now(UTC)
            claimed = await b.claim(worker_id="w", topics=TOPICS, limit=10, now=now, locked_until=now)
            assert len(claimed) == 10 and all(j.run_at <= now for j in claimed)
            assert await _stats(b) == _counted(db)
        finally:
            await b.close()

    asyncio.run(upgraded(asyncio.run(seed())))


async def _no_migrations() -> int:
    return 0
