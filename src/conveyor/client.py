"""``AsyncConveyor`` (the one implementation: owns the lifecycle rules on top of the
storage protocol) and ``Conveyor``, its thin sync facade."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from conveyor.backends import open_backend
from conveyor.backends.base import Backend, WorkerInfo
from conveyor.core import codec
from conveyor.core.clock import Clock, SystemClock
from conveyor.core.cron import next_fire, next_fires, validate_cron, validate_timezone
from conveyor.core.errors import ConfigurationError, InvalidState, JobNotFound, ScheduleNotFound, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import ALLOWED_FROM, Job, JobStatus
from conveyor.core.options import (
    JobDefaults,
    build_job,
    build_job_from_mapping,
    build_update,
    validate_int,
    validate_topic,
)
from conveyor.core.schedule import Schedule
from conveyor.publisher import EventPublisher
from conveyor.registry import FailureHook, HandlerFn, Registry, SuccessHook
from conveyor.settings import Settings

logger = logging.getLogger("conveyor")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

MAX_LIST_LIMIT = 1000

# A worker whose registry heartbeat is older than this is considered gone.
WORKER_ALIVE_WINDOW = timedelta(seconds=15)
# Schedules: the job options a schedule stores, and bookkeeping keys kept beside them in
# Schedule.options (where a schedule came from; the fingerprint of its code declaration).
SCHEDULE_JOB_OPTIONS = frozenset({"priority", "max_retries", "retry_delay", "backoff", "timeout", "metadata"})
SCHEDULE_MARKERS = frozenset({"source", "declared"})


@dataclass(frozen=True, slots=True)
class JobPage:
    total: int
    items: list[Job]
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "items": [j.to_dict() for j in self.items],
            "limit": self.limit,
            "offset": self.offset,
        }


def job_event(type_: str, job: Job, now: datetime, *, data: dict[str, Any] | None = None, **metadata: Any) -> Event:
    return Event(
        type=type_,
        job_id=job.id,
        topic=job.topic,
        status=job.status.value,
        timestamp=now,
        data=data or {},
        metadata=metadata,
    )


class AsyncConveyor:
    """The conveyor client: enqueue and manage jobs, register handlers, run a worker.

    Args:
        url: store URL; wins over ``CONVEYOR_URL``; default ``sqlite:///conveyor.db``.
        settings: a complete ``Settings`` (then the environment is not read).
        clock: source of "now" (tests inject a fake).
        **overrides: any ``Settings`` field, e.g. ``lock_duration=30``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url, **overrides)
        self._defaults: tuple[Settings, JobDefaults] | None = None
        self.clock: Clock = clock or SystemClock()
        self.registry = Registry()
        self._backend: Backend | None = None
        self._publisher: EventPublisher | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._connected = False
        self._success_hooks: list[SuccessHook] = []
        self._failure_hooks: list[FailureHook] = []
        self._worker: Any = None
        self.started_at = time.time()
        self._schedule_decls: dict[str, dict[str, Any]] = {}

    # -- configuration ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.settings.url

    def configure(self, **changes: Any) -> None:
        """Change settings before the store is opened (the CLI's ``--url`` uses this)."""
        if self._connected:
            raise ConfigurationError("cannot reconfigure a client whose store is already open")
        self.settings = self.settings.replace(**changes)
        self._backend = None

    @property
    def defaults(self) -> JobDefaults:
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
        if self._backend is None:
            self._backend = open_backend(self.settings.url)
        return self._backend

    async def store(self) -> Backend:
        """The connected backend (connects and migrates on first use)."""
        if self._connected:
            return self.backend
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        opened = False
        async with self._connect_lock:
            if not self._connected:
                await self.backend.connect()
                self._publisher = EventPublisher(self.backend)
                self._connected = True
                opened = True
        if opened and self._schedule_decls:
            # Schedules declared in code (at import) are stored as soon as the store opens.
            await self.sync_schedules()
        return self.backend

    def emit(self, events: Iterable[Event]) -> None:
        if self._publisher is not None:
            self._publisher.emit(events)

    async def migrate(self) -> int:
        return await self.backend.migrate()

    async def close(self) -> None:
        if self._worker is not None:
            await self.stop()
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._backend is not None:
            await self._backend.close()
        self._connected = False

    async def __aenter__(self) -> AsyncConveyor:
        await self.store()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers and hooks ----------------------------------------------------------

    def handler(
        self,
        topic: str,
        *,
        timeout: float | str | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function (sync or async) as the handler of ``topic``."""

        def decorate(fn: F) -> F:
            self.registry.add(topic, fn, timeout=timeout, on_success=on_success, on_failure=on_failure)
            return fn

        return decorate

    def register(self, topic: str, fn: HandlerFn, **options: Any) -> None:
        self.registry.add(topic, fn, **options)

    def on_success(self, fn: SuccessHook) -> SuccessHook:
        """Call ``fn(job)`` after any job completes in this process's worker."""
        self._success_hooks.append(fn)
        return fn

    def on_failure(self, fn: FailureHook) -> FailureHook:
        """Call ``fn(job, exc)`` when a job ends ``failed`` in this process's worker."""
        self._failure_hooks.append(fn)
        return fn

    @property
    def success_hooks(self) -> list[SuccessHook]:
        return self._success_hooks

    @property
    def failure_hooks(self) -> list[FailureHook]:
        return self._failure_hooks

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self,
        topic: str,
        payload: Any = None,
        *,
        run_at: datetime | str | None = None,
        delay: float | str | None = None,
        priority: int = 0,
        max_retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str | None = None,
        timeout: float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        connection: Any = None,
    ) -> Job:
        """Store a new job; return it (or the active job holding ``unique_key``).

        Raises:
            ValidationError: a bad argument (the message names it).
            PayloadTooLarge: the encoded payload exceeds the limit.
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
        )
        stored = await self._insert([job], connection)
        return stored[0]

    def build_job(self, topic: str, payload: Any = None, **options: Any) -> Job:
        """Validate enqueue's arguments into a new job record (pure; nothing is stored)."""
        return build_job(
            topic,
            payload,
            now=self.clock.now(),
            defaults=self.defaults,
            **options,
        )

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]], *, connection: Any = None) -> list[Job]:
        """Store many jobs in one transaction, all or nothing. Items take enqueue's arguments."""
        now = self.clock.now()
        defaults = self.defaults
        jobs = [build_job_from_mapping(item, now=now, defaults=defaults, index=i) for i, item in enumerate(items)]
        if not jobs:
            return []
        return await self._insert(jobs, connection)

    async def _insert(self, jobs: list[Job], connection: Any) -> list[Job]:
        store = await self.store()
        events = self.events_with_insert(store, jobs, connection)
        stored = await store.enqueue(jobs, connection=connection, events=events)
        self.after_insert(jobs, stored, connection, published=events is not None)
        return stored

    def events_with_insert(self, store: Backend, jobs: list[Job], connection: Any) -> list[Event] | None:
        """The job.scheduled events the store publishes with the insert itself, when it
        can: one round trip, the event ordered before the job's start, and with
        ``connection=`` part of the caller's transaction (delivered only if it commits).
        With unique keys some jobs may not be inserted: those take the publisher after
        the insert (and with ``connection=``, publish nothing)."""
        caps = store.capabilities
        if (
            self._publisher is None
            or not caps.enqueue_events
            or (connection is not None and not caps.transactional_enqueue)
            or any(j.unique_key is not None for j in jobs)
        ):
            return None
        return self.scheduled_events(jobs)

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
        publish = connection is None and self._publisher is not None and not published
        log = logger.isEnabledFor(logging.INFO)
        if not (publish or log):
            return  # the usual case on the hot path: nothing to work out
        created = {j.id for j in jobs}
        fresh = [j for j in stored if j.id in created]  # not the holders of unique keys
        if publish and self._publisher is not None:
            events = self.scheduled_events(fresh)
            if from_loop is None:
                self._publisher.emit(events)
            else:
                self._publisher.emit_threadsafe(events, from_loop)
        if log:
            for j in fresh:
                logger.info(
                    "job %s enqueued topic=%s run_at=%s",
                    j.id,
                    j.topic,
                    j.run_at.isoformat(),
                    extra={"event": "enqueued", "job_id": j.id, "topic": j.topic},
                )

    def scheduled_events(self, jobs: Iterable[Job]) -> list[Event]:
        now = self.clock.now()
        return [job_event("job.scheduled", j, now, data={"run_at": j.run_at.isoformat()}) for j in jobs]

    # -- read ------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """Raises: JobNotFound."""
        job = await (await self.store()).get(_job_id(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list(
        self, *, status: str | JobStatus | None = None, topic: str | None = None, limit: int = 50, offset: int = 0
    ) -> JobPage:
        st = _status(status)
        if topic is not None:
            validate_topic(topic)
        limit = validate_int(limit, field="limit", low=1, high=MAX_LIST_LIMIT)
        offset = validate_int(offset, field="offset", low=0, high=2**62)
        total, items = await (await self.store()).list_jobs(status=st, topic=topic, limit=limit, offset=offset)
        return JobPage(total=total, items=items, limit=limit, offset=offset)

    async def stats(self) -> dict[str, Any]:
        store = await self.store()
        s = await store.stats()
        workers = await self.workers()
        by_status = {st.value: int(s.by_status.get(st.value, 0)) for st in JobStatus}
        return {
            **by_status,
            "by_status": by_status,
            "by_topic": {t: dict(c) for t, c in sorted(s.by_topic.items())},
            "total": sum(by_status.values()),
            "workers": len(workers),
            "uptime": round(time.time() - self.started_at, 3),
        }

    async def workers(self) -> builtins.list[WorkerInfo]:
        store = await self.store()
        return await store.list_workers(alive_since=self.clock.now() - WORKER_ALIVE_WINDOW)

    async def job_types(self) -> builtins.list[str]:
        return sorted({t for w in await self.workers() for t in w.topics})

    async def subscribe(self) -> AsyncIterator[Event]:
        """A subscription, registered on return, to every job event on this store from
        any process. Iterate it with ``async for``; ``aclose()`` ends it."""
        store = await self.store()
        return store.subscribe()

    async def events(self) -> AsyncIterator[Event]:
        """Every job event on this store, from any process, from the first iteration on."""
        async for event in await self.subscribe():
            yield event

    # -- manual transitions ----------------------------------------------------------

    async def _transition(self, job_id: str, action: str, changes: dict[str, Any]) -> Job:
        store = await self.store()
        return await store.transition(_job_id(job_id), allowed=ALLOWED_FROM[action], changes=changes, action=action)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending job, or ask a running one to stop (it ends ``cancelled``).

        Raises: JobNotFound; InvalidState for completed, failed or cancelled jobs.
        """
        now = self.clock.now()
        try:
            job = await self._transition(
                job_id,
                "cancel",
                {"status": JobStatus.CANCELLED, "finished_at": now, "updated_at": now},
            )
        except InvalidState as exc:
            if exc.status != JobStatus.PROCESSING:
                raise
            store = await self.store()
            job = await store.transition(
                job_id,
                allowed=frozenset({JobStatus.PROCESSING}),
                changes={"cancel_requested": True, "updated_at": now},
                action="cancel",
            )
            logger.info("job %s cancellation requested", job.id, extra={"event": "cancel_requested", "job_id": job.id})
            return job
        self.emit([job_event("job.cancelled", job, now)])
        logger.info("job %s cancelled", job.id, extra={"event": "cancelled", "job_id": job.id, "topic": job.topic})
        return job

    async def requeue(self, job_id: str) -> Job:
        """Run a failed or cancelled job again now, with a fresh retry budget."""
        now = self.clock.now()
        job = await self._transition(
            job_id,
            "requeue",
            {
                "status": JobStatus.PENDING,
                "attempts": 0,
                "run_at": now,
                "finished_at": None,
                "started_at": None,
                "result": None,
                "cancel_requested": False,
                "locked_by": None,
                "locked_until": None,
                "updated_at": now,
            },
        )
        self.emit([job_event("job.scheduled", job, now, data={"run_at": job.run_at.isoformat(), "requeued": True})])
        logger.info("job %s requeued", job.id, extra={"event": "requeued", "job_id": job.id, "topic": job.topic})
        return job

    async def update(self, job_id: str, **changes: Any) -> Job:
        """Change run_at/delay, payload, priority, max_retries or metadata of a pending job."""
        now = self.clock.now()
        values = build_update(changes, now=now, defaults=self.defaults)
        values["updated_at"] = now
        job = await self._transition(job_id, "update", values)
        if "run_at" in values:
            self.emit([job_event("job.scheduled", job, now, data={"run_at": job.run_at.isoformat()})])
        return job

    async def delete(self, job_id: str) -> None:
        """Delete a job in any state but ``processing``."""
        store = await self.store()
        await store.delete(_job_id(job_id), allowed=ALLOWED_FROM["delete"])

    async def complete(self, job_id: str, result: Any = None) -> Job:
        """Mark a pending or processing job ``completed`` with ``result``."""
        codec.encode_checked(result, field="result")
        now = self.clock.now()
        job = await self._transition(
            job_id,
            "complete",
            {
                "status": JobStatus.COMPLETED,
                "result": codec.loads(codec.dumps(result)),
                "finished_at": now,
                "locked_by": None,
                "locked_until": None,
                "updated_at": now,
            },
        )
        self.emit([job_event("job.completed", job, now)])
        return job

    async def fail(self, job_id: str, error: str) -> Job:
        """Mark a pending or processing job ``failed`` (no retry) with ``error``."""
        if not isinstance(error, str) or not error:
            raise ValidationError("error", "expected a non-empty string")
        now = self.clock.now()
        job = await self._transition(
            job_id,
            "fail",
            {
                "status": JobStatus.FAILED,
                "last_error": error,
                "finished_at": now,
                "locked_by": None,
                "locked_until": None,
                "updated_at": now,
            },
        )
        self.emit(
            [
                job_event(
                    "job.failed",
                    job,
                    now,
                    data={"error": error},
                    retry_count=job.attempts,
                    max_retries=job.max_retries,
                    final=True,
                )
            ]
        )
        return job

    async def prune(self) -> int:
        """Delete finished jobs older than the retention period (0 keeps forever)."""
        if self.settings.retention <= 0:
            return 0
        store = await self.store()
        cutoff = self.clock.now() - timedelta(seconds=self.settings.retention)
        total = 0
        while True:
            n = await store.prune(finished_before=cutoff, limit=1000)
            total += n
            if n < 1000:
                return total

    # -- schedules (SPEC §2; owned by the schedules module: keep edits here) ---------------
    #
    # A schedule saved through these methods is stored at once. ``declare_schedule`` (and
    # the sync facade's ``schedule`` before its store is open, i.e. at import time) only
    # records a declaration in code; ``sync_schedules`` (run by the scheduler at worker
    # start) upserts the declarations and disables code-declared schedules that are no
    # longer declared. Rules: docs/schedules.md.

    @property
    def is_connected(self) -> bool:
        """Whether the store has been opened (``store()`` ran)."""
        return self._connected

    def _build_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any,
        timezone: str,
        enabled: bool,
        job_options: Mapping[str, Any],
        source: str,
    ) -> Schedule:
        validate_topic(name, field="name")
        text = validate_cron(cron)
        validate_timezone(timezone)
        validate_topic(topic)
        if not isinstance(enabled, bool):
            raise ValidationError("enabled", f"expected true or false, got {enabled!r}")
        options = {k: v for k, v in job_options.items() if k not in SCHEDULE_MARKERS and v is not None}
        for key in options:
            if key not in SCHEDULE_JOB_OPTIONS:
                raise ValidationError(
                    key, f"not a schedule job option; use one of {', '.join(sorted(SCHEDULE_JOB_OPTIONS))}"
                )
        now = self.clock.now()
        build_job(topic, payload, now=now, defaults=self.defaults, schedule=name, **options)  # validates
        options["source"] = source
        return Schedule(
            name=name,
            cron=text,
            topic=topic,
            timezone=timezone,
            payload=codec.loads(codec.dumps(payload)),
            options=options,
            enabled=enabled,
            next_run_at=next_fire(text, timezone, now) if enabled else None,
            created_at=now,
            updated_at=now,
        )

    async def schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        **job_options: Any,
    ) -> Schedule:
        """Add or replace the recurring schedule ``name``; return it as stored.

        Args:
            name: unique name (same rules as topics).
            cron: a cron expression or a helper's result (``every("5m")``, ``daily(9)``).
            topic, payload: the job each fire time enqueues.
            timezone: IANA zone the cron fields are read in.
            enabled: a disabled schedule keeps its definition but never fires.
            **job_options: enqueue's priority, max_retries, retry_delay, backoff,
                timeout, metadata.

        Raises:
            ValidationError: a bad argument, named in the error.
        """
        built = self._build_schedule(name, cron, topic, payload, timezone, enabled, job_options, "api")
        return await self._upsert_schedule(built)

    def declare_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        enabled: bool = True,
        **job_options: Any,
    ) -> Schedule:
        """Declare a schedule in code (not a coroutine; use it at import time).

        Validated now, stored by ``sync_schedules`` when a worker or ``serve`` starts.
        Returns the schedule as it will be stored.
        """
        built = self._build_schedule(name, cron, topic, payload, timezone, enabled, job_options, "code")
        self._schedule_decls[name] = {
            "cron": str(cron),
            "topic": topic,
            "payload": payload,
            "timezone": timezone,
            "enabled": enabled,
            **job_options,
        }
        return built

    async def _upsert_schedule(self, new: Schedule, old: Schedule | None = None, *, fetched: bool = False) -> Schedule:
        store = await self.store()
        if not fetched:
            old = await store.get_schedule(new.name)
        if (
            old is not None
            and old.enabled
            and new.enabled
            and old.next_run_at is not None
            and (old.cron, old.timezone) == (new.cron, new.timezone)
        ):
            # Same timing: keep a due (possibly missed) instant instead of skipping it.
            new.next_run_at = old.next_run_at
        return await store.save_schedule(new)

    async def sync_schedules(self) -> dict[str, builtins.list[str]]:
        """Store the schedules declared in code; disable code-declared ones no longer declared.

        An unchanged declaration leaves the stored schedule alone (an operator's disable
        sticks); a changed one replaces it. A client with no declarations changes nothing.
        Returns the names ``{"saved": [...], "disabled": [...]}``.
        """
        saved: builtins.list[str] = []
        disabled: builtins.list[str] = []
        if not self._schedule_decls:
            return {"saved": saved, "disabled": disabled}
        store = await self.store()
        existing = {s.name: s for s in await store.list_schedules()}
        for name, decl in sorted(self._schedule_decls.items()):
            args = dict(decl)
            fingerprint = hashlib.sha256(codec.dumps({"name": name, **args})).hexdigest()[:16]
            old = existing.get(name)
            if old is not None and old.options.get("declared") == fingerprint:
                continue
            new = self._build_schedule(
                name,
                args.pop("cron"),
                args.pop("topic"),
                args.pop("payload"),
                args.pop("timezone"),
                args.pop("enabled"),
                args,
                "code",
            )
            new.options["declared"] = fingerprint
            await self._upsert_schedule(new, old, fetched=True)
            saved.append(name)
        for name, old in sorted(existing.items()):
            if old.options.get("source") == "code" and name not in self._schedule_decls and old.enabled:
                old.options.pop("declared", None)  # declaring it again re-applies it in full
                old.enabled = False
                old.next_run_at = None
                old.updated_at = self.clock.now()
                await store.save_schedule(old)
                disabled.append(name)
                logger.warning(
                    "schedule %s is no longer declared in code: disabled (remove it with "
                    "`conveyor schedules remove %s`)",
                    name,
                    name,
                    extra={"event": "schedule_disabled", "schedule": name},
                )
        return {"saved": saved, "disabled": disabled}

    async def get_schedule(self, name: str) -> Schedule:
        """Raises: ScheduleNotFound."""
        validate_topic(name, field="name")
        found = await (await self.store()).get_schedule(name)
        if found is None:
            raise ScheduleNotFound(name)
        return found

    async def schedules(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return await (await self.store()).list_schedules()

    async def unschedule(self, name: str) -> None:
        """Remove a schedule (its jobs already enqueued stay). Raises: ScheduleNotFound."""
        validate_topic(name, field="name")
        if not await (await self.store()).delete_schedule(name):
            raise ScheduleNotFound(name)

    async def enable_schedule(self, name: str) -> Schedule:
        """Fire again from the next instant on (instants missed while disabled are skipped).

        Raises: ScheduleNotFound."""
        current = await self.get_schedule(name)
        if current.enabled:
            return current
        nxt = next_fire(current.cron, current.timezone, self.clock.now())
        updated = await (await self.store()).set_schedule_enabled(name, True, next_run_at=nxt)
        if updated is None:
            raise ScheduleNotFound(name)
        return updated

    async def disable_schedule(self, name: str) -> Schedule:
        """Stop firing (the definition is kept). Raises: ScheduleNotFound."""
        validate_topic(name, field="name")
        updated = await (await self.store()).set_schedule_enabled(name, False, next_run_at=None)
        if updated is None:
            raise ScheduleNotFound(name)
        return updated

    async def next_runs(self, name: str, n: int = 1) -> builtins.list[datetime]:
        """The next ``n`` fire instants (UTC) of an enabled schedule; [] when disabled.

        Raises: ScheduleNotFound; ValidationError for n outside 1..1000."""
        n = validate_int(n, field="n", low=1, high=1000)
        current = await self.get_schedule(name)
        if not current.enabled:
            return []
        now = self.clock.now()
        if current.next_run_at is not None and current.next_run_at <= now:
            # A due instant not fired yet (a scheduler is about to, or none runs).
            return [current.next_run_at, *next_fires(current.cron, current.timezone, now, n - 1)]
        return next_fires(current.cron, current.timezone, now, n)

    # -- worker ----------------------------------------------------------------------

    def _make_worker(self, **options: Any) -> Any:
        from conveyor.worker.dispatcher import Worker  # the worker builds on this client

        return Worker(self, **options)

    async def start(self, **options: Any) -> None:
        """Start a worker in this process, in the background (returns at once).
        With ``CONVEYOR_DISABLED=true`` no worker starts (logged)."""
        if self._worker is not None:
            return
        if self.settings.disabled:
            logger.warning("conveyor is disabled (CONVEYOR_DISABLED=true): no worker started")
            return
        await self.store()
        self._worker = self._make_worker(**options)
        await self._worker.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: running jobs get ``timeout`` seconds to finish, then are
        released back to ``pending``. Nothing is left ``processing``."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop(timeout)

    async def run_worker(self, *, install_signal_handlers: bool = True, **options: Any) -> None:
        """Run a worker until ``stop()``, SIGINT or SIGTERM (returns at once when disabled)."""
        await self.start(**options)
        worker = self._worker
        if worker is None:
            return
        if install_signal_handlers:
            worker.install_signal_handlers()
        await worker.wait_stopped()
        if self._worker is worker:
            self._worker = None

    @property
    def worker(self) -> Any:
        return self._worker


def _job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise ValidationError("id", f"invalid job id {job_id!r}")
    return job_id


def _status(status: object) -> JobStatus | None:
    if status is None:
        return None
    try:
        return JobStatus(str(status))
    except ValueError:
        raise ValidationError(
            "status", f"unknown status {status!r}: expected one of {', '.join(s.value for s in JobStatus)}"
        ) from None
