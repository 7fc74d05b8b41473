"""The sync facade on SQLite: inserts run on the caller's thread (no hop to the loop
thread), yet events, wake-ups and transactional enqueue behave as on the async path."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from conveyor import Conveyor, Job, JobStatus


def test_sync_enqueue_wakes_the_in_process_worker_and_emits_events(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/q.db", poll_interval=10)
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


def test_sync_enqueue_many_and_unique_keys(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/q.db")
    first = app.enqueue("t", 1, unique_key="k")
    again = app.enqueue("t", 2, unique_key="k")
    assert again.id == first.id
    jobs = app.enqueue_many([{"topic": "t", "payload": i} for i in range(100)])
    assert [j.payload for j in jobs] == list(range(100))
    assert app.list(limit=1).total == 101
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
