"""The worker methods of ``AsyncConveyor``, mixed into the client: run a worker in this
process (``start``, ``stop``, ``run_worker``) and read the store's live workers and
which of them leads its maintenance."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from conveyor.backends.base import WorkerInfo
from conveyor.core.errors import BackendUnavailable
from conveyor.worker.dispatcher import Worker

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.client import AsyncConveyor
    from conveyor.core.clock import Clock
    from conveyor.logs import StoreOutage
    from conveyor.settings import Settings

logger = logging.getLogger("conveyor")

# A worker whose registry heartbeat is older than this is considered gone.
WORKER_ALIVE_WINDOW = timedelta(seconds=15)


class WorkerMethods:
    """``start``/``stop``/``run_worker`` and the live-worker registry, through ``connect()``."""

    _worker: Worker | None

    if TYPE_CHECKING:
        clock: Clock
        settings: Settings
        outage: StoreOutage

        async def connect(self) -> Backend: ...

    async def workers(self) -> builtins.list[WorkerInfo]:
        """The live workers on this store (heartbeat within the last 15 s), from any
        process or machine: id, host, pid, topics, concurrency, active jobs, and
        ``leader`` on the one that holds the store's maintenance lease."""
        store = await self.connect()
        now = self.clock.now()
        alive = await store.list_workers(alive_since=now - WORKER_ALIVE_WINDOW)
        leader = await store.current_leader(now=now)
        for info in alive:
            info.leader = info.id == leader
        return alive

    async def job_types(self) -> builtins.list[str]:
        """The topics that live workers handle, sorted."""
        return sorted({t for w in await self.workers() for t in w.topics})

    async def start(
        self,
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
        """Start a worker in this process, in the background (returns at once). With
        ``CONVEYOR_DISABLED=true`` no worker starts (logged). Unset options come from
        the settings (``CONVEYOR_WORKERS``, ...).

        Args:
            concurrency: jobs run at once.
            topics: only claim these topics (default: every registered handler's).
            batch_size: most jobs a claim takes (an acknowledgement, which stores up to
                twice as many outcomes, claims for the slots it frees).
            poll_interval: fallback poll interval when no wake-up arrives.
            lock_duration: lease of a running job, renewed by a heartbeat; also the
                longest a dead maintenance leader goes unreplaced.
            shutdown_timeout: how long a stop lets running jobs finish before handing
                them back (``CONVEYOR_SHUTDOWN_TIMEOUT``, default 30 s).
            scheduler: stand for the store's maintenance leader (fire schedules,
                recover expired leases, prune) and apply the schedule declarations.
            worker_id: this worker's id (default ``host:pid:random``).

        Raises:
            ValidationError: a bad option, or a topic without a handler.
        """
        if self._worker is not None:
            return  # running, or stopping (run_worker starts the one a signal already stops)
        if self.settings.disabled:
            logger.warning("conveyor is disabled (CONVEYOR_DISABLED=true): no worker started")
            return
        try:
            await self.connect()
        except BackendUnavailable as exc:
            # Ride out the outage: the worker opens the store once it is back.
            self.outage.failed("worker start", exc)
        client: AsyncConveyor = self  # type: ignore[assignment]
        self._worker = Worker(
            client,
            concurrency=concurrency,
            topics=topics,
            batch_size=batch_size,
            poll_interval=poll_interval,
            lock_duration=lock_duration,
            shutdown_timeout=shutdown_timeout,
            scheduler=scheduler,
            worker_id=worker_id,
        )
        await self._worker.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop this process's worker: running jobs get ``timeout`` seconds (default the
        shutdown timeout) to finish, then are handed back to ``pending``, the attempt
        not counted. Nothing is left ``processing``.

        Args:
            timeout: seconds to wait for running jobs.
        """
        worker = self._worker
        if worker is None:
            return
        # ``worker`` stays this client's until it has stopped: a second signal during the
        # drain reaches it through ``self.worker`` and hands its running jobs back.
        await worker.stop(timeout)
        if self._worker is worker:
            self._worker = None

    async def run_worker(
        self,
        *,
        install_signal_handlers: bool = True,
        concurrency: int | None = None,
        topics: Sequence[str] | None = None,
        batch_size: int | None = None,
        poll_interval: float | str | None = None,
        lock_duration: float | str | None = None,
        shutdown_timeout: float | str | None = None,
        scheduler: bool = True,
        worker_id: str | None = None,
    ) -> None:
        """Run a worker until ``stop()``, SIGINT or SIGTERM; returns at once when
        disabled. The first signal drains (running jobs get the shutdown timeout to
        finish), a second stops now, handing them back. Cancelling it stops now too:
        the cancellation propagates once running jobs are handed back.

        Args:
            install_signal_handlers: stop on SIGINT/SIGTERM.
            concurrency, topics, batch_size, poll_interval, lock_duration,
                shutdown_timeout, scheduler, worker_id: as ``start``'s.

        Raises:
            ValidationError: a bad option, or a topic without a handler.
            ConveyorError: the worker stopped itself because one of its loops died.
        """
        await self.start(
            concurrency=concurrency,
            topics=topics,
            batch_size=batch_size,
            poll_interval=poll_interval,
            lock_duration=lock_duration,
            shutdown_timeout=shutdown_timeout,
            scheduler=scheduler,
            worker_id=worker_id,
        )
        worker = self._worker
        if worker is None:
            return
        if install_signal_handlers:
            worker.install_signal_handlers()
        try:
            await worker.wait_stopped()
        except asyncio.CancelledError:
            # Cancelled (a task group, a timeout, an application shutting down): stop
            # now, handing running jobs back, so that no loop of this worker goes on
            # claiming and nothing is left processing; then end as cancelled.
            worker.request_stop(now=True)
            await worker.stop()
            raise
        finally:
            if self._worker is worker:
                self._worker = None

    async def prune(self) -> int:
        """Delete finished jobs older than the retention period (0 keeps forever).
        Workers do this by themselves; this is for scripts.

        Returns:
            How many jobs were deleted.
        """
        if self.settings.retention <= 0:
            return 0
        store = await self.connect()
        cutoff = self.clock.now() - timedelta(seconds=self.settings.retention)
        total = 0
        while True:
            n = await store.prune(finished_before=cutoff, limit=1000)
            total += n
            if n < 1000:
                return total

    @property
    def worker(self) -> Worker | None:
        """This process's worker, running or still stopping, or None."""
        return self._worker
