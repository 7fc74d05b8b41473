"""Conversions between conveyor values and PostgreSQL rows and parameters, the URL and
channel naming rules, and the migration files. No I/O besides reading the migrations.

Imports only ``conveyor.core``, ``conveyor.backends.base`` and the driver's adaptation layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from psycopg.abc import Buffer
from psycopg.adapt import Loader

from conveyor.backends.base import WorkerInfo
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


# conveyor's pool options in a URL (``?pool_max_size=20``), with their defaults; they go
# to the pool, not to libpq.
POOL_DEFAULTS: dict[str, float] = {"pool_min_size": 2, "pool_max_size": 10, "pool_timeout": 5.0}


def split_url(url: str) -> tuple[str, str | None]:
    """``postgresql://...?schema=x&sslmode=...`` → (libpq URL without ``schema`` and the
    pool options, ``x``)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in params:
        if key == "schema":
            schema = value
        elif key not in POOL_DEFAULTS:
            kept.append((key, value))
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)), schema


def pool_options(url: str, min_size: int | None, max_size: int | None, timeout: float | None) -> tuple[int, int, float]:
    """(min size, max size, timeout) of the pool: the backend's keyword options (None:
    not given), else the URL's ``?pool_min_size=`` ..., else the defaults.

    Raises:
        ValueError: a size that is not a whole number from 1 (or min above max), a
            timeout that is not a positive number of seconds.
    """
    chosen = dict(POOL_DEFAULTS)
    chosen.update((k, v) for k, v in parse_qsl(urlsplit(url).query) if k in POOL_DEFAULTS)  # type: ignore[misc]
    given = {"pool_min_size": min_size, "pool_max_size": max_size, "pool_timeout": timeout}
    chosen.update((k, v) for k, v in given.items() if v is not None)
    out: dict[str, float] = {}
    for key, value in chosen.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if key == "pool_timeout" and not 0 < number < float("inf"):
            raise ValueError(f"pool_timeout {value!r} is not a positive number of seconds")
        if key != "pool_timeout" and not (number >= 1 and number == int(number)):
            raise ValueError(f"{key} {value!r} is not a whole number from 1")
        out[key] = number
    if out["pool_min_size"] > out["pool_max_size"]:
        raise ValueError(f"pool_min_size {out['pool_min_size']:g} is above pool_max_size {out['pool_max_size']:g}")
    return int(out["pool_min_size"]), int(out["pool_max_size"]), out["pool_timeout"]


# libpq checks these values only when it connects, and reports a bad one as a failed
# connection (a worker would retry it for ever): checked up front instead.
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
}


def bad_option(params: Mapping[str, Any]) -> str | None:
    """Why a connection option of ``params`` (``conninfo_to_dict``) cannot work, or None."""
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return f"port {port!r} is not a number from 1 to 65535"
    timeout = params.get("connect_timeout")
    if timeout is not None and not str(timeout).isdigit():
        return f"connect_timeout {timeout!r} is not a whole number of seconds"
    for name, choices in _CHOICES.items():
        value = params.get(name)
        if value is not None and value not in choices:
            return f"{name} {value!r} is not one of {', '.join(choices)}"
    return None


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


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from a row of the jobs table (read by column name)."""
    return Job(
        id=row["id"],
        topic=row["topic"],
        payload=loads(row["payload"]),
        status=JobStatus(row["status"]),
        priority=row["priority"],
        run_at=utc(row["run_at"]),  # type: ignore[arg-type]
        attempts=row["attempts"],
        max_retries=row["max_retries"],
        retry_delay=row["retry_delay"],
        backoff=row["backoff"],
        timeout=row["timeout"],
        last_error=row["last_error"],
        result=loads(row["result"]),
        metadata=loads(row["metadata"]),
        unique_key=row["unique_key"],
        schedule=row["schedule"],
        created_at=utc(row["created_at"]),  # type: ignore[arg-type]
        updated_at=utc(row["updated_at"]),  # type: ignore[arg-type]
        started_at=utc(row["started_at"]),
        finished_at=utc(row["finished_at"]),
        locked_by=row["locked_by"],
        locked_until=utc(row["locked_until"]),
        cancel_requested=row["cancel_requested"],
        errors=loads(row["errors"]),
        snoozes=row["snoozes"],
        max_snoozes=row["max_snoozes"],
    )


def unstorable(outcome: Outcome, exc: Exception) -> Outcome:
    """The outcome to store instead of one PostgreSQL refused: the attempt failed for
    good (retrying would store the same refused value again), saying why."""
    return Outcome(
        outcome.job_id,
        outcome.locked_by,
        outcome.attempts,
        JobStatus.FAILED,
        last_error=f"the outcome of this attempt could not be stored ({exc}); recorded as a failure",
        failure=True,
    )


def json_or_none(value: Any) -> str | None:
    return None if value is None else codec.dumps_str(value)


def job_values(job: Job) -> dict[str, Any]:
    """The job's column values by column name (spelled out: bulk enqueue runs this once
    per job)."""
    return {
        "id": job.id,
        "topic": job.topic,
        "payload": codec.dumps_str(job.payload),
        "status": job.status.value,
        "priority": job.priority,
        "run_at": job.run_at,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "retry_delay": float(job.retry_delay),
        "backoff": job.backoff,
        "timeout": None if job.timeout is None else float(job.timeout),
        "last_error": job.last_error,  # storable text (core.text)
        "result": None if job.result is None else codec.dumps_str(job.result),
        "metadata": codec.dumps_str(job.metadata),
        "unique_key": job.unique_key,
        "schedule": job.schedule,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "locked_by": job.locked_by,
        "locked_until": job.locked_until,
        "cancel_requested": job.cancel_requested,
        "errors": codec.dumps_str(job.errors),
        "snoozes": job.snoozes,
        "max_snoozes": job.max_snoozes,
    }


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


def new_job_values(job: Job) -> dict[str, Any]:
    """A new job's values by column name (the columns of queries.NEW_JOB_COLUMNS)."""
    return {
        "id": job.id,
        "topic": job.topic,
        "payload": codec.dumps_str(job.payload),
        "priority": job.priority,
        "run_at": job.run_at,
        "max_retries": job.max_retries,
        "retry_delay": float(job.retry_delay),
        "backoff": job.backoff,
        "timeout": None if job.timeout is None else float(job.timeout),
        "metadata": codec.dumps_str(job.metadata),
        "schedule": job.schedule,
        "created_at": job.created_at,
        "max_snoozes": job.max_snoozes,
    }


def schedule_from_row(row: Mapping[str, Any]) -> Schedule:
    return Schedule(
        name=row["name"],
        cron=row["cron"],
        topic=row["topic"],
        timezone=row["timezone"],
        payload=loads(row["payload"]),
        options=loads(row["options"]),
        enabled=row["enabled"],
        last_fired_at=utc(row["last_fired_at"]),
        next_run_at=utc(row["next_run_at"]),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    """The schedule's values by column name."""
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "topic": schedule.topic,
        "timezone": schedule.timezone,
        "payload": codec.dumps_str(schedule.payload),
        "options": codec.dumps_str(schedule.options),
        "enabled": schedule.enabled,
        "last_fired_at": schedule.last_fired_at,
        "next_run_at": schedule.next_run_at,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }


def worker_from_row(row: Mapping[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        id=row["id"],
        host=row["host"],
        pid=row["pid"],
        topics=list(row["topics"]),
        concurrency=row["concurrency"],
        active_jobs=list(row["active_jobs"]),
        started_at=utc(row["started_at"]),
        last_heartbeat=utc(row["last_heartbeat"]),
    )


def worker_values(info: WorkerInfo) -> dict[str, Any]:
    """The worker's values by column name."""
    return {
        "id": info.id,
        "host": info.host,
        "pid": info.pid,
        "topics": list(info.topics),
        "concurrency": info.concurrency,
        "active_jobs": list(info.active_jobs),
        "started_at": info.started_at,
        "last_heartbeat": info.last_heartbeat,
    }
