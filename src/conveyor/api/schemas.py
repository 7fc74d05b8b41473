"""Request and response models of the HTTP API (they make its OpenAPI schema).

Request bodies accept the names of docs/api.md and the original API's aliases (``name`` for
``topic``, ``trigger_at`` for ``run_at``, ``cron_expr`` for ``cron``); ``resolve``
methods merge the aliases and raise ``ValidationError`` naming the field. Semantic
checks (durations, topic rules, payload size) stay in ``conveyor.core.options``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from conveyor.core.duration import parse_duration
from conveyor.core.errors import ValidationError
from conveyor.core.job import JobStatus
from conveyor.core.options import (
    MAX_RETRIES_LIMIT,
    MAX_SNOOZES_LIMIT,
    MAX_UNIQUE_KEY_LENGTH,
    PRIORITY_RANGE,
    parse_datetime,
)

TOPIC_REGEX = r"^[A-Za-z0-9_.:\-]{1,200}$"
DURATION_DOC = "seconds (number) or a string such as '500ms', '10s', '10m', '1h30s', '2d'"

# Durations as the schema states them, and the server checks them: a number of seconds
# (>= 0) or a lower-case string of <number><unit> parts. Strict types: JSON booleans are
# not numbers (priority: true is a 422, not 1).
DURATION_REGEX = r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$"
_DURATION_PATTERN = re.compile(DURATION_REGEX)


def _duration_shape(value: Any) -> Any:
    """One error for a bad duration, not one per branch of the union below (whose
    messages name pydantic's validators): the Python API's reason (``parse_duration``)
    when it refuses the value too. The schema is exact: a spelling only Python accepts
    ('1H 30M') is refused with the form the schema states."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if (number and value >= 0) or (isinstance(value, str) and _DURATION_PATTERN.match(value)):
        return value
    try:
        parse_duration(value)
    except ValidationError as exc:
        raise PydanticCustomError("duration", "{reason}", {"reason": exc.reason}) from None
    raise PydanticCustomError(
        "duration", "expected " + DURATION_DOC + ", not negative; got {value}", {"value": repr(value)}
    )


Duration = Annotated[
    Annotated[StrictInt, Field(ge=0)]
    | Annotated[StrictFloat, Field(ge=0)]
    | Annotated[StrictStr, Field(pattern=DURATION_REGEX)],
    BeforeValidator(_duration_shape),
]
# A topic or its alias name is required (the schema says so; resolved_topic checks it).
_TOPIC_OR_NAME: JsonDict = {
    "anyOf": [
        {"required": ["topic"], "properties": {"topic": {"type": "string"}}},
        {"required": ["name"], "properties": {"name": {"type": "string"}}},
    ]
}


def _topic_field(description: str) -> Any:
    return Field(default=None, pattern=TOPIC_REGEX, description=description)


def _pick(primary: Any, alias: Any, primary_name: str, alias_name: str) -> Any:
    if primary is not None and alias is not None and primary != alias:
        raise ValidationError(primary_name, f"{primary_name} and its alias {alias_name} disagree; give one of them")
    return primary if primary is not None else alias


def _run_at(run_at: datetime | None, trigger_at: datetime | None) -> datetime | None:
    """``run_at`` or its alias, in UTC; an error names the field the caller gave."""
    value: datetime | None = _pick(run_at, trigger_at, "run_at", "trigger_at")
    if value is None:
        return None
    return parse_datetime(value, field="run_at" if run_at is not None else "trigger_at")


class _JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: StrictInt | None = Field(
        default=None, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1], description="higher runs first; default 0"
    )
    max_retries: StrictInt | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT, description="default 3")
    max_snoozes: StrictInt | None = Field(
        default=None, ge=0, le=MAX_SNOOZES_LIMIT, description="snoozes before the job fails; default 100"
    )
    retry_delay: Duration | None = Field(default=None, description="base of the backoff: " + DURATION_DOC)
    backoff: str | None = Field(
        default=None,
        description="none, constant, linear, exponential or quadratic (default), optionally '+jitter'",
    )
    timeout: Duration | None = Field(default=None, description="per-attempt timeout: " + DURATION_DOC)
    metadata: dict[str, Any] | None = Field(default=None, description="free-form object, stored and returned")

    def job_options(self) -> dict[str, Any]:
        names = ("priority", "max_retries", "max_snoozes", "retry_delay", "backoff", "timeout", "metadata")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class EnqueueRequest(_JobOptions):
    """Body of ``POST /api/jobs``. ``cron``/``cron_expr`` with ``is_repeat: true`` creates
    (or replaces) a recurring schedule and returns its first job."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_TOPIC_OR_NAME)

    topic: str | None = _topic_field("the handler's name (required, or its alias name)")
    name: str | None = _topic_field("alias of topic")
    payload: Any = Field(default=None, description="any JSON value, passed to the handler")
    run_at: datetime | None = Field(default=None, description="ISO 8601; naive means UTC")
    trigger_at: datetime | None = Field(default=None, description="alias of run_at")
    delay: Duration | None = Field(default=None, description="relative delay: " + DURATION_DOC)
    unique_key: str | None = Field(default=None, min_length=1, max_length=MAX_UNIQUE_KEY_LENGTH)
    cron: str | None = Field(default=None, description="cron expression (5 or 6 fields, @daily, '@every 5m')")
    cron_expr: str | None = Field(default=None, description="alias of cron")
    is_repeat: StrictBool = Field(default=False, description="with cron: create a recurring schedule")
    timezone: str | None = Field(default=None, description="schedule time zone (with cron), default UTC")
    schedule: str | None = Field(
        default=None, pattern=TOPIC_REGEX, description="name of the schedule to create (default: the topic)"
    )

    def resolved_topic(self) -> str:
        topic = _pick(self.topic, self.name, "topic", "name")
        if topic is None:
            raise ValidationError("topic", "is required (or its alias name)")
        return str(topic)

    def resolved_run_at(self) -> datetime | None:
        return _run_at(self.run_at, self.trigger_at)

    def resolved_cron(self) -> str | None:
        value: str | None = _pick(self.cron, self.cron_expr, "cron", "cron_expr")
        return value


class UpdateRequest(BaseModel):
    """Body of ``PATCH``/``PUT /api/jobs/{id}`` (pending jobs only)."""

    model_config = ConfigDict(extra="forbid")

    payload: Any = Field(default=None, description="new payload (omit to keep)")
    run_at: datetime | None = Field(default=None, description="ISO 8601; naive means UTC")
    trigger_at: datetime | None = Field(default=None, description="alias of run_at")
    delay: Duration | None = Field(default=None, description="run this long from now: " + DURATION_DOC)
    priority: StrictInt | None = Field(default=None, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])
    max_retries: StrictInt | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT)
    metadata: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        run_at = _run_at(self.run_at, self.trigger_at)
        if run_at is not None:
            out["run_at"] = run_at
        for name in ("delay", "priority", "max_retries", "metadata"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if "payload" in self.model_fields_set:
            out["payload"] = self.payload
        return out


class ScheduleRequest(_JobOptions):
    """Body of ``POST /api/schedules`` and ``PUT /api/schedules/{name}``."""

    name: str | None = Field(default=None, pattern=TOPIC_REGEX, description="schedule name (POST)")
    cron: str | None = Field(default=None, description="cron expression, @daily, '@every 5m', ...")
    cron_expr: str | None = Field(default=None, description="alias of cron")
    topic: str | None = _topic_field("topic of the jobs it enqueues")
    payload: Any = None
    timezone: str | None = Field(default=None, description="IANA time zone, default UTC")
    enabled: StrictBool = True

    def resolved_cron(self) -> str:
        value = _pick(self.cron, self.cron_expr, "cron", "cron_expr")
        if value is None:
            raise ValidationError("cron", "is required (or its alias cron_expr)")
        return str(value)

    def resolved_topic(self) -> str:
        if self.topic is None:
            raise ValidationError("topic", "is required")
        return self.topic


# -- responses -----------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. job_not_found")
    message: str = Field(description="human-readable message naming the bad field")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobStatusOut(BaseModel):
    """What a caller without the read role (an enqueue token) may see of a job."""

    id: str
    status: JobStatus


class AttemptErrorOut(BaseModel):
    attempt: int
    at: datetime
    worker: str
    error: str | None = Field(description="message and traceback")


class JobOut(BaseModel):
    """A job. ``name``, ``trigger_at``, ``retry_count`` and ``is_repeat`` repeat
    ``topic``, ``run_at``, ``attempts`` and ``schedule is not null`` for clients of the
    original API; ``next_run_in`` is set for pending jobs."""

    id: str
    topic: str
    name: str
    payload: Any = None
    status: JobStatus
    priority: int
    run_at: datetime
    trigger_at: datetime
    next_run_in: str | None = Field(description="time until run_at for pending jobs, e.g. '5m30s'")
    attempts: int
    retry_count: int
    max_retries: int
    retry_delay: float
    backoff: str
    timeout: float | None
    last_error: str | None
    result: Any = None
    metadata: dict[str, Any]
    unique_key: str | None
    schedule: str | None
    is_repeat: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    cancel_requested: bool
    errors: list[AttemptErrorOut] = Field(description="one entry per failed attempt, oldest first (newest 20 kept)")
    snoozes: int = Field(description="how many times a handler snoozed this job")
    max_snoozes: int = Field(description="past this many snoozes the job fails")


class JobPageOut(BaseModel):
    total: int = Field(description="how many jobs match the filters")
    total_exact: bool = Field(description="false when total is an estimate")
    items: list[JobOut]
    limit: int
    offset: int
    next: str | None = Field(description="after= cursor of the page of older jobs; null on the last page")
    prev: str | None = Field(description="before= cursor of the page of newer jobs; null on the first page")


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    by_status: dict[str, int]
    by_topic: dict[str, dict[str, int]]
    total: int
    workers: int
    uptime: float = Field(description="seconds since this server started")


class ScheduleOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    cron: str
    timezone: str
    topic: str
    payload: Any = None
    options: dict[str, Any]
    enabled: bool
    last_fired_at: datetime | None
    next_run_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    topics: list[str]
    concurrency: int
    active_jobs: list[str]
    started_at: datetime | None
    last_heartbeat: datetime | None


class HealthOut(BaseModel):
    status: str = Field(description="healthy, degraded (too many pending jobs) or unhealthy (store unreachable)")
    time: datetime
    version: str
    backend: str
    pending: int | None = None
    error: ErrorDetail | None = None
