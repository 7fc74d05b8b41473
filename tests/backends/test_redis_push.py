"""Redis push: enqueue claims a due job for an idle worker and publishes it to the
worker's inbox (keys.py, "Push"). Real Redis, real pub/sub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.backends.redis.backend import RedisBackend
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import JobDefaults, build_job
from tests import services

LEASE = timedelta(seconds=30)


@pytest.fixture
def redis_url() -> Iterator[str]:
    services.check_redis()
    url, prefix = services.new_redis_url()
    yield url
    services.delete_redis_prefix(prefix)


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    b = RedisBackend(redis_url)
    await b.connect()
    yield b
    await b.close()


def now() -> datetime:
    return datetime.now(UTC)


def new_job(topic: str = "t", **options: object) -> Job:
    return build_job(topic, {"x": 1}, now=now(), defaults=JobDefaults(), **options)  # type: ignore[arg-type]


async def claim(b: RedisBackend, worker: str = "w1", topics: tuple[str, ...] = ("t",), limit: int = 5) -> list[Job]:
    t = now()
    return await b.claim(worker_id=worker, topics=list(topics), limit=limit, now=t, locked_until=t + LEASE)


async def go_idle(b: RedisBackend, worker: str = "w1", topics: tuple[str, ...] = ("t",), limit: int = 5) -> None:
    """What a worker's claim loop does: an empty claim, then a wait (which registers)."""
    assert await claim(b, worker, topics, limit) == []
    inbox = b._push._inboxes[worker]
    for _ in range(200):  # the inbox subscription comes up in the background
        if inbox.listener.is_subscribed:
            break
        await asyncio.sleep(0.01)
    await b.wait_for_jobs(0.01)
    assert inbox.registered


async def test_an_idle_worker_gets_a_due_job_claimed_by_the_enqueue_itself(backend: RedisBackend) -> None:
    await go_idle(backend)
    [job] = await backend.enqueue([new_job()])
    # Claimed inside the enqueue script, before enqueue returned.
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.status is JobStatus.PROCESSING
    assert stored.locked_by == "w1" and stored.attempts == 1
    assert await backend.wait_for_jobs(5.0)
    [got] = await claim(backend)
    assert got.id == job.id and got.status is JobStatus.PROCESSING and got.locked_until is not None


async def test_pushes_stop_at_the_free_slots_the_worker_registered(backend: RedisBackend) -> None:
    await go_idle(backend, limit=2)
    jobs = []
    for _ in range(4):
        jobs += await backend.enqueue([new_job()])
    states = [(await backend.get(j.id)).status for j in jobs]  # type: ignore[union-attr]
    assert states == [JobStatus.PROCESSING] * 2 + [JobStatus.PENDING] * 2


async def test_only_a_job_alone_in_ready_is_pushed_so_priority_order_holds(backend: RedisBackend) -> None:
    [old] = await backend.enqueue([new_job(priority=5)])  # waiting before the worker idles
    await backend.wait_for_jobs(0.01)
    backend._push.claimed("w1", ["t"], 5, int(LEASE.total_seconds() * 1e6))  # as if it claimed just before
    inbox = backend._push._inboxes["w1"]
    for _ in range(200):
        if inbox.listener.is_subscribed:
            break
        await asyncio.sleep(0.01)
    await backend.wait_for_jobs(0.01)
    [new] = await backend.enqueue([new_job(priority=0)])
    assert (await backend.get(new.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
    claimed = await claim(backend)
    assert [j.id for j in claimed] == [old.id, new.id]


async def test_a_registration_without_a_listening_inbox_is_dropped(backend: RedisBackend) -> None:
    expires = int((now() + timedelta(minutes=1)).timestamp() * 1e6)
    await backend._run("idle", "ghost", 5, 30_000_000, expires, 1, "t")
    [job] = await backend.enqueue([new_job()])
    assert (await backend.get(job.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
    assert await backend._conn.execute("HGET", backend.keys.prefix + ":idlers", "ghost") is None


async def test_an_expired_registration_is_skipped(backend: RedisBackend) -> None:
    await go_idle(backend)
    expired = int((now() - timedelta(seconds=1)).timestamp() * 1e6)
    await backend._run("idle", "w1", 5, 30_000_000, expired, 1, "t")
    [job] = await backend.enqueue([new_job()])
    assert (await backend.get(job.id)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_claiming_again_unregisters_the_worker(backend: RedisBackend) -> None:
    await go_idle(backend)
    await claim(backend)  # busy again
    [job] = await backend.enqueue([new_job()])
    assert (await backend.get(job.id)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_a_pushed_job_held_past_its_lease_is_left_to_recovery(backend: RedisBackend) -> None:
    await go_idle(backend)
    await backend.enqueue([new_job()])
    assert await backend.wait_for_jobs(5.0)
    late = now() + LEASE + timedelta(seconds=1)
    assert await backend.claim(worker_id="w1", topics=["t"], limit=5, now=late, locked_until=late + LEASE) == []


async def test_heartbeats_renew_pushed_jobs_not_taken_yet(backend: RedisBackend) -> None:
    await go_idle(backend)
    [job] = await backend.enqueue([new_job()])
    assert await backend.wait_for_jobs(5.0)
    until = now() + timedelta(minutes=10)
    result = await backend.heartbeat(worker_id="w1", job_ids=[], locked_until=until)
    assert not result.lost
    stored = await backend.get(job.id)
    assert stored is not None and stored.locked_until == until


async def test_a_stopping_worker_gives_back_the_pushed_jobs_it_never_took(backend: RedisBackend) -> None:
    await go_idle(backend)
    [job] = await backend.enqueue([new_job()])
    assert await backend.wait_for_jobs(5.0)
    await backend.remove_worker("w1")
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.status is JobStatus.PENDING and stored.attempts == 0 and stored.locked_by is None
    # ...and the worker is no longer registered: the next job waits for a claim.
    [other] = await backend.enqueue([new_job()])
    assert (await backend.get(other.id)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_a_delayed_job_is_not_pushed(backend: RedisBackend) -> None:
    await go_idle(backend)
    [job] = await backend.enqueue([new_job(delay=60)])
    assert (await backend.get(job.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
