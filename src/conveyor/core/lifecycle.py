"""How an attempt ends: the pure rules of a job's lifecycle turned into an ``Outcome`` that a
backend applies with one fenced compare-and-set."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor.core.backoff import backoff_delay, parse_backoff
from conveyor.core.job import Job, JobStatus

WORKER_LOST = "worker lost: the lease expired before the attempt finished"


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


def completed(job: Job, locked_by: str, result: Any) -> Outcome:
    return Outcome(job.id, locked_by, job.attempts, JobStatus.COMPLETED, result=result)


def cancelled(job: Job, locked_by: str, reason: str = "cancelled while running") -> Outcome:
    return Outcome(job.id, locked_by, job.attempts, JobStatus.CANCELLED, last_error=reason)


def snoozed(job: Job, locked_by: str, delay: float, now: datetime) -> Outcome:
    return Outcome(
        job.id, locked_by, job.attempts, JobStatus.PENDING, run_at=now + timedelta(seconds=delay), refund_attempt=True
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
            job.id, locked_by, job.attempts, JobStatus.PENDING, run_at=now + timedelta(seconds=delay), last_error=error
        )
    return Outcome(job.id, locked_by, job.attempts, JobStatus.FAILED, last_error=error)


def worker_lost(job: Job, now: datetime, *, rand: Callable[[], float] = random.random) -> Outcome:
    """The outcome recorded for a job whose lease expired (its worker died or hung)."""
    if job.cancel_requested:
        return cancelled(job, job.locked_by or "", reason="cancelled; the worker was lost")
    return failed(job, job.locked_by or "", WORKER_LOST, now, rand=rand)
