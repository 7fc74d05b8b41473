"""The job record, its states and the transitions SPEC §1 allows. Pure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

from conveyor.core.errors import ValidationError

T = TypeVar("T")


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


JobState = JobStatus
FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})

# Which states each manual operation may start from (SPEC §1). Every backend applies
# these with a compare-and-set; the rules live here only.
ALLOWED_FROM: dict[str, frozenset[JobStatus]] = {
    "cancel": frozenset({JobStatus.PENDING}),  # processing is handled as a cancel request
    "requeue": frozenset({JobStatus.FAILED, JobStatus.CANCELLED}),
    "update": frozenset({JobStatus.PENDING}),
    "delete": frozenset({JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    "complete": frozenset({JobStatus.PENDING, JobStatus.PROCESSING}),
    "fail": frozenset({JobStatus.PENDING, JobStatus.PROCESSING}),
}


@dataclass(slots=True)
class Job:
    """A job as stored. Times are timezone-aware UTC datetimes."""

    id: str
    topic: str
    payload: Any
    status: JobStatus
    priority: int
    run_at: datetime
    attempts: int
    max_retries: int
    retry_delay: float
    backoff: str
    timeout: float | None
    last_error: str | None
    result: Any
    metadata: dict[str, Any]
    unique_key: str | None
    schedule: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    # Set when cancel() hits a running job; the worker flips it on the handler's
    # copy as soon as it learns, so a sync handler can poll ``job.cancel_requested``.
    cancel_requested: bool = False

    def copy(self) -> Job:
        """A shallow copy. Spelled out: about 7x faster than a loop over the fields, and
        stores copy jobs on every read and write."""
        return Job(
            self.id,
            self.topic,
            self.payload,
            self.status,
            self.priority,
            self.run_at,
            self.attempts,
            self.max_retries,
            self.retry_delay,
            self.backoff,
            self.timeout,
            self.last_error,
            self.result,
            self.metadata,
            self.unique_key,
            self.schedule,
            self.created_at,
            self.updated_at,
            self.started_at,
            self.finished_at,
            self.locked_by,
            self.locked_until,
            self.cancel_requested,
        )

    def stored_as(self, payload: Any, metadata: dict[str, Any], result: Any = None) -> Job:
        """This job as a store holds it after a JSON round trip of its JSON fields (the
        values given, decoded from what was written): what enqueue returns."""
        clone = self.copy()
        clone.payload, clone.metadata, clone.result = payload, metadata, result
        return clone

    @property
    def name(self) -> str:
        """The seed documents call the topic ``name``."""
        return self.topic

    def payload_as(self, model: type[T]) -> T:
        """Build ``model`` (a dataclass, a pydantic model or a TypedDict) from the payload.

        Raises:
            ValidationError: the payload does not fit the model.
        """
        data = self.payload
        try:
            validate = getattr(model, "model_validate", None)
            if validate is not None:
                return cast(T, validate(data))
            if dataclasses.is_dataclass(model):
                if not isinstance(data, dict):
                    raise TypeError(f"expected an object, got {type(data).__name__}")
                return cast(T, model(**data))
            if isinstance(data, dict) and getattr(model, "__annotations__", None) is not None:
                # TypedDict: a plain dict at runtime; check the required keys.
                required: frozenset[str] = getattr(model, "__required_keys__", frozenset())
                missing = sorted(k for k in required if k not in data)
                if missing:
                    raise TypeError(f"missing keys {missing}")
                return cast(T, dict(data))
            return model(data)  # type: ignore[call-arg]
        except ValidationError:
            raise
        except Exception as exc:  # pydantic / TypeError: one clear message
            raise ValidationError("payload", f"does not match {getattr(model, '__name__', model)}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ISO 8601 UTC times."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, JobStatus):
                value = value.value
            out[f.name] = value
        return out


# Field names in declaration order: the column order of the SQL backends, so that a row
# builds a Job positionally.
JOB_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Job))
