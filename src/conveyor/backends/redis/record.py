"""Job, schedule and worker records ↔ the flat field/value lists stored in Redis.

Imports only ``conveyor.core`` and ``conveyor.backends.base``. Times are integer
microseconds since the Unix epoch, as decimal strings: exact both ways, comparable as
numbers inside Lua scripts. A NULL is an absent hash field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.backends.base import WorkerInfo
from conveyor.core import codec
from conveyor.core.job import Job, JobStatus
from conveyor.core.schedule import Schedule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STATUS = {s.value.encode(): s for s in JobStatus}
_JSON_FIELDS = frozenset({"payload", "result", "metadata"})
_NO_ERRORS = b"[]"


def to_us(value: datetime) -> str:
    """Exact integer microseconds since the epoch, as a string."""
    return str((value - _EPOCH) // _US)


# Decoded times by their stored bytes: the jobs of one batch share most of their times
# (created_at, updated_at, started_at, locked_until), and datetimes are immutable.
_TIMES: dict[bytes | str, datetime] = {}
_TIMES_MAX = 4096


def from_us(raw: bytes | str) -> datetime:
    value = _TIMES.get(raw)
    if value is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        value = _TIMES[raw] = _EPOCH + timedelta(microseconds=int(raw))
    return value


def _opt_dt(raw: bytes | None) -> datetime | None:
    return None if raw is None else from_us(raw)


def copy_as_stored(job: Job, payload: bytes | None = None) -> Job:
    """The job as a read would return it right after storing it (JSON round trip).
    ``payload`` is the already encoded payload, if at hand."""
    return job.stored_as(
        codec.loads(payload if payload is not None else codec.dumps(job.payload)),
        codec.loads(codec.dumps(job.metadata)) if job.metadata else {},
        None if job.result is None else codec.loads(codec.dumps(job.result)),
    )


def encode_value(name: str, value: Any) -> str | bytes | None:
    """One Job field for storage; None means absent (NULL)."""
    if value is None:
        return None if name not in _JSON_FIELDS or name == "result" else codec.dumps(value)
    if name in _JSON_FIELDS:
        return codec.dumps(value)
    if isinstance(value, datetime):
        return to_us(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, JobStatus):
        return value.value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def encode_job(job: Job, payload: bytes) -> bytes:
    """A new job's hash as ONE script argument: a JSON array ``[field, value, ...]`` of
    strings (NULL fields left out; the id first), which the script unpacks with cjson.
    One argument, not one per field: redis-py packs each argument in Python (its asyncio
    client) and Redis parses each, a measurable share of an enqueue. ``payload`` is the
    encoded payload (``codec.dumps(job.payload)``)."""
    out: list[str] = [
        "id", job.id,
        "topic", job.topic,
        "payload", payload.decode(),
        "status", job.status.value,
        "priority", str(job.priority),
        "run_at", to_us(job.run_at),
        "attempts", str(job.attempts),
        "max_retries", str(job.max_retries),
        "retry_delay", repr(float(job.retry_delay)),
        "backoff", job.backoff,
        "metadata", codec.dumps_str(job.metadata),
        "created_at", to_us(job.created_at),
        "updated_at", to_us(job.updated_at),
        "cancel_requested", "1" if job.cancel_requested else "0",
        "snoozes", str(job.snoozes),
        "max_snoozes", str(job.max_snoozes),
    ]  # fmt: skip
    if job.errors:
        out += ("errors", codec.dumps_str(job.errors))
    optional = (
        ("timeout", job.timeout),
        ("last_error", job.last_error),
        ("result", job.result),
        ("unique_key", job.unique_key),
        ("schedule", job.schedule),
        ("started_at", job.started_at),
        ("finished_at", job.finished_at),
        ("locked_by", job.locked_by),
        ("locked_until", job.locked_until),
    )
    for name, value in optional:
        if value is not None:
            encoded = encode_value(name, value)
            out += (name, encoded.decode() if isinstance(encoded, bytes) else encoded)  # type: ignore[arg-type]
    return codec.dumps(out)


def decode_job(flat: Sequence[bytes]) -> Job:
    """A job from the flat HGETALL reply of its hash (as a script returns it)."""
    return decode_job_map(dict(zip(flat[::2], flat[1::2], strict=True)))


def decode_job_map(d: Mapping[bytes, bytes]) -> Job:
    """A job from its hash as a mapping."""
    get = d.get
    timeout = get(b"timeout")
    last_error = get(b"last_error")
    result = get(b"result")
    unique_key = get(b"unique_key")
    schedule = get(b"schedule")
    locked_by = get(b"locked_by")
    return Job(
        id=d[b"id"].decode(),
        topic=d[b"topic"].decode(),
        payload=codec.loads(d[b"payload"]),
        status=_STATUS[d[b"status"]],
        priority=int(d[b"priority"]),
        run_at=from_us(d[b"run_at"]),
        attempts=int(d[b"attempts"]),
        max_retries=int(d[b"max_retries"]),
        retry_delay=float(d[b"retry_delay"]),
        backoff=d[b"backoff"].decode(),
        timeout=None if timeout is None else float(timeout),
        last_error=None if last_error is None else last_error.decode(),
        result=None if result is None else codec.loads(result),
        metadata=codec.loads(d[b"metadata"]),
        unique_key=None if unique_key is None else unique_key.decode(),
        schedule=None if schedule is None else schedule.decode(),
        created_at=from_us(d[b"created_at"]),
        updated_at=from_us(d[b"updated_at"]),
        started_at=_opt_dt(get(b"started_at")),
        finished_at=_opt_dt(get(b"finished_at")),
        locked_by=None if locked_by is None else locked_by.decode(),
        locked_until=_opt_dt(get(b"locked_until")),
        cancel_requested=get(b"cancel_requested") == b"1",
        # Records written before these fields existed read as their defaults.
        errors=codec.loads(get(b"errors", _NO_ERRORS)),
        snoozes=int(get(b"snoozes", 0)),
        max_snoozes=int(get(b"max_snoozes", 100)),
    )


def encode_schedule(s: Schedule) -> list[str | bytes]:
    out: list[str | bytes] = [
        "name", s.name,
        "cron", s.cron,
        "topic", s.topic,
        "timezone", s.timezone,
        "payload", codec.dumps(s.payload),
        "options", codec.dumps(s.options),
        "enabled", "1" if s.enabled else "0",
    ]  # fmt: skip
    for name, value in (
        ("last_fired_at", s.last_fired_at),
        ("next_run_at", s.next_run_at),
        ("created_at", s.created_at),
        ("updated_at", s.updated_at),
    ):
        if value is not None:
            out += (name, to_us(value))
    return out


def decode_schedule(flat: Sequence[bytes]) -> Schedule:
    d: dict[bytes, bytes] = dict(zip(flat[::2], flat[1::2], strict=True))
    get = d.get
    return Schedule(
        name=d[b"name"].decode(),
        cron=d[b"cron"].decode(),
        topic=d[b"topic"].decode(),
        timezone=d[b"timezone"].decode(),
        payload=codec.loads(d[b"payload"]),
        options=codec.loads(d[b"options"]),
        enabled=d[b"enabled"] == b"1",
        last_fired_at=_opt_dt(get(b"last_fired_at")),
        next_run_at=_opt_dt(get(b"next_run_at")),
        created_at=_opt_dt(get(b"created_at")),
        updated_at=_opt_dt(get(b"updated_at")),
    )


def encode_worker(info: WorkerInfo) -> bytes:
    return codec.dumps(info.to_dict())


def decode_worker(raw: bytes) -> WorkerInfo:
    d = codec.loads(raw)
    started, beat = d.get("started_at"), d.get("last_heartbeat")
    return WorkerInfo(
        id=d["id"],
        host=d["host"],
        pid=d["pid"],
        topics=list(d["topics"]),
        concurrency=d["concurrency"],
        active_jobs=list(d.get("active_jobs") or []),
        started_at=datetime.fromisoformat(started) if started else None,
        last_heartbeat=datetime.fromisoformat(beat) if beat else None,
    )
