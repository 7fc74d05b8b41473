"""What an operator's job search matches (pure): the pending views, the schedule that
made a job, an id suffix, a text in the payload. Used by ``AsyncConveyor.find_jobs``.

Pending views: ``due`` (pending, run_at now or past), ``scheduled`` (pending, run_at in
the future, never attempted: delayed or made ahead by a schedule) and ``retrying``
(pending, run_at in the future after a failed attempt). Imports only ``conveyor.core``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from conveyor.core import codec
from conveyor.core.errors import ValidationError
from conveyor.core.job import Job, JobStatus

PendingView = Literal["due", "scheduled", "retrying"]
PENDING_VIEWS: tuple[PendingView, ...] = ("due", "scheduled", "retrying")
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Filters of a job search; None matches anything.

    Attributes:
        view: one of the pending views (implies status ``pending``).
        schedule: the name of the schedule that made the job.
        id_suffix: the end of the job's id (the dashboard shows the last 10 characters).
        text: a case-insensitive substring of the payload's JSON text.
    """

    view: PendingView | None = None
    schedule: str | None = None
    id_suffix: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.view is not None and self.view not in PENDING_VIEWS:
            raise ValidationError("view", f"unknown view {self.view!r}: expected one of {', '.join(PENDING_VIEWS)}")
        for name in ("schedule", "id_suffix", "text"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT):
                raise ValidationError(name, f"expected 1-{MAX_TEXT} characters")

    def matches(self, job: Job, now: datetime) -> bool:
        if self.view is not None and not _in_view(job, self.view, now):
            return False
        if self.schedule is not None and job.schedule != self.schedule:
            return False
        if self.id_suffix is not None and not job.id.lower().endswith(self.id_suffix.strip().lower()):
            return False
        if self.text is not None:
            return self.text.lower() in codec.dumps_str(job.payload).lower()
        return True


def _in_view(job: Job, view: PendingView, now: datetime) -> bool:
    if job.status is not JobStatus.PENDING:
        return False
    if view == "due":
        return job.run_at <= now
    if job.run_at <= now:
        return False
    return (job.attempts > 0) == (view == "retrying")
