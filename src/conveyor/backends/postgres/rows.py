"""Conversions between conveyor values and PostgreSQL rows and parameters, the URL and
channel naming rules, and the migration files. No I/O besides reading the migrations.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and the driver's adaptation layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from psycopg.abc import Buffer
from psycopg.adapt import Loader

from conveyor.backends.base import WorkerInfo
from conveyor.backends.postgres import queries as q
from conveyor.core import codec
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.schedule import Schedule

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAMEDATALEN = 63


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migration files, ordered by version (``NNNN_name.sql``)."""
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        out.append(Migration(int(version), name, path.read_text(encoding="utf-8")))
    return out


def split_url(url: str) -> tuple[str, str | None]:
    """``postgresql://...?schema=x&sslmode=...`` → (libpq URL without ``schema``, ``x``)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in params:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)), schema


def channel_name(kind: str, schema: str) -> str:
    """The NOTIFY channel of ``kind`` (jobs/events) for ``schema`` (≤ 63 bytes)."""
    name = f"conveyor.{kind}.{schema}"
    if len(name.encode()) > _NAMEDATALEN:
        name = f"conveyor.{kind}.{hashlib.sha1(schema.encode()).hexdigest()[:32]}"
    return name


def utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


class RawJsonLoader(Loader):
    """json columns arrive as raw bytes, decoded by orjson in ``_loads`` (faster than
    psycopg's default, and independent of what a caller configured on its connection)."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def loads(value: bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def job_from_row(row: Sequence[Any], offset: int = 0) -> Job:
    (
        id_,
        topic,
        payload,
        status,
        priority,
        run_at,
        attempts,
        max_retries,
        retry_delay,
        backoff,
        timeout,
        last_error,
        result,
        metadata,
        unique_key,
        schedule,
        created_at,
        updated_at,
        started_at,
        finished_at,
        locked_by,
        locked_until,
        cancel_requested,
        errors,
        snoozes,
        max_snoozes,
    ) = row[offset : offset + len(q.JOB_COLUMNS)]
    return Job(
        id=id_,
        topic=topic,
        payload=loads(payload),
        status=JobStatus(status),
        priority=priority,
        run_at=utc(run_at),  # type: ignore[arg-type]
        attempts=attempts,
        max_retries=max_retries,
        retry_delay=retry_delay,
        backoff=backoff,
        timeout=timeout,
        last_error=last_error,
        result=loads(result),
        metadata=loads(metadata),
        unique_key=unique_key,
        schedule=schedule,
        created_at=utc(created_at),  # type: ignore[arg-type]
        updated_at=utc(updated_at),  # type: ignore[arg-type]
        started_at=utc(started_at),
        finished_at=utc(finished_at),
        locked_by=locked_by,
        locked_until=utc(locked_until),
        cancel_requested=cancel_requested,
        errors=loads(errors),
        snoozes=snoozes,
        max_snoozes=max_snoozes,
    )


def storable(text: str) -> str:
    """``text`` as PostgreSQL can hold it: text columns cannot contain NUL, so a NUL
    becomes the six characters ``\\u0000``; a lone surrogate (not encodable as UTF-8)
    becomes U+FFFD. Anything else is unchanged (and returned as is: no copy)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)


def unstorable(outcome: Outcome, exc: Exception) -> Outcome:
    """The outcome to store instead of one PostgreSQL refused: the attempt failed for
    good (retrying would store the same refused value again), saying why."""
    return Outcome(
        outcome.job_id,
        outcome.locked_by,
        outcome.attempts,
        JobStatus.FAILED,
        last_error=storable(f"the outcome of this attempt could not be stored ({exc}); recorded as a failure"),
        failure=True,
    )


def json_or_none(value: Any) -> str | None:
    return None if value is None else codec.dumps_str(value)


def job_values(job: Job) -> list[Any]:
    """The job's column values in JOB_COLUMNS order (spelled out: bulk enqueue runs this
    once per job)."""
    return [
        job.id,
        job.topic,
        codec.dumps_str(job.payload),
        job.status.value,
        job.priority,
        job.run_at,
        job.attempts,
        job.max_retries,
        float(job.retry_delay),
        job.backoff,
        None if job.timeout is None else float(job.timeout),
        storable_or_none(job.last_error),
        None if job.result is None else codec.dumps_str(job.result),
        codec.dumps_str(job.metadata),
        job.unique_key,
        job.schedule,
        job.created_at,
        job.updated_at,
        job.started_at,
        job.finished_at,
        job.locked_by,
        job.locked_until,
        job.cancel_requested,
        codec.dumps_str(job.errors),
        job.snoozes,
        job.max_snoozes,
    ]


def is_new(job: Job) -> bool:
    """Whether the record is a new job as enqueue builds it (the short INSERT fits)."""
    return (
        job.status is JobStatus.PENDING
        and job.attempts == 0
        and job.unique_key is None
        and job.result is None
        and job.last_error is None
        and job.started_at is None
        and job.finished_at is None
        and job.locked_by is None
        and job.locked_until is None
        and not job.cancel_requested
        and not job.errors
        and job.snoozes == 0
        and job.updated_at == job.created_at
    )


def new_job_values(job: Job) -> list[Any]:
    """A new job's values in NEW_JOB_COLUMNS order."""
    return [
        job.id,
        job.topic,
        codec.dumps_str(job.payload),
        job.priority,
        job.run_at,
        job.max_retries,
        float(job.retry_delay),
        job.backoff,
        None if job.timeout is None else float(job.timeout),
        codec.dumps_str(job.metadata),
        job.schedule,
        job.created_at,
        job.max_snoozes,
    ]


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    return Schedule(
        name=row[0],
        cron=row[1],
        topic=row[2],
        timezone=row[3],
        payload=loads(row[4]),
        options=loads(row[5]),
        enabled=row[6],
        last_fired_at=utc(row[7]),
        next_run_at=utc(row[8]),
        created_at=utc(row[9]),
        updated_at=utc(row[10]),
    )


def schedule_values(schedule: Schedule) -> list[Any]:
    """The schedule's values in SAVE_SCHEDULE order."""
    return [
        schedule.name,
        schedule.cron,
        schedule.topic,
        schedule.timezone,
        codec.dumps_str(schedule.payload),
        codec.dumps_str(schedule.options),
        schedule.enabled,
        schedule.last_fired_at,
        schedule.next_run_at,
        schedule.created_at,
        schedule.updated_at,
    ]


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    return WorkerInfo(
        id=row[0],
        host=row[1],
        pid=row[2],
        topics=list(row[3]),
        concurrency=row[4],
        active_jobs=list(row[5]),
        started_at=utc(row[6]),
        last_heartbeat=utc(row[7]),
    )


def worker_values(info: WorkerInfo) -> list[Any]:
    """The worker's values in SAVE_WORKER order."""
    return [
        info.id,
        info.host,
        info.pid,
        list(info.topics),
        info.concurrency,
        list(info.active_jobs),
        info.started_at,
        info.last_heartbeat,
    ]
