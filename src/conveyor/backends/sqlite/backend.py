"""SqliteBackend: the storage protocol on one SQLite file shared by many processes.

Threading model: every statement runs directly on the event loop thread, on one main
connection (short statements: a thread hop would cost more than the work). Writes run
in ``BEGIN IMMEDIATE`` transactions that never await inside, so coroutines never
interleave on the connection. Lock waits never block the loop for long: SQLite's own
busy handler waits at most ``busy_timeout_ms`` (a few ms), then the coroutine retries
with an asyncio backoff until ``lock_wait`` seconds have passed (→ BackendUnavailable).

Wake-ups and events across processes: while somebody waits or subscribes,
``PRAGMA data_version`` is polled every ``watch_interval`` seconds (``_wakeups``: it
changes when any other connection commits); a change wakes ``wait_for_jobs`` and tails
the ``events`` table by id for subscribers (``_events``, on a second connection).

The statements run inside those transactions live in ``_statements``, connection-level
helpers in ``_setup``.

Imports only ``conveyor.core`` and ``conveyor.backends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from conveyor.backends.base import Applied, Capabilities, HeartbeatResult, StoreStats, WorkerInfo, applied, wakes
from conveyor.backends.presence import Presence
from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._convert import (
    from_us,
    from_us_opt,
    row_to_job,
    row_to_schedule,
    row_to_worker,
    schedule_params,
    to_us,
    worker_params,
)
from conveyor.backends.sqlite._event_listeners import EventListeners
from conveyor.backends.sqlite._events import (
    Subscription,
    end_subscribers,
    event_rows,
    tail_events,
    write_events,
)
from conveyor.backends.sqlite._setup import BusyBackoff, close_connections, open_connection, parse_options
from conveyor.backends.sqlite._setup import migrations as _migrations
from conveyor.backends.sqlite._setup import parse_url as _parse_url
from conveyor.backends.sqlite._statements import (
    Prepared,
    applied_versions,
    apply_migrations,
    apply_tx,
    finish_tx,
    fire_schedule_tx,
    insert_jobs,
    insert_on,
    inserted_event_rows,
    list_page,
    prepare,
)
from conveyor.backends.sqlite._wakeups import Wakeups
from conveyor.core import codec
from conveyor.core.errors import BackendUnavailable
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus, claim_order
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import JobOp
from conveyor.core.page import JobPage, keyset_page
from conveyor.core.schedule import Schedule

log = logging.getLogger(__name__)

# Priority levels one claim reads at most: below SQLite's default limit of 500 terms in
# a compound SELECT (SQLITE_MAX_COMPOUND_SELECT).
CLAIM_MAX_LEVELS = 400

P = ParamSpec("P")
T = TypeVar("T")


class SqliteBackend:
    """SQLite storage. See the module docstring for the threading model.

    Args:
        url: ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``.
        synchronous: ``NORMAL`` (default; WAL: survives a process crash, a power loss
            may lose the last commits) or ``FULL`` (fsync on every commit). Every option
            can also be given in the URL: ``sqlite:///x.db?synchronous=FULL``.
        busy_timeout_ms: how long SQLite itself waits for a lock (blocks the loop).
        lock_wait: seconds of retrying a locked database before BackendUnavailable.
        watch_interval: seconds between two ``PRAGMA data_version`` polls.
    """

    capabilities = Capabilities(
        push_wakeups=True,
        cross_process_events=True,
        transactional_enqueue=True,
        multi_process=True,
        blocking_enqueue=True,
        enqueue_events=True,
    )

    def __init__(
        self,
        url: str = "sqlite:///conveyor.db",
        *,
        synchronous: str | None = None,
        busy_timeout_ms: int | None = None,
        lock_wait: float | None = None,
        watch_interval: float | None = None,
        **_: Any,
    ) -> None:
        self.url = url
        self._path = _parse_url(url)
        self._synchronous, self._busy_timeout_ms, self._lock_wait, self._watch_interval = parse_options(
            url,
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
            lock_wait=lock_wait,
            watch_interval=watch_interval,
        )
        self._db: sqlite3.Connection | None = None
        self._watch_db: sqlite3.Connection | None = None
        # The connection is used from the loop thread; the lock only guards against a
        # caller driving it from two threads at once.
        self._lock = threading.Lock()
        self._connecting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._presence = Presence(EventListeners(self._run), self._subscribers)
        self._wakeups = Wakeups(
            self._path,
            lambda: self._db,
            self._lock,
            self._watch_interval,
            self._on_commit,
            lambda: bool(self._subscribers),
        )
        self._events_pruned_at = 0.0
        self._claim_sql: dict[int, str] = {}
        self._applied_on_connect = 0

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        return open_connection(self._path, self._synchronous, self._busy_timeout_ms)

    async def connect(self) -> None:
        if self._db is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._db is not None:
                return
            backoff = BusyBackoff(self._path, self._lock_wait)
            while True:
                try:
                    db = self._open()
                    try:
                        watch = self._open()
                    except BaseException:
                        db.close()
                        raise
                    break
                except sqlite3.Error as exc:
                    # A new file being switched to WAL by another process answers BUSY
                    # without calling the busy handler: wait and try again.
                    await asyncio.sleep(backoff.after(exc))
            self._db, self._watch_db = db, watch
            try:
                self._applied_on_connect = await self._migrate_now()
                self._wakeups.start()
            except BaseException:
                self._close_connections()
                raise

    async def _ensure_connected(self) -> sqlite3.Connection:
        if self._db is None:
            await self.connect()
        assert self._db is not None
        return self._db

    async def migrate(self) -> int:
        if self._db is None:
            self._applied_on_connect = 0
            await self.connect()  # connect() migrates
            return self._applied_on_connect
        return await self._migrate_now()

    async def _migrate_now(self) -> int:
        mode = await self._run(False, lambda db: str(db.execute(q.SET_WAL).fetchone()[0]))
        if mode.lower() != "wal":
            log.warning("SQLite store %s: WAL mode unavailable (journal_mode=%s)", self._path, mode)
        wanted = _migrations()
        applied = await self._run(False, applied_versions)
        if all(version in applied for version, _, _ in wanted):
            return 0
        count = await self._run(True, apply_migrations, wanted)
        if count:
            log.info("SQLite store %s: applied %d migration(s)", self._path, count)
        return count

    def _close_connections(self) -> None:
        close_connections(self._path, self._db, self._watch_db)
        self._db = self._watch_db = None

    async def close(self) -> None:
        await self._presence.leave()
        await self._wakeups.stop()
        end_subscribers(self._subscribers)
        self._subscribers.clear()  # the same set: Presence counts it
        with self._lock:
            self._close_connections()

    async def ping(self) -> None:
        await self._run(False, lambda db: db.execute(q.PING).fetchone())

    # -- running statements -----------------------------------------------------------------

    async def _run(
        self,
        write: bool,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(db, ...)`` (in a ``BEGIN IMMEDIATE`` transaction when ``write``),
        retrying while the database is locked by another connection."""
        backoff = BusyBackoff(self._path, self._lock_wait)
        while True:
            db = self._db if self._db is not None else await self._ensure_connected()
            try:
                return self._attempt(db, write, fn, *args, **kwargs)
            except sqlite3.Error as exc:
                await asyncio.sleep(backoff.after(exc))

    def _attempt(
        self,
        db: sqlite3.Connection,
        write: bool,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """One try of ``_run``/``_run_blocking`` under the connection's lock."""
        with self._lock:
            if not write:
                return fn(db, *args, **kwargs)
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db, *args, **kwargs)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return out

    # -- jobs ---------------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        if not jobs:
            return []
        prepared = prepare(jobs)
        if connection is not None:
            # The events commit or roll back with the caller's transaction; the watcher
            # delivers them once committed.
            out = insert_on(connection, prepared, self._path, events)
        else:
            rows = event_rows(events) if events else []  # before the write lock
            out = await self._run(True, self._insert_jobs_and_events, prepared, events, rows)
            if events and self._subscribers:
                self._tail_events()  # local subscribers need not wait for the watcher
        self.notify_local()
        return out

    def accepts_blocking(self, jobs: Sequence[Job], connection: Any) -> bool:
        return True

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``enqueue`` from another thread (the sync facade's caller): the same statements
        under the same lock, waiting for a busy file with ``time.sleep``; the events go
        into the same transaction."""
        if not jobs:
            return []
        prepared = prepare(jobs)
        if connection is not None:
            out = insert_on(connection, prepared, self._path, events)
        else:
            rows = event_rows(events) if events else []  # before the write lock
            out = self._run_blocking(self._insert_jobs_and_events, prepared, events, rows)
            if events and self._subscribers:
                self._call_in_loop(self._tail_events)  # local subscribers read them now
        if self._wakeups.waiters:
            self._call_in_loop(self.notify_local)
        return out

    def _insert_jobs_and_events(
        self,
        db: sqlite3.Connection,
        prepared: list[Prepared],
        events: Sequence[Event] | None,
        rows: list[tuple[int, bytes]],
    ) -> list[Job]:
        """The jobs and the job.scheduled events of those inserted, in one transaction:
        an event row is never visible without its job, nor before it."""
        inserted = insert_jobs(db, prepared)
        rows = inserted_event_rows(prepared, inserted, events or (), rows)
        if rows:
            self._events_pruned_at = write_events(db, rows, self._events_pruned_at)
        return inserted

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody listens any more

    def _run_blocking(
        self,
        fn: Callable[[sqlite3.Connection, list[Prepared], Sequence[Event] | None, list[tuple[int, bytes]]], list[Job]],
        *args: Any,
    ) -> list[Job]:
        """``_run(True, ...)`` for a thread outside the event loop: waits with time.sleep."""
        backoff = BusyBackoff(self._path, self._lock_wait)
        while True:
            db = self._db
            if db is None:
                raise BackendUnavailable(f"SQLite store {self._path!r} is not open")
            try:
                return self._attempt(db, True, fn, *args)
            except sqlite3.Error as exc:
                time.sleep(backoff.after(exc))

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(False, lambda db: db.execute(q.GET_JOB, (job_id,)).fetchone())
        return row_to_job(row) if row is not None else None

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        topic: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
    ) -> JobPage:
        mode = "before" if before is not None else "after" if after is not None else None
        sql = q.list_jobs(by_status=status is not None, by_topic=topic is not None, cursor=mode)
        params: list[Any] = [JobStatus(status).value] if status is not None else []
        if topic is not None:
            params.append(topic)
        cursor = before if before is not None else after
        total, rows, beyond = await self._run(False, list_page, sql, params, limit, offset, cursor)
        jobs = [row_to_job(r) for r in rows]
        return keyset_page(jobs, total=total, limit=limit, offset=offset, before=before, beyond=beyond)

    async def stats(self) -> StoreStats:
        rows = await self._run(False, lambda db: db.execute(q.STATS).fetchall())
        by_status = {s.value: 0 for s in JobStatus}
        by_topic: dict[str, dict[str, int]] = {}
        for status, topic, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            by_topic.setdefault(topic, {})[status] = count
        return StoreStats(by_status=by_status, by_topic=by_topic)

    async def apply(self, op: JobOp, *, now: datetime) -> Job:
        return applied((await self.apply_many([op], now=now))[0])

    async def apply_many(self, ops: Sequence[JobOp], *, now: datetime) -> list[Applied]:
        if not ops:
            return []
        out = await self._run(True, apply_tx, ops, now)
        if wakes(ops, out):
            self.notify_local()
        return out

    # -- the worker's side ----------------------------------------------------------------------

    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        if limit <= 0 or not topics:
            return []
        now_us = to_us(now)
        # A read first: an idle worker (nothing due) never takes the write lock.
        levels = [(t, p) for t, p, first in await self._levels(topics) if first <= now_us]
        if not levels:
            return []
        if len(levels) > CLAIM_MAX_LEVELS:
            # Past SQLite's limit on a compound SELECT: the highest priorities first;
            # the other levels are read by the next claims.
            levels = sorted(levels, key=lambda lv: -lv[1])[:CLAIM_MAX_LEVELS]
        sql = self._claim_sql.get(len(levels))
        if sql is None:
            sql = self._claim_sql[len(levels)] = q.claim_jobs(len(levels))
        params: list[Any] = [worker_id, to_us(locked_until), now_us, now_us]
        for topic, priority in levels:
            params += (topic, priority, now_us)
        params.append(limit)
        rows = await self._run(True, lambda db: db.execute(sql, params).fetchall())
        jobs = [row_to_job(r) for r in rows]
        jobs.sort(key=claim_order)
        return jobs

    async def _levels(self, topics: Sequence[str]) -> list[tuple[str, int, int]]:
        """(topic, priority, earliest run_at in µs) of each pending priority level of
        these topics: a few index seeks per level, whatever the backlog."""
        wanted = codec.dumps_str(list(dict.fromkeys(topics)))
        return await self._run(False, lambda db: db.execute(q.CLAIM_LEVELS, (wanted,)).fetchall())

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        if not topics:
            return None
        firsts = [first for _, _, first in await self._levels(topics)]
        return from_us_opt(min(firsts)) if firsts else None

    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        if not job_ids:
            return HeartbeatResult()
        params = (to_us(locked_until), codec.dumps_str(list(job_ids)), worker_id)
        rows = await self._run(True, lambda db: db.execute(q.HEARTBEAT, params).fetchall())
        held = {r[0] for r in rows}
        return HeartbeatResult(
            lost=frozenset(j for j in job_ids if j not in held),
            cancel_requested=frozenset(r[0] for r in rows if r[1]),
        )

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Job | None]:
        if not outcomes:
            return []
        results = [
            None
            if o.status is not JobStatus.COMPLETED or o.result is None
            else codec.encode_checked(o.result, field="result")
            for o in outcomes
        ]
        ids = codec.dumps_str([o.job_id for o in outcomes])
        out: list[Job | None] = await self._run(True, finish_tx, outcomes, results, ids, now)
        if any(j is not None and j.status is JobStatus.PENDING for j in out):
            self.notify_local()
        return out

    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        rows = await self._run(False, lambda db: db.execute(q.EXPIRED_JOBS, (to_us(now),)).fetchall())
        # Sorted here: they are few (see EXPIRED_JOBS), and no index holds them in lease order.
        rows.sort(key=lambda r: (r[21], r[0]))
        return [row_to_job(r) for r in rows[:limit]]

    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        params = (to_us(finished_before), limit)
        return await self._run(True, lambda db: db.execute(q.PRUNE_JOBS, params).rowcount)

    async def count_finished(self, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
        bucket_us = bucket_seconds * 1_000_000
        params = (bucket_us, to_us(since))
        rows = await self._run(False, lambda db: db.execute(q.COUNT_FINISHED, params).fetchall())
        return [(from_us(b * bucket_us), status, n) for b, status, n in rows]

    # -- wake-ups (_wakeups.py) ------------------------------------------------------------------

    async def wait_for_jobs(self, timeout: float) -> bool:
        await self._ensure_connected()
        return await self._wakeups.wait(timeout)

    def notify_local(self) -> None:
        self._wakeups.notify()

    def _on_commit(self) -> None:
        if self._subscribers:
            self._tail_events()

    # -- events ---------------------------------------------------------------------------------

    def events_wanted(self) -> bool:
        return self._presence.heard(self._loop)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = event_rows(events)
        await self._run(True, self._write_events, rows)
        if self._subscribers:
            self._tail_events()  # local subscribers need not wait for the watcher

    def _write_events(self, db: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> None:
        self._events_pruned_at = write_events(db, rows, self._events_pruned_at)

    async def _last_event_id(self) -> int:
        return int(await self._run(False, lambda db: db.execute(q.LAST_EVENT_ID).fetchone()[0]))

    async def subscribe(self) -> AsyncIterator[Event]:
        position = None
        if self._db is not None:  # else (or on an error) decided on the first __anext__
            with self._lock, contextlib.suppress(sqlite3.Error):
                position = int(self._db.execute(q.LAST_EVENT_ID).fetchone()[0])
        sub = Subscription(self, position)
        self._subscribers.add(sub)  # from now on this process builds events
        try:
            await self._presence.join()  # and from then on every other process
        except BaseException:
            await sub.aclose()
            raise
        return sub

    def _tail_events(self) -> None:
        tail_events(self._watch_db, self._subscribers, self._path)

    # -- live workers -------------------------------------------------------------------------------

    async def save_worker(self, info: WorkerInfo) -> None:
        params = worker_params(info)
        await self._run(True, lambda db: db.execute(q.SAVE_WORKER, params))

    async def remove_worker(self, worker_id: str) -> None:
        await self._run(True, lambda db: db.execute(q.REMOVE_WORKER, (worker_id,)))

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        rows = await self._run(False, lambda db: db.execute(q.LIST_WORKERS).fetchall())
        workers = [row_to_worker(r) for r in rows]
        alive = [w for w in workers if w.last_heartbeat is None or w.last_heartbeat >= alive_since]
        if len(alive) < len(workers):
            cutoff = to_us(alive_since)
            await self._run(True, lambda db: db.execute(q.DELETE_STALE_WORKERS, (cutoff,)))
        return alive

    # -- the maintenance leader ---------------------------------------------------------------------

    async def acquire_leadership(self, *, holder: str, now: datetime, until: datetime) -> bool:
        params = (holder, to_us(until), to_us(now))
        rows = await self._run(True, lambda db: db.execute(q.ACQUIRE_LEADERSHIP, params).fetchall())
        return bool(rows)

    async def release_leadership(self, *, holder: str) -> None:
        await self._run(True, lambda db: db.execute(q.RELEASE_LEADERSHIP, (holder,)))

    async def current_leader(self, *, now: datetime) -> str | None:
        rows = await self._run(False, lambda db: db.execute(q.CURRENT_LEADER, (to_us(now),)).fetchall())
        return str(rows[0][0]) if rows else None

    # -- schedules -----------------------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        params = schedule_params(schedule)
        row = await self._run(True, lambda db: db.execute(q.SAVE_SCHEDULE, params).fetchall()[0])
        return row_to_schedule(row)

    async def add_schedule(self, schedule: Schedule) -> Schedule | None:
        params = schedule_params(schedule)
        rows = await self._run(True, lambda db: db.execute(q.ADD_SCHEDULE, params).fetchall())
        return row_to_schedule(rows[0]) if rows else None

    async def get_schedule(self, name: str) -> Schedule | None:
        row = await self._run(False, lambda db: db.execute(q.GET_SCHEDULE, (name,)).fetchone())
        return row_to_schedule(row) if row is not None else None

    async def list_schedules(self) -> list[Schedule]:
        rows = await self._run(False, lambda db: db.execute(q.LIST_SCHEDULES).fetchall())
        return [row_to_schedule(r) for r in rows]

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._run(True, lambda db: db.execute(q.DELETE_SCHEDULE, (name,)).rowcount))

    async def set_schedule_enabled(self, name: str, enabled: bool, *, next_run_at: datetime | None) -> Schedule | None:
        params = (1 if enabled else 0, None if next_run_at is None else to_us(next_run_at), name)
        rows = await self._run(True, lambda db: db.execute(q.SET_SCHEDULE_ENABLED, params).fetchall())
        return row_to_schedule(rows[0]) if rows else None

    async def fire_schedule(
        self, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
    ) -> Job | None:
        fire_us = to_us(fire_at)
        cas = (fire_us, None if next_run_at is None else to_us(next_run_at), name, fire_us)
        fired = await self._run(True, fire_schedule_tx, cas, prepare([job]))
        if fired is not None:
            self.notify_local()
        return fired
