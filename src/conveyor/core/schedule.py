"""The recurring schedule record and its pure rules (docs/schedules.md): which job
options a schedule carries, how a definition is validated into a record, which
instant is due, and the job an instant enqueues. Cron maths is in ``cron.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from conveyor.core import codec
from conveyor.core.cron import latest_fire_at_or_before, next_fire, validate_cron, validate_timezone
from conveyor.core.errors import ValidationError
from conveyor.core.job import Job
from conveyor.core.options import JobDefaults, build_job, validate_topic
from conveyor.core.payload import to_json_value


class ScheduleJobOptions(TypedDict, total=False):
    """The job options a schedule gives each job it enqueues (as enqueue's)."""

    priority: int | None
    max_retries: int | None
    max_snoozes: int | None
    retry_delay: float | str | None
    backoff: str | None
    timeout: float | str | None
    metadata: Mapping[str, Any] | None


# The job options a schedule stores (enqueue's argument names), and bookkeeping keys
# kept beside them in Schedule.options: where a schedule came from ("api" or "code")
# and the fingerprint of its code declaration.
SCHEDULE_JOB_OPTIONS = frozenset(
    {"priority", "max_retries", "max_snoozes", "retry_delay", "backoff", "timeout", "metadata"}
)
SCHEDULE_MARKERS = frozenset({"source", "declared"})


@dataclass(slots=True)
class Schedule:
    name: str
    cron: str
    topic: str
    timezone: str = "UTC"
    payload: Any = None
    # Job options for each fired job: priority, max_retries, retry_delay, backoff,
    # timeout, metadata (the names of enqueue's arguments).
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    last_fired_at: datetime | None = None
    next_run_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() if v else None

        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "topic": self.topic,
            "payload": self.payload,
            "options": self.options,
            "enabled": self.enabled,
            "last_fired_at": iso(self.last_fired_at),
            "next_run_at": iso(self.next_run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def build_schedule(
    name: str,
    cron: str,
    topic: str,
    payload: Any,
    *,
    timezone: str,
    enabled: bool,
    job_options: Mapping[str, Any],
    source: str,
    now: datetime,
    defaults: JobDefaults,
) -> Schedule:
    """Validate a schedule definition into the record to store (armed from ``now``).

    Raises:
        ValidationError: a bad argument, named in the error.
    """
    validate_topic(name, field="name")
    text = validate_cron(cron)
    validate_timezone(timezone)
    validate_topic(topic)
    if not isinstance(enabled, bool):
        raise ValidationError("enabled", f"expected true or false, got {enabled!r}")
    options = {k: v for k, v in job_options.items() if k not in SCHEDULE_MARKERS and v is not None}
    for key in options:
        if key not in SCHEDULE_JOB_OPTIONS:
            raise ValidationError(
                key, f"not a schedule job option; use one of {', '.join(sorted(SCHEDULE_JOB_OPTIONS))}"
            )
    payload = to_json_value(payload)  # a dataclass or pydantic model instance: its JSON form
    build_job(topic, payload, now=now, defaults=defaults, schedule=name, **options)  # validates
    options["source"] = source
    return Schedule(
        name=name,
        cron=text,
        topic=topic,
        timezone=timezone,
        payload=codec.loads(codec.dumps(payload)),
        options=options,
        enabled=enabled,
        next_run_at=next_fire(text, timezone, now) if enabled else None,
        created_at=now,
        updated_at=now,
    )


def keep_due_instant(old: Schedule | None, new: Schedule) -> None:
    """Replacing a schedule with the same timing keeps its due (possibly missed)
    instant instead of skipping it."""
    if (
        old is not None
        and old.enabled
        and new.enabled
        and old.next_run_at is not None
        and (old.cron, old.timezone) == (new.cron, new.timezone)
    ):
        new.next_run_at = old.next_run_at


def definition(schedule: Schedule) -> tuple[Any, ...]:
    """What a schedule does (not where it came from nor when it fires next)."""
    options = {k: v for k, v in schedule.options.items() if k not in SCHEDULE_MARKERS}
    return (schedule.cron, schedule.timezone, schedule.topic, schedule.payload, options, schedule.enabled)


def due_instant(schedule: Schedule, now: datetime) -> datetime | None:
    """The instant to fire now: the latest one in (last_fired_at, now], not earlier
    than ``next_run_at`` (instants before it were skipped on purpose: the schedule was
    created, re-enabled or changed later); older missed instants are skipped. None
    when nothing is due."""
    if not schedule.enabled or (schedule.next_run_at is not None and schedule.next_run_at > now):
        return None
    since = schedule.last_fired_at
    if since is None and schedule.next_run_at is None:
        since = schedule.updated_at or schedule.created_at
    instant = latest_fire_at_or_before(schedule.cron, schedule.timezone, now, since)
    if instant is None or (schedule.next_run_at is not None and instant < schedule.next_run_at):
        return None
    return instant


def instant_job(
    schedule: Schedule, fire_at: datetime, *, now: datetime, defaults: JobDefaults, unique_key: str | None = None
) -> Job:
    """The job one instant of ``schedule`` enqueues.

    Raises:
        ValidationError: the stored definition cannot build a job any more.
    """
    options = {k: schedule.options[k] for k in SCHEDULE_JOB_OPTIONS if k in schedule.options}
    return build_job(
        schedule.topic,
        schedule.payload,
        now=now,
        defaults=defaults,
        run_at=fire_at,
        schedule=schedule.name,
        unique_key=unique_key,
        **options,
    )
