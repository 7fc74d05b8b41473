"""Maintenance by one elected leader per store: recovering jobs whose lease expired
(their worker died), pruning finished jobs past retention and firing due schedule
instants. Every worker (and ``serve``) runs a ``Maintainer``; only the one holding the
store's maintenance lease (``Backend.acquire_leadership``) does the work. The leader
renews its lease every ``renew_interval``, for one lock duration less one renewal
interval: if it dies, the lease runs out and a candidate, trying every renewal
interval, takes over within one lock duration of its last renewal (SPEC); a leader
that stops releases it, so another takes over at its next try. The store's compare-and-set on schedule
firing stays the safety net: two leaders for a moment still fire an instant once.

Timed on the client's clock (a ``FakeClock`` in tests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.backends.base import WorkerInfo
from conveyor.clock import sleep_unless
from conveyor.core import lifecycle
from conveyor.core.errors import BackendError, ConveyorError
from conveyor.core.events import outcome_events
from conveyor.scheduler.scheduler import Scheduler
from conveyor.worker.acks import log_outcome

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

PRUNE_INTERVAL = 60.0
RECOVER_BATCH = 100


def recover_interval(lock_duration: float) -> float:
    """How often the leader looks for expired leases."""
    return max(0.1, min(lock_duration / 2, 5.0))


class Maintainer:
    """Stands for the store's maintenance lease and, while it holds it, does the
    maintenance.

    Args:
        client: whose store, clock and settings are used.
        holder: this candidate's id (the worker id).
        lock_duration: the lease of the leader (seconds): the longest a dead leader's
            work waits for a successor.
        scheduler: fire due schedule instants while leading.
        info: when it runs without a worker (``serve --no-worker``): builds its own
            live-worker registry entry, kept fresh while it runs, so that whoever leads
            shows in the list of workers.
    """

    def __init__(
        self,
        client: AsyncConveyor,
        holder: str,
        *,
        lock_duration: float,
        scheduler: bool = True,
        info: Callable[[], WorkerInfo] | None = None,
    ) -> None:
        self.client = client
        self._info = info
        self.holder = holder
        self.lock_duration = lock_duration
        self.renew_interval = max(0.05, min(lock_duration / 3, 5.0))
        self.recover_interval = recover_interval(lock_duration)
        self.scheduler = Scheduler(client) if scheduler else None
        self.leading = False
        self.recovered = 0
        self._next_recover: datetime | None = None
        self._next_prune: datetime | None = None
        self._next_tick: datetime | None = None
        self._next_renew: datetime | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Apply the app's schedule declarations, then stand for the lease and maintain
        while leading, until ``stopping`` is set; then release the lease. Store errors
        are logged and retried; never raises them."""
        clock = self.client.clock
        declared = self.scheduler is None
        try:
            while not stopping.is_set():
                wait = self.renew_interval
                if self.client.is_connected:  # else: the claim loop opens it (start-up outage)
                    try:
                        if not declared:
                            declared = await self._apply_declarations()
                        now = clock.now()
                        # The lease (and a standalone registry entry) is renewed at its own
                        # pace, not on every pass of the leader's faster maintenance.
                        if self._next_renew is None or now >= self._next_renew:
                            if self._info is not None:
                                await self.client.backend.save_worker(self._info())
                            await self._stand(now)
                            self._next_renew = now + timedelta(seconds=self.renew_interval)
                        wait = max(0.0, (self._next_renew - now).total_seconds())
                        if self.leading:
                            wait = min(wait, await self._maintain(clock.now()))
                        self.client.outage.ok()
                    except BackendError as exc:
                        self.client.outage.failed("maintenance", exc)
                    except ConveyorError as exc:
                        logger.error("maintenance: %s", exc, extra={"event": "maintenance_error"})
                    except Exception:
                        logger.exception("maintenance: unexpected error; will retry")
                await sleep_unless(clock, stopping, wait)
        finally:
            await self.resign()
            if self._info is not None and self.client.is_connected:
                try:
                    await self.client.backend.remove_worker(self.holder)
                except BackendError as exc:
                    logger.warning("could not remove %s from the registry: %s", self.holder, exc)

    async def _apply_declarations(self) -> bool:
        assert self.scheduler is not None
        await self.scheduler.apply_declarations()
        return True

    async def _stand(self, now: datetime) -> None:
        """Take or renew the lease."""
        store = self.client.backend
        try:
            leading = await store.acquire_leadership(
                holder=self.holder, now=now, until=now + timedelta(seconds=self.lock_duration - self.renew_interval)
            )
        except BackendError:
            self.leading = False
            raise
        if leading and not self.leading:
            logger.info(
                "%s is the maintenance leader: it recovers expired leases, prunes%s",
                self.holder,
                " and fires schedules" if self.scheduler is not None else "",
                extra={"event": "leader_elected", "worker_id": self.holder},
            )
            self._next_recover = self._next_prune = self._next_tick = now
        elif self.leading and not leading:
            logger.warning(
                "%s lost the maintenance lease (another worker leads now)",
                self.holder,
                extra={"event": "leader_lost", "worker_id": self.holder},
            )
        self.leading = leading

    async def _maintain(self, now: datetime) -> float:
        """Do what is due; return the seconds until the next thing is."""
        assert self._next_recover is not None and self._next_prune is not None and self._next_tick is not None
        if now >= self._next_recover:
            await self.recover_expired(now)
            self._next_recover = now + timedelta(seconds=self.recover_interval)
        if now >= self._next_prune:
            pruned = await self.client.prune()
            if pruned:
                logger.info("pruned %d finished jobs past retention", pruned, extra={"event": "pruned"})
            self._next_prune = now + timedelta(seconds=PRUNE_INTERVAL)
        if self.scheduler is not None and now >= self._next_tick:
            self._next_tick = now + timedelta(seconds=await self.scheduler.tick())
        upcoming = [self._next_recover, self._next_prune]
        if self.scheduler is not None:
            upcoming.append(self._next_tick)
        return max(0.0, (min(upcoming) - self.client.clock.now()).total_seconds())

    async def recover_expired(self, now: datetime | None = None) -> int:
        """Record "worker lost" for jobs whose lease expired; they retry or fail by the
        rules. Returns how many were recovered."""
        backend = self.client.backend
        now = now or self.client.clock.now()
        total = 0
        for _ in range(10):  # bounded: the rest waits for the next pass
            expired = await backend.expired(now=now, limit=RECOVER_BATCH)
            outcomes = [lifecycle.worker_lost(job, now) for job in expired]
            results = await backend.finish(outcomes, now=now)
            for outcome, job in zip(outcomes, results, strict=True):
                if job is None:
                    continue  # it finished just in time, or someone else recovered it
                total += 1
                self.client.emit(outcome_events(job, outcome, now))
                log_outcome(job, outcome, None)
            if len(expired) < RECOVER_BATCH:
                break
        self.recovered += total
        return total

    async def resign(self) -> None:
        """Release the lease if held, so that another candidate takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            await self.client.backend.release_leadership(holder=self.holder)
            logger.info("%s released the maintenance lease", self.holder, extra={"event": "leader_released"})
        except BackendError as exc:
            logger.warning("could not release the maintenance lease (%s): it ends by itself", exc)
