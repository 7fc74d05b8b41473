"""PostgreSQL-only behaviour: migrations, SKIP LOCKED claims, transactional enqueue,
LISTEN/NOTIFY across processes, schema isolation, reconnection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conveyor.backends import open_backend
from conveyor.backends.postgres import queries as q
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.rows import channel_name, load_migrations, pool_options, split_url
from conveyor.client import AsyncConveyor
from conveyor.core import lifecycle
from conveyor.core.errors import BackendUnavailable, ConfigurationError, DuplicateJob, JobNotFound
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import JobDefaults, build_job
from conveyor.sync import Conveyor
from tests import services

W = "worker-a"


def now() -> datetime:
    return datetime.now(UTC)


def new_job(topic: str = "t", **options: object) -> Job:
    return build_job(topic, {"n": 1}, now=now(), defaults=JobDefaults(), **options)  # type: ignore[arg-type]


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[PostgresBackend]:
    b = PostgresBackend(pg_url)
    await b.connect()
    yield b
    await b.close()


async def listening(b: PostgresBackend) -> None:
    """Start ``b``'s LISTEN connection as an idle worker does (its first wait), wait until
    it listens, and use up the wake-up it gives once it does."""
    await b.wait_for_jobs(0)
    assert b._listening is not None
    await asyncio.wait_for(b._listening.wait(), 10)
    await b.wait_for_jobs(0)


async def claim(b: PostgresBackend, limit: int = 10, worker: str = W) -> list[Job]:
    t = now()
    return await b.claim(worker_id=worker, topics=["t"], limit=limit, now=t, locked_until=t + timedelta(seconds=30))


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


# -- URL and naming ------------------------------------------------------------------


def test_url_schema_parameter_is_stripped_and_postgres_scheme_accepted() -> None:
    conninfo, schema = split_url("postgres://u@h:5433/db?schema=app&sslmode=disable")
    assert schema == "app"
    assert conninfo == "postgresql://u@h:5433/db?sslmode=disable"
    b = open_backend("postgres://u@h/db?schema=app")
    assert isinstance(b, PostgresBackend)
    assert b.schema == "app"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://app:s3cret@127.0.0.1:5432/db?bogus=1", "invalid URI query parameter"),
        ("postgresql://app:s3cret@127.0.0.1/db?password=s3cret&bogus=1", "invalid URI query parameter"),
        ("postgres://app:s3cret@127.0.0.1:notaport/db", "port 'notaport' is not a number"),
        ("postgresql://app:s3cret@127.0.0.1:0/db", "port '0' is not a number"),
        ("postgresql://app:s3cret@127.0.0.1/db?sslmode=bogus", "sslmode 'bogus' is not one of"),
        ("postgresql://app:s3cret@127.0.0.1/db?connect_timeout=soon", "connect_timeout 'soon'"),
        ("postgresql://app:s3cret@127.0.0.1/db?target_session_attrs=any-old", "target_session_attrs"),
    ],
)
def test_a_malformed_url_is_a_configuration_error_without_its_password(url: str, reason: str) -> None:
    # libpq checks option values only when it connects, reporting a bad one as a failed
    # connection: a worker would retry it for ever. Refused before any connection.
    with pytest.raises(ConfigurationError) as err:
        PostgresBackend(url)
    assert reason in str(err.value) and "s3cret" not in str(err.value)
    assert "***" in str(err.value)


def test_pool_options_come_from_the_url_and_a_keyword_wins() -> None:
    url = "postgresql://u@h/db?pool_min_size=1&pool_max_size=20&pool_timeout=2.5&sslmode=disable"
    conninfo, _ = split_url(url)
    assert conninfo == "postgresql://u@h/db?sslmode=disable"  # not libpq's
    assert pool_options(url, None, None, None) == (1, 20, 2.5)
    assert pool_options(url, None, 30, 1) == (1, 30, 1.0)
    assert pool_options("postgresql://u@h/db", None, None, None) == (2, 10, 5.0)
    app = Conveyor(url)  # what a user (or CONVEYOR_URL) can set
    try:
        pool = app.aio.backend._connections  # type: ignore[attr-defined]
        assert (pool._min, pool._max, pool.timeout) == (1, 20, 2.5)
    finally:
        app.close()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("pool_max_size=0", "pool_max_size '0' is not a whole number from 1"),
        ("pool_min_size=1.5", "pool_min_size '1.5' is not a whole number from 1"),
        ("pool_min_size=5&pool_max_size=4", "pool_min_size 5 is above pool_max_size 4"),
        ("pool_timeout=soon", "pool_timeout 'soon' is not a positive number of seconds"),
    ],
)
def test_a_bad_pool_option_is_a_configuration_error_naming_it(query: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        PostgresBackend(f"postgresql://app:s3cret@127.0.0.1/db?{query}")


def test_schema_defaults_to_conveyor_and_kwarg_wins() -> None:
    assert PostgresBackend("postgresql://h/db").schema == "conveyor"
    assert PostgresBackend("postgresql://h/db?schema=a", schema="b").schema == "b"


def test_channel_names_fit_postgres_identifier_limit() -> None:
    long = "s" * 63
    assert len(channel_name("events", long).encode()) <= 63
    assert channel_name("jobs", long) != channel_name("jobs", long[:-1] + "x")
    assert channel_name("jobs", "a") != channel_name("events", "a")


# -- migrations ----------------------------------------------------------------------


def test_migration_versions_are_unique_and_contiguous() -> None:
    # Two helpers taking the same number would make the second fail to record itself.
    assert [m.version for m in load_migrations()] == list(range(1, len(load_migrations()) + 1))


async def test_migrate_is_idempotent(pg_url: str) -> None:
    b = PostgresBackend(pg_url)
    try:
        assert await b.migrate() == len(load_migrations())
        assert await b.migrate() == 0
        await b.connect()  # runs migrate again: nothing to do
        assert await b.migrate() == 0
    finally:
        await b.close()


async def test_migrate_concurrently_applies_each_migration_once(pg_url: str) -> None:
    backends = [PostgresBackend(pg_url) for _ in range(6)]
    results = await asyncio.gather(*(b.migrate() for b in backends))
    versions = [m.version for m in load_migrations()]
    assert sorted(results) == [0, 0, 0, 0, 0, len(versions)]
    _, schema = split_url(pg_url)
    with psycopg.connect(services.POSTGRES_URL) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".conveyor_migrations ORDER BY version').fetchall()
    assert [r[0] for r in rows] == versions


async def test_migrate_from_several_processes_at_once(pg_url: str) -> None:
    code = """
        import asyncio, sys
        from conveyor.backends.postgres.backend import PostgresBackend
        print(asyncio.run(PostgresBackend(sys.argv[1]).migrate()))
    """
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", textwrap.dedent(code), pg_url, stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(out.strip()) for out, _ in outputs) == [0, 0, 0, len(load_migrations())]


async def test_the_errors_and_snoozes_migration_upgrades_existing_jobs(pg_url: str, monkeypatch) -> None:
    # A store at the version before with a job in it, upgraded in place: the job is kept
    # and reads with an empty error history, no snoozes and the default cap.
    import conveyor.backends.postgres.backend as pg_backend

    before = [m for m in load_migrations() if m.name != "errors_snoozes"]
    monkeypatch.setattr(pg_backend, "load_migrations", lambda: before)
    old = PostgresBackend(pg_url)
    try:
        assert await old.migrate() == len(before)
    finally:
        await old.close()
    _, schema = split_url(pg_url)
    t = now()
    with psycopg.connect(services.POSTGRES_URL) as conn:
        conn.execute(
            f'INSERT INTO "{schema}".jobs (id, topic, payload, status, run_at, created_at, updated_at, last_error) '
            "VALUES ('old-job', 't', '{\"n\": 1}', 'failed', %s, %s, %s, 'boom')",
            [t, t, t],
        )
    monkeypatch.undo()
    b = PostgresBackend(pg_url)
    try:
        assert await b.migrate() == 1
        job = await b.get("old-job")
        assert job is not None and (job.payload, job.status, job.last_error) == ({"n": 1}, JobStatus.FAILED, "boom")
        assert (job.errors, job.snoozes, job.max_snoozes) == ([], 0, 100)
    finally:
        await b.close()


# -- claims --------------------------------------------------------------------------


async def test_concurrent_claimers_never_get_the_same_job(pg_url: str) -> None:
    backends = [PostgresBackend(pg_url, pool_max_size=2) for _ in range(6)]
    for b in backends:
        await b.connect()
    try:
        jobs = [new_job() for _ in range(600)]
        await backends[0].enqueue(jobs)
        claimed: list[str] = []

        async def drain(b: PostgresBackend, worker: str) -> None:
            while got := await claim(b, limit=7, worker=worker):
                claimed.extend(j.id for j in got)

        await asyncio.gather(*(drain(b, f"w{i}-{k}") for i, b in enumerate(backends) for k in range(2)))
        assert len(claimed) == len(set(claimed)) == 600
        assert set(claimed) == {j.id for j in jobs}
    finally:
        for b in backends:
            await b.close()


# -- transactional enqueue -----------------------------------------------------------


def test_transactional_enqueue_sync_connection_rollback_and_commit(pg_url: str) -> None:
    app = Conveyor(pg_url)
    try:
        with psycopg.connect(services.POSTGRES_URL) as conn:
            with conn.transaction(force_rollback=True):
                rolled_back = app.enqueue("t", {"n": 1}, connection=conn)
            with conn.transaction():
                committed = app.enqueue("t", {"n": 2}, connection=conn)
                # Not visible to others before the commit.
                with psycopg.connect(services.POSTGRES_URL) as other:
                    _, schema = split_url(pg_url)
                    seen = other.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()
                    assert seen == (0,)
        with pytest.raises(JobNotFound):
            app.get(rolled_back.id)
        stored = app.get(committed.id)
        assert stored.status is JobStatus.PENDING
        assert stored.payload == {"n": 2}
    finally:
        app.close()


def test_sync_facade_threads_enqueue_side_by_side_on_their_own_connections(pg_url: str) -> None:
    """A thread that finds the sync facade's connection busy takes a pooled one instead of
    queueing behind it: the threads of a web app enqueue side by side."""
    import threading

    app = Conveyor(pg_url)
    try:
        app.enqueue("t", None)  # the store is open: enqueues go from the callers' threads
        start = threading.Barrier(8)
        ids: list[str] = []

        def enqueue_some() -> None:
            start.wait()
            ids.extend(app.enqueue("t", {"n": i}).id for i in range(50))

        threads = [threading.Thread(target=enqueue_some) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 400
        assert app.stats()["pending"] == 401
        blocking = app.aio.backend._blocking  # type: ignore[attr-defined]
        assert blocking._pool is not None  # some threads found the first connection busy
        assert blocking._pool.get_stats()["requests_num"] > 0
    finally:
        app.close()


async def test_transactional_enqueue_async_connection_rollback_and_commit(backend: PostgresBackend) -> None:
    async with await psycopg.AsyncConnection.connect(services.POSTGRES_URL) as conn:
        async with conn.transaction(force_rollback=True):
            [gone] = await backend.enqueue([new_job()], connection=conn)
        assert await backend.get(gone.id) is None
        async with conn.transaction():
            [kept] = await backend.enqueue([new_job()], connection=conn)
            assert await backend.get(kept.id) is None  # our pool does not see it yet
    stored = await backend.get(kept.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    [claimed] = await claim(backend)
    assert claimed.id == kept.id


async def test_transactional_enqueue_wakes_workers_on_commit(backend: PostgresBackend) -> None:
    await listening(backend)  # and clear any earlier wake-up
    async with await psycopg.AsyncConnection.connect(services.POSTGRES_URL) as conn:
        async with conn.transaction():
            await backend.enqueue([new_job()], connection=conn)
            assert await backend.wait_for_jobs(0.3) is False  # nothing before the commit
        assert await backend.wait_for_jobs(2.0) is True


async def test_transactional_enqueue_through_the_client(pg_url: str) -> None:
    app = AsyncConveyor(pg_url)
    try:
        async with await psycopg.AsyncConnection.connect(services.POSTGRES_URL) as conn, conn.transaction():
            job = await app.enqueue("t", {"x": 1}, unique_key="k", connection=conn)
            same = await app.enqueue("t", {"x": 2}, unique_key="k", connection=conn)
        assert same.id == job.id
        assert (await app.get(job.id)).payload == {"x": 1}
    finally:
        await app.close()


async def test_transactional_enqueue_s_event_is_delivered_on_commit_only(pg_url: str) -> None:
    app = AsyncConveyor(pg_url)
    try:
        events = await app.subscribe()
        async with await psycopg.AsyncConnection.connect(services.POSTGRES_URL) as conn:
            async with conn.transaction(force_rollback=True):
                gone = await app.enqueue("t", {"n": 1}, connection=conn)
            async with conn.transaction():
                kept = await app.enqueue("t", {"n": 2}, connection=conn)
                with pytest.raises(TimeoutError):  # not before the commit
                    await asyncio.wait_for(anext(events), 0.3)
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.type, event.job_id) == ("job.scheduled", kept.id)
        assert await app.get(kept.id) and gone.id != kept.id
        with pytest.raises(TimeoutError):  # nothing for the rolled-back job
            await asyncio.wait_for(anext(events), 0.3)
    finally:
        await app.close()


async def test_transactional_enqueue_with_unique_keys_announces_the_stored_jobs_on_commit(pg_url: str) -> None:
    app = AsyncConveyor(pg_url)
    try:
        events = await app.subscribe()
        async with await psycopg.AsyncConnection.connect(services.POSTGRES_URL) as conn, conn.transaction():
            first = await app.enqueue("t", {"n": 1}, unique_key="k", connection=conn)
            same = await app.enqueue("t", {"n": 2}, unique_key="k", connection=conn)
            with pytest.raises(TimeoutError):  # not before the commit
                await asyncio.wait_for(anext(events), 0.3)
        assert same.id == first.id
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.type, event.job_id) == ("job.scheduled", first.id)
        with pytest.raises(TimeoutError):  # one job stored, one event
            await asyncio.wait_for(anext(events), 0.3)
    finally:
        await app.close()


# -- unique keys and ids -------------------------------------------------------------


async def test_concurrent_enqueues_of_one_unique_key_return_one_job(pg_url: str) -> None:
    backends = [PostgresBackend(pg_url) for _ in range(5)]
    for b in backends:
        await b.connect()
    try:
        results = await asyncio.gather(*(b.enqueue([new_job(unique_key="once")]) for b in backends for _ in range(4)))
        assert len({r[0].id for r in results}) == 1
    finally:
        for b in backends:
            await b.close()


async def test_enqueue_of_an_existing_id_is_a_duplicate(backend: PostgresBackend) -> None:
    job = new_job()
    await backend.enqueue([job])
    with pytest.raises(DuplicateJob):
        await backend.enqueue([job])


# -- LISTEN/NOTIFY across processes --------------------------------------------------

ENQUEUE_FROM_ANOTHER_PROCESS = """
    import asyncio, sys, time
    from conveyor.client import AsyncConveyor

    async def main():
        app = AsyncConveyor(sys.argv[1])
        await app.connect()
        t = time.time()
        await app.enqueue("t", {"from": "elsewhere"})
        print(t)
        await app.close()

    asyncio.run(main())
"""


async def test_enqueue_in_another_process_wakes_an_idle_waiter_at_once(backend: PostgresBackend, pg_url: str) -> None:
    await listening(backend)

    async def wait() -> tuple[bool, float]:
        return await backend.wait_for_jobs(10.0), time.time()

    waiter = asyncio.create_task(wait())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(ENQUEUE_FROM_ANOTHER_PROCESS), pg_url, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    woke, woke_at = await asyncio.wait_for(waiter, 10)
    latency = woke_at - float(out.decode().strip())
    assert woke is True
    assert latency < 0.5, latency
    assert len(await claim(backend)) == 1


def _listen_connections(schema: str) -> int:
    """The store's connections that ran LISTEN (a listener's last statement until its
    first ping, 15 s later; pooled connections never run it)."""
    with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'",
            [f"conveyor:{schema}"],
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_process_that_only_enqueues_opens_no_listen_connection(pg_url: str) -> None:
    """No LISTEN connection (and no NOTIFY to read per job enqueued) until a worker waits
    or somebody subscribes; then one."""
    schema = split_url(pg_url)[1]
    assert schema is not None
    sync_app = Conveyor(pg_url)
    app = AsyncConveyor(pg_url)
    try:
        for _ in range(3):
            sync_app.enqueue("t", {"n": 1})
        assert isinstance(sync_app.aio.backend, PostgresBackend) and sync_app.aio.backend._listener is None
        backend = await app.connect()
        assert isinstance(backend, PostgresBackend)
        for _ in range(3):
            await app.enqueue("t", {"n": 1})
            await backend.enqueue([new_job()])
        assert backend._listener is None
        assert _listen_connections(schema) == 0
        await listening(backend)  # an idle worker's first wait
        assert _listen_connections(schema) == 1
    finally:
        await app.close()
        sync_app.close()


async def test_a_worker_s_first_wait_listens_and_finds_jobs_enqueued_before(
    backend: PostgresBackend, pg_url: str
) -> None:
    assert backend._listener is None
    other = PostgresBackend(pg_url)
    try:
        await other.connect()
        await other.enqueue([new_job()])  # nobody listens yet
        t0 = time.monotonic()
        assert await backend.wait_for_jobs(10) is True  # woken once it listens
        assert time.monotonic() - t0 < 5
        assert len(await claim(backend)) == 1
        waiter = asyncio.create_task(backend.wait_for_jobs(10))
        await other.enqueue([new_job()])
        t0 = time.monotonic()
        assert await asyncio.wait_for(waiter, 10) is True
        assert time.monotonic() - t0 < 2
    finally:
        await other.close()


async def test_an_idle_worker_of_a_fresh_client_runs_a_job_enqueued_elsewhere_without_polling(pg_url: str) -> None:
    done = asyncio.Event()
    app = AsyncConveyor(pg_url)

    @app.handler("t")
    async def handle(job: Job) -> None:
        done.set()

    producer = PostgresBackend(pg_url)
    try:
        await app.start(poll_interval=60, scheduler=False)
        backend = await app.connect()
        assert isinstance(backend, PostgresBackend)
        deadline = time.monotonic() + 10
        while backend._listening is None or not backend._listening.is_set():
            assert time.monotonic() < deadline, "the idle worker did not listen"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # idle again, waiting up to its 60 s poll interval
        await producer.connect()
        await producer.enqueue([new_job()])
        t0 = time.monotonic()
        await asyncio.wait_for(done.wait(), 10)
        assert time.monotonic() - t0 < 2
        assert producer._listener is None
    finally:
        await producer.close()
        await app.close()


async def test_events_cross_processes(backend: PostgresBackend, pg_url: str) -> None:
    events = await backend.subscribe()
    code = """
        import asyncio, sys
        from datetime import UTC, datetime
        from conveyor.backends.postgres.backend import PostgresBackend
        from conveyor.core.events import Event

        async def main():
            b = PostgresBackend(sys.argv[1])
            await b.connect()
            await b.publish([Event("job.completed", "j1", "t", "completed", datetime.now(UTC), metadata={"n": 1})])
            await b.close()

        asyncio.run(main())
    """
    await asyncio.to_thread(run_python, code, pg_url)
    event = await asyncio.wait_for(anext(events), 5)
    assert (event.type, event.job_id, event.metadata) == ("job.completed", "j1", {"n": 1})


async def test_oversized_event_is_truncated_below_the_notify_limit(backend: PostgresBackend) -> None:
    events = await backend.subscribe()
    big = Event("job.failed", "j1", "t", "failed", now(), data={"error": "x" * 20_000}, metadata={"attempt": 1})
    await backend.publish([big])
    got = await asyncio.wait_for(anext(events), 5)
    assert got.type == "job.failed" and got.job_id == "j1"
    assert got.metadata["truncated"] is True
    assert got.metadata["attempt"] == 1
    assert got.data["error"].startswith("xxx") and len(got.data["error"]) < 1000


async def test_schemas_are_isolated(backend: PostgresBackend) -> None:
    services.check_postgres()
    other_url, other_schema = services.new_postgres_url()
    other = PostgresBackend(other_url)
    try:
        await other.connect()
        other_events = await other.subscribe()
        await other.wait_for_jobs(0)
        await backend.enqueue([new_job()])
        await backend.publish([Event("job.started", "j", "t", "processing", now())])
        assert await other.wait_for_jobs(0.5) is False
        t = now()
        assert await other.claim(worker_id=W, topics=["t"], limit=10, now=t, locked_until=t) == []
        assert (await other.stats()).by_status["pending"] == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(other_events), 0.5)
        assert len(await claim(backend)) == 1
    finally:
        await other.close()
        services.drop_postgres_schema(other_schema)


# -- reconnection --------------------------------------------------------------------


def _terminate(schema: str) -> int:
    with psycopg.connect(services.POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"conveyor:{schema}"],
        ).fetchall()
    return len(rows)


async def test_recovers_after_its_connections_are_killed(backend: PostgresBackend) -> None:
    await backend.enqueue([new_job()])
    await listening(backend)
    assert _terminate(backend.schema) >= 2  # the pool and the listener
    failures = 0
    for _ in range(20):
        try:
            await backend.ping()
            break
        except BackendUnavailable:
            failures += 1
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the pool did not reconnect")
    assert failures <= 3
    # The listener reconnects too: a wake-up from another backend still arrives.
    deadline = time.monotonic() + 10
    while backend._listening is None or not backend._listening.is_set():
        assert time.monotonic() < deadline, "listener did not reconnect"
        await asyncio.sleep(0.05)
    await backend.wait_for_jobs(0)
    other = PostgresBackend(backend.url)
    try:
        await other.connect()
        await other.enqueue([new_job()])
    finally:
        await other.close()
    assert await backend.wait_for_jobs(2.0) is True
    assert len(await claim(backend)) == 2


async def test_unreachable_server_is_backend_unavailable() -> None:
    b = PostgresBackend("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1, pool_timeout=1)
    with pytest.raises(BackendUnavailable):
        await b.connect()
    await b.close()


# -- finishing -----------------------------------------------------------------------


async def test_finish_batch_applies_each_outcome_under_its_fence(backend: PostgresBackend) -> None:
    await backend.enqueue([new_job() for _ in range(3)])
    a, b, c = await claim(backend)
    t = now()
    outcomes = [
        lifecycle.completed(a, W, {"r": 1}),
        lifecycle.failed(b, W, "boom", t),
        lifecycle.completed(c, "someone-else", None),  # fenced off
    ]
    done, retried, fenced = await backend.finish(outcomes, now=t)
    assert done is not None and done.status is JobStatus.COMPLETED and done.result == {"r": 1}
    assert retried is not None and retried.status is JobStatus.PENDING and retried.last_error == "boom"
    assert fenced is None
    still = await backend.get(c.id)
    assert still is not None and still.status is JobStatus.PROCESSING


async def test_many_events_travel_packed_and_arrive_in_order(backend: PostgresBackend) -> None:
    events = await backend.subscribe()
    sent = [Event("job.completed", f"j{i}", "t", "completed", now(), data={"n": i}) for i in range(300)]
    await backend.publish(sent)
    got = [await asyncio.wait_for(anext(events), 5) for _ in sent]
    assert [e.job_id for e in got] == [e.job_id for e in sent]


def test_event_payloads_stay_under_the_notify_limit() -> None:
    from conveyor.backends.postgres.subscription import decode_events, encode_events

    sent = [Event("job.failed", f"j{i}", "t", "failed", now(), data={"error": "é" * (20 * i)}) for i in range(120)]
    payloads = encode_events(sent)
    assert 1 < len(payloads) < len(sent)
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert [e for p in payloads for e in decode_events(p)] == sent


async def test_a_large_batch_goes_in_by_copy_with_every_field_and_event(backend: PostgresBackend) -> None:
    from conveyor.backends.postgres.backend import COPY_MIN_JOBS

    events = await backend.subscribe()
    jobs = [
        new_job(
            "bulk",
            priority=i % 7 - 3,
            delay=i,
            max_retries=i % 5,
            retry_delay=2.5,
            backoff="linear+jitter",
            timeout=9,
            metadata={"n": i} if i % 2 else None,
        )
        for i in range(COPY_MIN_JOBS * 2)
    ]
    for i, job in enumerate(jobs):
        job.payload = {"i": i, "text": 'é\\n"', "nested": [1, None, {"x": True}]}
    sent = [
        Event("job.scheduled", j.id, j.topic, "pending", now(), data={"run_at": j.run_at.isoformat()}) for j in jobs
    ]
    stored = await backend.enqueue(jobs, events=sent)
    assert [j.id for j in stored] == [j.id for j in jobs]
    for job, returned in zip(jobs, stored, strict=True):
        read = await backend.get(job.id)
        assert read == returned == job
    got = [await asyncio.wait_for(anext(events), 5) for _ in sent]
    assert [e.job_id for e in got] == [j.id for j in jobs]


@pytest.mark.parametrize("with_events", [False, True], ids=["alone", "with-events"])
async def test_a_large_batch_with_a_known_id_stores_nothing(backend: PostgresBackend, with_events: bool) -> None:
    from conveyor.backends.postgres.backend import COPY_MIN_JOBS

    events = await backend.subscribe()
    [first] = await backend.enqueue([new_job()])
    batch = [new_job() for _ in range(COPY_MIN_JOBS)] + [first]
    sent = [Event("job.scheduled", j.id, j.topic, "pending", now()) for j in batch] if with_events else None
    # Without events the COPY runs alone (one statement: all or nothing); with them, in a
    # transaction with their pg_notify, which the failure rolls back too.
    with pytest.raises(DuplicateJob):
        await backend.enqueue(batch, events=sent)
    assert await backend.get(batch[0].id) is None
    # The connection is usable afterwards, and no event of the failed batch came before
    # those of the next one.
    after = [new_job() for _ in range(COPY_MIN_JOBS)]
    marker = [Event("job.scheduled", after[0].id, after[0].topic, "pending", now())]
    assert len(await backend.enqueue(after, events=marker)) == COPY_MIN_JOBS
    assert (await asyncio.wait_for(anext(events), 5)).job_id == after[0].id


# -- text PostgreSQL cannot hold -----------------------------------------------------


async def test_an_outcome_postgres_refuses_is_recorded_as_a_failure_and_the_rest_of_the_batch_is_stored(
    backend: PostgresBackend,
) -> None:
    await backend.enqueue([new_job(max_retries=5) for _ in range(3)])
    jobs = await claim(backend)
    t = now()
    # A value PostgreSQL refuses (core.text.storable keeps NUL out of real outcomes):
    # without the fallback, it would refuse the whole batch.
    refused = lifecycle.failed(jobs[1], W, "bad", t)
    object.__setattr__(refused, "last_error", "bad\x00byte")
    results = await backend.finish(
        [lifecycle.completed(jobs[0], W, 1), refused, lifecycle.completed(jobs[2], W, 3)], now=t
    )
    assert [r.status if r else None for r in results] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    bad = await backend.get(jobs[1].id)
    assert bad is not None and bad.status is JobStatus.FAILED  # for good: retrying would store the same text
    assert bad.last_error is not None and "could not be stored" in bad.last_error


async def test_error_texts_with_nul_and_lone_surrogates_are_stored_readable(backend: PostgresBackend) -> None:
    await backend.enqueue([new_job()])
    [job] = await claim(backend)
    t = now()
    [stored] = await backend.finish([lifecycle.failed(job, W, "a\x00b \ud800 c", t)], now=t)
    assert stored is not None and stored.last_error == "a\\u0000b \ufffd c"
    assert await backend.get("no\x00such") is None


def test_a_worker_whose_handler_fails_with_a_nul_byte_acknowledges_every_job(pg_url: str) -> None:
    app = Conveyor(pg_url, poll_interval=0.05, retry_delay=0)

    @app.handler("t")
    def handle(job: Job) -> str:
        if job.payload["n"] % 2:
            raise RuntimeError("bad \x00 byte")
        return "ok"

    try:
        jobs = app.enqueue_many([{"topic": "t", "payload": {"n": n}, "max_retries": 0} for n in range(20)])
        app.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = [app.get(j.id).status for j in jobs]
            if all(s in (JobStatus.COMPLETED, JobStatus.FAILED) for s in statuses):
                break
            time.sleep(0.05)
        assert statuses == [JobStatus.FAILED if n % 2 else JobStatus.COMPLETED for n in range(20)]
        assert "bad \\u0000 byte" in (app.get(jobs[1].id).last_error or "")
    finally:
        app.stop()
        app.close()


# -- events ride along with claims and acknowledgements ------------------------------


async def test_published_events_ride_along_with_the_next_claim_or_go_alone(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone: list[int] = []
    send_alone = backend._db.publish_alone

    async def counting(payloads: list[str]) -> None:
        alone.append(len(payloads))
        await send_alone(payloads)

    from conveyor.backends.postgres import outbox

    monkeypatch.setattr(backend._db.ride_along, "_send_alone", counting)
    monkeypatch.setattr(outbox, "RIDE_ALONG_WINDOW", 5.0)  # a loaded machine is slow
    await backend.enqueue([new_job()])
    sub = await backend.subscribe()
    event = Event(type="job.started", job_id="j1", topic="t", status="processing", timestamp=now())
    publishing = asyncio.create_task(backend.publish([event]))
    await asyncio.sleep(0)  # queued, waiting for a carrier
    assert len(await claim(backend)) == 1  # carries the event: one round trip for both
    await publishing
    got = await asyncio.wait_for(sub.__anext__(), 5)
    assert got.job_id == "j1" and alone == []
    # No claim or acknowledgement comes: the event goes on its own after the window.
    monkeypatch.setattr(outbox, "RIDE_ALONG_WINDOW", 0.01)
    await backend.publish([Event(type="job.started", job_id="j2", topic="t", status="processing", timestamp=now())])
    got = await asyncio.wait_for(sub.__anext__(), 5)
    assert got.job_id == "j2" and alone == [1]
    await sub.aclose()


def test_the_named_queries_parse_and_keep_the_errors_cap_of_the_lifecycle() -> None:
    from conveyor.backends.postgres import queries
    from conveyor.core.lifecycle import ERRORS_KEPT

    assert queries.parse("-- name: a\n-- why\nSELECT 1\n\n-- name: b\nSELECT 2") == {"a": "SELECT 1", "b": "SELECT 2"}
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2")
    # finish_jobs keeps the newest errors entries itself: the same count as lifecycle.apply.
    finish_jobs = [m for m in load_migrations() if "CREATE FUNCTION finish_jobs" in m.sql][-1]  # the one in force
    assert f"+ 1 - {ERRORS_KEPT}" in finish_jobs.sql
    for status in (None, "failed"):
        for topic in (None, "t"):
            for cursor in (None, "after", "before"):
                name = queries.list_jobs(by_status=status is not None, by_topic=topic is not None, cursor=cursor)
                assert name in queries.QUERIES


@pytest.mark.parametrize("cursor", [None, "after", "before"])
@pytest.mark.parametrize(("status", "topic"), [(None, None), ("pending", None), ("pending", "t"), (None, "t")])
async def test_a_listing_counts_its_total_once_not_once_per_row(
    backend: PostgresBackend, status: str | None, topic: str | None, cursor: str | None
) -> None:
    jobs = [new_job() for _ in range(30)]
    await backend.enqueue(jobs)
    sql = backend._sql(q.list_jobs(by_status=status is not None, by_topic=topic is not None, cursor=cursor))
    params = {"status": status, "topic": topic, "limit": 21, "offset": 0, "cursor": jobs[15].id}
    count_jobs = backend._sql("{schema}.count_jobs(text, text)")
    with psycopg.connect(services.POSTGRES_URL) as conn:
        conn.execute("SET LOCAL track_functions = 'all'")
        rows = conn.execute(sql, params).fetchall()
        calls = conn.execute("SELECT pg_stat_get_xact_function_calls(%s::regprocedure)", [count_jobs]).fetchone()
    assert len(rows) > 10 and calls == (1,)


async def test_events_are_sent_only_while_a_process_listens_for_them(backend: PostgresBackend, pg_url: str) -> None:
    """Nobody subscribed: a published event never reaches the events channel (a raw
    LISTEN sees the marker NOTIFY sent after it first). Once a process subscribes, its
    entry is live and events go out; closing removes the entry."""
    listener = await psycopg.AsyncConnection.connect(services.POSTGRES_URL, autocommit=True)
    other = PostgresBackend(pg_url)
    try:
        await listener.execute(f"LISTEN {q.quote_ident(backend.events_channel)}")

        async def next_payload() -> str:
            async for note in listener.notifies(timeout=10, stop_after=1):
                return note.payload
            raise AssertionError("no notification")

        async def marker(text: str) -> None:
            await listener.execute("SELECT pg_notify(%s, %s)", [backend.events_channel, text])

        def event(job_id: str) -> Event:
            return Event(type="job.started", job_id=job_id, topic="t", status="processing", timestamp=now())

        await backend.publish([event("unheard")])
        await backend.enqueue([new_job()], events=[event("unheard-enqueue")])
        await marker("first")
        assert await next_payload() == "first"

        sub = await other.subscribe()  # another process's subscriber
        await backend.publish([event("heard")])
        assert "heard" in await next_payload()
        await sub.aclose()
        await other.close()
        with psycopg.connect(services.POSTGRES_URL) as conn:
            entries = conn.execute(backend._sql("SELECT id FROM {schema}.event_listeners")).fetchall()
        assert entries == []
    finally:
        await other.close()
        await listener.close()


async def test_the_round_trip_claims_before_it_stores_its_outcomes(pg_url: str) -> None:
    # Migration 0015: a worker keeps several round trips in flight; one whose outcomes
    # wait for a row lock (a heartbeat renewing that lease, say) must not let a round
    # trip sent after it claim the earlier jobs first (worker/slots.py).
    from conveyor.backends.base import ClaimRequest

    backend = PostgresBackend(pg_url)
    await backend.connect()
    try:
        base = datetime(2030, 1, 1, tzinfo=UTC)
        defaults = JobDefaults()
        first = build_job("t", None, now=base, defaults=defaults, run_at=base - timedelta(seconds=2))
        second = build_job("t", None, now=base, defaults=defaults, run_at=base - timedelta(seconds=1))
        await backend.enqueue([first, second])
        lease = base + timedelta(minutes=5)
        [held] = await backend.claim(worker_id="w", topics=["t"], limit=1, now=base, locked_until=lease)
        assert held.id == first.id
        conninfo, schema = split_url(pg_url)
        async with await psycopg.AsyncConnection.connect(conninfo) as locker:
            # Another transaction holds the finished job's row.
            await locker.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', [first.id])
            round_trip = asyncio.ensure_future(
                backend.finish_and_claim(
                    [lifecycle.completed(held, "w", None)], now=base, claim=ClaimRequest("w", ["t"], 1, lease)
                )
            )
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe:
                deadline = time.monotonic() + 5
                while True:  # the round trip has claimed the second job: it holds its row
                    cur = await probe.execute(
                        f'SELECT id FROM "{schema}".jobs WHERE id = %s FOR UPDATE SKIP LOCKED', [second.id]
                    )
                    if await cur.fetchone() is None:
                        break
                    assert time.monotonic() < deadline, "the round trip did not claim while its outcome waited"
                    await asyncio.sleep(0.02)
            assert not round_trip.done()  # still waiting for the finished job's row
            await locker.rollback()
        stored, claimed = await asyncio.wait_for(round_trip, 10)
        assert [j.id for j in claimed] == [second.id]
        assert [j.status for j in stored if j is not None] == [JobStatus.COMPLETED]
    finally:
        await backend.close()
