"""Job, schedule and worker records ↔ the flat field/value lists stored in Redis.

Imports only ``conveyor.core`` and ``conveyor.backends.base``. Times are integer
microseconds since the Unix epoch, as decimal strings: exact both ways, comparable as
numbers inside Lua scripts. A NULL is an absent hash field; so is a job field at its
default (layout 7: ``encode_job``, ``decode_job_map``).
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


def _fixed(job: Job, created_at: str) -> str:
    """The ``fixed`` field: the settings a job is made with that no script reads and no
    operation changes, as one JSON array: created_at (µs, a string), retry_delay,
    backoff, max_snoozes, timeout, schedule. One hash field, not six: each field of an
    HSET is a share of an enqueue's work inside Redis."""
    return codec.dumps_str([created_at, job.retry_delay, job.backoff, job.max_snoozes, job.timeout, job.schedule])


def encode_job(job: Job, payload: bytes) -> bytes:
    """A new job's record as ONE script argument, a JSON array of strings that
    ``insert_job`` (_lib.lua) reads by position: created_at (the writer's clock, not
    stored as a field of its own), then the values of id, topic, payload, status,
    priority, run_at, max_retries and fixed, then field, value pairs of the fields that
    differ from their defaults (absent: attempts and snoozes 0, cancel_requested false,
    metadata {}, errors [], updated_at = created_at, the others NULL). One argument,
    not one per field: redis-py packs each argument in Python (its asyncio client) and
    Redis parses each. ``payload`` is the encoded payload (``codec.dumps(job.payload)``)."""
    created_at = to_us(job.created_at)
    # A job due at once was made with run_at = created_at: one conversion, not two.
    run_at = created_at if job.run_at == job.created_at else to_us(job.run_at)
    out: list[str] = [
        created_at, job.id, job.topic, payload.decode(), job.status.value, str(job.priority),
        run_at, str(job.max_retries), _fixed(job, created_at),
    ]  # fmt: skip
    if job.attempts:
        out += ("attempts", str(job.attempts))
    if job.snoozes:
        out += ("snoozes", str(job.snoozes))
    if job.cancel_requested:
        out += ("cancel_requested", "1")
    if job.metadata:
        out += ("metadata", codec.dumps_str(job.metadata))
    if job.errors:
        out += ("errors", codec.dumps_str(job.errors))
    if job.updated_at != job.created_at:
        out += ("updated_at", to_us(job.updated_at))
    optional = (
        ("last_error", job.last_error),
        ("result", job.result),
        ("unique_key", job.unique_key),
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
    """A job from its hash as a mapping: layout 7's (``fixed``, defaults absent) or,
    for jobs stored before it, one field per Job field."""
    get = d.get
    fixed = get(b"fixed")
    if fixed is None:  # stored before layout 7
        created_us, retry_delay, backoff = d[b"created_at"], float(d[b"retry_delay"]), d[b"backoff"].decode()
        max_snoozes = int(get(b"max_snoozes", 100))
        timeout_raw, schedule_raw = get(b"timeout"), get(b"schedule")
        timeout = None if timeout_raw is None else float(timeout_raw)
        schedule = None if schedule_raw is None else schedule_raw.decode()
    else:
        created_us, retry_delay, backoff, max_snoozes, timeout, schedule = codec.loads(fixed)
    created_at = from_us(created_us)
    updated_at = get(b"updated_at")
    last_error = get(b"last_error")
    result = get(b"result")
    unique_key = get(b"unique_key")
    locked_by = get(b"locked_by")
    metadata = get(b"metadata")
    return Job(
        id=d[b"id"].decode(),
        topic=d[b"topic"].decode(),
        payload=codec.loads(d[b"payload"]),
        status=_STATUS[d[b"status"]],
        priority=int(d[b"priority"]),
        run_at=from_us(d[b"run_at"]),
        attempts=int(get(b"attempts", 0)),
        max_retries=int(d[b"max_retries"]),
        retry_delay=float(retry_delay),
        backoff=backoff,
        timeout=None if timeout is None else float(timeout),
        last_error=None if last_error is None else last_error.decode(),
        result=None if result is None else codec.loads(result),
        metadata={} if metadata is None else codec.loads(metadata),
        unique_key=None if unique_key is None else unique_key.decode(),
        schedule=schedule,
        created_at=created_at,
        updated_at=created_at if updated_at is None else from_us(updated_at),
        started_at=_opt_dt(get(b"started_at")),
        finished_at=_opt_dt(get(b"finished_at")),
        locked_by=None if locked_by is None else locked_by.decode(),
        locked_until=_opt_dt(get(b"locked_until")),
        cancel_requested=get(b"cancel_requested") == b"1",
        errors=codec.loads(get(b"errors", _NO_ERRORS)),
        snoozes=int(get(b"snoozes", 0)),
        max_snoozes=int(max_snoozes),
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
