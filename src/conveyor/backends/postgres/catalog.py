"""The PostgreSQL backend's records beside the jobs: live workers, the maintenance
leader's lease and schedules (with their exactly-once firing).

Imports only ``conveyor.core``, ``conveyor.backends.base`` and this package.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import errors as pg_errors

from conveyor.backends.base import WorkerInfo
from conveyor.backends.postgres.db import Database
from conveyor.backends.postgres.enqueue import key_pairs
from conveyor.backends.postgres.rows import (
    job_from_row,
    job_values,
    schedule_from_row,
    schedule_values,
    worker_from_row,
    worker_values,
)
from conveyor.core.errors import BackendError, DuplicateJob
from conveyor.core.job import Job
from conveyor.core.schedule import Schedule

# -- live workers --------------------------------------------------------------------


async def save_worker(db: Database, info: WorkerInfo) -> None:
    await db.execute("save_worker", worker_values(info))


async def remove_worker(db: Database, worker_id: str) -> None:
    await db.execute("remove_worker", {"id": worker_id})


async def list_workers(db: Database, *, alive_since: datetime) -> list[WorkerInfo]:
    return [worker_from_row(r) for r in await db.fetch("list_workers", {"alive_since": alive_since})]


# -- the maintenance leader ------------------------------------------------------------


async def acquire_leadership(db: Database, *, holder: str, now: datetime, until: datetime) -> bool:
    return bool(await db.fetch("acquire_leadership", {"holder": holder, "until": until, "now": now}))


async def release_leadership(db: Database, *, holder: str) -> None:
    await db.execute("release_leadership", {"holder": holder})


async def current_leader(db: Database, *, now: datetime) -> str | None:
    rows = await db.fetch("current_leader", {"now": now})
    return str(rows[0]["holder"]) if rows else None


# -- schedules -----------------------------------------------------------------------


async def save_schedule(db: Database, schedule: Schedule) -> Schedule:
    rows = await db.fetch("save_schedule", schedule_values(schedule))
    return schedule_from_row(rows[0])


async def add_schedule(db: Database, schedule: Schedule) -> Schedule | None:
    rows = await db.fetch("add_schedule", schedule_values(schedule))
    return schedule_from_row(rows[0]) if rows else None


async def get_schedule(db: Database, name: str) -> Schedule | None:
    rows = await db.fetch("get_schedule", {"name": name})
    return schedule_from_row(rows[0]) if rows else None


async def list_schedules(db: Database) -> list[Schedule]:
    return [schedule_from_row(r) for r in await db.fetch("list_schedules")]


async def delete_schedule(db: Database, name: str) -> bool:
    return bool(await db.fetch("delete_schedule", {"name": name}))


async def set_schedule_enabled(
    db: Database, name: str, enabled: bool, *, next_run_at: datetime | None
) -> Schedule | None:
    rows = await db.fetch("set_schedule_enabled", {"enabled": enabled, "next_run_at": next_run_at, "name": name})
    return schedule_from_row(rows[0]) if rows else None


async def fire_schedule(
    db: Database, name: str, *, fire_at: datetime, next_run_at: datetime | None, job: Job
) -> Job | None:
    """The schedule's job, inserted if this call fired it (None if another did first):
    the job itself, or the active job holding its unique_key."""
    params = {**job_values(job), "fire_at": fire_at, "next_run_at": next_run_at, "name": name}
    async with db.conn() as conn:
        try:
            cur = await conn.execute(db.sql("fire_schedule"), params)
            rows = await cur.fetchall()
        except pg_errors.UniqueViolation as exc:
            raise DuplicateJob(job.id) from exc
        if not rows or not rows[0]["fired"]:
            return None
        if rows[0]["id"] is not None:
            return job_from_row(rows[0])
        # The job's unique_key is held by an active job: that one stands for it.
        cur = await conn.execute(db.sql("enqueue_find_unique"), key_pairs([job]))
        found = await cur.fetchall()
        if not found:
            raise BackendError(f"schedule {name!r}: unique_key holder vanished")
        return job_from_row(found[0])
