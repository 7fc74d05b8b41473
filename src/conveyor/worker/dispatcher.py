"""The worker's claim loop: claims due jobs in batches, runs up to ``concurrency`` at
once, acknowledges outcomes in batches, renews leases, recovers jobs of dead workers,
prunes old jobs and keeps this worker's entry in the live-worker registry."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import WorkerInfo
from conveyor.core import lifecycle
from conveyor.core.errors import BackendError, ConveyorError, ValidationError
from conveyor.core.events import job_event, outcome_events
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import Outcome
from conveyor.core.options import validate_topic
from conveyor.core.redact import redact
from conveyor.scheduler.scheduler import Scheduler
from conveyor.settings import setting_value
from conveyor.worker.executor import Attempt, ThreadPool, run_attempt

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

REGISTRY_INTERVAL = 2.0
PRUNE_INTERVAL = 60.0
MAX_BACKOFF = 5.0
ACK_DRAIN_TIMEOUT = 30.0


class Worker:
    """Runs handlers of ``client.registry`` for jobs in ``client``'s store.

    Args:
        concurrency: attempts running at once (default ``settings.workers``).
        topics: topics to claim (default: every registered topic; must have handlers).
        batch_size, poll_interval, lock_duration: default from settings.
        scheduler: run the recurring-schedule scheduler in this worker.
    """

    def __init__(
        self,
        client: AsyncConveyor,
        *,
        concurrency: int | None = None,
        topics: Sequence[str] | None = None,
        batch_size: int | None = None,
        poll_interval: float | str | None = None,
        lock_duration: float | str | None = None,
        scheduler: bool = True,
        worker_id: str | None = None,
    ) -> None:
        s = client.settings
        self.client = client
        # The settings' rules (durations as "30s" or seconds), errors naming the option.
        self.concurrency: int = s.workers if concurrency is None else _option("concurrency", "workers", concurrency)
        self.batch_size: int = s.batch_size if batch_size is None else _option("batch_size", "batch_size", batch_size)
        self.poll_interval: float = (
            s.poll_interval if poll_interval is None else _option("poll_interval", "poll_interval", poll_interval)
        )
        self.lock_duration: float = (
            s.lock_duration if lock_duration is None else _option("lock_duration", "lock_duration", lock_duration)
        )
        registered = client.registry.topics
        if topics:
            for t in topics:
                validate_topic(t, field="topics")
                if t not in client.registry:
                    raise ValidationError("topics", f"no handler is registered for topic {t!r}")
            self.topics = sorted(set(topics))
        else:
            self.topics = registered
        self.run_scheduler = scheduler
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Renew leases well before they end; poll cancellations about once a second.
        self.heartbeat_interval = max(0.05, min(self.lock_duration / 3, 1.0))
        self.recover_interval = max(0.1, min(self.lock_duration / 2, 5.0))
        self._active: dict[str, tuple[Attempt, asyncio.Task[None]]] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ack_queue: asyncio.Queue[tuple[Outcome, Attempt]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._pool = ThreadPool(self.concurrency)
        self._started_at: datetime | None = None
        self._scheduler: Any = None
        self.processed = 0
        # Set when one of the worker's loops died: the worker stopped itself (exit 1).
        self.crashed: BaseException | None = None

    # -- control ---------------------------------------------------------------------

    def now(self) -> datetime:
        return self.client.clock.now()

    async def start(self) -> None:
        if not self.topics:
            logger.warning("worker %s has no handlers registered: it will claim nothing", self.id)
        self._started_at = self.now()
        if self.client.is_connected:
            try:
                await self._save_registry()
            except BackendError as exc:
                self.client.outage.failed("worker registry", exc)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._claim_loop(), name="conveyor-claim"),
            loop.create_task(self._ack_loop(), name="conveyor-ack"),
            loop.create_task(self._heartbeat_loop(), name="conveyor-heartbeat"),
            loop.create_task(self._maintenance_loop(), name="conveyor-maintenance"),
        ]
        if self.run_scheduler:
            self._scheduler = self._make_scheduler()
            if self._scheduler is not None:
                self._tasks.append(loop.create_task(self._scheduler.run(self._stopping), name="conveyor-scheduler"))
        for task in self._tasks:
            task.add_done_callback(self._loop_ended)
        logger.info(
            "worker %s started: topics=%s concurrency=%d store=%s",
            self.id,
            ",".join(self.topics) or "-",
            self.concurrency,
            redact(self.client.url),
            extra={"event": "worker_started", "worker_id": self.id},
        )

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that ends on its own (a bug, an overflow) stops the whole worker, logged:
        never a worker that heartbeats but no longer claims or acknowledges."""
        if task.cancelled() or self._stopping.is_set():
            return
        exc = task.exception()
        self.crashed = exc or RuntimeError(f"{task.get_name()} ended")
        logger.critical(
            "worker %s: its %s loop died (%r); stopping the worker",
            self.id,
            task.get_name(),
            self.crashed,
            exc_info=exc,
            extra={"event": "worker_crashed", "worker_id": self.id},
        )
        self.request_stop()

    def _make_scheduler(self) -> Any:
        return Scheduler(self.client)

    def request_stop(self) -> None:
        self._stopping.set()
        self.client.backend.notify_local()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller handles signals

    async def wait_stopped(self) -> None:
        """Wait for a stop request, then stop.

        Raises:
            ConveyorError: the worker stopped itself because one of its loops died.
        """
        await self._stopping.wait()
        await self.stop()
        if self.crashed is not None:
            raise ConveyorError(f"worker {self.id} stopped: one of its loops died ({self.crashed!r})") from self.crashed

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; let running jobs finish for ``timeout`` s, then release them."""
        if self._stopped.is_set():
            return
        self.request_stop()
        if self._active:
            logger.info(
                "worker %s stopping: waiting up to %.0fs for %d running jobs", self.id, timeout, len(self._active)
            )
            tasks = [t for _, t in self._active.values()]
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                for attempt, _ in list(self._active.values()):
                    attempt.request("release")
                await asyncio.wait(pending, timeout=5.0)
        # Let the acknowledgements drain before the loops stop; if the store stays
        # unreachable, give up: the leases expire and the jobs are recovered elsewhere.
        try:
            await asyncio.wait_for(self._ack_queue.join(), ACK_DRAIN_TIMEOUT)
        except TimeoutError:
            logger.warning(
                "worker %s: %d outcomes not stored (store unreachable); their jobs return after the lease",
                self.id,
                self._ack_queue.qsize(),
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client.is_connected:
            try:
                await self.client.backend.remove_worker(self.id)
            except BackendError as exc:
                logger.warning("could not remove worker %s from the registry: %s", self.id, exc)
        self._pool.shutdown()
        self._stopped.set()
        logger.info("worker %s stopped after %d jobs", self.id, self.processed, extra={"event": "worker_stopped"})

    @property
    def active_job_ids(self) -> list[str]:
        return list(self._active)

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            free = self.concurrency - len(self._active)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            if not self.topics:
                await self._stopping.wait()
                return
            limit = min(free, self.batch_size)
            now = self.now()
            try:
                # Opens the store on first use: after an outage at start-up too.
                backend = await self.client.store()
                jobs = await backend.claim(
                    worker_id=self.id,
                    topics=self.topics,
                    limit=limit,
                    now=now,
                    locked_until=now + timedelta(seconds=self.lock_duration),
                )
                delay = 0.1
                self.client.outage.ok()
            except BackendError as exc:
                self.client.outage.failed("claim", exc, retry_in=delay)
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except ConveyorError as exc:
                # Not an outage (e.g. the store was found with a layout this version
                # cannot use, once it came back): retrying cannot help.
                logger.error("worker %s cannot use the store: %s; stopping", self.id, exc)
                self.request_stop()
                return
            if jobs:
                self._launch(jobs, now)
                # Let the new attempts start before this loop's next store round trip:
                # one turn for each attempt's task to hand a sync handler to the pool or
                # create an async handler's task, one for that task's first step.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            if len(jobs) == limit:
                continue
            # Nothing more is due: sleep until the next delayed job (or retry, snooze)
            # is, unless an enqueue wakes us first. Even after a partial claim: the
            # wake-up of a job that is delayed was used up when it was enqueued.
            wait = self.poll_interval
            try:
                nxt = await backend.next_run_at(topics=self.topics)
            except BackendError:
                nxt = None
            if nxt is not None:
                wait = max(0.0, min(wait, (nxt - self.now()).total_seconds()))
            if wait > 0 and not self._stopping.is_set():
                await backend.wait_for_jobs(wait)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _launch(self, jobs: list[Job], now: datetime) -> None:
        loop = asyncio.get_running_loop()
        events = []
        for job in jobs:
            handler = self.client.registry.get(job.topic)
            if handler is None:  # cannot happen: we claim only our topics
                continue
            attempt = Attempt(job=job, handler=handler, started=time.monotonic())
            task = loop.create_task(self._run(attempt))
            attempt.task = task
            self._active[job.id] = (attempt, task)
            events.append(
                job_event("job.started", job, now, data={"run_at": job.run_at.isoformat()}, attempt=job.attempts)
            )
            logger.debug(
                "job %s started topic=%s attempt=%d",
                job.id,
                job.topic,
                job.attempts,
                extra={"event": "started", "job_id": job.id, "topic": job.topic, "attempt": job.attempts},
            )
        self.client.emit(events)

    async def _run(self, attempt: Attempt) -> None:
        """Run one attempt and queue its outcome; the ack loop stores it, then frees the slot
        (the lease is renewed until the outcome is stored)."""
        job = attempt.job
        try:
            outcome = await run_attempt(
                attempt, self.id, self._pool, self.now, max_result_size=self.client.settings.max_payload_size
            )
        except Exception as exc:  # a bug in conveyor itself: record, never lose the job
            logger.exception("job %s: internal error while running", job.id)
            outcome = lifecycle.failed(job, self.id, f"internal error: {exc!r}", self.now())
        except asyncio.CancelledError:
            # The worker is being torn down: give the job back rather than leave it processing.
            outcome = lifecycle.released(job, self.id, self.now())
        self._ack_queue.put_nowait((outcome, attempt))

    # -- acknowledging ---------------------------------------------------------------

    async def _ack_loop(self) -> None:
        backend = self.client.backend
        while True:
            batch = [await self._ack_queue.get()]
            while len(batch) < max(self.batch_size, 1) and not self._ack_queue.empty():
                batch.append(self._ack_queue.get_nowait())
            delay = 0.1
            while True:
                try:
                    results = await backend.finish([o for o, _ in batch], now=self.now())
                    self.client.outage.ok()
                    break
                except BackendError as exc:
                    self.client.outage.failed(f"storing {len(batch)} outcomes", exc, retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
            for (outcome, attempt), result in zip(batch, results, strict=True):
                attempt.acknowledged = True
                self._active.pop(attempt.job.id, None)
                try:
                    self._after(attempt, outcome, result)
                except Exception:
                    logger.exception("job %s: error after storing its outcome", attempt.job.id)
                self._ack_queue.task_done()
            self._slot_free.set()

    def _after(self, attempt: Attempt, outcome: Outcome, job: Job | None) -> None:
        """Logs, events and hooks once an outcome is stored."""
        self.processed += 1
        old = attempt.job
        now = self.now()
        if job is None:
            logger.warning(
                "job %s: result of attempt %d discarded: this worker no longer holds the job's lease",
                old.id,
                old.attempts,
                extra={"event": "fenced", "job_id": old.id},
            )
            return
        duration_ms = round((time.monotonic() - attempt.started) * 1000, 3)
        self.client.emit(outcome_events(job, outcome, now, duration_ms=duration_ms))
        log_outcome(job, outcome, duration_ms)
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

    # -- leases ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backend = self.client.backend
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            ids = list(self._active)
            if not ids:
                continue
            try:
                result = await backend.heartbeat(
                    worker_id=self.id,
                    job_ids=ids,
                    locked_until=self.now() + timedelta(seconds=self.lock_duration),
                )
            except BackendError as exc:
                self.client.outage.failed("lease renewal", exc)
                continue
            self.client.outage.ok()
            for job_id in result.cancel_requested:
                entry = self._active.get(job_id)
                if entry is not None and entry[0].interrupted is None:
                    logger.info("job %s: cancellation requested; stopping it", job_id)
                    entry[0].job.cancel_requested = True
                    entry[0].request("cancel")
            for job_id in result.lost:
                entry = self._active.get(job_id)
                # An attempt acknowledged since the heartbeat read _active is done, not lost.
                if entry is not None and not entry[0].lease_lost and not entry[0].acknowledged:
                    entry[0].lease_lost = True
                    logger.warning("job %s: lease lost; this attempt's result will be discarded", job_id)

    async def _maintenance_loop(self) -> None:
        last_prune = 0.0
        last_registry = time.monotonic()
        while True:
            await asyncio.sleep(min(self.recover_interval, REGISTRY_INTERVAL))
            if not self.client.is_connected:
                continue  # the claim loop opens the store (start-up during an outage)
            mono = time.monotonic()
            try:
                await self.recover_expired()
                if mono - last_registry >= REGISTRY_INTERVAL:
                    last_registry = mono
                    await self._save_registry()
                if mono - last_prune >= PRUNE_INTERVAL:
                    last_prune = mono
                    pruned = await self.client.prune()
                    if pruned:
                        logger.info("pruned %d finished jobs past retention", pruned)
                self.client.outage.ok()
            except BackendError as exc:
                self.client.outage.failed("maintenance", exc)

    async def recover_expired(self) -> int:
        """Record "worker lost" for jobs whose lease expired; they retry or fail by the rules."""
        backend = self.client.backend
        now = self.now()
        expired = await backend.expired(now=now, limit=100)
        if not expired:
            return 0
        outcomes = [lifecycle.worker_lost(job, now) for job in expired]
        results = await backend.finish(outcomes, now=now)
        recovered = 0
        for outcome, job in zip(outcomes, results, strict=True):
            if job is None:
                continue  # someone else recovered it first, or it finished just in time
            recovered += 1
            self.client.emit(outcome_events(job, outcome, now))
            log_outcome(job, outcome, None)
        return recovered

    async def _save_registry(self) -> None:
        info = WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            topics=list(self.topics),
            concurrency=self.concurrency,
            active_jobs=list(self._active),
            started_at=self._started_at,
            last_heartbeat=self.now(),
        )
        await self.client.backend.save_worker(info)


def _option(option: str, setting: str, value: object) -> Any:
    try:
        return setting_value(setting, value)
    except ValidationError as exc:
        raise ValidationError(option, exc.reason) from None


def log_outcome(job: Job, outcome: Outcome, duration_ms: float | None) -> None:
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
