"""Enqueue statements of the PostgreSQL backend: their parameters, the mapping of their
results to the jobs the caller gets back, and their execution through a caller's
psycopg connection (transactional enqueue), and the blocking connections of the sync
facade's enqueues. The backend runs them on its own connections and translates driver
errors.

Imports only ``conveyor.core`` and this package.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from conveyor.backends.postgres import queries as q
from conveyor.backends.postgres.rows import RawJsonLoader, job_from_row, job_values, new_job_values
from conveyor.backends.postgres.subscription import encode_events
from conveyor.core.errors import BackendError, DuplicateJob, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job


@contextlib.contextmanager
def new_ids() -> Iterator[None]:
    """Inserting new jobs, a unique violation means one of their ids is taken (unique
    keys are resolved by ON CONFLICT, never by an error): PostgreSQL's detail names it,
    ``Key (id)=(<id>) already exists.``"""
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        taken = re.search(r"\(id\)=\((.*)\) already exists", exc.diag.message_detail or "")
        raise DuplicateJob(taken.group(1) if taken else "(unknown)") from exc


def wrong_connection(connection: object) -> ValidationError:
    return ValidationError(
        "connection", f"expected a psycopg Connection or AsyncConnection, got {type(connection).__name__}"
    )


# -- new jobs without unique keys: the short INSERT ----------------------------------


def new_jobs_insert(
    jobs: Sequence[Job], events: Sequence[Event] | None, events_channel: str
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The query name, parameters and job values of the short INSERT, with the
    pg_notify of the events in the same statement (one round trip; delivered on commit).
    One job goes as plain values: psycopg dumps those several times faster than
    one-element arrays."""
    rows = [new_job_values(j) for j in jobs]
    payloads = encode_events(events or ())
    if len(rows) == 1 and len(payloads) <= 1:
        if payloads:
            return "enqueue_new_job_notify", {**rows[0], "channel": events_channel, "event": payloads[0]}, rows
        return "enqueue_new_job", rows[0], rows
    params: dict[str, Any] = {c: [r[c] for r in rows] for c in q.NEW_JOB_COLUMNS}
    if payloads:
        return "enqueue_new_jobs_notify", {**params, "channel": events_channel, "events": payloads}, rows
    return "enqueue_new_jobs", params, rows


def stored_new_jobs(jobs: Sequence[Job], rows: list[dict[str, Any]]) -> list[Job]:
    """What the store holds: the input after a JSON round trip."""
    out = []
    loads = orjson.loads
    for job, values in zip(jobs, rows, strict=True):
        out.append(job.stored_as(loads(values["payload"]), loads(values["metadata"]) if job.metadata else {}))
    return out


async def copy_new_jobs(
    conn: Any, copy_sql: str, notify_sql: str, events_channel: str, jobs: Sequence[Job], events: Sequence[Event] | None
) -> list[Job]:
    """A large batch of new jobs by binary COPY on ``conn`` (autocommit), then the events'
    pg_notify; returns the jobs as stored."""
    with new_ids():
        # One COPY is all or nothing by itself: a transaction (two more round trips)
        # only when the events' pg_notify must commit with it.
        async with conn.transaction() if events else contextlib.nullcontext():
            async with conn.cursor().copy(copy_sql) as copy:
                copy.set_types(q.COPY_NEW_JOB_TYPES)
                rows = []
                for job in jobs:
                    row = new_job_values(job)
                    rows.append(row)
                    await copy.write_row((*q.new_job_row(row), "pending", job.created_at))
                # The server inserts rows more slowly than they are encoded: what is left
                # to work out is worked out while it catches up, before the end of the
                # COPY waits for it (bulk enqueue ~4 % faster, bench/README.md).
                stored = stored_new_jobs(jobs, rows)
                payloads = encode_events(events or ())
            if payloads:
                await conn.execute(notify_sql, {"channel": events_channel, "events": payloads})
    return stored


async def execute_on(connection: Any, sql: str, params: Mapping[str, Any]) -> None:
    """One statement through the caller's psycopg connection, inside its transaction
    (a sync connection belongs to the caller's thread, which is the one running us)."""
    with new_ids():
        if isinstance(connection, psycopg.AsyncConnection):
            await connection.execute(sql, params)
        elif isinstance(connection, psycopg.Connection):
            connection.execute(sql, params)
        else:
            raise wrong_connection(connection)


# -- any jobs: the INSERT that resolves unique keys ----------------------------------


def enqueue_params(jobs: Sequence[Job]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The job values and the parameters of ``enqueue_jobs``."""
    rows = [job_values(j) for j in jobs]
    params: dict[str, Any] = {c: [r[c] for r in rows] for c in rows[0]}
    return rows, {**params, **key_pairs(jobs)}


def key_pairs(jobs: Sequence[Job]) -> dict[str, list[str]]:
    """The (topic, unique_key) pairs of ``jobs`` as two parallel arrays (keys are scoped
    per topic): the ``key_topics`` and ``keys`` parameters."""
    pairs = sorted({(j.topic, j.unique_key) for j in jobs if j.unique_key is not None})
    return {"key_topics": [t for t, _ in pairs], "keys": [k for _, k in pairs]}


def map_enqueued(jobs: Sequence[Job], rows: list[dict[str, Any]], result: list[DictRow]) -> list[Job | None]:
    """Per input job: itself as stored, or the active job holding its unique_key
    (None when that holder is not known yet: committed after our snapshot)."""
    inserted = set(result[0]["inserted"] or ()) if result else set()
    holders: dict[tuple[str, str | None], Job] = {}
    for row in result:
        if row["id"] is not None:
            job = job_from_row(row)
            assert job.unique_key is not None
            holders[(job.topic, job.unique_key)] = job
    out: list[Job | None] = []
    for job, values in zip(jobs, rows, strict=True):
        if job.id in inserted:
            # What the store holds: the input after a JSON round trip.
            job_result = None if values["result"] is None else orjson.loads(values["result"])
            stored = job.stored_as(orjson.loads(values["payload"]), orjson.loads(values["metadata"]), job_result)
            if job.unique_key is not None:
                holders[(job.topic, job.unique_key)] = stored
            out.append(stored)
        elif job.unique_key is not None and (job.topic, job.unique_key) in holders:
            out.append(holders[(job.topic, job.unique_key)].copy())
        else:
            out.append(None)
    return out


def lost_keys(jobs: Sequence[Job], out: list[Job | None]) -> dict[str, list[str]]:
    """The parameters of ``enqueue_find_unique``: the (topic, unique_key) pairs whose
    holders ``map_enqueued`` could not see."""
    return key_pairs([j for j, o in zip(jobs, out, strict=True) if o is None])


def fill_missing(jobs: Sequence[Job], out: list[Job | None], result: list[DictRow]) -> None:
    """Fills the gaps ``map_enqueued`` left from the result of ``enqueue_find_unique``."""
    found = {(holder.topic, holder.unique_key): holder for holder in map(job_from_row, result)}
    for i, (job, got) in enumerate(zip(jobs, out, strict=True)):
        if got is None:
            holder = found.get((job.topic, job.unique_key))
            if holder is None:  # cannot happen: the conflict proves a holder exists
                raise BackendError(f"enqueue of job {job.id}: unique_key holder vanished")
            out[i] = holder


async def enqueue_on(
    connection: Any, jobs: Sequence[Job], rows: list[dict[str, Any]], sql: str, params: dict[str, Any], find: str
) -> list[Job]:
    """Enqueue through the caller's psycopg connection, inside its transaction
    (``find`` is the rendered ``enqueue_find_unique``)."""
    if isinstance(connection, psycopg.AsyncConnection):
        async with connection.cursor(row_factory=dict_row) as acur:
            acur.adapters.register_loader("json", RawJsonLoader)
            with new_ids():
                await acur.execute(sql, params)
            out = map_enqueued(jobs, rows, await acur.fetchall())
            if any(j is None for j in out):
                await acur.execute(find, lost_keys(jobs, out))
                fill_missing(jobs, out, await acur.fetchall())
    elif isinstance(connection, psycopg.Connection):
        # A sync connection belongs to the caller's thread, which is the one
        # running us: use it directly.
        with connection.cursor(row_factory=dict_row) as scur:
            scur.adapters.register_loader("json", RawJsonLoader)
            with new_ids():
                scur.execute(sql, params)
            out = map_enqueued(jobs, rows, scur.fetchall())
            if any(j is None for j in out):
                scur.execute(find, lost_keys(jobs, out))
                fill_missing(jobs, out, scur.fetchall())
    else:
        raise wrong_connection(connection)
    return [j for j in out if j is not None]


# -- the sync facade's enqueue: blocking connections ---------------------------------


class BlockingConnections:
    """Sync psycopg connections for enqueues from the sync facade's threads: a statement
    without the hop to the event loop and back (two thread wake-ups, more than the
    statement itself costs). One connection serves whichever thread comes while it is
    free, with no pool round trip (the usual case: one thread at a time); a thread that
    finds it busy takes one from a ``psycopg_pool.ConnectionPool`` opened on first such
    need, so that the threads of a web app enqueue side by side instead of queueing
    behind one connection. Connections are opened on first use, dropped after a failure
    (the next call reconnects) and never used in a forked child (it opens its own).

    Args:
        conninfo, connect_kwargs: as the backend's.
        max_size: most pooled connections (the backend's pool_max_size).
        timeout: seconds a thread waits for a pooled connection.
        name: the pool's name (in psycopg_pool's logs).
    """

    def __init__(
        self, conninfo: str, connect_kwargs: dict[str, Any], *, max_size: int, timeout: float, name: str
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = connect_kwargs
        self._max_size = max(max_size, 1)
        self._timeout = timeout
        self._name = name
        self._pid = os.getpid()
        self._hot_lock = threading.Lock()
        self._hot: psycopg.Connection[Any] | None = None
        self._pool_lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._closed = False
        # Server-side prepared statements, off behind a pooler (as the async pool's).
        self.prepare = True

    def execute(self, sql: str, params: Mapping[str, Any]) -> None:
        if self._closed:
            raise psycopg.InterfaceError("the store is closed")
        if self._pid != os.getpid():
            self._forget_parents()
        if self._hot_lock.acquire(blocking=False):
            try:
                self._execute_hot(sql, params)
            finally:
                self._hot_lock.release()
            return
        with self._overflow().connection() as conn:
            conn.execute(sql, params)

    def _execute_hot(self, sql: str, params: Mapping[str, Any]) -> None:
        conn = self._hot
        if conn is None or conn.closed:
            conn = self._hot = psycopg.connect(self._conninfo, **self._connection_kwargs())
            if self._closed:  # closed while we connected
                self._hot = None
                _close_quietly(conn)
                raise psycopg.InterfaceError("the store is closed")
        try:
            conn.execute(sql, params)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._hot = None
            _close_quietly(conn)
            raise

    def _overflow(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """The pool of the threads that found the hot connection busy, opened on first use."""
        with self._pool_lock:
            if self._closed:
                raise psycopg.InterfaceError("the store is closed")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._conninfo,
                    kwargs=self._connection_kwargs(),
                    min_size=1,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    name=self._name,
                    open=True,
                )
            return self._pool

    def _connection_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "prepare_threshold": 0 if self.prepare else None, **self._kwargs}

    def _forget_parents(self) -> None:
        """In a forked child: the parent's connections, pool and locks (one may have
        been held by a thread that does not exist here) are dropped, never used nor
        closed."""
        self._pid = os.getpid()
        self._hot_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._hot = None
        self._pool = None

    def reopen(self) -> None:
        """Accept calls again after ``close`` (the backend reconnected)."""
        self._closed = False

    def close(self) -> None:
        """Close the connections; calls fail until ``reopen``. Does not wait for a call
        on the hot connection (the caller may be the event loop): that call closes what
        it opened."""
        self._closed = True
        if self._pid != os.getpid():
            return
        conn, self._hot = self._hot, None
        if conn is not None:
            _close_quietly(conn)
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close(timeout=1.0)


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.close()
