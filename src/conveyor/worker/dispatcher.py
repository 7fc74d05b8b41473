"""The worker: claims due jobs in batches and launches up to ``concurrency`` attempts
at once, and owns the worker's life (start, graceful drain, stop now). The other parts
run beside it: acknowledgements (``acks``), leases and heartbeats (``lease``), and the
maintenance of the store by its elected leader (``maintenance``)."""

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

from conveyor import stop_signals
from conveyor.backends.base import Backend, ClaimRequest, WorkerInfo
from conveyor.clock import sleep_unless
from conveyor.core import lifecycle
from conveyor.core.errors import BackendError, ConveyorError, ValidationError
from conveyor.core.events import job_event
from conveyor.core.job import Job
from conveyor.core.options import validate_topic
from conveyor.core.redact import redact
from conveyor.settings import setting_value
from conveyor.worker.acks import Acknowledger, OnClaimed
from conveyor.worker.executor import Attempt, ThreadPool, run_attempt
from conveyor.worker.lease import LeaseKeeper, registry_entry
from conveyor.worker.maintenance import Maintainer
from conveyor.worker.slots import RunSlots

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

MAX_BACKOFF = 5.0
ACK_DRAIN_TIMEOUT = 30.0
# Claiming ahead. While attempts are short, a store round trip (its commit waiting for
# the disk) takes about as long as a whole batch of them: a worker that claims only for
# free slots then leaves its slots empty during every acknowledge-and-claim round trip.
# So, while the recent attempts of EVERY topic it claims took under CLAIM_AHEAD_BELOW
# seconds on average, a worker also holds up to CLAIM_AHEAD_BATCHES batches claimed
# ahead (their leases renewed; they start as slots free up, and are handed back,
# attempt refunded, if the worker stops first) and keeps that many acknowledgements in
# flight besides the first. A topic with long attempts, or none yet, turns it off: a
# job claimed ahead could be one of them, or wait behind them, while another worker
# idles. Only on stores whose acknowledgements claim too (``finish_and_claim``:
# PostgreSQL, Redis): on SQLite, in this process and without a network round trip, it
# measured ~5% slower.
# An acknowledgement stores up to ACK_BATCHES batches of outcomes (those that piled up
# while the previous round trips were out) and claims for every slot it frees: fewer,
# fuller round trips. Measured on PostgreSQL (2-core VM, drains of no-op jobs,
# bench/README.md): claiming ahead took one process from ~5,400 to ~7,900 jobs/s; then
# 3 batches ahead and acknowledgements of up to 2, instead of 2 and 1, took one process
# from ~5,500-8,200 to ~8,800-9,900 and two from ~6,100-6,900 to ~9,400-10,900
# (alternating runs).
CLAIM_AHEAD_BELOW = 0.005
CLAIM_AHEAD_BATCHES = 3
ACK_BATCHES = 2
# Weight of the newest attempt in the running mean of attempt durations.
DURATION_WEIGHT = 0.1
# After a hand-back request, how long attempts get to return their job.
HAND_BACK_TIMEOUT = 5.0


class Worker:
    """Runs handlers of ``client.registry`` for jobs in ``client``'s store.

    Args:
        concurrency: attempts running at once (default ``settings.workers``).
        topics: topics to claim (default: every registered topic; must have handlers).
        batch_size, poll_interval, lock_duration, shutdown_timeout: default from settings.
        scheduler: stand for the store's maintenance leader (recovering expired leases,
            pruning, firing schedules) and apply the app's schedule declarations.
        worker_id: default ``host:pid:random``.
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
        shutdown_timeout: float | str | None = None,
        scheduler: bool = True,
        worker_id: str | None = None,
    ) -> None:
        s = client.settings
        self.client = client
        # The settings' rules (durations as "30s" or seconds), errors naming the option.
        self.concurrency: int = s.workers if concurrency is None else _option("concurrency", "workers", concurrency)
        self.batch_size: int = s.batch_size if batch_size is None else _option("batch_size", "batch_size", batch_size)
        self.poll_interval: float = _or(s.poll_interval, "poll_interval", poll_interval)
        self.lock_duration: float = _or(s.lock_duration, "lock_duration", lock_duration)
        self.shutdown_timeout: float = _or(s.shutdown_timeout, "shutdown_timeout", shutdown_timeout)
        if topics:
            for t in topics:
                validate_topic(t, field="topics")
                if t not in client.registry:
                    raise ValidationError("topics", f"no handler is registered for topic {t!r}")
            self.topics = sorted(set(topics))
        else:
            self.topics = client.registry.topics
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._active: dict[str, Attempt] = {}
        self._claims_ahead = client.backend.capabilities.finish_and_claim
        # One running attempt per slot; the others were claimed ahead and wait, their
        # turns in claim order.
        self._run_slots = RunSlots(self.concurrency) if self._claims_ahead else None
        # Running mean of attempt durations (seconds) per topic, once one finished.
        self._mean_duration: dict[str, float] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hand_back = asyncio.Event()  # a second stop request: stop now
        self._stop_task: asyncio.Task[None] | None = None  # the one stop, shared by its callers
        self._tasks: list[asyncio.Task[Any]] = []
        self._pool = ThreadPool(self.concurrency)
        self._started_at: datetime | None = None
        self.acks = Acknowledger(
            client,
            batch_size=ACK_BATCHES * self.batch_size,
            in_flight=1 + CLAIM_AHEAD_BATCHES if self._claims_ahead else 1,
            on_stored=self._release_slot,
            claim_for=self._claim_with_acks,
        )
        self.leases = LeaseKeeper(client, self.id, self._active, lock_duration=self.lock_duration, info=self._info)
        self.maintainer = (
            Maintainer(client, self.id, lock_duration=self.lock_duration, scheduler=True) if scheduler else None
        )
        self._unwatch_clock: Any = None
        # Set when one of the worker's loops died: the worker stopped itself (exit 1).
        self.crashed: BaseException | None = None

    @property
    def processed(self) -> int:
        """Outcomes stored that ended an attempt (not the jobs handed back at a stop)."""
        return self.acks.finished

    @property
    def leading(self) -> bool:
        """Whether this worker holds the store's maintenance lease."""
        return self.maintainer is not None and self.maintainer.leading

    def now(self) -> datetime:
        return self.client.clock.now()

    # -- control ---------------------------------------------------------------------

    async def start(self) -> None:
        if not self.topics:
            logger.warning("worker %s has no handlers registered: it will claim nothing", self.id)
        self._started_at = self.now()
        if self.client.is_connected:
            try:
                await self.leases.save_registry()
            except BackendError as exc:
                self.client.outage.failed("worker registry", exc)
        loop = asyncio.get_running_loop()
        backend = self.client.backend

        # A clock moved by hand (tests) makes delayed jobs due: look again at once.
        def look_again() -> None:
            loop.call_soon_threadsafe(backend.notify_local)

        self._unwatch_clock = self.client.clock.watch(look_again)
        self._tasks = [
            loop.create_task(self._claim_loop(), name="conveyor-claim"),
            loop.create_task(self.acks.run(), name="conveyor-ack"),
            loop.create_task(self.leases.run(), name="conveyor-heartbeat"),
        ]
        if self.maintainer is not None:
            self._tasks.append(loop.create_task(self.maintainer.run(self._stopping), name="conveyor-maintenance"))
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

    def request_stop(self, *, now: bool = False) -> None:
        """Stop claiming and drain (running jobs get the shutdown timeout to finish).
        ``now``: hand running jobs back at once (also during a drain already begun)."""
        if now:
            self._hand_back.set()
        self._stopping.set()
        self.client.backend.notify_local()

    def signal_received(self, signum: int) -> None:
        """SIGINT/SIGTERM: the first drains, the second stops now. Logs which."""
        name = signal.Signals(signum).name
        if not self._stopping.is_set():
            logger.info(
                "received %s: stopping gracefully; %d running jobs get up to %.0fs to finish "
                "(send %s again to stop now and hand them back)",
                name,
                len(self._active),
                self.shutdown_timeout,
                name,
                extra={"event": "stop_requested", "worker_id": self.id},
            )
            self.request_stop()
        elif not self._hand_back.is_set():
            logger.warning(
                "received %s again: stopping now, handing %d running jobs back",
                name,
                len(self._active),
                extra={"event": "stop_now", "worker_id": self.id},
            )
            self.request_stop(now=True)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.signal_received, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                return  # not the main thread: the caller handles signals
        for signum in stop_signals.take():  # arrived while the CLI started us
            self.signal_received(signum)

    async def wait_stopped(self) -> None:
        """Wait for a stop request, then stop.

        Raises:
            ConveyorError: the worker stopped itself because one of its loops died.
        """
        await self._stopping.wait()
        await self.stop()
        if self.crashed is not None:
            raise ConveyorError(f"worker {self.id} stopped: one of its loops died ({self.crashed!r})") from self.crashed

    @property
    def stopping(self) -> bool:
        """A stop was requested (the worker may still be draining)."""
        return self._stopping.is_set()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish for ``timeout`` seconds (default the
        shutdown timeout; a second stop request ends the wait), then hand them back.

        Every caller waits for the same stop: a later call (a second signal's handler, a
        cancelled ``run_worker``) does not start a second drain beside the first. A
        caller cancelled while it waits leaves the stop running to its end, so that no
        job is left ``processing`` half-handed back."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop(self.shutdown_timeout if timeout is None else timeout), name="conveyor-worker-stop"
            )
        await asyncio.shield(self._stop_task)

    async def _stop(self, timeout: float) -> None:
        self.request_stop()
        await self._drain(timeout)
        # Let the acknowledgements drain before the loops stop; if the store stays
        # unreachable, give up: the leases expire and the jobs are recovered elsewhere.
        if not await self.acks.drain(ACK_DRAIN_TIMEOUT):
            logger.warning(
                "worker %s: %d outcomes not stored (store unreachable); their jobs return after the lease",
                self.id,
                self.acks.waiting,
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._unwatch_clock is not None:
            self._unwatch_clock()
        await self.leases.remove_registry()
        self._pool.shutdown()
        logger.info(
            "worker %s stopped: %d jobs processed, %d handed back",
            self.id,
            self.acks.finished,
            self.acks.handed_back,
            extra={"event": "worker_stopped", "worker_id": self.id},
        )

    async def _drain(self, timeout: float) -> None:
        """Wait for running attempts up to ``timeout`` or a stop-now request, then hand
        back the rest (their jobs return to ``pending``, the attempt not counted). Jobs
        claimed ahead that have not started go back at once."""
        if not self._active:
            return
        for attempt in self._active.values():
            if not attempt.started:
                attempt.request("release")
        if not self._hand_back.is_set():
            logger.info(
                "worker %s draining: waiting up to %.0fs for %d running jobs",
                self.id,
                timeout,
                len(self._active),
                extra={"event": "draining", "worker_id": self.id},
            )
            running = asyncio.ensure_future(self._all_done())
            now = asyncio.ensure_future(self._hand_back.wait())
            try:
                await asyncio.wait((running, now), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                running.cancel()
                now.cancel()
        left = [a for a in self._active.values() if a.task is not None and not a.task.done()]
        if not left:
            return
        why = "stop now requested" if self._hand_back.is_set() else f"the shutdown timeout of {timeout:.0f}s passed"
        logger.warning(
            "worker %s: %s; handing %d running jobs back: %s",
            self.id,
            why,
            len(left),
            ", ".join(a.job.id for a in left),
            extra={"event": "handing_back", "worker_id": self.id},
        )
        for attempt in left:
            attempt.request("release")
        await asyncio.wait([a.task for a in left if a.task is not None], timeout=HAND_BACK_TIMEOUT)

    async def _all_done(self) -> None:
        while True:
            tasks = [a.task for a in self._active.values() if a.task is not None and not a.task.done()]
            if not tasks:
                return
            await asyncio.wait(tasks)

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            free = self.capacity - len(self._active)
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
                backend = await self.client.connect()
                jobs = await self._claim(backend, limit, now)
                delay = 0.1
                self.client.outage.ok()
            except BackendError as exc:
                self.client.outage.failed("claim", exc, retry_in=delay)
                await sleep_unless(self.client.clock, self._stopping, delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except ConveyorError as exc:
                # Not an outage (e.g. the store was found with a layout this version
                # cannot use, once it came back): retrying cannot help.
                logger.error("worker %s cannot use the store: %s; stopping", self.id, exc)
                self.request_stop()
                return
            if jobs:
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

    async def _claim(self, backend: Backend, limit: int, now: datetime) -> list[Job]:
        """The claim loop's claim; its jobs launched."""
        number = self._claim_sent()
        jobs: list[Job] = []
        try:
            jobs = await backend.claim(
                worker_id=self.id,
                topics=self.topics,
                limit=limit,
                now=now,
                locked_until=now + timedelta(seconds=self.lock_duration),
            )
        finally:
            self._launch(jobs, now, self._claim_back(number))
        return jobs

    def _claim_sent(self) -> int:
        """The number of a claim about to be sent (``RunSlots``; 0 without claiming ahead)."""
        return self._run_slots.claim_sent() if self._run_slots is not None else 0

    def _claim_back(self, number: int) -> int:
        """The horizon of the jobs claim ``number`` brought (``RunSlots``)."""
        return self._run_slots.claim_back(number) if self._run_slots is not None else 0

    def _claim_with_acks(self, freed: int, now: datetime) -> tuple[ClaimRequest, OnClaimed] | None:
        """The claim made with the acknowledgement of ``freed`` attempts: jobs for the
        slots it frees, in the same round trip (``Acknowledger``, backends with
        ``finish_and_claim``). Those attempts hold their slots until stored, so this
        loop, which claims only slots free already, never claims for them too. Not
        capped at ``batch_size``: it refills slots that were held, so the worker never
        holds more than its capacity, and a second round trip for the rest would only
        cost more. Returned with what launches the jobs it brings (numbered among the
        claims in flight: ``RunSlots``)."""
        if self._stopping.is_set() or not self.topics:
            return None
        limit = min(freed, self.capacity - len(self._active) + freed)
        if limit <= 0:
            return None
        number = self._claim_sent()

        def claimed(jobs: list[Job], at: datetime) -> None:
            self._launch(jobs, at, self._claim_back(number))

        return ClaimRequest(self.id, self.topics, limit, now + timedelta(seconds=self.lock_duration)), claimed

    @property
    def capacity(self) -> int:
        """How many jobs this worker holds at most now: its concurrency, plus batches
        claimed ahead while the attempts of every topic it claims are short
        (``CLAIM_AHEAD_BELOW``)."""
        means = self._mean_duration
        if (
            not self._claims_ahead
            or self._stopping.is_set()
            or not means
            or len(means) < len(self.topics)
            or max(means.values()) >= CLAIM_AHEAD_BELOW
        ):
            return self.concurrency
        return self.concurrency + CLAIM_AHEAD_BATCHES * self.batch_size

    def _launch(self, jobs: list[Job], now: datetime, horizon: int = 0) -> None:
        loop = asyncio.get_running_loop()
        events = []
        wanted = self.client.events_wanted()  # else no event is built
        debug = logger.isEnabledFor(logging.DEBUG)  # else no log record's arguments are built
        for job in jobs:
            handler = self.client.registry.get(job.topic)
            if handler is None:  # cannot happen: we claim only our topics
                continue
            attempt = Attempt(job=job, handler=handler)
            attempt.task = loop.create_task(self._run(attempt))
            if self._run_slots is not None:
                attempt.turn = self._run_slots.enter(job, horizon)
            self._active[job.id] = attempt
            if wanted:
                events.append(
                    job_event("job.started", job, now, data={"run_at": job.run_at.isoformat()}, attempt=job.attempts)
                )
            if debug:
                logger.debug(
                    "job %s started topic=%s attempt=%d",
                    job.id,
                    job.topic,
                    job.attempts,
                    extra={"event": "started", "job_id": job.id, "topic": job.topic, "attempt": job.attempts},
                )
        if events:
            self.client.emit(events)
        if self._run_slots is not None:
            self._run_slots.hand_out()  # this claim is back: a waiting job may start

    async def _run(self, attempt: Attempt) -> None:
        """Run one attempt and queue its outcome; the ack loop stores it, then frees the
        slot (the lease is renewed until the outcome is stored)."""
        job = attempt.job
        try:
            outcome = await run_attempt(
                attempt,
                self.id,
                self._pool,
                self.now,
                max_result_size=self.client.settings.max_payload_size,
            )
            if self._claims_ahead and attempt.started:  # the mean serves claiming ahead only
                took = time.monotonic() - attempt.started
                mean = self._mean_duration.get(job.topic)
                self._mean_duration[job.topic] = took if mean is None else mean + DURATION_WEIGHT * (took - mean)
        except Exception as exc:  # a bug in conveyor itself: record, never lose the job
            logger.exception("job %s: internal error while running", job.id)
            outcome = lifecycle.failed(job, self.id, f"internal error: {exc!r}", self.now())
        except asyncio.CancelledError:
            # The worker is being torn down: give the job back rather than leave it processing.
            attempt.reason = attempt.reason or "release"
            outcome = lifecycle.released(job, self.id, self.now())
        self.acks.put(outcome, attempt)

    def _release_slot(self, attempt: Attempt) -> None:
        # Not a newer attempt of the same job: retried at once, it may have been claimed
        # again (by the claim loop) before this outcome's round trip returned, and it
        # must keep its slot and its lease renewals.
        if self._active.get(attempt.job.id) is attempt:
            del self._active[attempt.job.id]
        self._slot_free.set()

    def _info(self) -> WorkerInfo:
        return registry_entry(self.id, self.topics, self.concurrency, list(self._active), self._started_at, self.now())


def _option(option: str, setting: str, value: object) -> Any:
    try:
        return setting_value(setting, value)
    except ValidationError as exc:
        raise ValidationError(option, exc.reason) from None


def _or(default: float, name: str, value: float | str | None) -> float:
    result: float = default if value is None else _option(name, name, value)
    return result
