"""The schedule methods of ``AsyncConveyor`` (SPEC §2), mixed into the client.

A schedule saved through these methods is stored at once. ``declare_schedule`` (and
the sync facade's ``schedule`` before its store is open, i.e. at import time) only
records a declaration in code, stored when the store opens (or at ``close()`` if it
never did); ``sync_schedules`` run by the scheduler at worker start also disables
code-declared schedules that are no longer declared. Rules: docs/schedules.md.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.core import codec
from conveyor.core.cron import next_fire, next_fires, validate_cron, validate_timezone
from conveyor.core.errors import ScheduleNotFound, ValidationError
from conveyor.core.options import build_job, validate_int, validate_topic
from conveyor.core.schedule import Schedule

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.core.clock import Clock
    from conveyor.core.options import JobDefaults

logger = logging.getLogger("conveyor")

# The job options a schedule stores, and bookkeeping keys kept beside them in
# Schedule.options (where a schedule came from; the fingerprint of its code declaration).
SCHEDULE_JOB_OPTIONS = frozenset({"priority", "max_retries", "retry_delay", "backoff", "timeout", "metadata"})
SCHEDULE_MARKERS = frozenset({"source", "declared"})


class ScheduleMethods:
    """Save, declare, sync, read, enable and disable schedules, through ``store()``."""

    _schedule_decls: dict[str, dict[str, Any]]
    _declarations_unsynced: bool  # a declaration not stored since it was made

    if TYPE_CHECKING:
        clock: Clock

        @property
        def defaults(self) -> JobDefaults: ...

        async def store(self) -> Backend: ...

    @property
    def declarations_pending(self) -> bool:
        """Whether a schedule declared in code is not stored yet (``close()`` stores it)."""
        return self._declarations_unsynced

    def build_schedule(
        self, name: str, cron: str, topic: str, payload: Any = None, *, timezone: str = "UTC", **job_options: Any
    ) -> Schedule:
        """Validate a schedule's arguments into the record ``schedule()`` would store
        (pure; nothing is stored)."""
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
        self._declarations_unsynced = True
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

    async def sync_schedules(self, *, disable_missing: bool = True) -> dict[str, builtins.list[str]]:
        """Store the schedules declared in code; disable code-declared ones no longer declared.

        An unchanged declaration leaves the stored schedule alone (an operator's disable
        sticks); a changed one replaces it. A client with no declarations changes nothing.
        ``disable_missing=False`` only stores (what opening the store does: a script that
        declares one schedule must not disable the app's others; the scheduler of a
        worker or ``serve`` disables). Returns the names ``{"saved": [...], "disabled": [...]}``.
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
        self._declarations_unsynced = False
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
