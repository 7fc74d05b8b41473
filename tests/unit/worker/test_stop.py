"""Stopping a worker: one drain however many callers ask for it, the worker reachable
until it has stopped (a second stop request must find it), a cancelled caller leaving
the stop to finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from conveyor import AsyncConveyor, Job, JobStatus
from conveyor.settings import Settings


@pytest.fixture
async def app() -> AsyncIterator[AsyncConveyor]:
    client = AsyncConveyor(settings=Settings(url="memory://", poll_interval=0.05, lock_duration=30, retention=0))
    yield client
    await client.close()


async def start_stuck_job(app: AsyncConveyor) -> Job:
    """A started worker running one job that never ends by itself."""
    started = asyncio.Event()

    @app.handler("stuck")
    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await app.start()
    job = await app.enqueue("stuck", None)
    await asyncio.wait_for(started.wait(), 5)
    return job


def conveyor_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("conveyor-")]


async def test_the_worker_stays_reachable_while_it_drains_and_a_stop_now_request_ends_the_drain(
    app: AsyncConveyor,
) -> None:
    job = await start_stuck_job(app)
    worker = app.worker
    stopping = asyncio.create_task(app.stop(timeout=60))
    await asyncio.sleep(0.1)
    assert app.worker is worker  # what a second SIGTERM's handler looks for
    assert worker is not None and worker.stopping
    worker.request_stop(now=True)
    await asyncio.wait_for(stopping, 5)  # not the 60 s drain
    back = await app.get(job.id)
    assert (back.status, back.attempts) == (JobStatus.PENDING, 0)
    assert app.worker is None


async def test_concurrent_stops_share_one_drain(app: AsyncConveyor, caplog: pytest.LogCaptureFixture) -> None:
    job = await start_stuck_job(app)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        await asyncio.wait_for(asyncio.gather(app.stop(timeout=0.2), app.stop(timeout=0.2), app.stop()), 5)
    stopped = [r for r in caplog.records if getattr(r, "event", None) == "worker_stopped"]
    handed = [r for r in caplog.records if getattr(r, "event", None) == "handing_back"]
    assert len(stopped) == 1 and len(handed) == 1
    assert (await app.get(job.id)).status is JobStatus.PENDING
    assert app.worker is None and not conveyor_tasks()


async def test_a_cancelled_stop_still_hands_the_running_job_back(app: AsyncConveyor) -> None:
    job = await start_stuck_job(app)
    worker = app.worker
    assert worker is not None
    caller = asyncio.create_task(app.stop(timeout=0.3))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The stop runs on without its caller: the job goes back, no loop is left.
    await asyncio.wait_for(worker.stop(), 5)
    back = await app.get(job.id)
    assert (back.status, back.attempts, back.locked_by) == (JobStatus.PENDING, 0, None)
    assert not conveyor_tasks()


async def test_start_during_a_stop_starts_nothing_and_start_after_it_a_new_worker(app: AsyncConveyor) -> None:
    job = await start_stuck_job(app)
    old = app.worker
    stopping = asyncio.create_task(app.stop(timeout=0.2))
    await asyncio.sleep(0.05)
    await app.start()  # the worker exists (stopping): nothing to start
    assert app.worker is old
    await stopping
    assert app.worker is None
    await app.start()
    new = app.worker
    assert new is not None and new is not old and not new.stopping
    # The new worker runs the job the old one handed back.
    await asyncio.sleep(0.3)
    assert (await app.get(job.id)).status is JobStatus.PROCESSING
    await app.stop(timeout=0.1)
