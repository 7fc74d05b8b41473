"""The scheduler (docs/schedules.md): turns due schedule instants into jobs, exactly once.

The store's maintenance leader (``worker/maintenance.py``) calls ``tick`` as instants
come; ``run`` is the same loop standalone, without an election. Each pass lists the schedules,
and for every enabled one whose ``next_run_at`` has come computes the latest fire
instant at or before now (older missed instants are skipped) and calls
``Backend.fire_schedule``: the store's compare-and-set on ``last_fired_at`` lets exactly
one of any number of racing schedulers enqueue that instant's job. Then it sleeps until
the next instant is due, at most ``max_sleep`` seconds so that new and changed
schedules are seen promptly.

Reaches storage only through the client and the ``Backend`` protocol.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor.clock import sleep_unless
from conveyor.core.cron import next_fire
from conveyor.core.errors import BackendError, ConveyorError
from conveyor.core.events import scheduled_event
from conveyor.core.job import Job
from conveyor.core.schedule import Schedule, due_instant, instant_job

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

MAX_BACKOFF = 30.0


class Scheduler:
    """Fires the due instants of the schedules in ``client``'s store.

    Args:
        client: the client whose store, clock and defaults are used.
        max_sleep: longest sleep between passes (seconds).
    """

    def __init__(self, client: AsyncConveyor, *, max_sleep: float = 1.0) -> None:
        self.client = client
        self.max_sleep = max_sleep
        self.fired = 0
        # Schedules whose stored definition cannot build a job, with the updated_at last
        # reported: logged once per change instead of once a second.
        self._broken: dict[str, datetime | None] = {}
        self._declarations_applied = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Apply the app's schedule declarations, then fire due instants until
        ``stopping`` is set, with no leader election (a worker runs its scheduler inside
        its ``Maintainer``, only while it leads). Store errors are logged and retried
        with backoff; never raises them."""
        backoff = 0.5
        synced = False
        clock = self.client.clock
        while not stopping.is_set():
            try:
                if not synced:
                    synced = await self.apply_declarations()
                delay = await self.tick()
                backoff = 0.5
                self.client.outage.ok()
            except BackendError as exc:
                self.client.outage.failed("scheduler", exc, retry_in=backoff)
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            except Exception:
                logger.exception("scheduler: unexpected error, retrying in %.1fs", backoff)
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            await sleep_unless(clock, stopping, delay)

    async def apply_declarations(self) -> bool:
        """Store the schedules the app declares in code (``sync_schedules``); True once
        done. An invalid declaration is logged, not retried. Raises BackendError."""
        try:
            result = await self.client.sync_schedules()
        except BackendError:
            raise
        except ConveyorError as exc:
            logger.error("schedules declared in code: %s", exc, extra={"event": "scheduler_error"})
            return True
        self._declarations_applied = True
        if result["saved"] or result["disabled"]:
            logger.info(
                "schedules declared in code: saved %s, disabled %s",
                ",".join(result["saved"]) or "-",
                ",".join(result["disabled"]) or "-",
                extra={"event": "schedules_synced"},
            )
        return True

    async def tick(self) -> float:
        """One pass: fire every due schedule once; return seconds until the next is due
        (capped at ``max_sleep``). Declarations applied earlier that the store no longer
        has any of (its data was lost, e.g. Redis restarted without persistence) are
        applied again first."""
        store = await self.client.connect()
        now = self.client.clock.now()
        wake = self.max_sleep
        schedules = await store.list_schedules()
        declared = self.client.declared_schedules
        if self._declarations_applied and declared:
            names = {s.name for s in schedules}
            if not names.intersection(declared):
                logger.warning(
                    "the store has none of the %d schedules declared in code (was its data lost?): storing them again",
                    len(declared),
                    extra={"event": "schedules_lost"},
                )
                await self.client.sync_schedules(disable_missing=False)
                schedules = await store.list_schedules()
        for schedule in schedules:
            if not schedule.enabled:
                continue
            try:
                due = due_instant(schedule, now)
                if due is not None:
                    await self._fire(schedule, due, now)
                upcoming = next_fire(schedule.cron, schedule.timezone, now)
            except BackendError:
                raise
            except ConveyorError as exc:
                self._report_broken(schedule, exc)
                continue
            if upcoming is not None:
                wake = min(wake, (upcoming - now).total_seconds())
        return max(wake, 0.0)

    async def _fire(self, schedule: Schedule, fire_at: datetime, now: datetime) -> Job | None:
        client = self.client
        job = instant_job(schedule, fire_at, now=now, defaults=client.defaults_for(schedule.topic))
        store = await client.connect()
        stored = await store.fire_schedule(
            schedule.name, fire_at=fire_at, next_run_at=next_fire(schedule.cron, schedule.timezone, now), job=job
        )
        if stored is None:
            return None  # another scheduler fired this instant, or the schedule changed
        self.fired += 1
        client.emit([scheduled_event(stored, now, schedule=schedule.name)])
        logger.info(
            "schedule %s fired for %s: job %s",
            schedule.name,
            fire_at.isoformat(),
            stored.id,
            extra={"event": "schedule_fired", "schedule": schedule.name, "job_id": stored.id, "topic": stored.topic},
        )
        return stored

    def _report_broken(self, schedule: Schedule, exc: ConveyorError) -> None:
        if schedule.name in self._broken and self._broken[schedule.name] == schedule.updated_at:
            return
        self._broken[schedule.name] = schedule.updated_at
        logger.error(
            "schedule %s cannot fire: %s",
            schedule.name,
            exc,
            extra={"event": "schedule_error", "schedule": schedule.name},
        )
