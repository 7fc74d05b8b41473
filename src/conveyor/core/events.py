"""Job events (docs/api.md, "WebSocket"), as published to other processes, and the
pure builders that make them from a job: every layer above ``core`` (client, worker,
scheduler, API) builds its events here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.core import codec
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome

EVENT_TYPES = frozenset(
    {"job.scheduled", "job.started", "job.completed", "job.failed", "job.retrying", "job.cancelled", "job.deleted"}
)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    job_id: str
    topic: str
    status: str
    timestamp: datetime
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "job_id": self.job_id,
            "topic": self.topic,
            "status": self.status,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
            "metadata": self.metadata,
        }

    def encode(self) -> bytes:
        return codec.dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes | str) -> Event:
        return cls.from_dict(codec.loads(raw))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            type=d["type"],
            job_id=d["job_id"],
            topic=d["topic"],
            status=d["status"],
            timestamp=datetime.fromisoformat(d["timestamp"]),
            data=d.get("data") or {},
            metadata=d.get("metadata") or {},
        )


def job_event(type_: str, job: Job, now: datetime, *, data: dict[str, Any] | None = None, **metadata: Any) -> Event:
    """An event of ``type_`` about ``job`` as it is now."""
    return Event(
        type=type_,
        job_id=job.id,
        topic=job.topic,
        status=job.status.value,
        timestamp=now,
        data=data or {},
        metadata=metadata,
    )


def scheduled_event(job: Job, now: datetime, *, requeued: bool = False, **metadata: Any) -> Event:
    """``job.scheduled`` (enqueue, re-arm, requeue, snooze, hand-back): ``data.run_at``,
    and ``metadata.trigger_at`` and ``metadata.is_repeat`` (made by a schedule)."""
    run_at = job.run_at.isoformat()
    return Event(
        type="job.scheduled",
        job_id=job.id,
        topic=job.topic,
        status=job.status.value,
        timestamp=now,
        data={"run_at": run_at, "requeued": True} if requeued else {"run_at": run_at},
        metadata={"trigger_at": run_at, "is_repeat": job.schedule is not None, **metadata},
    )


def retry_count(job: Job) -> int:
    """How many times the job was retried: attempts after the first (a job that failed in
    its only attempt has 0). The ``retry_count`` of events and of the job's HTTP JSON."""
    return max(job.attempts - 1, 0)


def outcome_events(job: Job, outcome: Outcome, now: datetime, *, duration_ms: float | None = None) -> list[Event]:
    """The events of a stored attempt outcome."""
    timing: dict[str, Any] = {"duration_ms": duration_ms} if duration_ms is not None else {}
    if job.status is JobStatus.COMPLETED:
        return [job_event("job.completed", job, now, data={"result": job.result}, attempt=job.attempts, **timing)]
    if job.status is JobStatus.CANCELLED:
        return [job_event("job.cancelled", job, now, attempt=job.attempts, **timing)]
    if outcome.refund_attempt:  # snoozed, or handed back by a stopping worker: not a failure
        return [scheduled_event(job, now, snoozed=True) if outcome.snooze else scheduled_event(job, now, released=True)]
    failed = job_event(
        "job.failed",
        job,
        now,
        data={"error": job.last_error},
        retry_count=retry_count(job),
        max_retries=job.max_retries,
        final=job.status is JobStatus.FAILED,
        **timing,
    )
    if job.status is JobStatus.FAILED:
        return [failed]
    next_at = job.run_at.isoformat()
    failed.metadata["next_retry_at"] = next_at
    return [
        failed,
        job_event(
            "job.retrying",
            job,
            now,
            data={"error": job.last_error, "next_retry_at": next_at},
            retry_count=retry_count(job),
            max_retries=job.max_retries,
            next_retry_at=next_at,
        ),
    ]
