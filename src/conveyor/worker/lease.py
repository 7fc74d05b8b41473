"""Leases and heartbeats: renews the leases of a worker's running attempts (learning
on the way which were cancelled and which leases were lost), and keeps the worker's
entry in the store's live-worker registry fresh. Timed on the client's clock."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.backends.base import WorkerInfo
from conveyor.core.errors import BackendError
from conveyor.worker.executor import Attempt

if TYPE_CHECKING:
    from conveyor.client import AsyncConveyor

logger = logging.getLogger("conveyor")

# How often the live-worker registry entry is refreshed (the API counts a worker whose
# entry is older than ``client.WORKER_ALIVE_WINDOW`` as gone).
REGISTRY_INTERVAL = 2.0


def heartbeat_interval(lock_duration: float) -> float:
    """Renew leases well before they end, and poll cancellations about once a second."""
    return max(0.05, min(lock_duration / 3, 1.0))


class LeaseKeeper:
    """The heartbeat loop of one worker.

    Args:
        client: whose store and clock are used.
        worker_id: the lease holder's id.
        active: the worker's running attempts by job id (read, never changed here).
        lock_duration: each renewal extends a lease to now + this.
        info: builds the worker's registry entry (None: keep no entry).
    """

    def __init__(
        self,
        client: AsyncConveyor,
        worker_id: str,
        active: Mapping[str, Attempt],
        *,
        lock_duration: float,
        info: Callable[[], WorkerInfo] | None,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.active = active
        self.lock_duration = lock_duration
        self.interval = heartbeat_interval(lock_duration)
        self._info = info
        self._last_registry: datetime | None = None

    async def run(self) -> None:
        """Renew until cancelled (after the drain: leases must outlive it); store
        errors are logged and retried."""
        clock = self.client.clock
        while True:
            await clock.sleep(self.interval)
            if not self.client.is_connected:
                continue  # the claim loop opens the store (start-up during an outage)
            try:
                await self.renew()
                now = clock.now()
                if self._info is not None and (
                    self._last_registry is None or (now - self._last_registry).total_seconds() >= REGISTRY_INTERVAL
                ):
                    await self.save_registry()
                self.client.outage.ok()
            except BackendError as exc:
                self.client.outage.failed("lease renewal", exc)

    async def renew(self) -> None:
        """One heartbeat for every running attempt: extend its lease; stop the attempts
        whose cancellation was requested, and those whose lease was lost."""
        ids = list(self.active)
        if not ids:
            return
        result = await self.client.backend.heartbeat(
            worker_id=self.worker_id,
            job_ids=ids,
            locked_until=self.client.clock.now() + timedelta(seconds=self.lock_duration),
        )
        for job_id in result.cancel_requested:
            attempt = self.active.get(job_id)
            if attempt is not None and attempt.interrupted is None:
                logger.info("job %s: cancellation requested; stopping it", job_id)
                attempt.job.cancel_requested = True
                attempt.request("cancel")
        for job_id in result.lost:
            attempt = self.active.get(job_id)
            # An attempt that ended may have its outcome stored by an acknowledgement that
            # committed before this heartbeat looked (several can be in flight, and the
            # replies come back in any order): not lost. Its acknowledgement's fence has
            # the last word (acks logs an outcome it refused).
            if attempt is not None and not attempt.lease_lost and not attempt.ended:
                attempt.lease_lost = True
                logger.warning(
                    "job %s: lease lost (another worker may run it now); stopping this attempt, its result "
                    "will be discarded",
                    job_id,
                )
                # Never two live attempts of one job: the handler is stopped as a
                # cancellation would stop it (a sync one sees job.cancel_requested).
                attempt.request("lost")

    async def save_registry(self) -> None:
        if self._info is None:
            return
        info = self._info()
        await self.client.backend.save_worker(info)
        self._last_registry = info.last_heartbeat

    async def remove_registry(self) -> None:
        if self._info is None or not self.client.is_connected:
            return
        try:
            await self.client.backend.remove_worker(self.worker_id)
        except BackendError as exc:
            logger.warning("could not remove worker %s from the registry: %s", self.worker_id, exc)


def registry_entry(
    worker_id: str, topics: list[str], concurrency: int, active: list[str], started_at: datetime | None, now: datetime
) -> WorkerInfo:
    """A live-worker registry entry for this process."""
    return WorkerInfo(
        id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        topics=list(topics),
        concurrency=concurrency,
        active_jobs=active,
        started_at=started_at,
        last_heartbeat=now,
    )
