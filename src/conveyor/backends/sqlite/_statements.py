"""Transaction bodies of the SQLite backend: plain functions of an open
``sqlite3.Connection`` and their parameters. They never begin or commit a
transaction themselves (except the savepoint around a caller's connection): the
backend runs them inside its own ``BEGIN IMMEDIATE``. Imports only ``conveyor.core``
and the SQLite backend's own helpers."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conveyor.backends.base import Applied, inserted_events
from conveyor.backends.sqlite import queries as q
from conveyor.backends.sqlite._convert import applied_params, job_params, row_to_job, to_us, to_us_opt
from conveyor.backends.sqlite._events import event_rows
from conveyor.backends.sqlite._setup import split_statements, translate
from conveyor.core import codec, lifecycle, operation
from conveyor.core.errors import DuplicateJob, JobNotFound, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.operation import JobOp

_SAVEPOINT = "conveyor_enqueue"


# -- migrations -------------------------------------------------------------------------------


def applied_versions(db: sqlite3.Connection) -> set[int]:
    try:
        return {r[0] for r in db.execute(q.APPLIED_MIGRATIONS)}
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return set()
        raise


def apply_migrations(db: sqlite3.Connection, wanted: list[tuple[int, str, str]]) -> int:
    # Under BEGIN IMMEDIATE: a concurrent migrator waits, then sees our versions.
    db.execute(q.CREATE_MIGRATIONS_TABLE)
    applied = {r[0] for r in db.execute(q.APPLIED_MIGRATIONS)}
    count = 0
    for version, name, sql in wanted:
        if version in applied:
            continue
        for statement in split_statements(sql):
            db.execute(statement)
        db.execute(q.RECORD_MIGRATION, (version, name, to_us(datetime.now().astimezone())))
        count += 1
    return count


# -- enqueue ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Prepared:
    """A job encoded once, before any lock is taken."""

    job: Job
    params: tuple[Any, ...]
    payload: bytes
    metadata: bytes


def prepare(jobs: Sequence[Job]) -> list[Prepared]:
    dumps = codec.dumps
    out = []
    try:
        for job in jobs:
            payload = dumps(job.payload)
            metadata = dumps(job.metadata)
            out.append(Prepared(job, job_params(job, payload, metadata), payload, metadata))
    except TypeError:
        job = jobs[len(out)]
        codec.encode_checked(job.payload, field="payload")
        codec.encode_checked(job.metadata, field="metadata")
        raise
    return out


def _taken_id(db: sqlite3.Connection, prepared: list[Prepared]) -> str:
    """The id of ``prepared`` that a job stored before this batch has (SQLite's error
    does not say which): one whose row is not the one this batch just inserted."""
    for p in prepared:
        row = db.execute(q.GET_JOB, (p.job.id,)).fetchone()
        if row is not None:
            stored = row_to_job(row)
            if (stored.created_at, stored.payload) != (p.job.created_at, p.job.payload):
                return p.job.id
    return "(unknown)"


def insert_jobs(db: sqlite3.Connection, prepared: list[Prepared]) -> list[Job]:
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
                    row = db.execute(q.GET_ACTIVE_BY_UNIQUE_KEY, (p.job.topic, p.job.unique_key)).fetchone()
                    if row is not None:
                        existing[i] = row_to_job(row)
    except sqlite3.IntegrityError as exc:
        if "jobs.id" in str(exc):
            raise DuplicateJob(_taken_id(db, prepared)) from exc
        raise
    loads = codec.loads
    return [
        existing[i] if i in existing else p.job.stored_as(loads(p.payload), loads(p.metadata), p.job.result)
        for i, p in enumerate(prepared)
    ]


def inserted_event_rows(
    prepared: list[Prepared], inserted: list[Job], events: Sequence[Event], rows: list[tuple[int, bytes]]
) -> list[tuple[int, bytes]]:
    """``rows`` (``event_rows(events)``, made before the write) without those of jobs
    ``insert_jobs`` did not insert (a unique key's holder came back instead)."""
    if not rows or all(p.job.unique_key is None for p in prepared):
        return rows
    kept = {e.job_id for e in inserted_events([p.job for p in prepared], inserted, events)}
    return [row for row, event in zip(rows, events, strict=True) if event.job_id in kept]


def insert_on(conn: Any, prepared: list[Prepared], path: str, events: Sequence[Event] | None) -> list[Job]:
    """Write the jobs (and their job.scheduled event rows) through the caller's
    connection: they commit or roll back with the caller's transaction. A savepoint
    keeps the batch all-or-nothing."""
    if not isinstance(conn, sqlite3.Connection):
        raise ValidationError("connection", f"expected an open sqlite3.Connection, got {type(conn).__name__}")
    try:
        _check_same_file(conn, path)
        legacy = getattr(conn, "autocommit", getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)) == getattr(
            sqlite3, "LEGACY_TRANSACTION_CONTROL", -1
        )
        if not conn.in_transaction and legacy and conn.isolation_level is not None:
            # sqlite3 would BEGIN implicitly before our INSERT; do it before the
            # savepoint so that RELEASE does not commit on the caller's behalf.
            conn.execute("BEGIN")
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            out = insert_jobs(conn, prepared)
            rows = inserted_event_rows(prepared, out, events, event_rows(events)) if events else []
            if rows:
                conn.executemany(q.PUBLISH_EVENT, rows)
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
        raise translate(exc, path) from exc


def _check_same_file(conn: sqlite3.Connection, path: str) -> None:
    row = conn.execute("PRAGMA database_list").fetchone()
    theirs = row[2] if row else ""
    if not theirs or os.path.realpath(theirs) != os.path.realpath(path):
        raise ValidationError("connection", f"is open on {theirs or 'a temporary database'!r}, not {path!r}")


# -- reads -------------------------------------------------------------------------------------


def list_page(
    db: sqlite3.Connection,
    sql: tuple[str, str, str | None, int],
    params: list[Any],
    limit: int,
    offset: int,
    cursor: str | None,
) -> tuple[int, list[Any], bool]:
    """(total, rows in walking order, whether a matching job lies behind the cursor)
    from one snapshot; see ``queries.list_jobs``."""
    count_sql, page_sql, beyond_sql, arms = sql
    keyed = [*params, cursor] * arms if cursor is not None else params * arms
    db.execute("BEGIN")
    try:
        total = db.execute(count_sql, params).fetchone()[0]
        if cursor is None or beyond_sql is None:
            rows = db.execute(page_sql, [*keyed, limit + 1, offset]).fetchall()
            beyond = offset > 0
        else:
            rows = db.execute(page_sql, [*keyed, limit + 1]).fetchall()
            beyond = bool(db.execute(beyond_sql, keyed).fetchone()[0])
    finally:
        db.execute("COMMIT")
    return total, rows, beyond


# -- manual operations -------------------------------------------------------------------------


def apply_tx(db: sqlite3.Connection, ops: Sequence[JobOp], now: datetime) -> list[Applied]:
    """Each op in turn: read the job, change it with ``lifecycle.apply``, write it back
    (or delete it): inside the caller's write transaction, so nothing changes in
    between. The unique index refuses a requeue that would make a second active job
    with the key (a failed statement leaves the transaction and the ops before it)."""
    return [_apply_one(db, op, now) for op in ops]


def _apply_one(db: sqlite3.Connection, op: JobOp, now: datetime) -> Applied:
    row = db.execute(q.GET_JOB, (op.job_id,)).fetchone()
    if row is None:
        return JobNotFound(op.job_id)
    job = row_to_job(row)
    new = lifecycle.apply(job, op, now)
    if new is None:
        return operation.refused(op, job.status.value)
    if op.remove:
        db.execute(q.DELETE_JOB, (op.job_id,))
        return new
    try:
        return row_to_job(db.execute(q.APPLY_JOB, applied_params(new)).fetchone())
    except sqlite3.IntegrityError as exc:
        if "unique_key" not in str(exc):
            raise
        holder = db.execute(q.GET_ACTIVE_BY_UNIQUE_KEY, (job.topic, job.unique_key)).fetchone()
        return operation.refused(op, job.status.value, holder=holder[0] if holder else "another job")


def fire_schedule_tx(db: sqlite3.Connection, cas: tuple[Any, ...], prepared: list[Prepared]) -> Job | None:
    if db.execute(q.FIRE_SCHEDULE, cas).rowcount == 0:
        return None
    return insert_jobs(db, prepared)[0]


# -- the worker's side --------------------------------------------------------------------------


def finish_tx(
    db: sqlite3.Connection, outcomes: Sequence[Outcome], results: list[bytes | None], ids: str, now: datetime
) -> list[Job | None]:
    """Read the rows of the batch, work out each new job with ``lifecycle.apply``, write
    them with one executemany (inside the caller's write transaction, so nothing
    changes between the read and the write). ``results``: each outcome's encoded
    result. The UPDATE keeps the fence as its WHERE clause."""
    current = {r[0]: r for r in db.execute(q.FINISH_READ, (ids,))}
    jobs = {job_id: row_to_job(r) for job_id, r in current.items()}
    now_us = to_us(now)
    out: list[Job | None] = []
    writes = []
    for o, result in zip(outcomes, results, strict=True):
        job = jobs.get(o.job_id)
        new = None if job is None else lifecycle.apply(job, o, now)
        if job is None or new is None:
            out.append(None)
            continue
        jobs[o.job_id] = new  # a second outcome of the job in this batch meets the new state
        stored_result = current[o.job_id][12]
        if new.status is JobStatus.COMPLETED:
            stored_result = result
            new.result = None if result is None else codec.loads(result)
        errors = codec.dumps(new.errors) if new.errors is not job.errors else current[o.job_id][23]
        writes.append(
            (
                new.status.value,
                to_us(new.run_at),
                new.attempts,
                new.last_error,
                stored_result,
                now_us,
                to_us_opt(new.finished_at),
                errors,
                new.snoozes,
                o.job_id,
                o.locked_by,
                o.attempts,
            )
        )
        out.append(new)
    if writes:
        db.executemany(q.FINISH_JOB, writes)
    return out
