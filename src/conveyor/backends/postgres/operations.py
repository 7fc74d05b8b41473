"""Manual job operations on PostgreSQL (``Backend.apply_many``): a batch is one
transaction, pipelined (its BEGIN, statements and COMMIT go out together); one op runs
as one autocommit statement.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from conveyor.backends.base import Applied
from conveyor.backends.postgres.db import Database
from conveyor.backends.postgres.pool import AsyncConn
from conveyor.backends.postgres.rows import job_from_row, json_or_none
from conveyor.core import codec, operation
from conveyor.core.errors import JobNotFound
from conveyor.core.operation import KEEP, JobOp


async def apply_many(db: Database, ops: Sequence[JobOp], now: datetime) -> list[Applied]:
    async with db.conn() as conn:
        if len(ops) == 1:
            return [await _alone(db, conn, ops[0], now)]
        async with conn.pipeline():
            try:
                async with conn.transaction():  # its COMMIT syncs: a refusal surfaces here
                    curs = [await conn.execute(*_statement(db, op, now)) for op in ops]
            except pg_errors.UniqueViolation:
                curs = []  # caught inside the pipeline, which then ends cleanly, rolled back
        if curs:
            return [_result(op, await cur.fetchall()) for op, cur in zip(ops, curs, strict=True)]
        # An op would make a second active job with a unique key and took the batch's
        # transaction down with it: each op alone, in order, to tell which.
        return [await _alone(db, conn, op, now) for op in ops]


async def _alone(db: Database, conn: AsyncConn, op: JobOp, now: datetime) -> Applied:
    """One op in a statement of its own; names the holder of a unique key it would take."""
    try:
        cur = await conn.execute(*_statement(db, op, now))
        return _result(op, await cur.fetchall())
    except pg_errors.UniqueViolation:
        cur = await conn.execute(db.sql("get_job"), {"id": op.job_id})
        current = await cur.fetchall()
        if not current:
            return JobNotFound(op.job_id)
        job = job_from_row(current[0])
        cur = await conn.execute(
            db.sql("apply_unique_holder"), {"topic": job.topic, "unique_key": job.unique_key, "id": op.job_id}
        )
        holder = await cur.fetchall()
        return operation.refused(op, job.status.value, holder=holder[0]["id"] if holder else "another job")


def _statement(db: Database, op: JobOp, now: datetime) -> tuple[str, dict[str, Any]]:
    allowed = sorted(s.value for s in op.allowed)
    if op.remove:
        return db.sql("delete_job"), {"id": op.job_id, "allowed": allowed}
    return db.sql("apply_job"), {
        "id": op.job_id,
        "allowed": allowed,
        "now": now,
        "status": None if op.status is None else op.status.value,
        "result": json_or_none(op.result),
        "restart": op.restart,
        "run_at": op.run_at,
        "set_payload": op.payload is not KEEP,
        "payload": None if op.payload is KEEP else codec.dumps_str(op.payload),
        "priority": op.priority,
        "max_retries": op.max_retries,
        "metadata": None if op.metadata is None else codec.dumps_str(op.metadata),
        "last_error": op.last_error,
        "cancel_requested": op.cancel_requested,
    }


def _result(op: JobOp, rows: list[DictRow]) -> Applied:
    """One op's result from its statement's rows: the job, and whether the op applied
    (``applied``, or ``deleted`` for a remove); no row: no such job."""
    if not rows:
        return JobNotFound(op.job_id)
    job = job_from_row(rows[0])
    return job if rows[0]["deleted" if op.remove else "applied"] else operation.refused(op, job.status.value)
