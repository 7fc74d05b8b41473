"""The lifecycle rules, stated once. Pure; imports only ``conveyor.core``.

How an attempt ends becomes an ``Outcome`` (built by the constructors below from the
handler's result or exception); a manual operation is a ``JobOp``
(``conveyor.core.operation``). ``apply`` is what either does to a job: the memory
backend is this function over a dict, SQLite runs it between its read and its write,
and the PostgreSQL and Redis backends restate it in SQL and Lua driven by the same
fields (a property test holds all of them to this function). See docs/ for the
lifecycle itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor.core.backoff import backoff_delay, parse_backoff
from conveyor.core.job import ACTIVE, FINISHED, Job, JobStatus
from conveyor.core.operation import KEEP, JobOp
from conveyor.core.text import storable

WORKER_LOST = "worker lost: the lease expired before the attempt finished"
ERRORS_KEPT = 20
"""``Job.errors`` keeps the newest this many failed attempts."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt.

    ``locked_by`` and ``attempts`` are the fence: the backend applies the outcome only
    if the job is still ``processing`` under that lease, so a worker that lost its lease
    cannot change the job any more.
    """

    job_id: str
    locked_by: str
    attempts: int
    status: JobStatus
    run_at: datetime | None = None
    result: Any = None
    last_error: str | None = None
    # Snooze and graceful release: the run does not use up a retry.
    refund_attempt: bool = False
    # A failed attempt: appended to ``Job.errors`` (see ``error_entry``).
    failure: bool = False
    # The handler snoozed: counted in ``Job.snoozes``.
    snooze: bool = False

    def __post_init__(self) -> None:
        if self.last_error is not None:  # a handler's message: whatever text it held
            object.__setattr__(self, "last_error", storable(self.last_error))


def completed(job: Job, locked_by: str, result: Any) -> Outcome:
    return Outcome(job.id, locked_by, job.attempts, JobStatus.COMPLETED, result=result)


def cancelled(job: Job, locked_by: str, reason: str = "cancelled while running") -> Outcome:
    return Outcome(job.id, locked_by, job.attempts, JobStatus.CANCELLED, last_error=reason)


def snoozed(job: Job, locked_by: str, delay: float, now: datetime) -> Outcome:
    """Run again after ``delay`` without using up a retry; past ``max_snoozes`` the job
    fails instead (a handler that always snoozes would otherwise loop forever)."""
    if job.snoozes >= job.max_snoozes:
        error = f"snoozed too many times: max_snoozes ({job.max_snoozes}) reached"
        return Outcome(job.id, locked_by, job.attempts, JobStatus.FAILED, last_error=error, failure=True)
    return Outcome(
        job.id,
        locked_by,
        job.attempts,
        JobStatus.PENDING,
        run_at=now + timedelta(seconds=delay),
        refund_attempt=True,
        snooze=True,
    )


def released(job: Job, locked_by: str, now: datetime) -> Outcome:
    """The worker stopped before the attempt ended: give the job back, uncounted."""
    return Outcome(
        job.id,
        locked_by,
        job.attempts,
        JobStatus.PENDING,
        run_at=now,
        last_error="released: the worker stopped before the attempt finished",
        refund_attempt=True,
    )


def failed(
    job: Job,
    locked_by: str,
    error: str,
    now: datetime,
    *,
    permanent: bool = False,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """A failed attempt: retry after the backoff while the budget lasts, else ``failed``."""
    if not permanent and job.attempts <= job.max_retries:
        strategy, jitter = parse_backoff(job.backoff)
        delay = backoff_delay(strategy, job.retry_delay, job.attempts, jitter=jitter, rand=rand)
        return Outcome(
            job.id,
            locked_by,
            job.attempts,
            JobStatus.PENDING,
            run_at=now + timedelta(seconds=delay),
            last_error=error,
            failure=True,
        )
    return Outcome(job.id, locked_by, job.attempts, JobStatus.FAILED, last_error=error, failure=True)


def worker_lost(job: Job, now: datetime, *, rand: Callable[[], float] = random.random) -> Outcome:
    """The outcome recorded for a job whose lease expired (its worker died or hung)."""
    if job.cancel_requested:
        return cancelled(job, job.locked_by or "", reason="cancelled; the worker was lost")
    return failed(job, job.locked_by or "", WORKER_LOST, now, rand=rand)


def error_entry(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The ``Job.errors`` entry of a failed attempt (its error already storable text)."""
    return {
        "attempt": outcome.attempts,
        "at": now.isoformat(),
        "worker": outcome.locked_by,
        "error": outcome.last_error,
    }


def holds_fence(job: Job, outcome: Outcome) -> bool:
    """Whether ``outcome`` may still change ``job``: the attempt it ends is the job's
    current one, under the same lease."""
    return (
        job.status is JobStatus.PROCESSING and job.locked_by == outcome.locked_by and job.attempts == outcome.attempts
    )


def apply(job: Job, change: JobOp | Outcome, now: datetime) -> Job | None:
    """``job`` after ``change`` at ``now`` (a new Job; ``job`` is left alone), or None
    when the change is refused: an operation whose ``allowed`` states do not hold the
    job's status, an outcome whose fence does not hold (see ``JobOp`` and ``Outcome``).
    For a ``remove`` op it is the job as it was: the store deletes it.

    Store-wide rules are the store's: ``reactivates`` tells when a unique key must be
    free for the change to happen.
    """
    if isinstance(change, Outcome):
        return _apply_outcome(job, change, now) if holds_fence(job, change) else None
    if job.status not in change.allowed:
        return None
    new = job.copy()
    if change.remove:
        return new
    if change.status is not None:
        new.status = change.status
        new.finished_at = now if change.status in FINISHED else None
        if change.status is JobStatus.COMPLETED:
            new.result = change.result
    if change.restart:
        new.attempts = new.snoozes = 0
        new.started_at = new.result = None
    if change.run_at is not None:
        new.run_at = change.run_at
    if change.payload is not KEEP:
        new.payload = change.payload
    if change.priority is not None:
        new.priority = change.priority
    if change.max_retries is not None:
        new.max_retries = change.max_retries
    if change.metadata is not None:
        new.metadata = change.metadata
    if change.last_error is not None:
        new.last_error = change.last_error
    if change.cancel_requested is not None:
        new.cancel_requested = change.cancel_requested
    if new.status is not JobStatus.PROCESSING:
        new.locked_by = new.locked_until = None
    new.updated_at = now
    return new


def _apply_outcome(job: Job, o: Outcome, now: datetime) -> Job:
    new = job.copy()
    status = o.status
    if status is JobStatus.PENDING and job.cancel_requested:
        status = JobStatus.CANCELLED  # cancellation was requested: the job ends here
    new.status = status
    if status is JobStatus.PENDING:
        new.run_at = now if o.run_at is None else o.run_at
        new.cancel_requested = False
    elif status is JobStatus.COMPLETED:
        new.result = o.result
    if o.last_error is not None:
        new.last_error = o.last_error
    if o.refund_attempt:
        new.attempts -= 1
    if o.snooze:
        new.snoozes += 1
    if o.failure:
        new.errors = [*job.errors, error_entry(o, now)][-ERRORS_KEPT:]
    new.finished_at = now if status in FINISHED else None
    new.locked_by = new.locked_until = None
    new.updated_at = now
    return new


def reactivates(before: Job, after: Job) -> bool:
    """Whether the change makes a finished job with a unique key active again: allowed
    only while no other active job holds that key."""
    return after.unique_key is not None and before.status not in ACTIVE and after.status in ACTIVE
