"""SqliteBackend: the storage protocol on one SQLite file shared by many processes.

Threading model: every statement runs directly on the event loop thread, on one main
connection (short statements: a thread hop would cost more than the work). Writes run
in ``BEGIN IMMEDIATE`` transactions that never await inside, so coroutines never
interleave on the connection. Lock waits never block the loop for long: SQLite's own
busy handler waits at most ``busy_timeout_ms`` (a few ms), then the coroutine retries
with an asyncio backoff until ``lock_wait`` seconds have passed (→ BackendUnavailable).

Wake-ups and events across processes: a second, read-only connection polls
``PRAGMA data_version`` every ``watch_interval`` seconds while somebody waits or
subscribes (it changes when any other connection commits; reading it touches only
the shared-memory WAL index). A change wakes ``wait_for_jobs`` and tails the
``events`` table by id for subscribers.

Imports only ``conveyor.core`` and ``conveyor.backends``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl

from conveyor.backends.base import Capabilities, HeartbeatResult, StoreStats, WorkerInfo
from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._convert import (
    FIELD_ENCODERS,
    from_us_opt,
    job_params,
    row_to_job,
    row_to_schedule,
    row_to_worker,
    schedule_params,
    stored_copy,
    to_us,
    worker_params,
)
from conveyor.backends.sqlite._setup import is_busy as _is_busy
from conveyor.backends.sqlite._setup import migrations as _migrations
from conveyor.backends.sqlite._setup import parse_url as _parse_url
from conveyor.backends.sqlite._setup import split_statements as _split_statements
from conveyor.backends.sqlite._setup import translate as _translate
from conveyor.core import codec
from conveyor.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    DuplicateJob,
    InvalidState,
    JobNotFound,
    ValidationError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.schedule import Schedule

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05
_SUBSCRIBER_QUEUE = 10_000
_READ_EVENTS_BATCH = 1_000
# Event rows are only a transport: keep ~10 minutes, at most this many rows.
EVENTS_KEEP_SECONDS = 600.0
EVENTS_KEEP_ROWS = 100_000
EVENTS_PRUNE_EVERY = 30.0
_ACTIVE_SQL = ("pending", "processing")
_SAVEPOINT = "conveyor_enqueue"
_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclasses.dataclass(slots=True)
class _Prepared:
    job: Job
    params: tuple[Any, ...]
    payload: bytes
    metadata: bytes


class _Subscription:
    """The async iterator ``subscribe()`` returns. Registered at once (so nothing published
    after ``subscribe()`` returns is missed) and held weakly: dropping it unsubscribes."""

    __slots__ = ("__weakref__", "_backend", "_done", "position", "queue")

    def __init__(self, backend: SqliteBackend, position: int | None) -> None:
        self._backend = backend
        self.position = position
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._done = False

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if self.position is None:
            self.position = await self._backend._last_event_id()
        self._backend._ensure_watcher()
        event = await self.queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._done = True
        self._backend._subscribers.discard(self)


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
        # Options also come from the URL (``sqlite:///x.db?synchronous=FULL``); arguments win.
        query = dict(parse_qsl(url.split("?", 1)[1])) if "?" in url else {}
        try:
            sync = str(synchronous or query.get("synchronous", "NORMAL")).upper()
            self._busy_timeout_ms = int(
                busy_timeout_ms if busy_timeout_ms is not None else query.get("busy_timeout_ms", 5)
            )
            self._lock_wait = float(lock_wait if lock_wait is not None else query.get("lock_wait", 30.0))
            self._watch_interval = float(
                watch_interval if watch_interval is not None else query.get("watch_interval", 0.002)
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid option in SQLite URL {url!r}: {exc}") from exc
        if sync not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {sync!r}")
        self._synchronous = sync
        self._db: sqlite3.Connection | None = None
        self._watch_db: sqlite3.Connection | None = None
        # The connection is used from the loop thread; the lock only guards against a
        # caller driving it from two threads at once.
        self._lock = threading.Lock()
        self._connecting: asyncio.Lock | None = None
        self._data_version: int | None = None
        self._wake: asyncio.Event | None = None
        self._waiters = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch_needed: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._subscribers: weakref.WeakSet[_Subscription] = weakref.WeakSet()
        self._events_pruned_at = 0.0
        self._claim_sql: dict[int, tuple[str, str]] = {}
        self._applied_on_connect = 0

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            cached_statements=512,
        )
        try:
            for pragma in q.CONNECTION_PRAGMAS:
                db.execute(pragma.format(synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms))
        except BaseException:
            db.close()
            raise
        return db

    async def connect(self) -> None:
        if self._db is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._db is not None:
                return
            backoff = _BusyBackoff(self._path, self._lock_wait)
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
                self._data_version = self._read_data_version()
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
        applied = await self._run(False, self._applied_versions)
        if all(version in applied for version, _, _ in wanted):
            return 0
        count = await self._run(True, self._apply_migrations, wanted)
        if count:
            log.info("SQLite store %s: applied %d migration(s)", self._path, count)
        return count

    @staticmethod
    def _applied_versions(db: sqlite3.Connection) -> set[int]:
        try:
            return {r[0] for r in db.execute(q.APPLIED_MIGRATIONS)}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return set()
            raise

    @staticmethod
    def _apply_migrations(db: sqlite3.Connection, wanted: list[tuple[int, str, str]]) -> int:
        # Under BEGIN IMMEDIATE: a concurrent migrator waits, then sees our versions.
        db.execute(q.CREATE_MIGRATIONS_TABLE)
        applied = {r[0] for r in db.execute(q.APPLIED_MIGRATIONS)}
        count = 0
        for version, name, sql in wanted:
            if version in applied:
                continue
            for statement in _split_statements(sql):
                db.execute(statement)
            db.execute(q.RECORD_MIGRATION, (version, name, to_us(datetime.now().astimezone())))
            count += 1
        return count

    def _close_connections(self) -> None:
        for db in (self._db, self._watch_db):
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:  # pragma: no cover - close of a broken handle
                    log.exception("SQLite store %s: error while closing a connection", self._path)
        self._db = self._watch_db = None

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None and not watcher.done():
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass
        self._end_subscribers()
        with self._lock:
            self._close_connections()

    def _end_subscribers(self) -> None:
        for sub in list(self._subscribers):
            while sub.queue.full():
                sub.queue.get_nowait()  # make room for the end marker
            sub.queue.put_nowait(None)
        self._subscribers = weakref.WeakSet()

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
        backoff = _BusyBackoff(self._path, self._lock_wait)
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

    @staticmethod
    def _prepare(jobs: Sequence[Job]) -> list[_Prepared]:
        dumps = codec.dumps
        out = []
        try:
            for job in jobs:
                payload = dumps(job.payload)
                metadata = dumps(job.metadata)
                out.append(_Prepared(job, job_params(job, payload, metadata), payload, metadata))
        except TypeError:
            job = jobs[len(out)]
            codec.encode_checked(job.payload, field="payload")
            codec.encode_checked(job.metadata, field="metadata")
            raise
        return out

    @staticmethod
    def _insert_jobs(db: sqlite3.Connection, prepared: list[_Prepared]) -> list[Job]:
        """INSERT the jobs on ``db`` inside the current transaction; unique keys resolved."""
        existing: dict[int, Job] = {}
        try:
            plain = [p.params for p in prepared if p.job.unique_key is None]
            if plain:
                db.executemany(q.ENQUEUE_JOB, plain)
            if len(plain) < len(prepared):
                for i, p in enumerate(prepared):
                    if p.job.unique_key is None:
                        continue
                    if db.execute(q.ENQUEUE_UNIQUE_JOB, p.params).rowcount == 0:
                        row = db.execute(q.GET_ACTIVE_BY_UNIQUE_KEY, (p.job.unique_key,)).fetchone()
                        if row is not None:
                            existing[i] = row_to_job(row)
        except sqlite3.IntegrityError as exc:
            if "jobs.id" in str(exc):
                ids = ", ".join(p.job.id for p in prepared[:3]) + ("…" if len(prepared) > 3 else "")
                raise DuplicateJob(f"a job with this id already exists (enqueueing {ids})") from exc
            raise
        loads = codec.loads
        return [
            existing[i] if i in existing else stored_copy(p.job, loads(p.payload), loads(p.metadata))
            for i, p in enumerate(prepared)
        ]

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        if not jobs:
            return []
        prepared = self._prepare(jobs)
        if connection is not None:
            out = self._enqueue_on(connection, prepared)
            if events:
                await self.publish(events)
        else:
            rows = self._event_rows(events) if events else []
            out = await self._run(True, self._insert_jobs_and_events, prepared, rows)
            if rows and self._subscribers:
                self._tail_events()  # local subscribers need not wait for the watcher
        self.notify_local()
        return out

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``enqueue`` from another thread (the sync facade's caller): the same statements
        under the same lock, waiting for a busy file with ``time.sleep``; the events go
        into the same transaction."""
        if not jobs:
            return []
        prepared = self._prepare(jobs)
        if connection is not None:
            out = self._enqueue_on(connection, prepared)
            if events:
                self._call_in_loop(self._publish_soon, list(events))
        else:
            rows = self._event_rows(events) if events else []
            out = self._run_blocking(self._insert_jobs_and_events, prepared, rows)
            if rows and self._subscribers:
                self._call_in_loop(self._tail_events)  # local subscribers read them now
        if self._waiters:
            self._call_in_loop(self.notify_local)
        return out

    def _insert_jobs_and_events(
        self, db: sqlite3.Connection, prepared: list[_Prepared], event_rows: list[tuple[int, bytes]]
    ) -> list[Job]:
        """The jobs and their job.scheduled events in one transaction: an event row is
        never visible without its job, nor before it."""
        inserted = self._insert_jobs(db, prepared)
        if event_rows:
            self._write_events(db, event_rows)
        return inserted

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody listens any more

    def _publish_soon(self, events: list[Event]) -> None:
        asyncio.get_running_loop().create_task(self.publish(events))

    def _run_blocking(
        self,
        fn: Callable[[sqlite3.Connection, list[_Prepared], list[tuple[int, bytes]]], list[Job]],
        *args: Any,
    ) -> list[Job]:
        """``_run(True, ...)`` for a thread outside the event loop: waits with time.sleep."""
        backoff = _BusyBackoff(self._path, self._lock_wait)
        while True:
            db = self._db
            if db is None:
                raise BackendUnavailable(f"SQLite store {self._path!r} is not open")
            try:
                return self._attempt(db, True, fn, *args)
            except sqlite3.Error as exc:
                time.sleep(backoff.after(exc))

    def _enqueue_on(self, conn: Any, prepared: list[_Prepared]) -> list[Job]:
        """Write the jobs through the caller's connection: they commit or roll back with
        the caller's transaction. A savepoint keeps the batch all-or-nothing."""
        if not isinstance(conn, sqlite3.Connection):
            raise ValidationError("connection", f"expected an open sqlite3.Connection, got {type(conn).__name__}")
        try:
            self._check_same_file(conn)
            legacy = getattr(conn, "autocommit", getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)) == getattr(
                sqlite3, "LEGACY_TRANSACTION_CONTROL", -1
            )
            if not conn.in_transaction and legacy and conn.isolation_level is not None:
                # sqlite3 would BEGIN implicitly before our INSERT; do it before the
                # savepoint so that RELEASE does not commit on the caller's behalf.
                conn.execute("BEGIN")
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                out = self._insert_jobs(conn, prepared)
            except BaseException:
                conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                conn.execute(f"RELEASE {_SAVEPOINT}")
                raise
            conn.execute(f"RELEASE {_SAVEPOINT}")
            return out
        except sqlite3.ProgrammingError as exc:
            raise ValidationError(
                "connection",
                f"unusable sqlite3 connection ({exc}); it must be open, and made with check_same_thread=False "
                "when the event loop runs in another thread",
            ) from exc
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc

    def _check_same_file(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("PRAGMA database_list").fetchone()
        theirs = row[2] if row else ""
        if not theirs or os.path.realpath(theirs) != os.path.realpath(self._path):
            raise ValidationError("connection", f"is open on {theirs or 'a temporary database'!r}, not {self._path!r}")

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(False, lambda db: db.execute(q.GET_JOB, (job_id,)).fetchone())
        return row_to_job(row) if row is not None else None

    async def list_jobs(
        self, *, status: JobStatus | None = None, topic: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[int, list[Job]]:
        count_sql, page_sql = q.list_jobs(by_status=status is not None, by_topic=topic is not None)
        params: list[Any] = [JobStatus(status).value] if status is not None else []
        if topic is not None:
            params.append(topic)

        def read(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            db.execute("BEGIN")  # one snapshot for the total and the page
            try:
                total = db.execute(count_sql, params).fetchone()[0]
                rows = db.execute(page_sql, [*params, limit, offset]).fetchall()
            finally:
                db.execute("COMMIT")
            return total, rows

        total, rows = await self._run(False, read)
        return total, [row_to_job(r) for r in rows]

    async def stats(self) -> StoreStats:
        rows = await self._run(False, lambda db: db.execute(q.STATS).fetchall())
        by_status = {s.value: 0 for s in JobStatus}
        by_topic: dict[str, dict[str, int]] = {}
        for status, topic, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            by_topic.setdefault(topic, {})[status] = count
        return StoreStats(by_status=by_status, by_topic=by_topic)

    async def transition(
        self, job_id: str, *, allowed: frozenset[JobStatus], changes: Mapping[str, Any], action: str
    ) -> Job:
        columns, values = [], []
        for key, value in changes.items():
            encode = FIELD_ENCODERS.get(key)
            if encode is None:
                raise ValidationError(key, "not a job field that can be changed")
            columns.append(key)
            values.append(encode(value))
        sql = q.transition_job(columns, [s.value for s in allowed])
        job = await self._run(True, self._transition_tx, sql, [*values, job_id], job_id, action)
        if job.status is JobStatus.PENDING:
            self.notify_local()
        return job

    @staticmethod
    def _transition_tx(db: sqlite3.Connection, sql: str, params: list[Any], job_id: str, action: str) -> Job:
        try:
            rows = db.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as exc:
            if "unique_key" not in str(exc):
                raise
            current = db.execute(q.GET_JOB, (job_id,)).fetchone()
            holder = db.execute(q.GET_ACTIVE_BY_UNIQUE_KEY, (current[14],)).fetchone() if current else None
            raise InvalidState(
                job_id,
                current[3] if current else "unknown",
                f"{action} (unique_key held by job {holder[0] if holder else 'another job'})",
            ) from exc
        if rows:
            return row_to_job(rows[0])
        status = db.execute(q.GET_STATUS, (job_id,)).fetchone()
        if status is None:
            raise JobNotFound(job_id)
        raise InvalidState(job_id, status[0], action)

    async def delete(self, job_id: str, *, allowed: frozenset[JobStatus]) -> Job:
        sql = q.delete_job([s.value for s in allowed])

        def run(db: sqlite3.Connection) -> Job:
            rows = db.execute(sql, (job_id,)).fetchall()
            if rows:
                return row_to_job(rows[0])
            status = db.execute(q.GET_STATUS, (job_id,)).fetchone()
            if status is None:
                raise JobNotFound(job_id)
            raise InvalidState(job_id, status[0], "delete")

        return await self._run(True, run)

    # -- the worker's side ----------------------------------------------------------------------

    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        if limit <= 0 or not topics:
            return []
        wanted = list(dict.fromkeys(topics))
        shape = self._claim_sql.get(len(wanted))
        if shape is None:
            shape = self._claim_sql[len(wanted)] = (q.any_due(len(wanted)), q.claim_jobs(len(wanted)))
        due_sql, sql = shape
        now_us = to_us(now)
        due: list[Any] = []
        for topic in wanted:
            due += (topic, now_us)
        # A read first: an idle worker (nothing due) never takes the write lock.
        if not await self._run(False, lambda db: db.execute(due_sql, due).fetchone()[0]):
            return []
        params: list[Any] = [worker_id, to_us(locked_until), now_us, now_us]
        for topic in wanted:
            params += (topic, now_us, limit)
        if len(wanted) > 1:
            params.append(limit)
        rows = await self._run(True, lambda db: db.execute(sql, params).fetchall())
        jobs = [row_to_job(r) for r in rows]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        wanted = list(dict.fromkeys(topics))
        if not wanted:
            return None
        sql = q.next_run_at(len(wanted))
        row = await self._run(False, lambda db: db.execute(sql, wanted).fetchone())
        return from_us_opt(row[0] if row else None)

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
        now_us = to_us(now)
        plans = [
            (
                o,
                o.status if o.status.__class__ is JobStatus else JobStatus(o.status),
                None
                if o.status is not JobStatus.COMPLETED or o.result is None
                else codec.encode_checked(o.result, field="result"),
            )
            for o in outcomes
        ]
        ids = [o.job_id for o in outcomes]
        unique = len(set(ids)) == len(ids)
        rows = await self._run(True, self._finish_tx, plans, codec.dumps_str(ids), now_us, unique)
        out = [row_to_job(r) if r is not None else None for r in rows]
        if any(j is not None and j.status is JobStatus.PENDING for j in out):
            self.notify_local()
        return out

    @staticmethod
    def _finish_tx(
        db: sqlite3.Connection,
        plans: list[tuple[Outcome, JobStatus, bytes | None]],
        ids: str,
        now_us: int,
        unique: bool,
    ) -> list[tuple[Any, ...] | None]:
        """Read the fenced rows, work out each new row here, write them with one
        executemany (inside the caller's write transaction, so nothing changes between
        the read and the write). The UPDATE keeps the fence as its WHERE clause."""
        if not unique:  # the same job twice: only the first outcome may hold the fence
            out: list[tuple[Any, ...] | None] = []
            for plan in plans:
                [row] = SqliteBackend._finish_tx(db, [plan], codec.dumps_str([plan[0].job_id]), now_us, True)
                out.append(row)
            return out
        current = {r[0]: r for r in db.execute(q.FINISH_READ, (ids,))}
        out = []
        writes = []
        for o, status, result in plans:
            r = current.get(o.job_id)
            if r is None or r[3] != "processing" or r[20] != o.locked_by or r[6] != o.attempts:
                out.append(None)
                continue
            run_at = r[5]
            if status is JobStatus.PENDING:
                if r[22]:  # cancellation requested: the job ends here
                    status = JobStatus.CANCELLED
                else:
                    run_at = now_us if o.run_at is None else to_us(o.run_at)
            finished_at = now_us if status in _FINISHED else None
            if status is not JobStatus.COMPLETED:
                result = r[12]
            last_error = r[11] if o.last_error is None else o.last_error
            attempts = r[6] - 1 if o.refund_attempt else r[6]
            value = status.value
            writes.append(
                (value, run_at, attempts, last_error, result, now_us, finished_at, o.job_id, o.locked_by, r[6])
            )
            out.append(
                (
                    *r[:3],
                    value,
                    r[4],
                    run_at,
                    attempts,
                    *r[7:11],
                    last_error,
                    result,
                    *r[13:17],
                    now_us,
                    r[18],
                    finished_at,
                    None,
                    None,
                    r[22],
                )
            )
        if writes:
            db.executemany(q.FINISH_JOB, writes)
        return out

    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        rows = await self._run(False, lambda db: db.execute(q.EXPIRED_JOBS, (to_us(now), limit)).fetchall())
        return [row_to_job(r) for r in rows]

    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        params = (to_us(finished_before), limit)
        return await self._run(True, lambda db: db.execute(q.PRUNE_JOBS, params).rowcount)

    # -- wake-ups ---------------------------------------------------------------------------------

    def _read_data_version(self) -> int | None:
        # On the main connection: data_version there changes only for commits of OTHER
        # connections, so this process's own writes (acks, events) do not wake it up.
        db = self._db
        if db is None:
            return None
        try:
            with self._lock:
                return int(db.execute(q.DATA_VERSION).fetchone()[0])
        except sqlite3.Error as exc:
            if not _is_busy(exc):
                log.warning("SQLite store %s: reading data_version failed: %s", self._path, exc)
            return None

    def _poll(self) -> bool:
        """Look for commits by other connections; wake waiters and feed subscribers."""
        version = self._read_data_version()
        if version is None or version == self._data_version:
            return False
        self._data_version = version
        self._wake_event().set()
        if self._subscribers:
            self._tail_events()
        return True

    def _wake_event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def _ensure_watcher(self) -> None:
        if self._watch_needed is None:
            self._watch_needed = asyncio.Event()
        self._watch_needed.set()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="conveyor-sqlite-watch")

    async def _watch(self) -> None:
        needed = self._watch_needed
        assert needed is not None
        while True:
            if self._waiters == 0 and not self._subscribers:
                needed.clear()
                await needed.wait()
                continue
            await asyncio.sleep(self._watch_interval)
            try:
                self._poll()
            except Exception:  # keep watching: a bad event row must not stop wake-ups
                log.exception("SQLite store %s: watcher error", self._path)

    async def wait_for_jobs(self, timeout: float) -> bool:
        await self._ensure_connected()
        event = self._wake_event()
        self._poll()  # commits made while nobody was waiting count too
        if event.is_set():
            event.clear()
            return True
        self._waiters += 1
        self._ensure_watcher()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        event.clear()
        return True

    def notify_local(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- events ---------------------------------------------------------------------------------

    @staticmethod
    def _event_rows(events: Sequence[Event], wall: float | None = None) -> list[tuple[int, bytes]]:
        created = int((time.time() if wall is None else wall) * 1_000_000)
        # orjson writes an Event (a slotted dataclass) exactly as Event.encode() does
        # (the same keys in the same order, datetimes in ISO 8601) at half the cost.
        dumps = codec.dumps
        return [(created, dumps(e) if e.__class__ is Event else e.encode()) for e in events]

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = self._event_rows(events)
        await self._run(True, self._write_events, rows)
        if self._subscribers:
            self._tail_events()  # local subscribers need not wait for the watcher

    def _write_events(self, db: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> None:
        """Append event rows in the current transaction; now and then drop old ones (the
        table is a short replay window for other processes, not a history)."""
        db.executemany(q.PUBLISH_EVENT, rows)
        wall = time.time()
        if wall - self._events_pruned_at >= EVENTS_PRUNE_EVERY:
            db.execute(q.PRUNE_EVENTS, (int((wall - EVENTS_KEEP_SECONDS) * 1_000_000), EVENTS_KEEP_ROWS))
            self._events_pruned_at = wall  # a rolled-back prune just runs again next window

    async def _last_event_id(self) -> int:
        return int(await self._run(False, lambda db: db.execute(q.LAST_EVENT_ID).fetchone()[0]))

    def subscribe(self) -> AsyncIterator[Event]:
        position = None
        if self._db is not None:
            with self._lock:
                try:
                    position = int(self._db.execute(q.LAST_EVENT_ID).fetchone()[0])
                except sqlite3.Error:
                    position = None  # decided on the first __anext__ instead
        sub = _Subscription(self, position)
        self._subscribers.add(sub)
        return sub

    def _tail_events(self) -> None:
        db = self._watch_db
        subs = [s for s in self._subscribers if s.position is not None]
        if db is None or not subs:
            return
        position = min(s.position for s in subs if s.position is not None)
        while True:
            try:
                rows = db.execute(q.READ_EVENTS, (position, _READ_EVENTS_BATCH)).fetchall()
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    log.warning("SQLite store %s: reading events failed: %s", self._path, exc)
                return
            for event_id, body in rows:
                try:
                    event = Event.decode(body)
                except Exception:
                    log.exception("SQLite store %s: undecodable event row %s", self._path, event_id)
                    continue
                for sub in subs:
                    if sub.position is not None and event_id > sub.position:
                        sub.position = event_id
                        if not sub.queue.full():  # a stalled subscriber loses events, never stalls us
                            sub.queue.put_nowait(event)
            if len(rows) < _READ_EVENTS_BATCH:
                return
            position = rows[-1][0]

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

    # -- schedules -----------------------------------------------------------------------------------

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        params = schedule_params(schedule)
        row = await self._run(True, lambda db: db.execute(q.SAVE_SCHEDULE, params).fetchall()[0])
        return row_to_schedule(row)

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
        prepared = self._prepare([job])

        def run(db: sqlite3.Connection) -> Job | None:
            if db.execute(q.FIRE_SCHEDULE, cas).rowcount == 0:
                return None
            return self._insert_jobs(db, prepared)[0]

        fired = await self._run(True, run)
        if fired is not None:
            self.notify_local()
        return fired


class _BusyBackoff:
    """How long to wait after a failed try while another connection holds the file's
    lock: growing, jittered delays until ``lock_wait`` runs out. Other errors and the end
    of the wait are raised as conveyor errors."""

    def __init__(self, path: str, lock_wait: float) -> None:
        self._path = path
        self._lock_wait = lock_wait
        self._delay = _FIRST_BACKOFF
        self._deadline = 0.0

    def after(self, exc: sqlite3.Error) -> float:
        if not _is_busy(exc):
            raise _translate(exc, self._path) from exc
        now = time.monotonic()
        if not self._deadline:
            self._deadline = now + self._lock_wait
        elif now >= self._deadline:
            raise BackendUnavailable(
                f"SQLite store {self._path!r} stayed locked for more than {self._lock_wait:g}s"
            ) from exc
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, _MAX_BACKOFF)
        return delay
