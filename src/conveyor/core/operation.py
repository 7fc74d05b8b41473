"""Manual operations on one job as typed values (cancel, request cancel, requeue, update,
complete, fail, delete). Pure; imports only ``conveyor.core``.

A ``JobOp`` has a fixed set of fields, and only the constructors below build one: one
constructor per legal combination, so a backend never receives an arbitrary field
patch. ``conveyor.core.lifecycle.apply`` states what each field does to a job; the
SQL and Lua backends restate the same rules driven by these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from conveyor.core.errors import InvalidState
from conveyor.core.job import JobStatus
from conveyor.core.text import storable


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""``JobOp.payload`` when the payload stays as it is (``None`` is a JSON null payload)."""

_PENDING = frozenset({JobStatus.PENDING})
_PROCESSING = frozenset({JobStatus.PROCESSING})
_ACTIVE = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})
_RESTARTABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
DELETABLE = frozenset({JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
"""The states ``delete`` may start from: any but ``processing``."""

ALLOWED_FROM: dict[str, frozenset[JobStatus]] = {
    "cancel": _PENDING,  # a processing job gets ``request_cancel`` instead
    "requeue": _RESTARTABLE,
    "update": _PENDING,
    "delete": DELETABLE,
    "complete": _ACTIVE,
    "fail": _ACTIVE,
}
"""The states each manual operation may start from, by action name."""


@dataclass(frozen=True, slots=True)
class JobOp:
    """One manual operation on job ``job_id``; build it with the constructors below.

    Applied only when the job's status is in ``allowed`` (else ``InvalidState`` naming
    ``action``). Then: ``status`` when not None (``finished_at`` becomes now for a
    finished status, null for an active one; ``result`` becomes ``result`` for
    ``completed``); ``run_at``, ``priority``, ``max_retries``, ``metadata``,
    ``last_error`` and ``cancel_requested`` when not None; ``payload`` unless ``KEEP``;
    ``restart``: attempts and snoozes 0, started_at and result null (a fresh run). The
    lease is cleared whenever the job is not ``processing`` afterwards, and
    ``updated_at`` is now. ``remove``: the job is deleted instead (no other field set).
    """

    job_id: str
    action: str
    allowed: frozenset[JobStatus]
    status: JobStatus | None = None
    run_at: datetime | None = None
    payload: Any = KEEP
    priority: int | None = None
    max_retries: int | None = None
    metadata: dict[str, Any] | None = None
    result: Any = None
    last_error: str | None = None
    cancel_requested: bool | None = None
    restart: bool = False
    remove: bool = False


def refused(op: JobOp, status: str, *, holder: str | None = None) -> InvalidState:
    """The error of an op the store refused: the job's ``status`` is not in
    ``op.allowed``; or, with ``holder`` (the id of the job holding the key), the op
    would make a second active job with the job's unique key."""
    if holder is None:
        return InvalidState(op.job_id, status, op.action)
    return InvalidState(op.job_id, status, f"{op.action} (unique_key held by job {holder})")


def cancel(job_id: str) -> JobOp:
    """A pending job ends ``cancelled``."""
    return JobOp(job_id, "cancel", _PENDING, status=JobStatus.CANCELLED)


def request_cancel(job_id: str) -> JobOp:
    """A running job is asked to stop; its attempt's outcome then ends it ``cancelled``."""
    return JobOp(job_id, "cancel", _PROCESSING, cancel_requested=True)


def requeue(job_id: str, now: datetime) -> JobOp:
    """A failed or cancelled job runs again now with a fresh retry budget."""
    return JobOp(
        job_id, "requeue", _RESTARTABLE, status=JobStatus.PENDING, run_at=now, cancel_requested=False, restart=True
    )


def update(
    job_id: str,
    *,
    run_at: datetime | None = None,
    payload: Any = KEEP,
    priority: int | None = None,
    max_retries: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> JobOp:
    """New values (validated by the caller) for a pending job; None/``KEEP`` keep one."""
    return JobOp(
        job_id,
        "update",
        _PENDING,
        run_at=run_at,
        payload=payload,
        priority=priority,
        max_retries=max_retries,
        metadata=metadata,
    )


def complete(job_id: str, result: Any) -> JobOp:
    """A pending or processing job ends ``completed`` with ``result`` (no handler run)."""
    return JobOp(job_id, "complete", _ACTIVE, status=JobStatus.COMPLETED, result=result)


def fail(job_id: str, error: str) -> JobOp:
    """A pending or processing job ends ``failed`` with ``error`` (no retry; stored as
    ``storable`` text)."""
    return JobOp(job_id, "fail", _ACTIVE, status=JobStatus.FAILED, last_error=storable(error))


def delete(job_id: str) -> JobOp:
    """A job in any state but ``processing`` is deleted."""
    return JobOp(job_id, "delete", DELETABLE, remove=True)


def delete_pending(job_id: str) -> JobOp:
    """A pending job is deleted (one that a replaced schedule armed ahead)."""
    return JobOp(job_id, "delete", _PENDING, remove=True)
