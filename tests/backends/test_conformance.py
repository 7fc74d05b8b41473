"""One conformance suite for every backend: the lifecycle rules (docs/, and the storage
contract in ``conveyor.backends.base``) as seen through the client and the storage
protocol."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.backends.base import WorkerInfo
from conveyor.client import AsyncConveyor
from conveyor.core import lifecycle, operation
from conveyor.core.errors import DuplicateJob, InvalidState, JobNotFound, PayloadTooLarge, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus

W = "worker-a"


def now() -> datetime:
    return datetime.now(UTC)


async def claim(client: AsyncConveyor, *topics: str, limit: int = 10, at: datetime | None = None, worker: str = W):
    t = at or now()
    return await client.backend.claim(
        worker_id=worker, topics=list(topics) or ["t"], limit=limit, now=t, locked_until=t + timedelta(seconds=30)
    )


async def processing_job(client: AsyncConveyor, **options):
    job = await client.enqueue("t", {"n": 1}, **options)
    [claimed] = await claim(client)
    assert claimed.id == job.id
    return claimed


async def finished_job(client: AsyncConveyor, status: str):
    if status == "completed":
        job = await processing_job(client)
        return await client.complete(job.id, {"ok": True})
    if status == "failed":
        job = await processing_job(client)
        return await client.fail(job.id, "boom")
    job = await client.enqueue("t", None)
    return await client.cancel(job.id)


async def job_in(client: AsyncConveyor, status: str):
    if status == "pending":
        return await client.enqueue("t", None)
    if status == "processing":
        return await processing_job(client)
    return await finished_job(client, status)


ALL = ["pending", "processing", "completed", "failed", "cancelled"]

# -- enqueue and read ---------------------------------------------------------------


async def test_enqueue_of_an_existing_job_id_raises_duplicate_job(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", {"n": 1})
    again = dataclasses.replace(client.build_job("t", {"n": 2}), id=job.id)
    with pytest.raises(DuplicateJob, match=f"^a job with id {job.id} already exists$"):
        await client.insert([client.build_job("t", None), again])
    with pytest.raises(DuplicateJob, match=r"is given twice in one batch$"):  # nothing of the batch is stored
        fresh = client.build_job("t", None)
        twin = dataclasses.replace(client.build_job("t", None), id=fresh.id)
        await client.insert([client.build_job("t", None), fresh, twin])
    # The same with a unique key (PostgreSQL returned a job it never stored).
    items = [{"topic": "t", "id": "twin-1", "unique_key": "k", "payload": n} for n in (1, 2)]
    with pytest.raises(DuplicateJob, match=r"^a job with id twin-1 is given twice in one batch$"):
        await client.enqueue_many(items)
    assert (await client.get(job.id)).payload == {"n": 1}
    assert (await client.list()).total == 1


async def test_enqueue_stores_a_pending_job_with_defaults(client: AsyncConveyor) -> None:
    before = now()
    job = await client.enqueue("email:send", {"to": "a@b.c"})
    assert job.status is JobStatus.PENDING
    assert (job.priority, job.attempts, job.max_retries) == (0, 0, 3)
    assert job.backoff == "quadratic"
    assert before - timedelta(seconds=1) <= job.run_at <= now() + timedelta(seconds=1)
    assert job.run_at.tzinfo is not None
    got = await client.get(job.id)
    assert got.to_dict() == job.to_dict()


@pytest.mark.parametrize(
    "payload",
    [None, 0, 1.5, "text ✓ ünïcode", [1, "a", None], {"nested": {"list": [1, 2, {"x": True}]}}, {"big": "x" * 100_000}],
)
async def test_enqueue_round_trips_any_json_payload(client: AsyncConveyor, payload: object) -> None:
    job = await client.enqueue("t", payload)
    assert (await client.get(job.id)).payload == payload


async def test_enqueue_stores_every_option(client: AsyncConveyor) -> None:
    run_at = now() + timedelta(hours=1)
    job = await client.enqueue(
        "report",
        {"id": 42},
        run_at=run_at,
        priority=10,
        max_retries=5,
        retry_delay="1m",
        backoff="exponential",
        timeout="10m",
        metadata={"owner": "ops"},
        unique_key="report:42",
    )
    got = await client.get(job.id)
    assert abs((got.run_at - run_at).total_seconds()) < 0.001
    assert (got.priority, got.max_retries, got.retry_delay, got.backoff, got.timeout) == (
        10,
        5,
        60.0,
        "exponential",
        600.0,
    )
    assert got.metadata == {"owner": "ops"}
    assert got.unique_key == "report:42"


async def test_enqueue_with_delay_sets_run_at_in_the_future(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None, delay="1h30m")
    assert timedelta(minutes=89) < job.run_at - now() <= timedelta(minutes=90)


async def test_enqueue_rejects_run_at_and_delay_together(client: AsyncConveyor) -> None:
    with pytest.raises(ValidationError, match="run_at"):
        await client.enqueue("t", None, run_at=now(), delay=5)


async def test_enqueue_rejects_bad_topic_and_oversize_payload(client: AsyncConveyor) -> None:
    with pytest.raises(ValidationError, match="topic"):
        await client.enqueue("bad topic!", None)
    with pytest.raises(PayloadTooLarge, match="exceeds"):
        await client.enqueue("t", "x" * (1024 * 1024 + 1))
    assert (await client.list()).total == 0


async def test_get_unknown_job_raises_job_not_found(client: AsyncConveyor) -> None:
    with pytest.raises(JobNotFound):
        await client.get("01900000-0000-7000-8000-000000000000")


async def test_enqueue_many_stores_all_in_order(client: AsyncConveyor) -> None:
    jobs = await client.enqueue_many([{"topic": "t", "payload": {"i": i}, "priority": i % 3} for i in range(50)])
    assert [j.payload["i"] for j in jobs] == list(range(50))
    assert (await client.list(limit=100)).total == 50


async def test_enqueue_many_is_all_or_nothing(client: AsyncConveyor) -> None:
    with pytest.raises(ValidationError, match=r"jobs\[1\]\.topic"):
        await client.enqueue_many([{"topic": "t"}, {"topic": "bad topic"}])
    assert (await client.list()).total == 0


async def test_ids_increase_in_creation_order(client: AsyncConveyor) -> None:
    ids = [(await client.enqueue("t", i)).id for i in range(20)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 20


# -- unique_key -----------------------------------------------------------------------


async def test_unique_key_returns_the_active_job(client: AsyncConveyor) -> None:
    a = await client.enqueue("t", 1, unique_key="k")
    b = await client.enqueue("t", 2, unique_key="k")
    assert b.id == a.id
    assert b.payload == 1
    assert (await client.list()).total == 1


async def test_unique_key_holds_while_processing_and_frees_when_finished(client: AsyncConveyor) -> None:
    a = await client.enqueue("t", 1, unique_key="k")
    await claim(client)
    assert (await client.enqueue("t", 2, unique_key="k")).id == a.id
    await client.complete(a.id, None)
    c = await client.enqueue("t", 3, unique_key="k")
    assert c.id != a.id


async def test_unique_key_is_deduplicated_within_one_batch(client: AsyncConveyor) -> None:
    jobs = await client.enqueue_many([{"topic": "t", "unique_key": "same"}, {"topic": "t", "unique_key": "same"}])
    assert jobs[0].id == jobs[1].id
    assert (await client.list()).total == 1


async def test_unique_keys_are_scoped_per_topic(client: AsyncConveyor) -> None:
    a = await client.enqueue("t", 1, unique_key="k")
    b = await client.enqueue("u", 2, unique_key="k")
    assert b.id != a.id and b.topic == "u" and b.payload == 2
    batch = await client.enqueue_many([{"topic": "v", "unique_key": "k"}, {"topic": "t", "unique_key": "k"}])
    assert batch[0].id not in (a.id, b.id) and batch[1].id == a.id
    # The holders of "k" in topics t and v do not block a requeue in topic u.
    await client.cancel(b.id)
    assert (await client.requeue(b.id)).status == "pending"
    assert (await client.list()).total == 3


async def test_requeue_conflicts_while_another_job_holds_the_unique_key(client: AsyncConveyor) -> None:
    a = await client.enqueue("t", 1, unique_key="k")
    await client.cancel(a.id)
    await client.enqueue("t", 2, unique_key="k")
    with pytest.raises(InvalidState):
        await client.requeue(a.id)


# -- claiming -------------------------------------------------------------------------


async def test_claim_marks_processing_with_a_lease(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None)
    t = now()
    [c] = await claim(client, at=t)
    assert c.id == job.id
    assert c.status is JobStatus.PROCESSING
    assert c.attempts == 1
    assert c.locked_by == W
    assert c.locked_until is not None and c.locked_until > t
    assert c.started_at is not None
    assert (await client.get(job.id)).status is JobStatus.PROCESSING


async def test_claimed_job_is_invisible_to_a_second_claim(client: AsyncConveyor) -> None:
    await client.enqueue("t", None)
    assert len(await claim(client)) == 1
    assert await claim(client, worker="worker-b") == []


async def test_claim_orders_by_priority_then_run_at(client: AsyncConveyor) -> None:
    t = now()
    low_old = await client.enqueue("t", "low-old", priority=0, run_at=t - timedelta(seconds=30))
    high_new = await client.enqueue("t", "high-new", priority=5, run_at=t - timedelta(seconds=1))
    high_old = await client.enqueue("t", "high-old", priority=5, run_at=t - timedelta(seconds=20))
    low_new = await client.enqueue("t", "low-new", priority=0, run_at=t - timedelta(seconds=2))
    order = []
    for _ in range(4):
        [c] = await claim(client, limit=1)
        order.append(c.id)
    assert order == [high_old.id, high_new.id, low_old.id, low_new.id]


async def test_claim_orders_run_at_before_1970_too(client: AsyncConveyor) -> None:
    # Any time is a valid run_at: jobs due long ago still start earliest first.
    times = [
        datetime(1969, 7, 20, 20, 17, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),
    ]
    jobs = [await client.enqueue("t", i, run_at=at) for i, at in enumerate(times)]
    assert await client.backend.next_run_at(topics=["t"]) == times[1]
    order = []
    for _ in jobs:
        [c] = await claim(client, limit=1)
        order.append(c.run_at)
    assert order == sorted(times)


async def test_claim_takes_due_jobs_behind_delayed_ones_of_a_higher_priority(client: AsyncConveyor) -> None:
    t = now()
    for _ in range(3):
        await client.enqueue("a", "later", priority=9, run_at=t + timedelta(hours=1))
        await client.enqueue("b", "later", priority=9, run_at=t + timedelta(hours=1))
    low = await client.enqueue("a", "low", priority=0, run_at=t - timedelta(seconds=5))
    mid = await client.enqueue("b", "mid", priority=3, run_at=t - timedelta(seconds=1))
    assert [c.id for c in await claim(client, "a", "b", limit=5, at=t)] == [mid.id, low.id]
    assert await client.backend.next_run_at(topics=["a", "b"]) == t + timedelta(hours=1)


async def test_claim_respects_the_batch_limit(client: AsyncConveyor) -> None:
    await client.enqueue_many([{"topic": "t"} for _ in range(25)])
    assert len(await claim(client, limit=10)) == 10
    assert len(await claim(client, limit=100)) == 15


async def test_claim_never_takes_a_job_before_run_at(client: AsyncConveyor) -> None:
    t = now()
    job = await client.enqueue("t", None, run_at=t + timedelta(seconds=60))
    assert await claim(client, at=t + timedelta(seconds=59.9)) == []
    [c] = await claim(client, at=t + timedelta(seconds=60))
    assert c.id == job.id


async def test_claim_takes_only_the_given_topics(client: AsyncConveyor) -> None:
    await client.enqueue("a", None)
    b = await client.enqueue("b", None)
    [c] = await claim(client, "b", "c")
    assert c.id == b.id
    assert await claim(client, "c") == []


async def test_next_run_at_reports_the_earliest_pending_job(client: AsyncConveyor) -> None:
    assert await client.backend.next_run_at(topics=["t"]) is None
    t = now()
    await client.enqueue("t", None, run_at=t + timedelta(seconds=50))
    await client.enqueue("t", None, run_at=t + timedelta(seconds=10))
    await client.enqueue("other", None, run_at=t + timedelta(seconds=1))
    nxt = await client.backend.next_run_at(topics=["t"])
    assert nxt is not None and abs((nxt - (t + timedelta(seconds=10))).total_seconds()) < 0.001


async def test_concurrent_claims_never_share_a_job(client: AsyncConveyor) -> None:
    await client.enqueue_many([{"topic": "t"} for _ in range(60)])
    batches = await asyncio.gather(*(claim(client, limit=7, worker=f"w{i}") for i in range(12)))
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 60


# -- finishing an attempt (fenced) ----------------------------------------------------


async def test_finish_completed_stores_the_result(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    [done] = await client.backend.finish([lifecycle.completed(job, W, {"sent": True})], now=now())
    assert done is not None and done.status is JobStatus.COMPLETED
    got = await client.get(job.id)
    assert got.result == {"sent": True}
    assert got.finished_at is not None
    assert got.locked_by is None and got.locked_until is None


async def test_finish_retry_makes_the_job_pending_at_the_backoff(client: AsyncConveyor) -> None:
    job = await processing_job(client, retry_delay=10, backoff="constant")
    t = now()
    [retried] = await client.backend.finish([lifecycle.failed(job, W, "boom", t)], now=t)
    assert retried is not None and retried.status is JobStatus.PENDING
    assert retried.attempts == 1
    assert retried.last_error == "boom"
    assert abs((retried.run_at - (t + timedelta(seconds=10))).total_seconds()) < 0.001
    assert await claim(client, at=t + timedelta(seconds=9)) == []
    [again] = await claim(client, at=t + timedelta(seconds=10))
    assert again.attempts == 2


async def test_finish_after_the_last_retry_fails_the_job(client: AsyncConveyor) -> None:
    job = await processing_job(client, max_retries=0)
    [failed] = await client.backend.finish([lifecycle.failed(job, W, "boom", now())], now=now())
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.finished_at is not None


async def test_snooze_does_not_use_up_a_retry(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    [snoozed] = await client.backend.finish([lifecycle.snoozed(job, W, 5, now())], now=now())
    assert snoozed is not None and snoozed.status is JobStatus.PENDING
    assert snoozed.attempts == 0


async def test_finish_is_fenced_by_worker_and_attempt(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    stale_worker = lifecycle.completed(job, "someone-else", 1)
    assert await client.backend.finish([stale_worker], now=now()) == [None]
    stale_attempt = lifecycle.Outcome(job.id, W, job.attempts + 1, JobStatus.COMPLETED, result=1)
    assert await client.backend.finish([stale_attempt], now=now()) == [None]
    assert (await client.get(job.id)).status is JobStatus.PROCESSING


async def test_finish_of_a_job_taken_over_after_its_lease_is_discarded(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    late = now() + timedelta(seconds=31)
    [lost] = await client.backend.expired(now=late, limit=10)
    assert lost.id == job.id
    await client.backend.finish([lifecycle.worker_lost(lost, late)], now=late)
    [retaken] = await claim(client, at=late + timedelta(hours=1), worker="worker-b")
    assert retaken.attempts == 2
    assert await client.backend.finish([lifecycle.completed(job, W, "stale")], now=late) == [None]
    [ok] = await client.backend.finish([lifecycle.completed(retaken, "worker-b", "fresh")], now=late)
    assert ok is not None and ok.result == "fresh"


async def test_finish_applies_a_batch_in_one_call(client: AsyncConveyor) -> None:
    await client.enqueue_many([{"topic": "t", "payload": i} for i in range(10)])
    jobs = await claim(client, limit=10)
    results = await client.backend.finish([lifecycle.completed(j, W, j.payload) for j in jobs], now=now())
    assert all(r is not None and r.status is JobStatus.COMPLETED for r in results)
    assert (await client.list(status="completed")).total == 10


async def test_text_no_store_can_hold_is_kept_readable_and_blocks_nothing(client: AsyncConveyor) -> None:
    # NUL in an error text (PostgreSQL text refuses it) and in JSON strings: every
    # outcome of the batch is stored, the others untouched.
    await client.enqueue_many([{"topic": "t", "payload": {"s": "a\u0000b"}, "max_retries": 0} for _ in range(3)])
    jobs = await claim(client, limit=3)
    assert [j.payload for j in jobs] == [{"s": "a\u0000b"}] * 3
    t = now()
    results = await client.backend.finish(
        [
            lifecycle.completed(jobs[0], W, {"out": "x\u0000y"}),
            lifecycle.failed(jobs[1], W, "bad\u0000byte here", t),
            lifecycle.completed(jobs[2], W, "fine"),
        ],
        now=t,
    )
    assert [r.status if r else None for r in results] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert (await client.get(jobs[0].id)).result == {"out": "x\u0000y"}
    error = (await client.get(jobs[1].id)).last_error
    assert error == "bad\\u0000byte here"  # escaped on every store (core.text.storable)
    assert (await client.get(jobs[2].id)).result == "fine"


async def test_each_failed_attempt_is_kept_in_errors_oldest_first(client: AsyncConveyor) -> None:
    job = await processing_job(client, retry_delay=0, backoff="constant", max_retries=5)
    t1 = now()
    await client.backend.finish([lifecycle.failed(job, W, "first\nTraceback (most recent call last): ...", t1)], now=t1)
    [again] = await claim(client, at=t1 + timedelta(seconds=1), worker="worker-b")
    t2 = t1 + timedelta(seconds=1)
    [out] = await client.backend.finish([lifecycle.failed(again, "worker-b", "second", t2)], now=t2)
    assert out is not None
    expected = [
        {"attempt": 1, "at": t1.isoformat(), "worker": W, "error": "first\nTraceback (most recent call last): ..."},
        {"attempt": 2, "at": t2.isoformat(), "worker": "worker-b", "error": "second"},
    ]
    assert out.errors == expected
    got = await client.get(job.id)
    assert got.errors == expected and got.last_error == "second"


async def test_errors_keep_only_the_newest_entries(client: AsyncConveyor) -> None:
    await client.enqueue("t", None, retry_delay=0, backoff="constant", max_retries=lifecycle.ERRORS_KEPT + 5)
    t = now()
    for n in range(1, lifecycle.ERRORS_KEPT + 3):
        t += timedelta(seconds=1)
        [job] = await claim(client, at=t)
        await client.backend.finish([lifecycle.failed(job, W, f"e{n}", t)], now=t)
    got = (await client.list()).items[0]
    assert [e["error"] for e in got.errors] == [f"e{n}" for n in range(3, lifecycle.ERRORS_KEPT + 3)]


async def test_snoozes_are_counted_and_capped_by_max_snoozes(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None, max_snoozes=2)
    assert job.max_snoozes == 2 and job.snoozes == 0
    t = now()
    for n in (1, 2):
        [running] = await claim(client, at=t)
        [snoozed] = await client.backend.finish([lifecycle.snoozed(running, W, 0, t)], now=t)
        assert snoozed is not None and (snoozed.status, snoozed.snoozes, snoozed.attempts) == (JobStatus.PENDING, n, 0)
        t += timedelta(seconds=1)
    [running] = await claim(client, at=t)
    [out] = await client.backend.finish([lifecycle.snoozed(running, W, 0, t)], now=t)
    assert out is not None and out.status is JobStatus.FAILED
    assert "max_snoozes (2)" in (out.last_error or "")
    got = await client.get(job.id)
    assert (got.snoozes, got.max_snoozes, len(got.errors)) == (2, 2, 1)
    requeued = await client.requeue(job.id)
    assert (requeued.snoozes, requeued.attempts, len(requeued.errors)) == (0, 0, 1)


# -- leases ---------------------------------------------------------------------------


async def test_heartbeat_extends_the_lease_and_reports_lost_jobs(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    other = await client.enqueue("t", None)
    until = now() + timedelta(minutes=10)
    result = await client.backend.heartbeat(worker_id=W, job_ids=[job.id, other.id], locked_until=until)
    assert result.lost == {other.id}
    got = await client.get(job.id)
    assert got.locked_until is not None and abs((got.locked_until - until).total_seconds()) < 0.001


async def test_expired_lists_the_longest_expired_first(client: AsyncConveyor) -> None:
    t = now()
    await client.enqueue_many([{"topic": "t", "payload": i, "run_at": t - timedelta(minutes=1)} for i in range(4)])
    firsts = await claim(client, limit=2, at=t)  # leases until t + 30 s
    seconds = await claim(client, limit=2, at=t - timedelta(seconds=10))  # leases until t + 20 s
    found = await client.backend.expired(now=t + timedelta(minutes=1), limit=10)
    assert [j.locked_until for j in found] == sorted(j.locked_until for j in found)
    assert {j.id for j in found[:2]} == {j.id for j in seconds}
    assert {j.id for j in found[2:]} == {j.id for j in firsts}
    [first] = await client.backend.expired(now=t + timedelta(minutes=1), limit=1)
    assert first.id in {j.id for j in seconds}


async def test_expired_lists_the_expired_leases_of_every_topic_oldest_first(client: AsyncConveyor) -> None:
    t = now()
    await client.enqueue_many([{"topic": f"t{i % 3}", "run_at": t - timedelta(minutes=1)} for i in range(6)])
    leases = {}
    for i, topic in enumerate(["t2", "t0", "t1"]):  # each claim's lease 10 s later than the last
        for job in await claim(client, topic, limit=2, at=t + timedelta(seconds=10 * i)):
            leases[job.id] = job.locked_until
    assert len(leases) == 6
    found = await client.backend.expired(now=t + timedelta(minutes=5), limit=10)
    assert sorted(j.id for j in found) == sorted(leases)
    assert [j.locked_until for j in found] == sorted(leases.values())
    assert [j.topic for j in found[::2]] == ["t2", "t0", "t1"]
    # A lease that has not ended yet is not listed, whichever topic holds it.
    found = await client.backend.expired(now=t + timedelta(seconds=45), limit=10)
    assert {j.topic for j in found} == {"t2", "t0"}


async def test_expired_lists_only_jobs_whose_lease_ended(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    assert await client.backend.expired(now=now(), limit=10) == []
    [e] = await client.backend.expired(now=now() + timedelta(seconds=31), limit=10)
    assert e.id == job.id


async def test_lost_worker_counts_as_a_failed_attempt(client: AsyncConveyor) -> None:
    await processing_job(client, max_retries=0)
    late = now() + timedelta(seconds=31)
    [e] = await client.backend.expired(now=late, limit=10)
    [out] = await client.backend.finish([lifecycle.worker_lost(e, late)], now=late)
    assert out is not None and out.status is JobStatus.FAILED
    assert "worker lost" in (out.last_error or "")


# -- manual transitions ---------------------------------------------------------------


async def test_cancel_pending_job(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None)
    cancelled = await client.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert await claim(client) == []


async def test_cancel_processing_job_requests_cancellation(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    requested = await client.cancel(job.id)
    assert requested.status is JobStatus.PROCESSING
    assert requested.cancel_requested
    hb = await client.backend.heartbeat(worker_id=W, job_ids=[job.id], locked_until=now() + timedelta(seconds=30))
    assert hb.cancel_requested == {job.id}
    [out] = await client.backend.finish([lifecycle.failed(job, W, "stopped", now())], now=now())
    assert out is not None and out.status is JobStatus.CANCELLED


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_cancel_finished_job_conflicts(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    with pytest.raises(InvalidState):
        await client.cancel(job.id)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_requeue_runs_the_job_again_with_a_fresh_budget(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    again = await client.requeue(job.id)
    assert again.status is JobStatus.PENDING
    assert again.attempts == 0
    assert again.finished_at is None
    [c] = await claim(client)
    assert c.id == job.id


async def test_whole_second_durations_stay_floats_through_transitions(client: AsyncConveyor) -> None:
    # SQLite's RETURNING may hand a REAL column's integral value back as an int.
    job = await client.enqueue("t", {}, retry_delay=60, timeout=30)
    for changed in (await client.cancel(job.id), await client.requeue(job.id), await client.get(job.id)):
        assert (changed.retry_delay, changed.timeout) == (60.0, 30.0)
        assert type(changed.retry_delay) is float and type(changed.timeout) is float


async def test_requeue_conflicts_while_another_active_job_holds_its_unique_key(client: AsyncConveyor) -> None:
    first = await client.enqueue("t", None, unique_key="k")
    await client.cancel(first.id)
    holder = await client.enqueue("t", None, unique_key="k")
    assert holder.id != first.id
    with pytest.raises(InvalidState) as info:
        await client.requeue(first.id)
    assert holder.id in str(info.value) and "requeue" in str(info.value)
    assert (await client.get(first.id)).status is JobStatus.CANCELLED
    await client.cancel(holder.id)
    assert (await client.requeue(first.id)).status is JobStatus.PENDING  # the key is free again


async def test_apply_many_judges_each_op_in_order_and_says_what_happened(client: AsyncConveyor) -> None:
    store = await client.connect()
    running = await processing_job(client)
    failed = await finished_job(client, "failed")
    pending = await client.enqueue("t", {"n": 1})
    t = now()
    doomed = await client.enqueue("t", None)
    missing = "01900000-0000-7000-8000-000000000000"
    ops = [
        operation.cancel(pending.id),
        operation.requeue(pending.id, t),  # meets the cancel before it: applies
        operation.cancel(running.id),  # processing: refused, the others go on
        operation.request_cancel(running.id),
        operation.requeue(failed.id, t),
        operation.delete(running.id),  # processing: refused
        operation.delete(doomed.id),
        operation.delete(doomed.id),  # deleted by the op before it
        operation.update(missing, priority=1),
    ]
    got = await store.apply_many(ops, now=t)
    assert len(got) == len(ops)
    requeued = got[1]
    assert isinstance(got[0], Job) and got[0].status is JobStatus.CANCELLED
    assert isinstance(requeued, Job) and requeued.status is JobStatus.PENDING and requeued.run_at == t
    assert isinstance(got[2], InvalidState) and got[2].status == "processing" and "cancel" in str(got[2])
    assert isinstance(got[3], Job) and got[3].cancel_requested and got[3].status is JobStatus.PROCESSING
    assert isinstance(got[4], Job) and got[4].status is JobStatus.PENDING and got[4].attempts == 0
    assert isinstance(got[5], InvalidState) and "delete" in str(got[5])
    assert isinstance(got[6], Job) and got[6].id == doomed.id and got[6].status is JobStatus.PENDING
    assert isinstance(got[7], JobNotFound) and isinstance(got[8], JobNotFound)
    # What each op returned is what the store holds.
    for job in (requeued, got[3], got[4]):
        assert await client.get(job.id) == job
    assert await client.backend.get(doomed.id) is None
    assert await store.apply_many([], now=t) == []


async def test_apply_many_refuses_a_second_holder_of_a_unique_key_and_applies_the_rest(
    client: AsyncConveyor,
) -> None:
    store = await client.connect()
    a = await client.enqueue("t", None, unique_key="k")
    await client.cancel(a.id)
    b = await client.enqueue("t", None, unique_key="k")
    await client.cancel(b.id)
    other = await finished_job(client, "failed")
    t = now()
    # Both cancelled jobs want the key back: the first op takes it, the second is refused.
    got = await store.apply_many(
        [operation.requeue(a.id, t), operation.requeue(b.id, t), operation.requeue(other.id, t)], now=t
    )
    assert isinstance(got[0], Job) and got[0].status is JobStatus.PENDING
    assert isinstance(got[1], InvalidState) and a.id in str(got[1]) and got[1].status == "cancelled"
    assert isinstance(got[2], Job) and got[2].status is JobStatus.PENDING
    assert (await client.get(b.id)).status is JobStatus.CANCELLED


async def test_a_delete_op_goes_through_apply_and_frees_the_unique_key(client: AsyncConveyor) -> None:
    store = await client.connect()
    done = await finished_job(client, "completed")
    job = await client.enqueue("t", None, unique_key="k")
    deleted = await store.apply(operation.delete_pending(job.id), now=now())
    assert deleted == job
    assert await client.backend.get(job.id) is None
    again = await client.enqueue("t", None, unique_key="k")
    assert again.id != job.id
    with pytest.raises(InvalidState, match="delete"):
        await store.apply(operation.delete_pending(done.id), now=now())


@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
async def test_requeue_conflicts_in_other_states(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    with pytest.raises(InvalidState):
        await client.requeue(job.id)


async def test_update_changes_a_pending_job(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", {"a": 1})
    run_at = now() + timedelta(hours=2)
    updated = await client.update(job.id, payload={"a": 2}, priority=7, max_retries=9, run_at=run_at, metadata={"m": 1})
    assert (updated.payload, updated.priority, updated.max_retries, updated.metadata) == ({"a": 2}, 7, 9, {"m": 1})
    got = await client.get(job.id)
    assert got.payload == {"a": 2}
    assert abs((got.run_at - run_at).total_seconds()) < 0.001


@pytest.mark.parametrize("status", ["processing", "completed", "failed", "cancelled"])
async def test_update_conflicts_unless_pending(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    with pytest.raises(InvalidState):
        await client.update(job.id, priority=1)


async def test_update_rejects_unknown_fields(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None)
    with pytest.raises(ValidationError, match="topic"):
        await client.update(job.id, topic="other")


@pytest.mark.parametrize("status", ["pending", "completed", "failed", "cancelled"])
async def test_delete_removes_a_job(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    await client.delete(job.id)
    with pytest.raises(JobNotFound):
        await client.get(job.id)


async def test_delete_conflicts_while_processing(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    with pytest.raises(InvalidState):
        await client.delete(job.id)


async def test_operations_on_unknown_ids_raise_job_not_found(client: AsyncConveyor) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    for op in (client.cancel, client.requeue, client.delete):
        with pytest.raises(JobNotFound):
            await op(missing)
    with pytest.raises(JobNotFound):
        await client.update(missing, priority=1)
    with pytest.raises(JobNotFound):
        await client.complete(missing, None)


@pytest.mark.parametrize("status", ["pending", "processing"])
async def test_complete_and_fail_manually(client: AsyncConveyor, status: str) -> None:
    a = await job_in(client, status)
    done = await client.complete(a.id, {"r": 1})
    assert done.status is JobStatus.COMPLETED and done.result == {"r": 1}
    b = await job_in(client, status)
    failed = await client.fail(b.id, "gave up")
    assert failed.status is JobStatus.FAILED and failed.last_error == "gave up"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_complete_and_fail_conflict_when_finished(client: AsyncConveyor, status: str) -> None:
    job = await job_in(client, status)
    with pytest.raises(InvalidState):
        await client.complete(job.id, None)
    with pytest.raises(InvalidState):
        await client.fail(job.id, "x")


async def test_manual_completion_fences_off_the_running_worker(client: AsyncConveyor) -> None:
    job = await processing_job(client)
    await client.complete(job.id, "manual")
    assert await client.backend.finish([lifecycle.completed(job, W, "late")], now=now()) == [None]
    assert (await client.get(job.id)).result == "manual"


# -- listing, stats, pruning ----------------------------------------------------------


async def test_list_filters_paginates_and_counts(client: AsyncConveyor) -> None:
    for i in range(7):
        await client.enqueue("a" if i % 2 else "b", i)
    done = await processing_job(client)
    await client.complete(done.id, None)
    page = await client.list(topic="a", limit=2, offset=0)
    assert page.total == 3 and len(page.items) == 2
    assert all(j.topic == "a" for j in page.items)
    assert [j.id for j in page.items] == sorted((j.id for j in page.items), reverse=True)
    rest = await client.list(topic="a", limit=2, offset=2)
    assert len(rest.items) == 1
    assert (await client.list(status="completed")).total == 1
    assert (await client.list(status="pending", topic="b")).total == 4


async def test_list_rejects_bad_filters(client: AsyncConveyor) -> None:
    with pytest.raises(ValidationError, match="status"):
        await client.list(status="running")
    with pytest.raises(ValidationError, match="limit"):
        await client.list(limit=0)
    with pytest.raises(ValidationError, match="offset"):
        await client.list(offset=-1)


async def test_list_keyset_pages_walk_every_job_once_under_concurrent_inserts(client: AsyncConveyor) -> None:
    for i in range(23):
        await client.enqueue("a" if i % 3 else "b", i)
    done = await processing_job(client)
    await client.complete(done.id, None)
    filters: dict[str, str]
    for filters in ({}, {"topic": "a"}, {"status": "pending", "topic": "b"}, {"status": "pending"}):
        expected = [j.id for j in (await client.list(limit=1000, **filters)).items]
        assert len(expected) > 8
        seen: list[str] = []
        pages = []
        page = await client.list(limit=4, **filters)
        assert page.prev is None and page.offset == 0
        while True:
            pages.append(page)
            seen += [j.id for j in page.items]
            await client.enqueue("a", "new")  # newer than every job walked: never on an older page
            await client.enqueue("b", "new")
            if page.next is None:
                break
            page = await client.list(limit=4, after=page.next, **filters)
            assert page.offset == 0 and page.prev == page.items[0].id
        assert seen == expected, filters
        assert len(pages) == -(-len(expected) // 4)
        # Back from the last page with the prev cursors: the same pages, newest first.
        back = pages[-1]
        for earlier in reversed(pages[:-1]):
            assert back.prev is not None
            back = await client.list(limit=4, before=back.prev, **filters)
            assert [j.id for j in back.items] == [j.id for j in earlier.items], filters
            assert back.next == earlier.next
        assert back.prev is not None  # the jobs enqueued during the walk are newer still


async def test_list_by_status_alone_merges_every_topic_in_id_order(client: AsyncConveyor) -> None:
    jobs = await client.enqueue_many([{"topic": f"t{i % 37}", "payload": i} for i in range(150)])
    running = await claim(client, *{j.topic for j in jobs}, limit=40)
    newest_first = sorted((j.id for j in jobs), reverse=True)
    for filters, expected in (
        ({}, newest_first),
        ({"status": "pending"}, [i for i in newest_first if i not in {j.id for j in running}]),
        ({"status": "processing"}, sorted((j.id for j in running), reverse=True)),
    ):
        first = await client.list(limit=7, offset=3, **filters)
        assert first.total == len(expected)
        assert [j.id for j in first.items] == expected[3:10], filters
        seen: list[str] = []
        page = await client.list(limit=11, **filters)
        while True:
            seen += [j.id for j in page.items]
            if page.next is None:
                break
            page = await client.list(limit=11, after=page.next, **filters)
        assert seen == expected, filters
        back = await client.list(limit=5, before=expected[-1], **filters)
        assert [j.id for j in back.items] == expected[-6:-1], filters


async def test_list_keyset_cursors_at_the_edges(client: AsyncConveyor) -> None:
    jobs = [await client.enqueue("t", i) for i in range(5)]
    ids = [j.id for j in reversed(jobs)]
    first = await client.list(limit=2)
    assert [j.id for j in first.items] == ids[:2] and first.next == ids[1] and first.prev is None
    assert first.total == 5 and first.total_exact
    last = await client.list(limit=2, after=ids[3])
    assert [j.id for j in last.items] == ids[4:] and last.next is None and last.prev == ids[4]
    newest = await client.list(limit=10, before=ids[2])
    assert [j.id for j in newest.items] == ids[:2] and newest.prev is None and newest.next == ids[1]
    assert (await client.list(limit=2, after=ids[4])).items == []
    assert (await client.list(limit=2, before=ids[0])).items == []
    # An offset page's cursors continue it by keyset.
    middle = await client.list(limit=2, offset=2)
    assert middle.prev == ids[2] and middle.next == ids[3]
    assert [j.id for j in (await client.list(limit=2, after=middle.next)).items] == ids[4:]
    # A cursor need not be a stored job: ids compare as strings.
    assert [j.id for j in (await client.list(limit=10, after=ids[0] + "~")).items] == ids
    assert (await client.list(limit=10, after=ids[4][:-1] + "!")).total == 5


async def test_list_rejects_bad_cursors(client: AsyncConveyor) -> None:
    job = await client.enqueue("t", None)
    with pytest.raises(ValidationError) as info:
        await client.list(after=job.id, before=job.id)
    assert info.value.field == "before"
    with pytest.raises(ValidationError) as info:
        await client.list(after=job.id, offset=1)
    assert info.value.field == "offset"
    with pytest.raises(ValidationError) as info:
        await client.list(before="")
    assert info.value.field == "before"
    with pytest.raises(ValidationError) as info:
        await client.list(after=42)  # type: ignore[arg-type]
    assert info.value.field == "after"


async def test_stats_count_by_status_and_topic(client: AsyncConveyor) -> None:
    await client.enqueue("a", None)
    await client.enqueue("a", None)
    job = await client.enqueue("b", None)
    await client.cancel(job.id)
    stats = await client.stats()
    assert stats["pending"] == 2 and stats["cancelled"] == 1 and stats["total"] == 3
    assert stats["by_topic"]["a"]["pending"] == 2
    assert stats["by_topic"]["b"]["cancelled"] == 1


async def test_stats_and_totals_follow_every_change(client: AsyncConveyor) -> None:
    for i in range(12):
        await client.enqueue("a" if i % 3 else "b", i)
    running = await claim(client, "a", "b", limit=6)
    await client.backend.finish([lifecycle.completed(running[0], W, None)], now=now())
    await client.backend.finish([lifecycle.failed(running[1], W, "boom", now(), permanent=True)], now=now())
    await client.backend.finish([lifecycle.failed(running[2], W, "again", now())], now=now())  # a retry
    await client.cancel(running[3].id)  # requested while it runs
    pending = (await client.list(status="pending", limit=3)).items
    await client.cancel(pending[0].id)
    await client.requeue(pending[0].id)
    await client.delete(pending[1].id)
    await client.cancel(pending[2].id)
    await client.backend.prune(finished_before=now() + timedelta(minutes=1), limit=1)
    # Every job, walked page by page: the counts the store keeps must match them.
    seen: dict[tuple[str, str], int] = {}
    page = await client.list(limit=4)
    while True:
        for job in page.items:
            key = (job.topic, job.status.value)
            seen[key] = seen.get(key, 0) + 1
        if page.next is None:
            break
        page = await client.list(limit=4, after=page.next)
    stats = await client.stats()
    assert {(t, s): n for t, counts in stats["by_topic"].items() for s, n in counts.items() if n} == seen
    for status in ALL:
        assert stats[status] == sum(n for (_, s), n in seen.items() if s == status)
        assert (await client.list(status=status)).total == stats[status]
        for topic in ("a", "b"):
            assert (await client.list(status=status, topic=topic)).total == seen.get((topic, status), 0)
    assert (await client.list(topic="a")).total == sum(n for (t, _), n in seen.items() if t == "a")
    assert (await client.list()).total == stats["total"] == sum(seen.values())


async def test_prune_deletes_only_old_finished_jobs(client: AsyncConveyor) -> None:
    old = await finished_job(client, "cancelled")
    keep = await client.enqueue("t", None)
    assert await client.backend.prune(finished_before=now() - timedelta(minutes=1), limit=100) == 0
    assert await client.backend.prune(finished_before=now() + timedelta(minutes=1), limit=100) == 1
    with pytest.raises(JobNotFound):
        await client.get(old.id)
    assert (await client.get(keep.id)).status is JobStatus.PENDING


async def test_count_finished_counts_per_bucket_and_status_since_a_time(client: AsyncConveyor) -> None:
    from conveyor.backends.base import finished_bucket

    before = now() - timedelta(seconds=1)
    done = [await finished_job(client, status) for status in ("completed", "completed", "failed", "cancelled")]
    await client.enqueue("t", None)  # pending: not finished
    rows = await client.backend.count_finished(since=before, bucket_seconds=60)
    totals: dict[str, int] = {}
    for start, status, n in rows:
        assert start.tzinfo is not None and start.second == 0 and start.microsecond == 0
        assert start == finished_bucket(start, 60)
        totals[status] = totals.get(status, 0) + n
    assert totals == {"completed": 2, "failed": 1, "cancelled": 1}
    assert {start for start, _, _ in rows} <= {finished_bucket(j.finished_at, 60) for j in done}
    assert await client.backend.count_finished(since=now() + timedelta(minutes=1), bucket_seconds=60) == []


# -- registry, events, wake-ups -------------------------------------------------------


async def test_worker_registry_lists_live_workers(client: AsyncConveyor) -> None:
    t = now()
    await client.backend.save_worker(WorkerInfo("w1", "host", 1, ["a"], 4, ["j1"], t, t))
    await client.backend.save_worker(WorkerInfo("w2", "host", 2, ["b"], 2, [], t, t - timedelta(minutes=5)))
    live = await client.backend.list_workers(alive_since=t - timedelta(seconds=15))
    assert [(w.id, w.topics, w.concurrency, w.active_jobs) for w in live] == [("w1", ["a"], 4, ["j1"])]
    await client.backend.remove_worker("w1")
    assert await client.backend.list_workers(alive_since=t - timedelta(seconds=15)) == []


async def test_one_maintenance_leader_at_a_time(client: AsyncConveyor) -> None:
    store, t = client.backend, now()
    lease = t + timedelta(seconds=30)
    assert await store.current_leader(now=t) is None
    # Of many concurrent candidates, exactly one leads.
    won = await asyncio.gather(*(store.acquire_leadership(holder=f"w{i}", now=t, until=lease) for i in range(8)))
    assert won.count(True) == 1
    leader = f"w{won.index(True)}"
    assert await store.current_leader(now=t) == leader
    # The holder renews; anyone else is refused while the lease lasts.
    assert await store.acquire_leadership(holder=leader, now=t, until=lease + timedelta(seconds=5))
    other = "w9"
    assert not await store.acquire_leadership(holder=other, now=t, until=lease)
    assert await store.current_leader(now=t) == leader
    # Only the holder can release; then another takes it at once.
    await store.release_leadership(holder=other)
    assert await store.current_leader(now=t) == leader
    await store.release_leadership(holder=leader)
    assert await store.current_leader(now=t) is None
    assert await store.acquire_leadership(holder=other, now=t, until=lease)
    assert await store.current_leader(now=t) == other


async def test_an_expired_maintenance_lease_can_be_taken_over(client: AsyncConveyor) -> None:
    store = client.backend
    t = now()
    assert await store.acquire_leadership(holder="dead", now=t, until=t + timedelta(milliseconds=200))
    assert not await store.acquire_leadership(holder="next", now=t, until=t + timedelta(seconds=30))
    # Real time passes (a store may expire the lease on its own clock, e.g. a Redis TTL).
    await asyncio.sleep(0.35)
    later = now()
    assert await store.current_leader(now=later) is None
    assert await store.acquire_leadership(holder="next", now=later, until=later + timedelta(seconds=30))
    assert await store.current_leader(now=later) == "next"
    assert not await store.acquire_leadership(holder="dead", now=later, until=later + timedelta(seconds=30))


async def test_published_events_reach_subscribers(client: AsyncConveyor) -> None:
    received: list[Event] = []
    ready = asyncio.Event()

    async def listen() -> None:
        stream = await client.backend.subscribe()
        ready.set()
        async for event in stream:
            received.append(event)
            if len(received) == 2:
                return

    task = asyncio.create_task(listen())
    await ready.wait()
    t = now()
    await client.backend.publish([Event("job.started", "j1", "t", "processing", t, {}, {"attempt": 1})])
    await client.backend.publish([Event("job.completed", "j1", "t", "completed", t, {"result": 1}, {})])
    await asyncio.wait_for(task, 5)
    assert [e.type for e in received] == ["job.started", "job.completed"]
    assert received[0].metadata == {"attempt": 1}


async def test_job_events_reach_a_subscriber_that_comes_after_a_quiet_spell(client: AsyncConveyor) -> None:
    """While nobody listens, publishers may skip building events (events_wanted); once
    a subscription has returned, the events of every later enqueue and attempt reach
    it (another process's subscriber: test_postgres_specific)."""
    client.handler("t")(lambda job: job.payload)
    await client.start(concurrency=2)
    try:
        quiet = await client.enqueue("t", 1)
        for _ in range(500):
            if (await client.get(quiet.id)).status == "completed":
                break
            await asyncio.sleep(0.01)
        stream = await client.subscribe()
        assert client.events_wanted()
        heard = await client.enqueue("t", 2)
        seen: list[str] = []
        while "job.completed" not in seen:
            event = await asyncio.wait_for(anext(stream), 5)
            if event.job_id == heard.id:
                seen.append(event.type)
        assert seen == ["job.scheduled", "job.started", "job.completed"]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await client.stop()


async def test_a_handler_error_no_store_holds_fails_its_attempt_and_the_worker_goes_on(client: AsyncConveyor) -> None:
    @client.handler("t")
    def boom(job: Job) -> None:
        raise RuntimeError(f"bad \ud800 and \x00 in job {job.payload}")  # text from undecodable bytes

    jobs = await client.enqueue_many([{"topic": "t", "payload": n, "max_retries": 0} for n in range(3)])
    await client.start(concurrency=1)
    try:
        for _ in range(500):
            got = [await client.get(j.id) for j in jobs]
            if all(j.status is JobStatus.FAILED for j in got):
                break
            await asyncio.sleep(0.01)
        assert [j.status for j in got] == [JobStatus.FAILED] * 3  # the worker did not stop at the first
        assert "bad \ufffd and \\u0000 in job 0" in (got[0].last_error or "")
        assert got[0].errors[0]["error"] == got[0].last_error
    finally:
        await client.stop()
    manual = await client.enqueue("t", 9)
    assert (await client.fail(manual.id, "x\udcff\x00")).last_error == "x\ufffd\\u0000"


async def test_ids_cursors_and_keys_no_store_holds_are_typed_errors(client: AsyncConveyor) -> None:
    for bad in ("\udcff", "a\x00b"):
        with pytest.raises(JobNotFound):
            await client.get(bad)
        with pytest.raises(JobNotFound):
            await client.cancel(bad)
        with pytest.raises(ValidationError, match=r"^after: "):
            await client.list(after=bad)
        with pytest.raises(ValidationError, match=r"^unique_key: "):
            await client.enqueue("t", None, unique_key=bad)


async def test_enqueue_publishes_job_scheduled_only_for_the_jobs_it_stored(client: AsyncConveyor) -> None:
    events = await client.subscribe()
    a, b, c = await client.enqueue_many(
        [{"topic": "t", "unique_key": "k"}, {"topic": "t", "unique_key": "k"}, {"topic": "t"}]
    )
    assert b.id == a.id != c.id
    assert (await client.enqueue("t", None, unique_key="k")).id == a.id  # the holder: no event
    last = await client.enqueue("t", None)
    seen: list[Event] = []
    while not seen or seen[-1].job_id != last.id:
        seen.append(await asyncio.wait_for(anext(events), 5))
    assert [(e.type, e.job_id) for e in seen] == [
        ("job.scheduled", a.id),
        ("job.scheduled", c.id),
        ("job.scheduled", last.id),
    ]


async def test_enqueue_wakes_a_waiting_worker(client: AsyncConveyor) -> None:
    waiter = asyncio.create_task(client.backend.wait_for_jobs(5.0))
    await asyncio.sleep(0.05)
    start = asyncio.get_running_loop().time()
    await client.enqueue("t", None)
    assert await asyncio.wait_for(waiter, 5) is True
    assert asyncio.get_running_loop().time() - start < 1.0


@contextlib.asynccontextmanager
async def _callers_transaction(url: str) -> AsyncIterator[Any]:
    """An open transaction of the caller's own driver on the store at ``url``."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False)
        try:
            yield conn
        finally:
            conn.close()
        return
    import psycopg

    from conveyor.backends.postgres.rows import split_url

    aconn = await psycopg.AsyncConnection.connect(split_url(url)[0])
    try:
        yield aconn
    finally:
        await aconn.close()


async def _end(conn: Any, *, commit: bool) -> None:
    done = conn.commit() if commit else conn.rollback()
    if inspect.isawaitable(done):
        await done


@pytest.mark.parametrize("commit", [False, True], ids=["rollback", "commit"])
async def test_enqueue_in_the_callers_transaction_is_stored_only_if_it_commits(
    client: AsyncConveyor, backend_url: str, commit: bool
) -> None:
    if not client.backend.capabilities.transactional_enqueue:
        pytest.skip("the store has no transactional enqueue")
    async with _callers_transaction(backend_url) as conn:
        job = await client.enqueue("t", {"n": 1}, connection=conn)
        [other] = await client.enqueue_many([{"topic": "t", "payload": 2}], connection=conn)
        with pytest.raises(JobNotFound):  # not visible before the caller commits
            await client.get(job.id)
        await _end(conn, commit=commit)
    if commit:
        assert (await client.get(job.id)).payload == {"n": 1}
        assert {j.id for j in await claim(client)} == {job.id, other.id}
    else:
        for gone in (job, other):
            with pytest.raises(JobNotFound):
                await client.get(gone.id)
        assert await claim(client) == []
