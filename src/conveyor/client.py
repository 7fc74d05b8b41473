"""``AsyncConveyor``, the one implementation of the client (``conveyor.sync.Conveyor``
is its blocking facade): validation, events and the store's connection around the
storage protocol; the lifecycle rules themselves are ``conveyor.core.lifecycle``'s."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, Unpack

from conveyor.backends import open_backend
from conveyor.backends.base import Backend
from conveyor.bulk import BulkMethods
from conveyor.clock import SystemClock
from conveyor.core import operation
from conveyor.core.clock import Clock
from conveyor.core.errors import (
    ConfigurationError,
    InvalidState,
    ValidationError,
)
from conveyor.core.events import Event, job_event, retry_count, scheduled_event
from conveyor.core.job import Job, JobStatus, check_distinct_ids
from conveyor.core.operation import JobOp
from conveyor.core.options import (
    JobChanges,
    JobDefaults,
    JobOptions,
    bound_error_text,
    build_job,
    build_job_from_mapping,
    build_update,
    validate_result,
)
from conveyor.finder import FinderMethods
from conveyor.handlers import HandlerMethods
from conveyor.logs import StoreOutage
from conveyor.publisher import EventPublisher
from conveyor.reads import ReadMethods, job_id_arg
from conveyor.registry import FailureHook, Registry, SuccessHook
from conveyor.scheduler.methods import ScheduleMethods
from conveyor.settings import Settings, SettingsChanges, SettingsOverrides
from conveyor.unhandled import UnhandledTopics
from conveyor.worker.dispatcher import Worker
from conveyor.worker.methods import WorkerMethods

logger = logging.getLogger("conveyor")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class AsyncConveyor(HandlerMethods, ReadMethods, ScheduleMethods, BulkMethods, FinderMethods, WorkerMethods):
    """The conveyor client: enqueue and manage jobs, register handlers, run a worker.

    Args:
        url: store URL; wins over ``CONVEYOR_URL``; default ``sqlite:///conveyor.db``.
        settings: a complete ``Settings`` (then the environment is not read).
        clock: source of "now" (tests inject a fake).
        **overrides: any ``Settings`` field, e.g. ``lock_duration=30`` (see
            ``SettingsOverrides``).

    Raises:
        ConfigurationError: a bad ``CONVEYOR_*`` variable (named).
        ValidationError: a bad override (named).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        **overrides: Unpack[SettingsOverrides],
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url, **overrides)
        self._defaults: tuple[Settings, JobDefaults] | None = None
        self._topic_defaults: dict[str, tuple[JobDefaults, JobOptions, JobDefaults]] = {}
        self.clock: Clock = clock or SystemClock()
        self.registry = Registry()
        # One WARNING per store outage and one INFO when it ends, for every component.
        self.outage = StoreOutage()
        # A warning once per topic enqueued that no live worker handles.
        self.unhandled_topics = UnhandledTopics(
            self.workers, lambda: set(self._worker.topics) if self._worker is not None else set()
        )
        self._backend: Backend | None = None
        self._publisher: EventPublisher | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._connected = False
        self._success_hooks: list[SuccessHook] = []
        self._failure_hooks: list[FailureHook] = []
        self._worker: Worker | None = None
        self.started_at = time.time()
        self._schedule_decls: dict[str, dict[str, Any]] = {}

    # -- configuration ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL."""
        return self.settings.url

    def configure(self, **changes: Unpack[SettingsChanges]) -> None:
        """Change settings before the store is opened (the CLI's ``--url`` uses this).

        Args:
            **changes: ``Settings`` fields, validated as the environment's.

        Raises:
            ConfigurationError: the store is already open.
            ValidationError: a bad value (named).
        """
        if self._connected:
            raise ConfigurationError("cannot reconfigure a client whose store is already open")
        self.settings = self.settings.replace(**changes)
        self._backend = None

    @property
    def defaults(self) -> JobDefaults:
        """The job defaults of the settings (``defaults_for`` adds a handler's)."""
        s = self.settings
        cached = self._defaults
        if cached is None or cached[0] is not s:  # settings are frozen: rebuilt only when replaced
            cached = self._defaults = (
                s,
                JobDefaults(max_retries=s.max_retries, retry_delay=s.retry_delay, max_payload_size=s.max_payload_size),
            )
        return cached[1]

    @property
    def backend(self) -> Backend:
        """The storage backend of ``url`` (not connected yet: ``connect()`` connects)."""
        if self._backend is None:
            self._backend = open_backend(self.settings.url, **self.settings.store_options())
        return self._backend

    async def connect(self) -> Backend:
        """The connected backend (connects and migrates on first use)."""
        if self._connected:
            return self.backend
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self.backend.connect()
                self._publisher = EventPublisher(self.backend, outage=self.outage)
                self._connected = True
        return self.backend

    def emit(self, events: Iterable[Event]) -> None:
        """Publish job events to every subscriber on this store (in the background)."""
        if self._publisher is not None:
            self._publisher.emit(events)

    def events_wanted(self) -> bool:
        """Whether events emitted now may reach a subscriber: callers on hot paths ask
        before building them (the store answers from memory; True when in doubt)."""
        return self._publisher is not None and self.backend.events_wanted()

    async def migrate(self) -> int:
        """Apply the store's pending schema migrations (opening a store does too).

        Returns:
            How many migrations were applied.

        Raises:
            BackendUnavailable: the store cannot be reached.
        """
        return await self.backend.migrate()

    async def close(self) -> None:
        """Stop this process's worker (if any) and close the store's connections."""
        await self.unhandled_topics.wait()
        if self._worker is not None:
            await self.stop()
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._backend is not None:
            await self._backend.close()
        self._connected = False

    def forget_store(self) -> object:
        """Drop the open store, its event publisher and this process's worker without
        closing them, and return them (in a forked child they are the parent's: the sync
        facade keeps them referenced and opens a store of its own on next use)."""
        kept = (self._backend, self._publisher, self._worker)
        self._backend = None
        self._publisher = None
        self._worker = None
        self._connect_lock = None
        self._connected = False
        return kept

    async def __aenter__(self) -> AsyncConveyor:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | str | None = None,
        delay: float | str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        max_snoozes: int | None = None,
        connection: Any = None,
    ) -> Job:
        """Store a new job and return it as stored.

        An option not given here comes from the topic's handler (``handler(...,
        max_retries=5)``) if this process registered one, else from the settings.

        Args:
            topic: the handler's topic, 1-200 characters of ``A-Za-z0-9_.:-``.
            payload: any JSON value, or a dataclass / pydantic model instance (stored
                as its JSON).
            run_at: not before this time (a datetime or ISO 8601; naive means UTC).
            delay: not before this long from now (seconds or ``"10m"``); not with run_at.
            priority: higher runs first among due jobs (default 0).
            max_retries: the job runs at most ``1 + max_retries`` times (default 3).
            retry_delay: base of the backoff (seconds or ``"1m"``; default 60 s).
            backoff: ``none``, ``constant``, ``linear``, ``exponential`` or ``quadratic``
                (the default), optionally ``+jitter``.
            timeout: limit of one attempt (seconds or ``"30s"``; default none).
            metadata: a JSON object stored with the job.
            unique_key: while a job of this topic with this key is pending or
                processing, that job is returned instead of a new one.
            max_snoozes: how many times a handler may snooze the job before it
                fails (default 100).
            connection: an open transaction (psycopg or sqlite3 connection) to enqueue
                in: the job exists only if it commits (PostgreSQL and SQLite).

        Returns:
            The new job, or the active job holding ``unique_key``.

        Raises:
            ValidationError: a bad argument (the message names it).
            PayloadTooLarge: the encoded payload exceeds the limit.
            BackendUnavailable: the store cannot be reached.
        """
        job = self.build_job(
            topic,
            payload,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            metadata=metadata,
            unique_key=unique_key,
            max_snoozes=max_snoozes,
        )
        stored = await self.insert([job], connection)
        return stored[0]

    def build_job(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | str | None = None,
        delay: float | str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        max_snoozes: int | None = None,
    ) -> Job:
        """Validate enqueue's arguments into a new job record (nothing is stored;
        ``insert`` stores it). Arguments as ``enqueue``'s.

        Returns:
            The new ``pending`` job.

        Raises:
            ValidationError: a bad argument (named).
            PayloadTooLarge: the encoded payload exceeds the limit.
        """
        return build_job(
            topic,
            payload,
            now=self.clock.now(),
            defaults=self.defaults_for(topic) if isinstance(topic, str) else self.defaults,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff=backoff,
            timeout=timeout,
            metadata=metadata,
            unique_key=unique_key,
            max_snoozes=max_snoozes,
        )

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]], *, connection: Any = None) -> list[Job]:
        """Store many jobs in one round trip and transaction, all or nothing.

        Args:
            items: mappings with enqueue's arguments as keys (``topic`` required).
            connection: an open transaction to enqueue in, as enqueue's.

        Returns:
            The stored jobs in the order of ``items`` (a unique key's holder in place
            of its item).

        Raises:
            ValidationError: a bad item, named by index (``jobs[3].topic``).
            PayloadTooLarge: an item's payload exceeds the limit.
        """
        jobs = self.build_jobs(items)
        if not jobs:
            return []
        return await self.insert(jobs, connection)

    def build_jobs(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Job]:
        """Validate ``enqueue_many``'s items into new job records (pure; nothing is
        stored). Errors name the item, e.g. ``jobs[3].topic``."""
        now = self.clock.now()
        return [
            build_job_from_mapping(item, now=now, defaults_for=self.defaults_for, index=i)
            for i, item in enumerate(items)
        ]

    async def insert(self, jobs: list[Job], connection: Any = None) -> list[Job]:
        """Store jobs made by ``build_job`` with their job.scheduled events, unique keys
        resolved: what ``enqueue`` and ``enqueue_many`` end with."""
        check_distinct_ids(jobs)
        store = await self.connect()
        events = self.events_with_insert(store, jobs, connection)
        stored = await store.enqueue(jobs, connection=connection, events=events)
        self.after_insert(jobs, stored, connection, published=events is not None)
        return stored

    def events_with_insert(self, store: Backend, jobs: list[Job], connection: Any) -> list[Event] | None:
        """The job.scheduled events the store publishes with the insert itself, when it
        can: one round trip, the event ordered before the job's start, and with
        ``connection=`` part of the caller's transaction (delivered only if it commits).
        The store publishes only those of the jobs it inserted (not of a job whose
        unique key's holder it returned). None: the store cannot, ``after_insert``
        publishes them; empty: nobody would hear them."""
        caps = store.capabilities
        if (
            self._publisher is None
            or not caps.enqueue_events
            or (connection is not None and not caps.transactional_enqueue)
        ):
            return None
        return self.scheduled_events(jobs) if store.events_wanted() else []

    def after_insert(
        self,
        jobs: list[Job],
        stored: list[Job],
        connection: Any,
        *,
        from_loop: asyncio.AbstractEventLoop | None = None,
        published: bool = False,
    ) -> None:
        """Events and log lines for newly stored jobs. ``from_loop``: called from another
        thread than that loop's (the sync facade's fast path); ``published``: the store
        already published the events with the insert."""
        # With connection= the caller may still roll back: no event for a job that may never exist.
        publish = connection is None and not published and self.events_wanted()
        self.unhandled_topics.enqueued([j.topic for j in stored], from_loop=from_loop)
        log = logger.isEnabledFor(logging.DEBUG)
        if not (publish or log):
            return  # the usual case on the hot path: nothing to work out
        fresh = [got for job, got in zip(jobs, stored, strict=True) if got.id == job.id]  # not unique-key holders
        if publish and self._publisher is not None:
            events = self.scheduled_events(fresh)
            if from_loop is None:
                self._publisher.emit(events)
            else:
                self._publisher.emit_threadsafe(events, from_loop)
        if log:
            for j in fresh:
                logger.debug(
                    "job %s enqueued topic=%s run_at=%s",
                    j.id,
                    j.topic,
                    j.run_at.isoformat(),
                    extra={"event": "enqueued", "job_id": j.id, "topic": j.topic},
                )

    def scheduled_events(self, jobs: Iterable[Job]) -> list[Event]:
        """The ``job.scheduled`` events of newly stored jobs."""
        now = self.clock.now()
        return [scheduled_event(j, now) for j in jobs]

    # -- manual transitions ----------------------------------------------------------

    async def _apply(self, op: JobOp, now: datetime) -> Job:
        store = await self.connect()
        return await store.apply(op, now=now)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending job, or ask a running one to stop (it ends ``cancelled``).

        Args:
            job_id: the job's id.

        Returns:
            The job: ``cancelled``, or ``processing`` with ``cancel_requested`` set.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is completed, failed or cancelled already.
        """
        now = self.clock.now()
        try:
            job = await self._apply(operation.cancel(job_id_arg(job_id)), now)
        except InvalidState as exc:
            if exc.status != JobStatus.PROCESSING:
                raise
            job = await self._apply(operation.request_cancel(job_id_arg(job_id)), now)
            logger.debug("job %s cancellation requested", job.id, extra={"event": "cancel_requested", "job_id": job.id})
            return job
        self.emit([job_event("job.cancelled", job, now)])
        logger.debug("job %s cancelled", job.id, extra={"event": "cancelled", "job_id": job.id, "topic": job.topic})
        return job

    async def requeue(self, job_id: str) -> Job:
        """Run a failed or cancelled job again now, with a fresh retry budget.

        Args:
            job_id: the job's id.

        Returns:
            The job, ``pending`` and due now.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is not failed or cancelled.
        """
        now = self.clock.now()
        job = await self._apply(operation.requeue(job_id_arg(job_id), now), now)
        self.emit([scheduled_event(job, now, requeued=True)])
        logger.debug("job %s requeued", job.id, extra={"event": "requeued", "job_id": job.id, "topic": job.topic})
        return job

    async def update(self, job_id: str, **changes: Unpack[JobChanges]) -> Job:
        """Change a pending job; what is not given stays.

        Args:
            job_id: the job's id.
            **changes: ``run_at`` or ``delay`` (when it runs), ``payload``, ``priority``,
                ``max_retries``, ``metadata``, validated as enqueue's.

        Returns:
            The updated job.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is not pending.
            ValidationError: a bad or unknown field (named).
        """
        now = self.clock.now()
        values = build_update(dict(changes), now=now, defaults=self.defaults)
        job = await self._apply(operation.update(job_id_arg(job_id), **values), now)
        if "run_at" in values:
            self.emit([scheduled_event(job, now)])
        return job

    async def delete(self, job_id: str) -> None:
        """Delete a job in any state but ``processing``.

        Args:
            job_id: the job's id.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is processing (cancel it first).
        """
        await self._apply(operation.delete(job_id_arg(job_id)), self.clock.now())

    async def complete(self, job_id: str, result: Any = None) -> Job:
        """Mark a pending or processing job ``completed`` by hand (no handler runs).

        Args:
            job_id: the job's id.
            result: any JSON value, stored as the job's result.

        Returns:
            The completed job.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is not pending or processing.
            ValidationError: ``result`` is not JSON or too large.
        """
        validate_result(result, max_size=self.settings.max_payload_size)
        now = self.clock.now()
        job = await self._apply(operation.complete(job_id_arg(job_id), result), now)
        self.emit([job_event("job.completed", job, now)])
        return job

    async def fail(self, job_id: str, error: str) -> Job:
        """Mark a pending or processing job ``failed`` by hand, without a retry.

        Args:
            job_id: the job's id.
            error: the reason, stored as ``last_error``.

        Returns:
            The failed job.

        Raises:
            JobNotFound: no job has this id.
            InvalidState: the job is not pending or processing.
            ValidationError: ``error`` is empty.
        """
        if not isinstance(error, str) or not error:
            raise ValidationError("error", "expected a non-empty string")
        error = bound_error_text(error)
        now = self.clock.now()
        job = await self._apply(operation.fail(job_id_arg(job_id), error), now)
        self.emit(
            [
                job_event(
                    "job.failed",
                    job,
                    now,
                    data={"error": error},
                    retry_count=retry_count(job),
                    max_retries=job.max_retries,
                    final=True,
                )
            ]
        )
        return job

    @property
    def is_connected(self) -> bool:
        """Whether the store has been opened (``connect()`` ran)."""
        return self._connected
