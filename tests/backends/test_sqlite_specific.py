"""SQLite-only behaviour: migrations, WAL, lock contention between processes,
transactional enqueue, cross-process wake-ups and events, exactly-once claims."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.memory import MemoryBackend
from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._setup import migrations as _migrations
from conveyor.backends.sqlite._setup import split_statements
from conveyor.backends.sqlite._statements import apply_migrations
from conveyor.backends.sqlite.backend import SqliteBackend
from conveyor.core import operation
from conveyor.core.errors import BackendUnavailable, ConfigurationError, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.options import JobDefaults, build_job

pytestmark = pytest.mark.slow

CTX = mp.get_context("spawn")


def _job(topic: str = "t", payload: Any = None, **options: Any) -> Job:
    return build_job(topic, payload, now=datetime.now(UTC), defaults=JobDefaults(), **options)


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "conveyor.db"


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(_url(db_path))
    await b.connect()
    yield b
    await b.close()


# -- helpers run in child processes (module level: picklable under spawn) ---------------------


def _child_migrate(url: str, start: Any, out: Any) -> None:
    async def main() -> int:
        b = SqliteBackend(url)
        start.wait()
        try:
            return await b.migrate()  # opens the store, like `conveyor migrate`
        finally:
            await b.close()

    try:
        out.put(("ok", asyncio.run(main())))
    except Exception as exc:
        out.put(("error", repr(exc)))


def _child_hold_write_lock(path: str, ready: Any, seconds: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE schedules SET enabled = enabled")
    ready.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def _child_enqueue(url: str, go: Any, topic: str) -> None:
    async def main() -> None:
        b = SqliteBackend(url)
        await b.connect()
        go.wait()
        await b.enqueue([_job(topic)])
        await b.close()

    asyncio.run(main())


def _child_publish(url: str, go: Any) -> None:
    async def main() -> None:
        b = SqliteBackend(url)
        await b.connect()
        go.wait()
        now = datetime.now(UTC)
        await b.publish([Event("job.scheduled", f"job-{i}", "t", "pending", now) for i in range(3)])
        await b.close()

    asyncio.run(main())


def _child_claim(url: str, start: Any, out: Any, worker: str) -> None:
    async def main() -> list[str]:
        b = SqliteBackend(url)
        await b.connect()
        start.wait()
        got: list[str] = []
        try:
            while True:
                now = datetime.now(UTC)
                jobs = await b.claim(
                    worker_id=worker, topics=["t"], limit=7, now=now, locked_until=now + timedelta(minutes=5)
                )
                if not jobs:
                    return got
                got += [j.id for j in jobs]
        finally:
            await b.close()

    try:
        out.put((worker, asyncio.run(main())))
    except Exception as exc:
        out.put((worker, repr(exc)))


def _start(target: Any, *args: Any) -> Any:
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    return p


# -- URL and set-up -------------------------------------------------------------------------------


def test_url_forms_map_to_relative_and_absolute_paths() -> None:
    assert SqliteBackend("sqlite:///rel/x.db")._path == "rel/x.db"
    assert SqliteBackend("sqlite:////abs/x.db")._path == "/abs/x.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(ConfigurationError):
            SqliteBackend(bad)
    with pytest.raises(ConfigurationError):
        SqliteBackend("sqlite:///x.db", synchronous="sometimes")
    with pytest.raises(ConfigurationError):
        SqliteBackend("sqlite:///x.db?lock_wait=soon")


async def test_url_options_set_synchronous(tmp_path: Path) -> None:
    b = SqliteBackend(_url(tmp_path / "x.db") + "?synchronous=full")
    await b.connect()
    try:
        assert b._db is not None
        assert b._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        await b.close()


async def test_connect_turns_on_wal_and_applies_every_migration(backend: SqliteBackend, db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        db.close()
    assert versions == [v for v, _, _ in _migrations()]
    assert backend._db is not None
    assert backend._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


async def test_migrate_is_idempotent(backend: SqliteBackend) -> None:
    assert await backend.migrate() == 0
    assert await backend.migrate() == 0


async def test_migration_3_adds_errors_and_snoozes_to_existing_jobs(db_path: Path) -> None:
    # A store at version 2 with a job in it, upgraded in place: the job is kept and
    # reads with an empty error history, no snoozes and the default cap.
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        apply_migrations(db, [m for m in _migrations() if m[0] <= 2])
        db.execute(
            "INSERT INTO jobs (id, topic, payload, status, run_at, max_retries, retry_delay, backoff, metadata, "
            "created_at, updated_at, last_error) VALUES ('old-job', 't', '{\"n\": 1}', 'failed', 1, 3, 60.0, "
            "'quadratic', '{}', 1, 1, 'boom')"
        )
        db.execute("COMMIT")
    finally:
        db.close()
    b = SqliteBackend(_url(db_path))
    try:
        await b.connect()
        job = await b.get("old-job")
        assert job is not None and (job.payload, job.status, job.last_error) == ({"n": 1}, JobStatus.FAILED, "boom")
        assert (job.errors, job.snoozes, job.max_snoozes) == ([], 0, 100)
        again = await b.apply(operation.requeue("old-job", datetime.now(UTC)), now=datetime.now(UTC))
        assert again.status is JobStatus.PENDING and again.errors == []
    finally:
        await b.close()


async def test_unreachable_file_raises_backend_unavailable(tmp_path: Path) -> None:
    b = SqliteBackend(_url(tmp_path / "missing-dir" / "x.db"))
    with pytest.raises(BackendUnavailable):
        await b.connect()
    await b.close()


async def test_ping_answers(backend: SqliteBackend) -> None:
    await backend.ping()


def test_migrations_are_safe_when_several_processes_start_at_once(db_path: Path) -> None:
    start, out = CTX.Event(), CTX.Queue()
    procs = [_start(_child_migrate, _url(db_path), start, out) for _ in range(4)]
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(kind == "ok" for kind, _ in results), results
    # Exactly one process applied the migrations; the others found them applied.
    assert sorted(n for _, n in results) == [0, 0, 0, len(_migrations())]


# -- busy handling ----------------------------------------------------------------------------------


async def test_writes_wait_out_another_process_holding_the_lock(backend: SqliteBackend, db_path: Path) -> None:
    ready = CTX.Event()
    p = _start(_child_hold_write_lock, str(db_path), ready, 0.5)
    try:
        assert ready.wait(30)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        [stored] = await backend.enqueue([_job()])
        waited = time.monotonic() - t0
        task.cancel()
        assert await backend.get(stored.id) is not None
        assert waited > 0.2  # it really waited for the other process...
        assert ticks > waited / 0.01 / 3  # ...without blocking the event loop
    finally:
        p.join(30)


async def test_a_lock_held_too_long_becomes_backend_unavailable(db_path: Path) -> None:
    b = SqliteBackend(_url(db_path), lock_wait=0.2)
    await b.connect()
    ready = CTX.Event()
    p = _start(_child_hold_write_lock, str(db_path), ready, 1.5)
    try:
        assert ready.wait(30)
        with pytest.raises(BackendUnavailable, match="locked"):
            await b.enqueue([_job()])
    finally:
        p.join(30)
        await b.close()


async def test_an_idle_claim_never_takes_the_write_lock(db_path: Path) -> None:
    # Only delayed jobs: the claim's read-only "anything due?" check answers without
    # waiting for the lock another process holds (lock_wait would otherwise expire).
    b = SqliteBackend(_url(db_path), lock_wait=0.2)
    await b.connect()
    later = datetime.now(UTC) + timedelta(hours=1)
    await b.enqueue([_job(run_at=later) for _ in range(50)])
    ready = CTX.Event()
    p = _start(_child_hold_write_lock, str(db_path), ready, 1.5)
    try:
        assert ready.wait(30)
        now = datetime.now(UTC)
        t0 = time.monotonic()
        claimed = await b.claim(
            worker_id="w", topics=["t", "u"], limit=10, now=now, locked_until=now + timedelta(seconds=30)
        )
        assert claimed == []
        assert await b.next_run_at(topics=["t", "u"]) == min(j.run_at for j in await _all(b))
        assert time.monotonic() - t0 < 0.15
    finally:
        p.join(30)
        await b.close()


async def _all(b: SqliteBackend) -> list[Job]:
    return (await b.list_jobs(limit=1000)).items


def test_a_store_at_migration_1_is_upgraded_in_place(db_path: Path) -> None:
    # Users may have 0001 applied: later migrations apply on top, keeping the jobs.
    first = _migrations()[0]
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute(q.CREATE_MIGRATIONS_TABLE)
    for statement in split_statements(first[2]):
        db.execute(statement)
    db.execute(q.RECORD_MIGRATION, (first[0], first[1], 0))
    db.close()

    async def main() -> None:
        b = SqliteBackend(_url(db_path))
        try:
            assert await b.migrate() == len(_migrations()) - 1
            [job] = await b.enqueue([_job(run_at=datetime.now(UTC) - timedelta(seconds=1))])
            now = datetime.now(UTC)
            claimed = await b.claim(worker_id="w", topics=["t"], limit=5, now=now, locked_until=now)
            assert [j.id for j in claimed] == [job.id]
        finally:
            await b.close()

    asyncio.run(main())


# -- transactional enqueue ----------------------------------------------------------------------------


async def test_transactional_enqueue_is_visible_only_after_commit(backend: SqliteBackend, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO orders (id) VALUES (1)")
        [job] = await backend.enqueue([_job(payload={"order": 1})], connection=conn)
        assert await backend.get(job.id) is None  # not committed yet
        conn.commit()
        stored = await backend.get(job.id)
        assert stored is not None and stored.payload == {"order": 1}
    finally:
        conn.close()


async def test_transactional_enqueue_s_event_is_delivered_on_commit_only(db_path: Path) -> None:
    from conveyor.client import AsyncConveyor

    app = AsyncConveyor(_url(db_path))
    conn = sqlite3.connect(db_path)
    try:
        events = await app.subscribe()
        gone = await app.enqueue("t", {"n": 1}, connection=conn)
        conn.rollback()
        kept = await app.enqueue("t", {"n": 2}, connection=conn)
        conn.commit()
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.type, event.job_id) == ("job.scheduled", kept.id)
        assert gone.id != kept.id
        with pytest.raises(TimeoutError):  # nothing for the rolled-back job
            await asyncio.wait_for(anext(events), 0.3)
    finally:
        conn.close()
        await app.close()


async def test_transactional_enqueue_with_unique_keys_announces_the_stored_jobs_on_commit(db_path: Path) -> None:
    from conveyor.client import AsyncConveyor

    app = AsyncConveyor(_url(db_path))
    conn = sqlite3.connect(db_path)
    try:
        events = await app.subscribe()
        first = await app.enqueue("t", {"n": 1}, unique_key="k", connection=conn)
        same = await app.enqueue("t", {"n": 2}, unique_key="k", connection=conn)
        assert same.id == first.id
        conn.commit()
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.type, event.job_id) == ("job.scheduled", first.id)
        with pytest.raises(TimeoutError):  # one job stored, one event
            await asyncio.wait_for(anext(events), 0.3)
    finally:
        conn.close()
        await app.close()


async def test_transactional_enqueue_rolls_back_with_the_caller(backend: SqliteBackend, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        [job] = await backend.enqueue([_job()], connection=conn)  # opens the transaction itself
        conn.rollback()
        assert await backend.get(job.id) is None
    finally:
        conn.close()


async def test_transactional_enqueue_in_autocommit_mode_commits_the_batch(
    backend: SqliteBackend, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        jobs = await backend.enqueue([_job(), _job()], connection=conn)
        assert not conn.in_transaction
        assert all([await backend.get(j.id) for j in jobs])
    finally:
        conn.close()


async def test_transactional_enqueue_rejects_another_database(backend: SqliteBackend, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.db")
    try:
        with pytest.raises(ValidationError, match="connection"):
            await backend.enqueue([_job()], connection=conn)
        with pytest.raises(ValidationError, match="connection"):
            await backend.enqueue([_job()], connection=object())
    finally:
        conn.close()


async def test_transactional_enqueue_deduplicates_unique_keys(backend: SqliteBackend, db_path: Path) -> None:
    [first] = await backend.enqueue([_job(unique_key="k")])
    conn = sqlite3.connect(db_path)
    try:
        [again] = await backend.enqueue([_job(unique_key="k")], connection=conn)
        conn.commit()
    finally:
        conn.close()
    assert again.id == first.id


# -- wake-ups and events across processes ---------------------------------------------------------------


async def test_enqueue_in_another_process_wakes_a_waiting_worker(backend: SqliteBackend) -> None:
    await backend.wait_for_jobs(0)  # consume the wake-up of our own connect
    go = CTX.Event()
    p = _start(_child_enqueue, backend.url, go, "t")
    try:
        await asyncio.sleep(0.5)  # let the child connect (its migration check is a commit-free read)
        await backend.wait_for_jobs(0)
        waiter = asyncio.create_task(backend.wait_for_jobs(20))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        go.set()
        assert await waiter is True
        assert time.monotonic() - t0 < 5
        now = datetime.now(UTC)
        claimed = await backend.claim(
            worker_id="w", topics=["t"], limit=5, now=now + timedelta(seconds=1), locked_until=now
        )
        assert len(claimed) == 1
    finally:
        p.join(30)


async def test_wait_for_jobs_times_out_without_writes(backend: SqliteBackend) -> None:
    await backend.wait_for_jobs(0)
    assert await backend.wait_for_jobs(0.1) is False


async def test_events_published_by_another_process_reach_subscribers(backend: SqliteBackend) -> None:
    await backend.publish([Event("job.started", "before", "t", "processing", datetime.now(UTC))])
    events = await backend.subscribe()
    go = CTX.Event()
    p = _start(_child_publish, backend.url, go)
    try:
        go.set()
        got = [await asyncio.wait_for(events.__anext__(), 20) for _ in range(3)]
        assert [e.job_id for e in got] == ["job-0", "job-1", "job-2"]  # not "before": published earlier
        assert all(e.type == "job.scheduled" for e in got)
    finally:
        p.join(30)
        await events.aclose()  # type: ignore[attr-defined]


async def test_subscribers_end_when_the_backend_closes(db_path: Path) -> None:
    b = SqliteBackend(_url(db_path))
    await b.connect()
    events = await b.subscribe()
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.01)
    await b.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


async def test_old_events_are_pruned_but_ids_never_go_back(backend: SqliteBackend) -> None:
    from conveyor.backends.sqlite import _events as module

    now = datetime.now(UTC)
    await backend.publish([Event("job.started", str(i), "t", "processing", now) for i in range(5)])
    assert backend._db is not None
    backend._db.execute("UPDATE events SET created_at = 0")  # make them ancient
    backend._events_pruned_at = 0.0
    last = await backend._last_event_id()
    await backend.publish([Event("job.started", "new", "t", "processing", now)])
    rows = backend._db.execute("SELECT id FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [last + 1]
    assert module.EVENTS_KEEP_ROWS > 0


async def test_a_backlog_of_old_events_is_pruned_a_bounded_batch_per_write(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bulk import leaves as many event rows as jobs: one statement deleting them all
    # stalled the writer and kept tens of MB in the worker's RSS.
    from conveyor.backends.sqlite import _events

    monkeypatch.setattr(_events, "EVENTS_PRUNE_BATCH", 10)
    now = datetime.now(UTC)
    await backend.publish([Event("job.scheduled", str(i), "t", "pending", now) for i in range(50)])
    assert backend._db is not None
    backend._db.execute("UPDATE events SET created_at = 0")
    backend._events_pruned_at = 0.0
    left = []
    for i in range(5):
        await backend.publish([Event("job.started", f"new-{i}", "t", "processing", now)])
        left.append(backend._db.execute("SELECT count(*) FROM events WHERE created_at = 0").fetchone()[0])
    # 12 per write (10 + twice the row appended), each prune due at once while one is full.
    assert left == [38, 26, 14, 2, 0]
    assert time.time() - backend._events_pruned_at < _events.EVENTS_PRUNE_EVERY
    newest = backend._db.execute("SELECT count(*) FROM events WHERE created_at > 0").fetchone()[0]
    assert newest == 5


async def test_a_prune_reads_its_batch_not_the_whole_table_of_old_events(backend: SqliteBackend) -> None:
    # Every row older than the window: looking for the first recent row must stop at
    # the batch's end, or each of the many writes trimming a big table reads all of it.
    assert backend._db is not None
    db = backend._db
    now = datetime.now(UTC)
    steps = []
    for rows in (1_000, 20_000):
        await backend.publish([Event("job.scheduled", str(i), "t", "pending", now) for i in range(rows)])
        db.execute("UPDATE events SET created_at = 0")
        backend._events_pruned_at = 0.0
        ticks = 0

        def tick() -> int:
            nonlocal ticks
            ticks += 1
            return 0

        db.set_progress_handler(tick, 100)
        try:
            await backend.publish([Event("job.started", "new", "t", "processing", now)])
        finally:
            db.set_progress_handler(None, 0)
        steps.append(ticks)
        db.execute("DELETE FROM events WHERE id < (SELECT max(id) FROM events)")
    assert steps[1] <= 2 * steps[0] + 10, steps


# -- claims across processes --------------------------------------------------------------------------------


async def test_four_processes_claiming_from_one_file_never_share_a_job(backend: SqliteBackend) -> None:
    stored = await backend.enqueue([_job() for _ in range(400)])
    start, out = CTX.Event(), CTX.Queue()
    procs = [_start(_child_claim, backend.url, start, out, f"w{i}") for i in range(4)]
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert all(isinstance(ids, list) for ids in results.values()), results
    claimed = [job_id for ids in results.values() for job_id in ids]
    assert len(claimed) == len(set(claimed)) == 400
    assert set(claimed) == {j.id for j in stored}
    for job_id in claimed[:20]:
        job = await backend.get(job_id)
        assert job is not None and job.attempts == 1 and job.status.value == "processing"


# -- finish: the same stored outcome as the reference backend ------------------------------------------


async def test_finish_matches_the_memory_backend_outcome_for_outcome(backend: SqliteBackend) -> None:
    # finish() works out the new rows in Python from one read of the batch: check every
    # kind of outcome, a stale fence and a job listed twice against memory://.
    memory = MemoryBackend()
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    jobs = [_job(payload={"i": i}, metadata={"m": i}) for i in range(9)]
    jobs = [dataclasses.replace(j, run_at=t0, created_at=t0, updated_at=t0) for j in jobs]
    results: dict[str, list[Job | None]] = {}
    for name, b in (("sqlite", backend), ("memory", memory)):
        await b.enqueue(jobs)
        now = t0 + timedelta(seconds=1)
        claimed = await b.claim(worker_id="w", topics=["t"], limit=20, now=now, locked_until=now + timedelta(minutes=1))
        assert len(claimed) == 9
        for i in (4, 5):  # cancellation requested while running
            await b.apply(operation.request_cancel(jobs[i].id), now=now)
        later = now + timedelta(seconds=2)
        outcomes = [
            Outcome(jobs[0].id, "w", 1, JobStatus.COMPLETED, result=(1, "two", {"x": None})),
            Outcome(jobs[1].id, "w", 1, JobStatus.COMPLETED),
            Outcome(jobs[2].id, "w", 1, JobStatus.FAILED, last_error="boom"),
            Outcome(jobs[3].id, "w", 1, JobStatus.PENDING, run_at=later + timedelta(minutes=5)),
            Outcome(jobs[4].id, "w", 1, JobStatus.PENDING, refund_attempt=True, last_error="snoozed"),
            Outcome(jobs[5].id, "w", 1, JobStatus.FAILED, last_error="cancelled while running"),
            Outcome(jobs[6].id, "w", 1, JobStatus.PENDING, refund_attempt=True),
            Outcome(jobs[7].id, "other", 1, JobStatus.COMPLETED),  # fence: another worker
            Outcome(jobs[8].id, "w", 2, JobStatus.COMPLETED),  # fence: another attempt
            Outcome(jobs[0].id, "w", 1, JobStatus.FAILED, last_error="twice"),  # already finished above
            Outcome(jobs[6].id, "w", 0, JobStatus.COMPLETED),  # refunded above: attempts 0 now, not processing
            Outcome("no-such-job", "w", 1, JobStatus.COMPLETED),
        ]
        results[name] = await b.finish(outcomes, now=later)
        results[name + "-stored"] = [await b.get(j.id) for j in jobs]
    assert results["sqlite"] == results["memory"]
    assert results["sqlite-stored"] == results["memory-stored"]
    assert [j is None for j in results["sqlite"]] == [False] * 7 + [True] * 5


async def test_event_rows_are_exactly_event_encode(backend: SqliteBackend) -> None:
    stamps = [
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2030, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
        datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2030, 1, 1, 1, 2, 3, 400000),
    ]
    events = [
        Event("job.x", f"id{i}", "t", "pending", ts, {"a": [1, 2.5, None]}, {"n": i}) for i, ts in enumerate(stamps)
    ]
    await backend.publish(events)
    assert backend._db is not None
    bodies = [r[0] for r in backend._db.execute("SELECT body FROM events ORDER BY id")]
    assert bodies == [e.encode() for e in events]
    assert [Event.decode(b) for b in bodies] == events
