"""Row ↔ record conversion for the SQLite backend: times as integer microseconds since
the Unix epoch (UTC), JSON through ``conveyor.core.codec``. Pure; imports only core."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.backends.base import WorkerInfo
from conveyor.core import codec
from conveyor.core.job import Job, JobStatus
from conveyor.core.schedule import Schedule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
STATUS = {s.value: s for s in JobStatus}


def to_us(value: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (exact). Naive means UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _ONE_US


def to_us_opt(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def from_us_opt(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def job_params(job: Job, payload: bytes, metadata: bytes) -> tuple[Any, ...]:
    """INSERT parameters in ``queries.JOB_COLUMNS`` order."""
    return (
        job.id,
        job.topic,
        payload,
        job.status.value,
        job.priority,
        to_us(job.run_at),
        job.attempts,
        job.max_retries,
        job.retry_delay,
        job.backoff,
        job.timeout,
        job.last_error,
        None if job.result is None else codec.dumps(job.result),
        metadata,
        job.unique_key,
        job.schedule,
        to_us(job.created_at),
        to_us(job.updated_at),
        to_us_opt(job.started_at),
        to_us_opt(job.finished_at),
        job.locked_by,
        to_us_opt(job.locked_until),
        1 if job.cancel_requested else 0,
        codec.dumps(job.errors) if job.errors else b"[]",
        job.snoozes,
        job.max_snoozes,
    )


def row_to_job(r: Sequence[Any]) -> Job:
    """A row in ``queries.JOB_COLUMNS`` order → Job.

    Equal times (run_at/created_at/updated_at of a new job, updated_at/started_at of a
    claim, updated_at/finished_at of an outcome) share one datetime: they are immutable.
    """
    loads = codec.loads
    run_at_us, created_us, updated_us, started_us, finished_us = r[5], r[16], r[17], r[18], r[19]
    run_at = EPOCH + timedelta(0, 0, run_at_us)
    created = run_at if created_us == run_at_us else EPOCH + timedelta(0, 0, created_us)
    if updated_us == created_us:
        updated = created
    elif updated_us == run_at_us:
        updated = run_at
    else:
        updated = EPOCH + timedelta(0, 0, updated_us)
    if started_us is None:
        started = None
    else:
        started = updated if started_us == updated_us else EPOCH + timedelta(0, 0, started_us)
    if finished_us is None:
        finished = None
    else:
        finished = updated if finished_us == updated_us else EPOCH + timedelta(0, 0, finished_us)
    return Job(
        r[0],
        r[1],
        loads(r[2]),
        STATUS[r[3]],
        r[4],
        run_at,
        r[6],
        r[7],
        float(r[8]),  # RETURNING can yield a REAL column's integral value as an int
        r[9],
        None if r[10] is None else float(r[10]),
        r[11],
        None if r[12] is None else loads(r[12]),
        loads(r[13]),
        r[14],
        r[15],
        created,
        updated,
        started,
        finished,
        r[20],
        None if r[21] is None else EPOCH + timedelta(0, 0, r[21]),
        bool(r[22]),
        [] if r[23] == b"[]" else loads(r[23]),
        r[24],
        r[25],
    )


def applied_params(job: Job) -> tuple[Any, ...]:
    """APPLY_JOB parameters: every field a ``JobOp`` can change, then the id."""
    return (
        job.status.value,
        to_us(job.run_at),
        codec.dumps(job.payload),
        job.priority,
        job.attempts,
        job.max_retries,
        codec.dumps(job.metadata),
        job.last_error,
        None if job.result is None else codec.dumps(job.result),
        to_us_opt(job.started_at),
        to_us_opt(job.finished_at),
        job.locked_by,
        to_us_opt(job.locked_until),
        1 if job.cancel_requested else 0,
        job.snoozes,
        to_us(job.updated_at),
        job.id,
    )


def worker_params(w: WorkerInfo) -> tuple[Any, ...]:
    return (
        w.id,
        w.host,
        w.pid,
        codec.dumps(list(w.topics)),
        w.concurrency,
        codec.dumps(list(w.active_jobs)),
        to_us_opt(w.started_at),
        to_us_opt(w.last_heartbeat),
    )


def row_to_worker(r: Sequence[Any]) -> WorkerInfo:
    return WorkerInfo(
        id=r[0],
        host=r[1],
        pid=r[2],
        topics=codec.loads(r[3]),
        concurrency=r[4],
        active_jobs=codec.loads(r[5]),
        started_at=from_us_opt(r[6]),
        last_heartbeat=from_us_opt(r[7]),
    )


def schedule_params(s: Schedule) -> tuple[Any, ...]:
    return (
        s.name,
        s.cron,
        s.topic,
        s.timezone,
        codec.dumps(s.payload),
        codec.dumps(dict(s.options)),
        1 if s.enabled else 0,
        to_us_opt(s.last_fired_at),
        to_us_opt(s.next_run_at),
        to_us_opt(s.created_at),
        to_us_opt(s.updated_at),
    )


def row_to_schedule(r: Sequence[Any]) -> Schedule:
    return Schedule(
        name=r[0],
        cron=r[1],
        topic=r[2],
        timezone=r[3],
        payload=codec.loads(r[4]),
        options=codec.loads(r[5]),
        enabled=bool(r[6]),
        last_fired_at=from_us_opt(r[7]),
        next_run_at=from_us_opt(r[8]),
        created_at=from_us_opt(r[9]),
        updated_at=from_us_opt(r[10]),
    )
