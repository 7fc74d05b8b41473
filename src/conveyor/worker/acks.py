"""Acknowledgements: stores the outcomes of finished attempts in batches (one
``Backend.finish`` round trip for every group that ends together), then frees their
slots and runs what follows a stored outcome: events, one log line, hooks. A backend
with ``finish_and_claim`` claims the jobs for the slots a batch frees in the same round
trip.

Retries a store that is down with backoff; an outcome is never dropped while the
worker runs (its lease is renewed until the outcome is stored)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from conveyor.backends.base import ClaimRequest, FinishAndClaim
from conveyor.core.errors import BackendError
from conveyor.core.events import outcome_events
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.worker.executor import Attempt

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

MAX_BACKOFF = 5.0

# What a claim made with an acknowledgement calls with the jobs it brought, and the time.
OnClaimed = Callable[[list[Job], datetime], None]


class Acknowledger:
    """The ack queue and its loop.

    Args:
        client: whose store, clock, events and hooks are used.
        batch_size: most outcomes stored in one round trip.
        in_flight: most round trips at once.
        on_stored: called with each attempt once its outcome is stored (frees its slot).
        claim_for: given how many slots a batch frees and the time, the claim to make
            with it (None: none), when the backend has ``finish_and_claim``: the claim
            and what to call with the jobs it brings (after ``on_stored`` of the
            batch), called once per claim made: with no jobs if its round trip failed
            (the batch is then stored again, with a claim made anew).
    """

    def __init__(
        self,
        client: AsyncConveyor,
        *,
        batch_size: int,
        in_flight: int = 1,
        on_stored: Callable[[Attempt], None],
        claim_for: Callable[[int, datetime], tuple[ClaimRequest, OnClaimed] | None] | None = None,
    ) -> None:
        self.client = client
        self.batch_size = max(batch_size, 1)
        self.in_flight = max(in_flight, 1)
        self._on_stored = on_stored
        self._claim_for = claim_for
        self._queue: asyncio.Queue[tuple[Outcome, Attempt]] = asyncio.Queue()
        self.finished = 0  # outcomes stored that ended an attempt (completed, failed, retried, ...)
        self.handed_back = 0  # jobs given back uncounted because the worker stopped

    def put(self, outcome: Outcome, attempt: Attempt) -> None:
        self._queue.put_nowait((outcome, attempt))

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued outcome is stored; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        # Up to ``in_flight`` round trips at once: while one waits for the store's
        # commit, the outcomes that came meanwhile go out in the next.
        slots = asyncio.Semaphore(self.in_flight)
        async with asyncio.TaskGroup() as round_trips:
            while True:
                batch = [await self._queue.get()]
                await slots.acquire()
                while len(batch) < self.batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                round_trip = round_trips.create_task(self._acknowledge(batch))
                round_trip.add_done_callback(lambda _: slots.release())

    async def _acknowledge(self, batch: list[tuple[Outcome, Attempt]]) -> None:
        results, claimed, on_claimed, claimed_at = await self._store(batch)
        for (outcome, attempt), result in zip(batch, results, strict=True):
            try:
                self._after(attempt, outcome, result)
            except Exception:
                logger.exception("job %s: error after storing its outcome", attempt.job.id)
            self._on_stored(attempt)
            self._queue.task_done()
        # After the slots are freed: a job retried at once may be claimed again.
        if on_claimed is not None:
            on_claimed(claimed, claimed_at)

    async def _store(
        self, batch: list[tuple[Outcome, Attempt]]
    ) -> tuple[list[Job | None], list[Job], OnClaimed | None, datetime]:
        """The batch's stored jobs, the jobs claimed with it and what to call with them
        (None: no claim made), and the time used."""
        backend = self.client.backend
        outcomes = [o for o, _ in batch]
        delay = 0.1
        while True:
            now = self.client.clock.now()
            made = None
            claimed: list[Job] = []
            if self._claim_for is not None and backend.capabilities.finish_and_claim:
                made = self._claim_for(len(batch), now)
            try:
                if made is None:
                    results = await backend.finish(outcomes, now=now)
                else:
                    store = cast(FinishAndClaim, backend)  # so says its capability
                    results, claimed = await store.finish_and_claim(outcomes, now=now, claim=made[0])
                self.client.outage.ok()
                return results, claimed, None if made is None else made[1], now
            except BaseException as exc:
                if made is not None:
                    made[1]([], now)  # this claim is over: it brought nothing
                if not isinstance(exc, BackendError):
                    raise
                self.client.outage.failed(f"storing {len(batch)} outcomes", exc, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _after(self, attempt: Attempt, outcome: Outcome, job: Job | None) -> None:
        """Events, the log line and hooks once an outcome is stored."""
        old = attempt.job
        if job is None:
            logger.warning(
                "job %s: result of attempt %d discarded: this worker no longer holds the job's lease",
                old.id,
                old.attempts,
                extra={"event": "fenced", "job_id": old.id},
            )
            return
        # Given back by a stopping worker: pending again, the attempt refunded, no snooze.
        handed_back = outcome.refund_attempt and not outcome.snooze and job.status is JobStatus.PENDING
        if handed_back:
            self.handed_back += 1
        else:
            self.finished += 1
        # None for a job claimed ahead and handed back before it started.
        duration_ms = round((time.monotonic() - attempt.started) * 1000, 3) if attempt.started else None
        if self.client.events_wanted():
            self.client.emit(outcome_events(job, outcome, self.client.clock.now(), duration_ms=duration_ms))
        log_outcome(job, outcome, duration_ms, handed_back=handed_back)
        self._run_hooks(attempt, job)

    def _run_hooks(self, attempt: Attempt, job: Job) -> None:
        handler = attempt.handler
        try:
            if job.status is JobStatus.COMPLETED:
                for hook in ([handler.on_success] if handler.on_success else []) + self.client.success_hooks:
                    hook(job)
            elif job.status is JobStatus.FAILED:
                exc = attempt.error or Exception(job.last_error or "failed")
                for fhook in ([handler.on_failure] if handler.on_failure else []) + self.client.failure_hooks:
                    fhook(job, exc)
        except Exception:
            logger.exception("job %s: a hook raised", job.id)


def log_outcome(job: Job, outcome: Outcome, duration_ms: float | None, *, handed_back: bool = False) -> None:
    """One log line for a stored outcome."""
    if not logger.isEnabledFor(logging.INFO):
        return
    took = f" in {duration_ms:.0f} ms" if duration_ms is not None else ""
    extra: dict[str, Any] = {"job_id": job.id, "topic": job.topic, "attempt": job.attempts, "duration_ms": duration_ms}
    first_line = (job.last_error or "").splitlines()[0] if job.last_error else ""
    if job.status is JobStatus.COMPLETED:
        logger.info("job %s (%s) completed%s", job.id, job.topic, took, extra={"event": "completed", **extra})
    elif job.status is JobStatus.CANCELLED:
        logger.info("job %s cancelled%s", job.id, took, extra={"event": "cancelled", **extra})
    elif job.status is JobStatus.FAILED:
        logger.error(
            "job %s failed after %d attempts: %s", job.id, job.attempts, first_line, extra={"event": "failed", **extra}
        )
    elif handed_back:
        logger.info(
            "job %s handed back (the worker stopped before it finished): pending again, attempt not counted",
            job.id,
            extra={"event": "handed_back", **extra},
        )
    elif outcome.refund_attempt:
        logger.debug("job %s snoozed until %s", job.id, job.run_at.isoformat(), extra={"event": "snoozed", **extra})
    else:
        logger.warning(
            "job %s retrying at %s (attempt %d of %d): %s",
            job.id,
            job.run_at.isoformat(),
            job.attempts,
            job.max_retries + 1,
            first_line,
            extra={"event": "retrying", **extra},
        )
