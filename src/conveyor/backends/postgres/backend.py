"""PostgresBackend: the storage protocol on PostgreSQL with psycopg 3 (async) and its pool.

- Every query is a named block of ``queries.sql``, run by ``db.py`` on an autocommit
  pool (one round trip, one implicit transaction each); the worker's round trip
  (events, outcomes, the next claim) is one statement (``worker_side.py``).
- Wake-ups: a trigger NOTIFYs the schema's jobs channel when jobs are inserted or become
  pending; one LISTEN connection per backend (``listener.py``), opened on the first
  ``wait_for_jobs`` or ``subscribe()`` only, wakes ``wait_for_jobs`` and feeds
  ``subscribe()``.
- Isolation: every object lives in one schema (default ``conveyor``; ``schema=`` option
  or ``?schema=`` in the URL); NOTIFY channels carry the schema name.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from conveyor.backends.base import (
    Applied,
    Capabilities,
    ClaimRequest,
    HeartbeatResult,
    StoreStats,
    WorkerInfo,
    applied,
    inserted_events,
    wakes,
)
from conveyor.backends.postgres import catalog, worker_side
from conveyor.backends.postgres import queries as q
from conveyor.backends.presence import Presence
from conveyor.backends.wakeup import LocalWakeup, hand_over
from conveyor.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    MissingDependencyError,
)
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import JobOp
from conveyor.core.page import JobPage, keyset_page
from conveyor.core.redact import redact
from conveyor.core.schedule import Schedule

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingDependencyError("psycopg", "postgres") from exc

# After the driver check: these modules use psycopg too.
from conveyor.backends.postgres import operations
from conveyor.backends.postgres.db import Database
from conveyor.backends.postgres.enqueue import (
    BlockingConnections,
    copy_new_jobs,
    enqueue_on,
    enqueue_params,
    execute_on,
    fill_missing,
    lost_keys,
    map_enqueued,
    new_ids,
    new_jobs_insert,
    stored_new_jobs,
)
from conveyor.backends.postgres.event_listeners import EventListeners
from conveyor.backends.postgres.listener import Listener
from conveyor.backends.postgres.migrate import apply_migrations
from conveyor.backends.postgres.pool import Connections, reached_directly
from conveyor.backends.postgres.rows import (
    bad_option,
    channel_name,
    is_new,
    job_from_row,
    load_migrations,
    pool_options,
    split_url,
)
from conveyor.backends.postgres.subscription import Subscription, encode_events

logger = logging.getLogger("conveyor.backends.postgres")

DEFAULT_SCHEMA = "conveyor"
# From this many new jobs on, enqueue uses COPY (its transaction costs two more round trips).
COPY_MIN_JOBS = 64
_NAMEDATALEN = 63


class PostgresBackend:
    """The PostgreSQL backend.

    Args:
        url: ``postgresql://user@host:port/db?schema=name`` (``postgres://`` too); other
            query parameters go to libpq, but for the pool options.
        schema: schema holding every object (wins over ``?schema=``; default ``conveyor``).
        pool_min_size, pool_max_size, pool_timeout: pool bounds (default 2, 10) and seconds
            an operation waits for a connection before ``BackendUnavailable`` (default 5);
            win over ``?pool_min_size=`` ... in the URL.
        connect_timeout: seconds to wait when connecting (default 10).
    """

    capabilities = Capabilities(
        push_wakeups=True,
        cross_process_events=True,
        transactional_enqueue=True,
        multi_process=True,
        enqueue_events=True,
        blocking_enqueue=True,
        finish_and_claim=True,
    )

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_min_size: int | None = None,
        pool_max_size: int | None = None,
        pool_timeout: float | None = None,
        connect_timeout: float = 10.0,
        listen_url: str | None = None,
        async_ack: bool = True,
        **_: Any,
    ) -> None:
        self.url = url
        conninfo, url_schema = split_url(url)
        self.schema = schema or url_schema or DEFAULT_SCHEMA
        if not re.fullmatch(r"[^\x00]{1,63}", self.schema):
            raise ConfigurationError(f"invalid PostgreSQL schema name {self.schema!r}: 1 to 63 characters")
        try:
            min_size, max_size, wait = pool_options(url, pool_min_size, pool_max_size, pool_timeout)
            params = conninfo_to_dict(conninfo)
            reason = bad_option(params)
        except (psycopg.ProgrammingError, ValueError) as exc:
            reason = str(exc)
        if reason is not None:
            raise ConfigurationError(f"invalid PostgreSQL URL {redact(url)!r}: {redact(reason)}")
        self._conninfo = conninfo
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in params:
            # Lets operators (and tests) tell this store's connections apart.
            self._connect_kwargs["application_name"] = f"conveyor:{self.schema}"[:_NAMEDATALEN]
        # No startup options: a pooler refuses them (the pool's connections SET their
        # time zone instead, pool.py).
        self._listen_conninfo: str | None = None
        if listen_url:
            self._listen_conninfo = split_url(listen_url)[0]
            try:
                reason = bad_option(conninfo_to_dict(self._listen_conninfo))
            except psycopg.ProgrammingError as exc:
                reason = str(exc)
            if reason is not None:
                raise ConfigurationError(
                    f"invalid CONVEYOR_LISTEN_URL: {redact(reason)}", variable="CONVEYOR_LISTEN_URL"
                )
        self.async_ack = async_ack
        self.pooled = False
        self._connect_timeout = connect_timeout
        self.jobs_channel = channel_name("jobs", self.schema)
        self.events_channel = channel_name("events", self.schema)

        self._connections = Connections(
            conninfo,
            self._connect_kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=wait,
            name=f"conveyor-{self.schema}",
        )
        # The LISTEN connection, started by _listen() on first need (see there).
        self._listen_to: str | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        self._wakeup = LocalWakeup()
        self._connect_lock: asyncio.Lock | None = None
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._db = Database(self.schema, self._connections, self.connect, self.events_channel)
        self._presence = Presence(EventListeners(self._db), self._subscriptions)
        self._blocking = BlockingConnections(
            conninfo,
            self._connect_kwargs,
            max_size=max_size,
            timeout=wait,
            name=f"conveyor-sync-{self.schema}",
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- plumbing --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._db.closed

    def _sql(self, query: str) -> str:
        """A named query, or a template in the same conventions, for this schema."""
        return self._db.sql(query)

    # -- lifecycle of the connection -------------------------------------------------

    async def connect(self) -> None:
        if self._connections.is_open:
            return
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._connections.is_open:
                return
            self._db.closed = False
            self._loop = asyncio.get_running_loop()
            self._blocking.reopen()
            await self.migrate()
            with self._db.translate():
                await self._connections.open(self._connect_timeout)
            self._listening = asyncio.Event()
            self._listen_to = self._listen_conninfo or (None if self.pooled else self._conninfo)
            if self._listen_to is None:
                logger.warning(
                    "PostgreSQL is reached through a pooler and CONVEYOR_LISTEN_URL is not set: workers poll"
                    " for new jobs every poll interval, and events reach subscribers of this process only"
                    " (set CONVEYOR_LISTEN_URL to a direct connection for wake-ups; see docs/postgres.md)"
                )

    def _listen(self) -> None:
        """Start the LISTEN connection if this backend has none yet: on first need only
        (a waiting worker, a subscriber), so that a process that only enqueues holds no
        extra connection and reads no NOTIFY for each job it enqueues (bench/README.md,
        "Lazy LISTEN"). Once it listens, the listener wakes the waiters: jobs enqueued
        before then are found by the claim that follows."""
        if self._listener is not None or self._listen_to is None or self._listening is None or self.closed:
            return
        if not self._connections.is_open:
            return
        listener = Listener(
            self._listen_to,
            self._connect_kwargs,
            jobs_channel=self.jobs_channel,
            events_channel=self.events_channel,
            listening=self._listening,
            wake=self.notify_local,
            subscriptions=self._subscriptions,
            closed=lambda: self.closed,
        )
        self._listener = asyncio.get_running_loop().create_task(listener.run(), name="conveyor-pg-listener")

    async def migrate(self) -> int:
        migrations = load_migrations()
        with self._db.translate():
            # Never prepared (the threshold is psycopg's default 5 uses): it may go through
            # a pooler, where a prepared statement would stay on a shared server connection.
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, prepare_threshold=None, row_factory=dict_row, **self._connect_kwargs
            )
            try:
                if not await reached_directly(conn):
                    # A pooler in transaction mode keeps no session for us: no prepared
                    # statements (PgBouncer < 1.21 cannot route them), no LISTEN.
                    self.pooled = True
                    self._connections.prepare = self._blocking.prepare = False
                return await apply_migrations(
                    conn, migrations, schema=self.schema, jobs_channel=self.jobs_channel, sql=self._sql
                )
            finally:
                await conn.close()

    async def close(self) -> None:
        if self._connections.is_open:
            with contextlib.suppress(Exception):
                await self._db.ride_along.flush()
            await self._presence.leave()
        self._db.closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self._connections.close()
        for sub in list(self._subscriptions):
            sub.end()
        self._subscriptions.clear()
        self._blocking.close()

    async def ping(self) -> None:
        async with self._db.conn(timeout=min(self._connections.timeout, 2.0)) as conn:
            await conn.execute(self._sql("ping"))

    # -- jobs ------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        if not jobs:
            return []
        if all(is_new(j) for j in jobs):
            return await self._enqueue_new(jobs, connection, events)
        rows, params = enqueue_params(jobs)
        sql = self._sql("enqueue_jobs")
        if connection is not None:
            with self._db.translate():
                out = await enqueue_on(connection, jobs, rows, sql, params, self._sql("enqueue_find_unique"))
        else:
            async with self._db.conn() as conn:
                with new_ids():
                    cur = await conn.execute(sql, params)
                result = await cur.fetchall()
                found = map_enqueued(jobs, rows, result)
                if any(j is None for j in found):
                    # A concurrent enqueue committed a holder after our snapshot.
                    cur = await conn.execute(self._sql("enqueue_find_unique"), lost_keys(jobs, found))
                    fill_missing(jobs, found, await cur.fetchall())
            out = [j for j in found if j is not None]
            self.notify_local()
        if events:
            events = inserted_events(jobs, out, events)
        if events and connection is not None:
            # In the caller's transaction: delivered on its commit, never after a rollback.
            with self._db.translate():
                await execute_on(
                    connection,
                    self._sql("notify_events"),
                    {"channel": self.events_channel, "events": encode_events(events)},
                )
        elif events:
            await self._db.publish_alone(encode_events(events))
            self._deliver_locally(events)
        return out

    async def _enqueue_new(self, jobs: Sequence[Job], connection: Any, events: Sequence[Event] | None) -> list[Job]:
        """New jobs without unique keys: the short INSERT, with the pg_notify of their
        events in the same statement (one round trip; delivered on commit)."""
        if connection is None and len(jobs) >= COPY_MIN_JOBS:
            return await self._copy_new(jobs, events)
        query, params, rows = new_jobs_insert(jobs, events, self.events_channel)
        sql = self._sql(query)
        if connection is not None:
            with self._db.translate():
                await execute_on(connection, sql, params)
        else:
            async with self._db.conn() as conn:
                with new_ids():
                    await conn.execute(sql, params)
            self.notify_local()
            self._deliver_locally(events)
        return stored_new_jobs(jobs, rows)

    async def _copy_new(self, jobs: Sequence[Job], events: Sequence[Event] | None) -> list[Job]:
        """A large batch of new jobs: COPY, then the events' pg_notify in the same transaction."""
        async with self._db.conn() as conn:
            stored = await copy_new_jobs(
                conn, self._sql("copy_new_jobs"), self._sql("notify_events"), self.events_channel, jobs, events
            )
        self.notify_local()
        self._deliver_locally(events)
        return stored

    def accepts_blocking(self, jobs: Sequence[Job], connection: Any) -> bool:
        """The common enqueue: new jobs without unique keys, fewer than a COPY batch,
        on our connection or the caller's sync one. The rest takes ``enqueue``."""
        return (
            (connection is None or isinstance(connection, psycopg.Connection))
            and len(jobs) < COPY_MIN_JOBS
            and all(is_new(j) for j in jobs)
        )

    def enqueue_blocking(
        self, jobs: Sequence[Job], *, connection: Any = None, events: Sequence[Event] | None = None
    ) -> list[Job]:
        """``enqueue`` of what ``accepts_blocking`` accepts, from the sync facade's thread:
        the short INSERT with its events' pg_notify on a blocking connection (or in the
        caller's sync transaction). One round trip, no hop to the event loop."""
        if not jobs:
            return []
        query, params, rows = new_jobs_insert(jobs, events, self.events_channel)
        sql = self._sql(query)
        with self._db.translate(), new_ids():
            if connection is None:
                self._blocking.execute(sql, params)
            else:
                connection.execute(sql, params)
        if connection is None:
            hand_over(self._loop, self._wakeup)  # the LISTEN connection wakes other processes
            if events and self._listener is None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver_locally, events)
        return stored_new_jobs(jobs, rows)

    async def get(self, job_id: str) -> Job | None:
        if "\x00" in job_id:
            return None  # PostgreSQL text cannot hold NUL: no job has such an id
        rows = await self._db.fetch("get_job", {"id": job_id})
        return job_from_row(rows[0]) if rows else None

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
        cursor = before if before is not None else after
        mode = "before" if before is not None else "after" if after is not None else None
        query = q.list_jobs(by_status=status is not None, by_topic=topic is not None, cursor=mode)
        params = {
            "status": JobStatus(status).value if status is not None else None,
            "topic": topic,
            "limit": limit + 1,
            "offset": offset,
            "cursor": cursor,
        }
        rows = await self._db.fetch(query, params)
        total = rows[0]["total"] if rows else 0
        beyond = bool(rows[0]["beyond"]) if cursor is not None and rows else offset > 0
        jobs = [job_from_row(r) for r in rows if r["id"] is not None]
        return keyset_page(jobs, total=total, limit=limit, offset=offset, before=before, beyond=beyond)

    async def stats(self) -> StoreStats:
        by_status = {s.value: 0 for s in JobStatus}
        by_topic: dict[str, dict[str, int]] = {}
        for row in await self._db.fetch("stats"):
            by_status[row["status"]] += row["n"]
            by_topic.setdefault(row["topic"], {})[row["status"]] = row["n"]
        return StoreStats(by_status=by_status, by_topic=by_topic)

    async def apply(self, op: JobOp, *, now: datetime) -> Job:
        return applied((await self.apply_many([op], now=now))[0])

    async def apply_many(self, ops: Sequence[JobOp], *, now: datetime) -> list[Applied]:
        if not ops:
            return []
        out = await operations.apply_many(self._db, ops, now)
        if wakes(ops, out):
            self.notify_local()
        return out

    # -- the worker's side (worker_side.py) --------------------------------------------

    async def claim(
        self, *, worker_id: str, topics: Sequence[str], limit: int, now: datetime, locked_until: datetime
    ) -> list[Job]:
        if not topics or limit <= 0:
            return []
        request = ClaimRequest(worker_id, topics, limit, locked_until)
        return await worker_side.claim(self._db, now=now, request=request)

    async def next_run_at(self, *, topics: Sequence[str]) -> datetime | None:
        if not topics:
            return None
        return await worker_side.next_run_at(self._db, topics=topics)

    async def heartbeat(self, *, worker_id: str, job_ids: Sequence[str], locked_until: datetime) -> HeartbeatResult:
        if not job_ids:
            return HeartbeatResult()
        return await worker_side.heartbeat(self._db, worker_id=worker_id, job_ids=job_ids, locked_until=locked_until)

    async def finish(self, outcomes: Sequence[Outcome], *, now: datetime) -> list[Job | None]:
        if not outcomes:
            return []
        out, _ = await worker_side.finish(self._db, outcomes, now=now, async_ack=self.async_ack)
        if any(j is not None and j.status is JobStatus.PENDING for j in out):
            self.notify_local()
        return out

    async def finish_and_claim(
        self, outcomes: Sequence[Outcome], *, now: datetime, claim: ClaimRequest
    ) -> tuple[list[Job | None], list[Job]]:
        """``finish`` and ``claim`` in one statement (take_work): the worker's round trip
        when a batch of outcomes frees slots."""
        if not claim.topics or claim.limit <= 0:
            return await self.finish(outcomes, now=now), []
        if not outcomes:
            return [], await worker_side.claim(self._db, now=now, request=claim)
        out, claimed = await worker_side.finish(self._db, outcomes, now=now, async_ack=self.async_ack, claim=claim)
        if any(j is not None and j.status is JobStatus.PENDING for j in out):
            self.notify_local()
        return out, claimed

    async def expired(self, *, now: datetime, limit: int) -> list[Job]:
        return await worker_side.expired(self._db, now=now, limit=limit)

    async def prune(self, *, finished_before: datetime, limit: int) -> int:
        return await worker_side.prune(self._db, finished_before=finished_before, limit=limit)

    async def count_finished(self, *, since: datetime, bucket_seconds: int) -> list[tuple[datetime, str, int]]:
        return await worker_side.count_finished(self._db, since=since, bucket_seconds=bucket_seconds)

    async def wait_for_jobs(self, timeout: float) -> bool:
        if self._listener is None:
            self._listen()
        return await self._wakeup.wait(timeout)

    def notify_local(self) -> None:
        self._wakeup.notify()

    # -- events ----------------------------------------------------------------------

    def events_wanted(self) -> bool:
        return self._presence.heard(self._loop)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        # With the next claim or acknowledgement if one goes out within a few ms.
        await self._db.ride_along.add(encode_events(events))
        self._deliver_locally(events)

    def _deliver_locally(self, events: Sequence[Event] | None) -> None:
        """Without a LISTEN connection (behind a pooler, no CONVEYOR_LISTEN_URL) no NOTIFY
        comes back to this process: its own events go to its subscribers directly."""
        if self._listener is not None or not events or not self._subscriptions:
            return
        for sub in list(self._subscriptions):
            for event in events:
                sub.offer(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        sub = Subscription(self._subscriptions, self.closed)
        if self.closed:
            return sub
        try:
            if not self._connections.is_open:
                await self.connect()
            self._listen()
            listening = self._listening
            if self._listener is None or listening is None:
                return sub  # behind a pooler without CONVEYOR_LISTEN_URL: this process's events only
            if not listening.is_set():
                # Events of other processes arrive through the LISTEN connection.
                try:
                    await asyncio.wait_for(listening.wait(), self._connect_timeout)
                except TimeoutError:
                    raise BackendUnavailable(
                        "PostgreSQL LISTEN connection not ready: events of other processes would be missed"
                    ) from None
            # From now on events are sent (they cost nothing while nobody listens).
            await self._presence.join()
        except BaseException:
            await sub.aclose()
            raise
        return sub

    # -- live workers, the maintenance leader, schedules (catalog.py) ----------------

    async def save_worker(self, info: WorkerInfo) -> None:
        await catalog.save_worker(self._db, info)

    async def remove_worker(self, worker_id: str) -> None:
        await catalog.remove_worker(self._db, worker_id)

    async def list_workers(self, *, alive_since: datetime) -> list[WorkerInfo]:
        return await catalog.list_workers(self._db, alive_since=alive_since)

    async def acquire_leadership(self, *, holder: str, now: datetime, until: datetime) -> bool:
        return await catalog.acquire_leadership(self._db, holder=holder, now=now, until=until)

    async def release_leadership(self, *, holder: str) -> None:
        await catalog.release_leadership(self._db, holder=holder)

    async def current_leader(self, *, now: datetime) -> str | None:
        return await catalog.current_leader(self._db, now=now)

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        return await catalog.save_schedule(self._db, schedule)

    async def add_schedule(self, schedule: Schedule) -> Schedule | None:
        return await catalog.add_schedule(self._db, schedule)

    async def get_schedule(self, name: str) -> Schedule | None:
        return await catalog.get_schedule(self._db, name)

    async def list_schedules(self) -> list[Schedule]:
        return await catalog.list_schedules(self._db)

    async def delete_schedule(self, name: str) -> bool:
        return await catalog.delete_schedule(self._db, name)

    async def set_schedule_enabled(self, name: str, enabled: bool, *, next_run_at: datetime | None) -> Schedule | None:
        return await catalog.set_schedule_enabled(self._db, name, enabled, next_run_at=next_run_at)

    async def fire_schedule(
        self, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
    ) -> Job | None:
        fired = await catalog.fire_schedule(self._db, name, fire_at=fire_at, next_run_at=next_run_at, job=job)
        if fired is not None:
            self.notify_local()
        return fired
