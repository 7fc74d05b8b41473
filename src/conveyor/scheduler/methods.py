"""The schedule methods of ``AsyncConveyor`` (docs/schedules.md), mixed into the client.

``schedule`` stores at once and returns the stored schedule. ``declare_schedule`` is
the separate, explicit call for schedules declared in code for workers: it records the
declaration, and ``sync_schedules`` (run by the scheduler when a worker or ``serve``
starts, and again when the store is found to have lost them) stores them and disables
code-declared schedules that are no longer declared. The rules themselves are pure, in
``conveyor.core.schedule``.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Unpack

from conveyor.core import codec, operation
from conveyor.core.cron import next_fire, next_fires
from conveyor.core.errors import InvalidState, JobNotFound, ScheduleExists, ScheduleNotFound, ValidationError
from conveyor.core.events import Event, scheduled_event
from conveyor.core.ids import job_id_floor
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import validate_int, validate_topic
from conveyor.core.schedule import (
    Schedule,
    ScheduleJobOptions,
    build_schedule,
    definition,
    instant_job,
    keep_due_instant,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from conveyor.backends.base import Backend
    from conveyor.core.clock import Clock
    from conveyor.core.options import JobDefaults

logger = logging.getLogger("conveyor")

# Where _drop_armed_job looks for an armed job: created at most this long before the
# schedule's last save, within this many pages of the topic's pending jobs.
ARMED_JOB_WINDOW = timedelta(minutes=1)
ARMED_JOB_MAX_PAGES = 20


def armed_key(name: str, instant: datetime) -> str:
    """The unique key of the job ``arm_schedule`` enqueues ahead for an instant."""
    return f"schedule:{name}:{instant.isoformat()}"


class ScheduleMethods:
    """Save, declare, sync, arm, read, enable and disable schedules, through ``connect()``."""

    _schedule_decls: dict[str, dict[str, Any]]

    if TYPE_CHECKING:
        clock: Clock

        @property
        def defaults(self) -> JobDefaults: ...

        def defaults_for(self, topic: str) -> JobDefaults: ...

        async def connect(self) -> Backend: ...

        def emit(self, events: Iterable[Event]) -> None: ...

        async def insert(self, jobs: builtins.list[Job], connection: Any = None) -> builtins.list[Job]: ...

    @property
    def declared_schedules(self) -> builtins.list[str]:
        """Names of the schedules declared in code (``declare_schedule``)."""
        return sorted(self._schedule_decls)

    def build_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Schedule:
        """Validate a schedule's arguments into the record ``schedule()`` would store
        (nothing is stored). Arguments as ``schedule``'s.

        Raises:
            ValidationError: a bad argument (named).
        """
        return self._build_schedule(name, cron, topic, payload, timezone, True, job_options, "api")

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
        return build_schedule(
            name,
            cron,
            topic,
            payload,
            timezone=timezone,
            enabled=enabled,
            job_options=job_options,
            source=source,
            now=self.clock.now(),
            defaults=self.defaults,
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
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Schedule:
        """Add or replace the recurring schedule ``name`` in the store.

        Stored before it returns (the store is opened if needed). For schedules that
        workers should apply whenever they start, use ``declare_schedule``. Replacing a
        schedule whose next instant a cron enqueue armed ahead replaces that armed job.

        Args:
            name: unique name (same rules as topics).
            cron: a cron expression or a helper's result (``every("5m")``, ``daily(9)``).
            topic, payload: the job each fire time enqueues.
            timezone: IANA zone the cron fields are read in.
            enabled: a disabled schedule keeps its definition but never fires.
            **job_options: enqueue's priority, max_retries, retry_delay, backoff,
                timeout, metadata.

        Returns:
            The schedule as stored, with its ``next_run_at``.

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
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Schedule:
        """Declare a schedule in code for workers (not a coroutine; use it at import time).

        Validated now and stored nowhere yet: the scheduler of every worker or ``serve``
        built from this app stores it when it starts (``sync_schedules``), and again if
        the store is found to have lost it. Returns the schedule as it will be stored.

        Raises:
            ValidationError: a bad argument, named in the error.
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
        store = await self.connect()
        if not fetched:
            old = await store.get_schedule(new.name)
        armed = old.last_fired_at if old is not None else None
        if old is not None and definition(old) != definition(new) and await self._drop_armed_job(old):
            saved = await store.save_schedule(new)
            if armed is not None and new.enabled and new.next_run_at == armed:
                # The store keeps last_fired_at, so no scheduler fires that instant again:
                # arm it with the new definition in the old job's place.
                job = instant_job(
                    saved,
                    armed,
                    now=self.clock.now(),
                    defaults=self.defaults_for(new.topic),
                    unique_key=armed_key(new.name, armed),
                )
                await self.insert([job])  # with its job.scheduled event
            return saved
        keep_due_instant(old, new)
        return await store.save_schedule(new)

    async def _drop_armed_job(self, old: Schedule) -> bool:
        """When ``old`` is being replaced and a cron enqueue armed its next instant ahead
        (``arm_schedule``: a pending job made before the instant), delete that job, so the
        old definition does not run once more. True when it was deleted.

        The job is found among the pending jobs of the topic created since the schedule
        was last saved (keyset pages from that time), by its unique key.
        """
        instant = old.last_fired_at
        now = self.clock.now()
        if instant is None or instant <= now:
            return False  # nothing armed ahead: the last instant fired on time
        store = await self.connect()
        key = armed_key(old.name, instant)
        since = (old.updated_at or old.created_at or now) - ARMED_JOB_WINDOW
        cursor: str | None = job_id_floor(since)
        for _ in range(ARMED_JOB_MAX_PAGES):
            page = await store.list_jobs(status=JobStatus.PENDING, topic=old.topic, before=cursor, limit=100)
            for job in page.items:
                if job.unique_key != key:
                    continue
                try:
                    await store.apply(operation.delete_pending(job.id), now=now)
                except (InvalidState, JobNotFound):
                    return False  # started meanwhile (run now): the instant is used
                logger.info(
                    "schedule %s replaced: deleted job %s armed for %s by the old definition",
                    old.name,
                    job.id,
                    instant.isoformat(),
                    extra={"event": "schedule_armed_job_deleted", "schedule": old.name, "job_id": job.id},
                )
                return True
            cursor = page.prev
            if cursor is None:
                break
        return False

    async def sync_schedules(self, *, disable_missing: bool = True) -> dict[str, builtins.list[str]]:
        """Store the schedules declared in code; disable code-declared ones no longer declared.

        An unchanged declaration leaves the stored schedule alone (an operator's disable
        sticks); a changed or missing one is stored. A client with no declarations
        changes nothing. ``disable_missing=False`` only stores. Returns the names
        ``{"saved": [...], "disabled": [...]}``.
        """
        saved: builtins.list[str] = []
        disabled: builtins.list[str] = []
        if not self._schedule_decls:
            return {"saved": saved, "disabled": disabled}
        store = await self.connect()
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
            if (
                disable_missing
                and old.options.get("source") == "code"
                and name not in self._schedule_decls
                and old.enabled
            ):
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

    async def arm_schedule(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        replace: bool = True,
        **job_options: Unpack[ScheduleJobOptions],
    ) -> Job:
        """Add (or replace) the schedule and enqueue the job of its next instant now,
        marking that instant fired so that no scheduler enqueues it again. Returns that
        job (the job already armed for that instant when the same call is repeated).

        Args:
            name, cron, topic, payload, timezone, **job_options: as ``schedule``'s.
            replace: False: the schedule must not exist yet, or already have exactly
                this definition (the same call sent again); it is added insert-only,
                so no one else's schedule is replaced in a race.

        Raises:
            ValidationError: a bad argument, or a cron expression that never fires.
            ScheduleExists: ``replace`` is False and a different schedule has the name.
        """
        job, _ = await self.arm_schedule_reporting(
            name, cron, topic, payload, timezone=timezone, replace=replace, **job_options
        )
        return job

    async def arm_schedule_reporting(
        self,
        name: str,
        cron: str,
        topic: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        replace: bool = True,
        **job_options: Unpack[ScheduleJobOptions],
    ) -> tuple[Job, bool]:
        """``arm_schedule``, and whether this call armed the job (False: the job already
        armed for that instant, which someone may have changed since). The HTTP API
        shows a caller without the read role only the id and status of such a job."""
        if replace:
            await self.schedule(name, cron, topic, payload, timezone=timezone, **job_options)
        else:
            wanted = self.build_schedule(name, cron, topic, payload, timezone=timezone, **job_options)
            store = await self.connect()
            for _ in range(2):  # insert-only: no window for someone else's schedule to be replaced
                if await store.add_schedule(wanted) is not None:
                    break
                existing = await store.get_schedule(name)
                if existing is None:
                    continue  # removed meanwhile: add it again
                if definition(existing) != definition(wanted):
                    raise ScheduleExists(name)
                break
        current = await self.get_schedule(name)
        runs = await self.next_runs(name, n=2)
        if not runs:
            raise ValidationError("cron", f"{cron!r} never fires")
        fire_at = runs[0]
        now = self.clock.now()
        job = instant_job(
            current,
            fire_at,
            now=now,
            defaults=self.defaults_for(topic),
            unique_key=armed_key(name, fire_at),
        )
        store = await self.connect()
        fired = await store.fire_schedule(
            name, fire_at=fire_at, next_run_at=runs[1] if len(runs) > 1 else None, job=job
        )
        if fired is None:
            # This instant was already armed (e.g. the same call sent twice): its unique
            # key returns the job that holds it.
            fired = (await store.enqueue([job]))[0]
        armed = fired.id == job.id
        if armed:
            self.emit([scheduled_event(fired, now)])
        return fired, armed

    async def run_schedule(self, name: str) -> Job:
        """Enqueue one job of a schedule now, as one of its instants would (its topic,
        payload and job options; ``job.schedule`` names it), without changing when the
        schedule fires next. Works on a disabled schedule too.

        Args:
            name: the schedule's name.

        Returns:
            The new job, due now.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        current = await self.get_schedule(name)
        now = self.clock.now()
        job = instant_job(current, now, now=now, defaults=self.defaults_for(current.topic))
        return (await self.insert([job]))[0]

    async def get_schedule(self, name: str) -> Schedule:
        """The schedule of this name.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        validate_topic(name, field="name")
        found = await (await self.connect()).get_schedule(name)
        if found is None:
            raise ScheduleNotFound(name)
        return found

    async def schedules(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return await (await self.connect()).list_schedules()

    async def unschedule(self, name: str) -> None:
        """Remove a schedule (the jobs it already enqueued stay).

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        validate_topic(name, field="name")
        if not await (await self.connect()).delete_schedule(name):
            raise ScheduleNotFound(name)

    async def enable_schedule(self, name: str) -> Schedule:
        """Fire again from the next instant on (instants missed while disabled are skipped).

        Returns:
            The schedule, enabled.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        current = await self.get_schedule(name)
        if current.enabled:
            return current
        nxt = next_fire(current.cron, current.timezone, self.clock.now())
        updated = await (await self.connect()).set_schedule_enabled(name, True, next_run_at=nxt)
        if updated is None:
            raise ScheduleNotFound(name)
        return updated

    async def disable_schedule(self, name: str) -> Schedule:
        """Stop firing (the definition is kept).

        Returns:
            The schedule, disabled.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        validate_topic(name, field="name")
        updated = await (await self.connect()).set_schedule_enabled(name, False, next_run_at=None)
        if updated is None:
            raise ScheduleNotFound(name)
        return updated

    async def next_runs(self, name: str, n: int = 1) -> builtins.list[datetime]:
        """The next ``n`` fire instants (UTC) of an enabled schedule; [] when disabled.

        Args:
            name: the schedule's name.
            n: how many, 1-1000.

        Raises:
            ScheduleNotFound: no schedule has this name.
            ValidationError: ``n`` outside 1..1000.
        """
        n = validate_int(n, field="n", low=1, high=1000)
        current = await self.get_schedule(name)
        if not current.enabled:
            return []
        now = self.clock.now()
        if current.next_run_at is not None and current.next_run_at <= now:
            # A due instant not fired yet (a scheduler is about to, or none runs).
            return [current.next_run_at, *next_fires(current.cron, current.timezone, now, n - 1)]
        return next_fires(current.cron, current.timezone, now, n)
