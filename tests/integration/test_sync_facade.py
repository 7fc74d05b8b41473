"""The sync facade on every backend: inserts run on the caller's thread (no hop to the
loop thread), yet events, wake-ups and transactional enqueue behave as on the async
path."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, Job, JobStatus
from conveyor.core.errors import BackendUnavailable, DuplicateJob, JobNotFound
from tests import services


@pytest.fixture(params=["sqlite", "memory", "postgres", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with services.isolated_store(request.param, tmp_path) as store_url:
        yield store_url


def test_sync_enqueue_wakes_the_in_process_worker_and_emits_events(url: str) -> None:
    app = Conveyor(url, poll_interval=10)
    started = threading.Event()

    @app.handler("t")
    def handle(job: Job) -> str:
        started.set()
        return "ok"

    app.start()
    seen: list[str] = []

    async def listen() -> None:
        sub = await app.aio.subscribe()
        async for event in sub:
            seen.append(event.type)
            if event.type == "job.completed":
                return

    listener = asyncio.run_coroutine_threadsafe(listen(), app._portal.loop)  # type: ignore[union-attr]
    time.sleep(0.3)  # the worker is idle, waiting up to 10 s
    t0 = time.monotonic()
    job = app.enqueue("t", {"n": 1})
    assert started.wait(5)
    assert time.monotonic() - t0 < 1.0  # woken, not polled
    listener.result(timeout=5)
    assert seen[0] == "job.scheduled" and "job.completed" in seen
    deadline = time.monotonic() + 5
    while app.get(job.id).status is not JobStatus.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.get(job.id).result == "ok"
    app.stop()
    app.close()


def test_sync_enqueue_many_and_unique_keys(url: str) -> None:
    app = Conveyor(url)
    first = app.enqueue("t", 1, unique_key="k")
    again = app.enqueue("t", 2, unique_key="k")
    assert again.id == first.id
    jobs = app.enqueue_many([{"topic": "t", "payload": i} for i in range(100)])
    assert [j.payload for j in jobs] == list(range(100))
    assert app.list(limit=1).total == 101
    assert app.get(jobs[5].id).payload == 5
    app.close()


def _first_calls_at_once(app: Conveyor, n: int) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = []

    def first_call() -> None:
        barrier.wait()
        try:
            results.append(app.stats()["pending"])
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a first call never returned"
    return results


def test_first_calls_from_many_threads_at_once_share_one_loop(url: str) -> None:
    for _ in range(3):
        app = Conveyor(url)
        try:
            results = _first_calls_at_once(app, 8)
            assert len(results) == 8 and all(isinstance(r, int) for r in results), results
        finally:
            app.close()


def test_a_sync_batch_giving_an_id_twice_is_refused(url: str) -> None:
    app = Conveyor(url)
    try:
        app.stats()  # the store open: enqueue_many takes the caller-thread path where it has one
        items = [{"topic": "t", "id": "twin-1", "unique_key": "k", "payload": n} for n in (1, 2)]
        with pytest.raises(DuplicateJob, match="given twice"):
            app.enqueue_many(items)
        assert app.stats()["pending"] == 0
    finally:
        app.close()


def test_sync_enqueues_from_many_threads_while_a_worker_runs(url: str) -> None:
    app = Conveyor(url, poll_interval=0.05)
    done: list[str] = []
    lock = threading.Lock()

    @app.handler("t")
    def handle(job: Job) -> None:
        with lock:
            done.append(job.id)

    app.start(concurrency=4)
    ids: list[str] = []

    def produce() -> None:
        for i in range(50):
            job = app.enqueue("t", i)
            with lock:
                ids.append(job.id)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 20
    while len(done) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    app.stop()
    assert sorted(done) == sorted(ids) and len(set(done)) == 200
    assert app.stats()["completed"] == 200
    app.close()


def test_sync_transactional_enqueue_with_a_plain_sqlite3_connection(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    app.migrate()
    app.stats()  # open the store: later enqueues run on this thread
    conn = sqlite3.connect(path)  # default check_same_thread=True: this thread only
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.execute("INSERT INTO orders VALUES (1)")
    rolled_back = app.enqueue("t", {"order": 1}, connection=conn)
    conn.rollback()
    conn.execute("INSERT INTO orders VALUES (2)")
    committed = app.enqueue("t", {"order": 2}, connection=conn)
    conn.commit()
    conn.close()
    ids = {j.id for j in app.list(limit=10).items}
    assert committed.id in ids and rolled_back.id not in ids
    app.close()


def test_sync_enqueue_events_reach_another_process_s_subscriber_once(tmp_path: Path) -> None:
    """On SQLite the job.scheduled rows are written in the insert's transaction: a
    subscriber on another connection sees each exactly once, unique-key hits not at all."""
    url = f"sqlite:///{tmp_path}/q.db"
    producer = Conveyor(url)
    producer.migrate()
    watcher = Conveyor(url)
    seen: list[tuple[str, str]] = []

    async def listen(n: int) -> None:
        sub = await watcher.aio.subscribe()
        async for event in sub:
            seen.append((event.type, event.job_id))
            if len(seen) == n:
                return

    watcher.stats()  # open the store before subscribing
    listener = asyncio.run_coroutine_threadsafe(listen(3), watcher._portal.loop)  # type: ignore[union-attr]
    time.sleep(0.1)
    a = producer.enqueue("t", 1)
    b = producer.enqueue("t", 2, unique_key="k")
    assert producer.enqueue("t", 3, unique_key="k").id == b.id  # a hit: no new event
    c = producer.enqueue_many([{"topic": "t", "payload": 4}])[0]
    listener.result(timeout=10)
    # Each job's event exactly once (order across different jobs is not promised).
    assert sorted(seen) == sorted([("job.scheduled", a.id), ("job.scheduled", b.id), ("job.scheduled", c.id)])
    producer.close()
    watcher.close()


def test_schedule_is_stored_before_it_returns_in_a_script_that_never_closes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    script = (
        "from conveyor import Conveyor\n"
        f"app = Conveyor({url!r})\n"
        "app.schedule('nightly', '0 2 * * *', 'report')\n"
        "app.schedule('hourly', '@hourly', 'report')\n"
        "app.schedule('hourly', '@daily', 'other')\n"  # a replacement is stored too
        "import os; os._exit(0)\n"  # no close(), no interpreter shutdown
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with Conveyor(url) as reader:
        stored = {s.name: (s.cron, s.topic, s.enabled) for s in reader.schedules()}
    assert stored == {"nightly": ("0 2 * * *", "report", True), "hourly": ("@daily", "other", True)}


def test_declare_schedule_is_for_workers_and_stores_nothing_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with Conveyor(url) as first:
        first.declare_schedule("hourly", "@hourly", "a")
        assert first.schedules() == []  # opening the store applies no declaration
        assert first.sync_schedules() == {"saved": ["hourly"], "disabled": []}
    with Conveyor(url) as second:
        second.schedule("manual", "@daily", "b")  # stored at once, not a declaration
        second.declare_schedule("daily", "@daily", "b")
        assert {s.name for s in second.schedules()} == {"hourly", "manual"}
        # The scheduler of a worker or serve started from this app applies its
        # declarations and disables code-declared schedules it no longer declares.
        assert second.sync_schedules() == {"saved": ["daily"], "disabled": ["hourly"]}
        assert {s.name: s.enabled for s in second.schedules()} == {"daily": True, "hourly": False, "manual": True}


def test_sync_enqueue_on_postgres_takes_the_caller_s_sync_transaction(pg_url: str) -> None:
    import psycopg

    app = Conveyor(pg_url)
    app.enqueue("t", 0)  # opens the store
    with psycopg.connect(services.POSTGRES_URL) as conn:
        gone = app.enqueue("t", 1, connection=conn)
        conn.rollback()
        kept = app.enqueue_many([{"topic": "t", "payload": 2}], connection=conn)[0]
        conn.commit()
    assert app.list(topic="t").total == 2
    assert app.get(kept.id).payload == 2
    with pytest.raises(JobNotFound):
        app.get(gone.id)
    app.close()


def test_sync_enqueue_on_postgres_reconnects_after_its_connection_dies(pg_url: str) -> None:
    import psycopg

    app = Conveyor(pg_url)
    app.enqueue("t", 0)  # opens the store
    first = app.enqueue("t", 1)  # opens the blocking connection
    own = app.aio.backend._blocking._hot  # type: ignore[attr-defined]
    assert own is not None
    with psycopg.connect(services.POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [own.info.backend_pid])
    with pytest.raises(BackendUnavailable):
        app.enqueue("t", 2)
    again = app.enqueue("t", 3)  # a new connection
    assert {j.payload for j in app.list(topic="t").items} == {0, 1, 3}
    assert again.id != first.id
    with pytest.raises(DuplicateJob):
        app.enqueue_many([{"topic": "t", "payload": 4, "id": first.id}])
    app.close()


FORKING_SCRIPT = """
import os, sys
from conveyor import Conveyor

app = Conveyor(sys.argv[1])
app.enqueue("t", "parent")  # the parent's store is open: its connections exist
children = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        ids = [app.enqueue("t", i).id for _ in range(20)]
        assert app.get(ids[0]).payload == i
        if i == 0:
            app.close()  # the other child exits without closing
        sys.exit(0)
    children.append(pid)
assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children] == [0, 0]
assert app.get(app.enqueue("t", "after").id).payload == "after"  # the parent's store still works
print(app.list(limit=1).total)
app.close()
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_a_forked_child_opens_a_store_of_its_own(kind: str, tmp_path: Path) -> None:
    """A child of ``os.fork`` (multiprocessing's default on Linux) used the parent's store
    connections: on PostgreSQL its statements collided with the parent's ("prepared
    statement already exists"). It opens its own, and the parent's keep working."""
    with services.isolated_store(kind, tmp_path) as url:
        done = subprocess.run([sys.executable, "-c", FORKING_SCRIPT, url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["42"]
        for noise in ("Traceback", "Task was destroyed", "Event loop is closed", "never awaited"):
            assert noise not in done.stderr, done.stderr
