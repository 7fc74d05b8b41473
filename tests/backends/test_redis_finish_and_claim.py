"""Redis: outcomes stored and the next jobs claimed in one script call (finish_and_claim),
and the worker's use of it (claims for the slots a batch of outcomes frees)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import AsyncConveyor, Job
from conveyor.backends.base import ClaimRequest
from conveyor.backends.redis.backend import RedisBackend
from conveyor.core.job import JobStatus
from conveyor.core.lifecycle import completed, failed
from conveyor.core.options import JobDefaults, build_job
from conveyor.settings import Settings


def now() -> datetime:
    return datetime.now(UTC)


def new_job(topic: str = "t") -> Job:
    return build_job(topic, {"x": 1}, now=now(), defaults=JobDefaults(retry_delay=0.0))


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    b = RedisBackend(redis_url)
    await b.connect()
    yield b
    await b.close()


async def test_finish_and_claim_stores_the_outcomes_then_claims_in_one_call(backend: RedisBackend) -> None:
    jobs = await backend.enqueue([new_job() for _ in range(5)])
    t = now()
    lease = t + timedelta(minutes=1)
    running = await backend.claim(worker_id="w", topics=["t"], limit=2, now=t, locked_until=lease)
    assert [j.id for j in running] == [j.id for j in jobs[:2]]
    t2 = now()
    # One completes; the other fails and is retried at once (retry_delay 0): the claim
    # that follows in the same call may take it again.
    stored, claimed = await backend.finish_and_claim(
        [completed(running[0], "w", {"ok": 1}), failed(running[1], "w", "boom", t2)],
        now=t2,
        claim=ClaimRequest("w2", ["t", "t"], 3, t2 + timedelta(minutes=1)),
    )
    assert [(j.id, j.status) for j in stored if j is not None] == [
        (jobs[0].id, JobStatus.COMPLETED),
        (jobs[1].id, JobStatus.PENDING),
    ]
    assert stored[0] is not None and stored[0].result == {"ok": 1}
    assert len(claimed) == 3 and all(j.status is JobStatus.PROCESSING and j.locked_by == "w2" for j in claimed)
    assert {j.id for j in claimed} <= {j.id for j in jobs[1:]}
    for job in claimed:
        assert await backend.get(job.id) == job  # the record returned is the one stored
    # A stale fence: nothing stored for it, and no claim beyond what is due.
    stale, more = await backend.finish_and_claim(
        [completed(running[0], "w", None)], now=now(), claim=ClaimRequest("w2", ["t"], 10, lease)
    )
    assert stale == [None]
    assert len(more) == 5 - 1 - 3


async def test_a_worker_claims_with_its_acknowledgements_within_its_concurrency(redis_url: str) -> None:
    app = AsyncConveyor(settings=Settings(url=redis_url, poll_interval=0.05, retry_delay=0, retention=0))
    calls = {"finish_and_claim": 0, "claimed": 0}
    backend = await app.connect()
    assert isinstance(backend, RedisBackend)
    original = backend.finish_and_claim

    async def spy(*args: Any, **kwargs: Any) -> Any:
        stored, claimed = await original(*args, **kwargs)
        calls["finish_and_claim"] += 1
        calls["claimed"] += len(claimed)
        return stored, claimed

    backend.finish_and_claim = spy  # type: ignore[method-assign]
    running = peak = 0
    seen: dict[int, int] = {}

    @app.handler("p")
    async def p(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        seen[job.payload] = seen.get(job.payload, 0) + 1
        await asyncio.sleep(0.002)
        running -= 1
        if job.payload % 7 == 0 and job.attempts == 1:
            raise RuntimeError("once")  # retried at once: claimed again, maybe by an ack

    try:
        await app.enqueue_many([{"topic": "p", "payload": i} for i in range(60)])
        await app.start(concurrency=4)
        deadline = time.monotonic() + 20
        while (await app.list(status="completed")).total < 60:
            assert time.monotonic() < deadline, "the drain did not finish"
            await asyncio.sleep(0.02)
    finally:
        await app.close()
    assert peak <= 4
    assert seen == {i: 2 if i % 7 == 0 else 1 for i in range(60)}
    assert calls["finish_and_claim"] > 0 and calls["claimed"] > 0
