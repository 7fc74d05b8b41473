"""Redis-only behaviour: key prefixes, script reloading, concurrent claims, pub/sub
across processes, index consistency, layout migration, connection errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.redis import record
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.keys import LAYOUT_VERSION
from conveyor.core import codec, lifecycle, operation
from conveyor.core.errors import BackendUnavailable, ConfigurationError, ValidationError
from conveyor.core.events import Event
from conveyor.core.job import Job, JobStatus
from conveyor.core.lifecycle import completed, failed
from conveyor.core.options import JobDefaults, build_job
from tests import services

ROOT = Path(__file__).resolve().parents[2]
CURRENT = str(LAYOUT_VERSION).encode()  # the layout version migrate() records


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


async def raw_keys(backend: RedisBackend) -> list[str]:
    keys: list[str] = []
    cursor = 0
    while True:
        cursor, batch = await backend._async().scan(cursor, match=backend.keys.pattern(), count=1000)
        keys += [k.decode() for k in batch]
        cursor = int(cursor)
        if cursor == 0:
            return keys


def ready_member(job: Job) -> str:
    """A due job's member of P:ready:<topic> (keys.py): run_at in µs, 16 digits; before
    1970 '-' and the 17 digits of -run_at, each digit d written as 9 - d."""
    us = int(record.to_us(job.run_at))
    if us >= 0:
        return f"{us:016d}{job.id}"
    return "-" + "".join(str(9 - int(d)) for d in f"{-us:017d}") + job.id


async def assert_indexes_consistent(backend: RedisBackend) -> None:
    """Every index holds exactly the jobs whose stored fields say they belong there."""
    ex = backend._async().execute_command
    p = backend.keys.prefix
    keys = await raw_keys(backend)
    ids = [k.removeprefix(f"{p}:job:") for k in keys if k.startswith(f"{p}:job:")]
    jobs = {j.id: j for j in [await backend.get(i) for i in ids] if j is not None}
    assert sorted(jobs) == sorted(ids)
    assert not [k for k in keys if k == f"{p}:ids" or k.startswith(f"{p}:topic:")]  # layout 1 only
    assert not [k for k in keys if k.startswith(f"{p}:status:")]  # up to layout 5 only
    topics = {j.topic for j in jobs.values()}
    assert topics <= {x.decode() for x in await ex("SMEMBERS", f"{p}:topics")}
    for topic in topics:
        for status in JobStatus:
            members = {x.decode() for x in await ex("ZRANGE", f"{p}:ts:{status.value}:{topic}", 0, -1)}
            assert members == {i for i, j in jobs.items() if j.topic == topic and j.status is status}
        ready_members = {x.decode() for x in await ex("ZRANGE", f"{p}:ready:{topic}", 0, -1)}
        ready = {m[18:] if m.startswith("-") else m[16:] for m in ready_members}
        assert ready_members == {ready_member(jobs[i]) for i in ready if i in jobs}
        delayed = {x.decode() for x in await ex("ZRANGE", f"{p}:delayed:{topic}", 0, -1)}
        assert not ready & delayed
        assert ready | delayed == {i for i, j in jobs.items() if j.topic == topic and j.status is JobStatus.PENDING}
    processing = {x.decode() for x in await ex("ZRANGE", f"{p}:processing", 0, -1)}
    assert processing == {i for i, j in jobs.items() if j.status is JobStatus.PROCESSING}
    for status in ("completed", "failed", "cancelled"):
        finished = {x.decode() for x in await ex("ZRANGE", f"{p}:finished:{status}", 0, -1)}
        assert finished == {i for i, j in jobs.items() if j.status.value == status}, status
    unique = await ex("HGETALL", f"{p}:unique")
    holders = {k.decode(): v.decode() for k, v in unique.items()}
    assert holders == {
        f"{j.topic}\x00{j.unique_key}": i  # keys are scoped per topic
        for i, j in jobs.items()
        if j.unique_key and j.status in (JobStatus.PENDING, JobStatus.PROCESSING)
    }


async def test_prefix_isolates_two_stores_on_one_database(redis_url: str) -> None:
    other_prefix = "t" + uuid.uuid4().hex[:12]
    a = RedisBackend(redis_url)
    b = RedisBackend(redis_url, prefix=other_prefix)  # the keyword wins over ?prefix=
    try:
        await a.connect()
        await b.connect()
        assert a.keys.prefix != b.keys.prefix == other_prefix
        [job] = await a.enqueue([new_job(unique_key="same")])
        [other] = await b.enqueue([new_job(unique_key="same")])
        assert other.id != job.id  # unique keys do not cross prefixes
        assert await b.get(job.id) is None
        assert (await b.stats()).by_status["pending"] == 1
        claimed = await b.claim(worker_id="w", topics=["t"], limit=10, now=now(), locked_until=now())
        assert [j.id for j in claimed] == [other.id]
        assert all(k.startswith(a.keys.prefix + ":") for k in await raw_keys(a))
    finally:
        await a.close()
        await b.close()
        services.delete_redis_prefix(other_prefix)


async def test_scripts_reload_after_script_flush(backend: RedisBackend) -> None:
    await backend.enqueue([new_job()])
    await backend._async().execute_command("SCRIPT", "FLUSH")
    [job] = await backend.enqueue([new_job()])
    assert (await backend.get(job.id)) is not None
    assert len(await backend.claim(worker_id="w", topics=["t"], limit=5, now=now(), locked_until=now())) == 2


async def test_claim_hands_each_job_to_exactly_one_of_many_concurrent_claimers(redis_url: str) -> None:
    n = 300
    claimers = [RedisBackend(redis_url) for _ in range(6)]
    try:
        for c in claimers:
            await c.connect()
        await claimers[0].enqueue([new_job(topic=("a", "b")[i % 2]) for i in range(n)])

        async def drain(c: RedisBackend, name: str) -> list[str]:
            got: list[str] = []
            while True:
                jobs = await c.claim(worker_id=name, topics=["a", "b"], limit=7, now=now(), locked_until=now())
                if not jobs:
                    return got
                got += [j.id for j in jobs]

        results = await asyncio.gather(*(drain(c, f"w{i}") for i, c in enumerate(claimers)))
        everything = [i for r in results for i in r]
        assert len(everything) == len(set(everything)) == n
        assert sum(1 for r in results if r) > 1
        await assert_indexes_consistent(claimers[0])
    finally:
        for c in claimers:
            await c.close()


async def test_claim_order_is_priority_then_run_at_then_id_across_topics(backend: RedisBackend) -> None:
    t0 = now() - timedelta(seconds=10)
    jobs = [
        new_job(topic="a", priority=0, run_at=t0 + timedelta(seconds=2)),
        new_job(topic="b", priority=5, run_at=t0 + timedelta(seconds=3)),
        new_job(topic="a", priority=0, run_at=t0 + timedelta(seconds=1)),
        new_job(topic="b", priority=-1, run_at=t0),
        new_job(topic="a", priority=5, run_at=t0 + timedelta(seconds=3)),  # same as jobs[1]: id decides
    ]
    await backend.enqueue(jobs)
    claimed = await backend.claim(worker_id="w", topics=["a", "b"], limit=10, now=now(), locked_until=now())
    assert [j.id for j in claimed] == [jobs[1].id, jobs[4].id, jobs[2].id, jobs[0].id, jobs[3].id]


async def test_delayed_jobs_are_promoted_by_the_claim_itself(backend: RedisBackend) -> None:
    later = now() + timedelta(seconds=30)
    [job] = await backend.enqueue([new_job(run_at=later, priority=3)])
    assert await backend.claim(worker_id="w", topics=["t"], limit=1, now=now(), locked_until=later) == []
    assert await backend.next_run_at(topics=["t"]) == later
    [claimed] = await backend.claim(
        worker_id="w", topics=["t"], limit=1, now=later, locked_until=later + timedelta(seconds=5)
    )
    assert claimed.id == job.id


async def test_indexes_stay_consistent_through_every_transition(backend: RedisBackend) -> None:
    jobs = await backend.enqueue(
        [new_job(unique_key=f"u{i % 3}") if i % 2 else new_job(delay=i) for i in range(12)]
        + [new_job(topic="other:topic", priority=i) for i in range(4)]
    )
    await assert_indexes_consistent(backend)
    t = now()
    claimed = await backend.claim(worker_id="w", topics=["t", "other:topic"], limit=6, now=t, locked_until=t)
    assert len(claimed) == 6
    await assert_indexes_consistent(backend)
    outcomes = [
        completed(claimed[0], "w", {"ok": True}),
        failed(claimed[1], "w", "boom", t),
        failed(claimed[2], "w", "fatal", t, permanent=True),
    ]
    await backend.finish(outcomes, now=t)
    await assert_indexes_consistent(backend)
    expired = await backend.expired(now=t + timedelta(seconds=1), limit=10)
    assert {j.id for j in expired} == {j.id for j in claimed[3:]}
    pend = (await backend.list_jobs(status=JobStatus.PENDING, limit=100)).items
    await backend.apply(operation.update(pend[0].id, priority=9, run_at=t + timedelta(hours=1)), now=t)
    await backend.apply(operation.cancel(pend[1].id), now=t)
    await assert_indexes_consistent(backend)
    await backend.apply(operation.requeue(pend[1].id, t), now=t)
    await backend.apply(operation.delete(pend[2].id), now=t)
    await assert_indexes_consistent(backend)
    assert await backend.prune(finished_before=t + timedelta(seconds=1), limit=100) == 2
    await assert_indexes_consistent(backend)
    assert len(jobs) == 16


async def test_a_large_batch_indexes_every_job_with_one_zadd_per_index(backend: RedisBackend) -> None:
    """enqueue.lua puts a batch's index entries aside and writes each index with a few
    ZADDs (500 members each): the indexes come out as job by job, in claim order."""
    jobs = [new_job(topic=f"t{i % 3}", priority=i % 5) for i in range(1203)]
    jobs += [new_job(topic="t0", delay=60 + i) for i in range(7)]
    await backend.enqueue(jobs)
    await assert_indexes_consistent(backend)
    t = now()
    claimed = await backend.claim(worker_id="w", topics=["t0", "t1", "t2"], limit=1210, now=t, locked_until=t)
    assert len(claimed) == 1203  # the delayed ones wait
    keys = [(-j.priority, j.run_at, j.id) for j in claimed]
    assert keys == sorted(keys)


async def test_listing_merges_the_status_indexes_newest_first_page_by_page(backend: RedisBackend) -> None:
    # Ids chosen to order differently bytewise than case-insensitively ("B" < "a" < "b").
    custom = [new_job(topic="t", id=f"job-{c}") for c in ("a", "B", "b", "_", "Z")]
    await backend.enqueue(custom + [new_job(topic=("t", "u")[i % 2]) for i in range(150)])
    t = now()
    claimed = await backend.claim(
        worker_id="w", topics=["t", "u"], limit=70, now=t, locked_until=t + timedelta(hours=1)
    )
    await backend.finish([completed(j, "w", None) for j in claimed[:40]], now=t)
    await backend.finish([failed(j, "w", "x", t, permanent=True) for j in claimed[40:55]], now=t)
    stored = [
        j
        for j in [
            await backend.get(k.removeprefix(f"{backend.keys.prefix}:job:"))
            for k in await raw_keys(backend)
            if ":job:" in k
        ]
        if j
    ]
    assert len(stored) == 155
    for status in (None, *JobStatus):
        for topic in (None, "t", "u"):
            expected = sorted(
                (
                    j.id
                    for j in stored
                    if (status is None or j.status is status) and (topic is None or j.topic == topic)
                ),
                key=str.encode,
                reverse=True,
            )
            for limit, offset in (
                (1000, 0),
                (7, 0),
                (33, 31),
                (50, 100),
                (10, len(expected) - 3),
                (5, len(expected) + 5),
            ):
                page = await backend.list_jobs(status=status, topic=topic, limit=limit, offset=offset)
                assert page.total == len(expected), (status, topic)
                assert [j.id for j in page.items] == expected[offset : offset + limit], (status, topic, limit, offset)


async def test_migrate_upgrades_layout_1_and_refuses_a_newer_layout(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    ex = b._async().execute_command
    # A prefix as layout 1 left it: the index of every job and one per topic.
    await ex("SET", f"{p}:version", "1")
    await ex("SADD", f"{p}:topics", "t", "u")
    await ex("ZADD", f"{p}:ids", 0, "a", 0, "b")
    await ex("ZADD", f"{p}:topic:t", 0, "a")
    await ex("ZADD", f"{p}:topic:u", 0, "b")
    try:
        assert await b.migrate() == 1
        assert await ex("EXISTS", f"{p}:ids", f"{p}:topic:t", f"{p}:topic:u") == 0
        assert await ex("GET", f"{p}:version") == CURRENT
        assert await b.migrate() == 0
        await ex("SET", f"{p}:version", str(LAYOUT_VERSION + 1))
        with pytest.raises(ConfigurationError, match="newer"):
            await b.migrate()
    finally:
        await b.close()


async def test_migrate_upgrades_layout_2_dropping_the_push_registry_and_keeping_every_job(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    try:
        await b.connect()
        jobs = await b.enqueue([new_job(topic="t"), new_job(topic="u")])
        ex = b._async().execute_command
        # What layout 2's push to idle workers left behind.
        await ex("SET", f"{p}:version", "2")
        await ex("HSET", f"{p}:idlers", "w1", "5 30000000 99999999999999999")
        await ex("SADD", f"{p}:idle:t", "w1")
        await ex("SADD", f"{p}:idle:u", "w1")
        assert await b.migrate() == 1
        assert await ex("EXISTS", f"{p}:idlers", f"{p}:idle:t", f"{p}:idle:u") == 0
        assert await ex("GET", f"{p}:version") == CURRENT
        assert [
            j.id for j in await b.claim(worker_id="w", topics=["t", "u"], limit=5, now=now(), locked_until=now())
        ] == [j.id for j in jobs]
        await assert_indexes_consistent(b)
    finally:
        await b.close()


async def test_a_record_stored_before_errors_and_snoozes_reads_with_their_defaults(backend: RedisBackend) -> None:
    [job] = await backend.enqueue([new_job()])
    ex = backend._async().execute_command
    await ex("HDEL", backend.keys.job(job.id), "errors", "snoozes", "max_snoozes")
    got = await backend.get(job.id)
    assert got is not None and (got.errors, got.snoozes, got.max_snoozes) == ([], 0, 100)
    t = now()
    [running] = await backend.claim(worker_id="w", topics=["t"], limit=1, now=t, locked_until=t)
    [snoozed] = await backend.finish([lifecycle.snoozed(running, "w", 0, t)], now=t)
    assert snoozed is not None and snoozed.snoozes == 1
    [running] = await backend.claim(worker_id="w", topics=["t"], limit=1, now=t, locked_until=t)
    [failed_job] = await backend.finish([failed(running, "w", "boom", t)], now=t)
    assert failed_job is not None and [e["error"] for e in failed_job.errors] == ["boom"]


async def test_enqueue_with_a_connection_is_a_validation_error(backend: RedisBackend) -> None:
    with pytest.raises(ValidationError) as info:
        await backend.enqueue([new_job()], connection=object())
    assert info.value.field == "connection"


async def test_an_unreachable_server_raises_backend_unavailable_naming_it_without_password() -> None:
    backend = RedisBackend("redis://app:hunter2@127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.ping()
        assert "redis://app:***@127.0.0.1:1/0" in str(info.value)
        assert "hunter2" not in str(info.value)
        with pytest.raises(BackendUnavailable):
            await backend.enqueue([new_job()])
    finally:
        await backend.close()


async def test_a_wake_up_only_wakes_the_job_stays_pending_until_claimed(backend: RedisBackend) -> None:
    await backend.wait_for_jobs(0.2)  # subscribed: an idle worker of this process waits
    waiter = asyncio.create_task(backend.wait_for_jobs(10))
    [job] = await backend.enqueue([new_job()])
    assert await asyncio.wait_for(waiter, 5)
    assert (await backend.get(job.id)).status is JobStatus.PENDING  # woken, nothing claimed for it
    [claimed] = await backend.claim(worker_id="w", topics=["t"], limit=5, now=now(), locked_until=now())
    assert (claimed.id, claimed.status, claimed.locked_by) == (job.id, JobStatus.PROCESSING, "w")


ENQUEUE_FROM_ANOTHER_PROCESS = """
import asyncio, sys
from datetime import UTC, datetime
from conveyor.backends.redis import record
from conveyor.backends.redis.backend import RedisBackend
from conveyor.core.options import JobDefaults, build_job
from conveyor.core.events import Event

async def main():
    b = RedisBackend(sys.argv[1])
    if sys.argv[2] == "enqueue":
        await b.enqueue([build_job("t", None, now=datetime.now(UTC), defaults=JobDefaults())])
    else:
        await b.publish([Event("job.completed", "abc", "t", "completed", datetime.now(UTC), {"n": 1})])
    await b.close()

asyncio.run(main())
"""


def run_other_process(url: str, what: str) -> None:
    subprocess.run([sys.executable, "-c", ENQUEUE_FROM_ANOTHER_PROCESS, url, what], cwd=ROOT, check=True, timeout=30)


async def test_an_enqueue_in_another_process_wakes_an_idle_waiter(backend: RedisBackend) -> None:
    await backend.wait_for_jobs(0.2)  # subscribes (and wakes once: messages may have been missed before)
    assert not await backend.wait_for_jobs(0.05)
    waiter = asyncio.create_task(backend.wait_for_jobs(10))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(run_other_process, backend.url, "enqueue")
    started = time.monotonic()
    assert await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 1.0


async def test_events_published_in_another_process_reach_a_subscriber(backend: RedisBackend) -> None:
    events = await backend.subscribe()
    assert await backend.events_ready(5)
    await asyncio.to_thread(run_other_process, backend.url, "publish")
    event = await asyncio.wait_for(anext(events), 5)
    assert isinstance(event, Event)
    assert (event.type, event.job_id, event.data) == ("job.completed", "abc", {"n": 1})


async def test_a_local_publish_reaches_local_subscribers_once(backend: RedisBackend) -> None:
    events = await backend.subscribe()
    assert await backend.events_ready(5)
    await backend.publish([Event("job.started", "j1", "t", "processing", now())])
    first = await asyncio.wait_for(anext(events), 5)
    assert first.job_id == "j1"
    await backend.publish([Event("job.started", "j2", "t", "processing", now())])
    second = await asyncio.wait_for(anext(events), 5)
    assert second.job_id == "j2"  # not a second copy of j1 echoed back by Redis


async def test_subscribers_end_when_the_backend_closes(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    await b.connect()
    events = await b.subscribe()
    pending = asyncio.create_task(anext(events, None))
    await asyncio.sleep(0.05)
    await b.close()
    assert await asyncio.wait_for(pending, 5) is None


async def test_a_server_without_persistence_is_warned_about_once(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.backends.redis import backend as module

    monkeypatch.setattr(module, "_WARNED_NO_PERSISTENCE", set())
    probe = RedisBackend(redis_url)
    try:
        config = await probe._async().config_get("appendonly")
        config.update(await probe._async().config_get("save"))
    finally:
        await probe.close()
    if config.get("appendonly") != "no" or config.get("save", "").strip():
        pytest.fail(
            f"the test Redis was expected to persist nothing (as scripts/ensure-services.sh starts it): {config}"
        )
    with caplog.at_level("WARNING", logger="conveyor.backends.redis"):
        for _ in range(2):
            b = RedisBackend(redis_url)
            await b.connect()
            await b.close()
    warnings = [r.getMessage() for r in caplog.records if "persists nothing" in r.getMessage()]
    assert len(warnings) == 1
    assert "appendonly" in warnings[0] and "save" in warnings[0]


async def test_migrate_upgrades_layout_3_scoping_unique_keys_per_topic(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    try:
        await b.connect()
        (held,) = await b.enqueue([new_job(topic="t", unique_key="k")])
        ex = b._async().execute_command
        # Layout 3 kept one field per key, whatever the topic.
        await ex("DEL", f"{p}:unique")
        await ex("HSET", f"{p}:unique", "k", held.id, "gone", "no-such-job")
        await ex("SET", f"{p}:version", "3")
        assert await b.migrate() == 1
        assert await ex("HGETALL", f"{p}:unique") == {b"t\x00k": held.id.encode()}
        (again,) = await b.enqueue([new_job(topic="t", unique_key="k")])
        assert again.id == held.id
        (other,) = await b.enqueue([new_job(topic="u", unique_key="k")])
        assert other.id != held.id
    finally:
        await b.close()


async def test_migrate_upgrades_layout_4_splitting_the_finished_index_by_status_in_steps(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    try:
        await b.connect()
        jobs = await b.enqueue([new_job() for _ in range(3)])
        t = now()
        running = await b.claim(worker_id="w", topics=["t"], limit=3, now=t, locked_until=t + timedelta(minutes=1))
        done = await b.finish(
            [completed(running[0], "w", None), failed(running[1], "w", "boom", t, permanent=True)], now=t
        )
        assert [j.status.value for j in done if j is not None] == ["completed", "failed"]
        ex = b._async().execute_command
        # Layout 4 kept one index of every finished job; more than one step's worth here
        # (5,000 ids a step), most of them of jobs pruned meanwhile by hand.
        for status in ("completed", "failed", "cancelled"):
            await ex("DEL", f"{p}:finished:{status}")
        score = record.to_us(t)
        gone = [f"gone-{i:05d}" for i in range(6000)]
        for i in range(0, len(gone), 1000):
            await ex("ZADD", f"{p}:finished", *[x for g in gone[i : i + 1000] for x in (score, g)])
        await ex("ZADD", f"{p}:finished", score, jobs[0].id, score, jobs[1].id)
        await ex("SET", f"{p}:version", "4")
        assert await b.migrate() == 1
        assert await ex("EXISTS", f"{p}:finished") == 0
        assert await ex("GET", f"{p}:version") == CURRENT
        await assert_indexes_consistent(b)
        rows = await b.count_finished(since=t - timedelta(seconds=1), bucket_seconds=60)
        assert sorted((status, n) for _, status, n in rows) == [("completed", 1), ("failed", 1)]
        assert await b.prune(finished_before=t + timedelta(seconds=1), limit=10) == 2
        assert await b.count_finished(since=t - timedelta(seconds=1), bucket_seconds=60) == []
    finally:
        await b.close()


async def test_migrate_upgrades_layout_5_dropping_the_index_of_each_status(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    try:
        await b.connect()
        jobs = await b.enqueue([new_job(topic="t"), new_job(topic="u"), new_job(topic="u")])
        ex = b._async().execute_command
        # Layout 5 kept one index of every job of each status beside the per-topic ones.
        await ex("ZADD", f"{p}:status:pending", *[x for j in jobs for x in (0, j.id)])
        await ex("ZADD", f"{p}:status:completed", 0, "pruned-long-ago")
        await ex("SET", f"{p}:version", "5")
        assert await b.migrate() == 1
        assert await ex("EXISTS", f"{p}:status:pending", f"{p}:status:completed") == 0
        assert await ex("GET", f"{p}:version") == CURRENT
        await assert_indexes_consistent(b)
        page = await b.list_jobs(status=JobStatus.PENDING, limit=10)
        assert page.total == 3 and [j.id for j in page.items] == sorted((j.id for j in jobs), reverse=True)
        assert (await b.stats()).by_status["pending"] == 3
    finally:
        await b.close()


async def test_migrate_upgrades_layout_7_ordering_due_jobs_of_before_1970_by_run_at(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    try:
        await b.connect()
        times = [datetime(1969, 7, 20, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)]
        jobs = await b.enqueue([new_job(run_at=at) for at in times] + [new_job(run_at=times[0], priority=2)])
        ex = b._async().execute_command
        # Layout 7 wrote every ready member of a run_at before 1970 as run_at 0.
        for job in jobs:
            await ex("ZREM", f"{p}:ready:t", ready_member(job))
            await ex("ZADD", f"{p}:ready:t", -job.priority, "0" * 16 + job.id)
        await ex("SET", f"{p}:version", "7")
        assert await b.migrate() == 1
        assert await ex("GET", f"{p}:version") == CURRENT
        await assert_indexes_consistent(b)
        claimed = await b.claim(worker_id="w", topics=["t"], limit=10, now=now(), locked_until=now())
        assert [j.id for j in claimed] == [jobs[3].id, jobs[1].id, jobs[0].id, jobs[2].id]
        await assert_indexes_consistent(b)
    finally:
        await b.close()


async def test_a_job_record_travels_as_one_json_argument_and_is_stored_field_by_field(backend: RedisBackend) -> None:
    text = 'é 😀 "quoted" \\ back\u0000slash'
    job = build_job(
        "t", {"s": text}, now=now(), defaults=JobDefaults(), metadata={"m": text}, unique_key=text.replace("\u0000", "")
    )
    [stored] = await backend.enqueue([job])
    fields = await backend._async().hgetall(backend.keys.job(job.id))
    assert fields[b"payload"] == codec.dumps({"s": text})
    assert fields[b"metadata"] == codec.dumps({"m": text})
    assert fields[b"unique_key"] == job.unique_key.encode()  # type: ignore[union-attr]
    got = await backend.get(job.id)
    assert got is not None and got.payload == stored.payload == {"s": text} and got.metadata == {"m": text}
    assert got.unique_key == job.unique_key and got.run_at == job.run_at and got.created_at == job.created_at


async def test_a_new_job_is_stored_in_eight_fields_and_its_defaults_are_left_out(backend: RedisBackend) -> None:
    # Layout 7: each field of the enqueue's HSET is a share of its work inside Redis.
    [job] = await backend.enqueue([build_job("t", {"x": 1}, now=now(), defaults=JobDefaults())])
    key = backend.keys.job(job.id)
    fields = await backend._async().hgetall(key)
    assert set(fields) == {b"id", b"topic", b"payload", b"status", b"priority", b"run_at", b"max_retries", b"fixed"}
    [claimed] = await backend.claim(worker_id="w", topics=["t"], limit=1, now=now(), locked_until=now())
    assert claimed.attempts == 1 and (await backend._async().hget(key, "attempts")) == b"1"
    [done] = await backend.finish([completed(claimed, "w", None)], now=now())
    assert done is not None and done == await backend.get(job.id)
    assert done.attempts == 1 and done.created_at == job.created_at and done.max_snoozes == job.max_snoozes


async def test_jobs_stored_one_field_each_before_layout_7_read_and_run_as_before(redis_url: str) -> None:
    b = RedisBackend(redis_url)
    p = b.keys.prefix
    ex = b._async().execute_command
    t = now()
    old = build_job("t", {"x": 1}, now=t, defaults=JobDefaults(), metadata={"m": 1}, timeout=3.0, max_retries=5)
    fields = {
        "id": old.id, "topic": "t", "payload": codec.dumps(old.payload), "status": "pending", "priority": "0",
        "run_at": record.to_us(old.run_at), "attempts": "0", "max_retries": "5", "retry_delay": "1.0",
        "backoff": old.backoff, "metadata": codec.dumps(old.metadata), "created_at": record.to_us(t),
        "updated_at": record.to_us(t), "cancel_requested": "0", "snoozes": "0", "max_snoozes": "100",
        "timeout": "3.0",
    }  # fmt: skip
    try:
        await ex("SET", f"{p}:version", "6")
        await ex("HSET", f"{p}:job:{old.id}", *[x for pair in fields.items() for x in pair])
        await ex("SADD", f"{p}:topics", "t")
        await ex("ZADD", f"{p}:ts:pending:t", 0, old.id)
        await ex("ZADD", f"{p}:ready:t", 0, record.to_us(old.run_at).rjust(16, "0") + old.id)
        assert await b.migrate() == 1
        assert await ex("GET", f"{p}:version") == CURRENT
        assert await b.get(old.id) == replace(old, retry_delay=1.0, max_snoozes=100)
        [claimed] = await b.claim(worker_id="w", topics=["t"], limit=1, now=t, locked_until=t)
        assert claimed.id == old.id and claimed.attempts == 1 and claimed.timeout == 3.0
        [done] = await b.finish([completed(claimed, "w", {"ok": True})], now=t)
        assert done is not None and done.status is JobStatus.COMPLETED and done.result == {"ok": True}
        assert done == await b.get(old.id) and done.metadata == {"m": 1} and done.max_retries == 5
        await assert_indexes_consistent(b)
    finally:
        await b.close()


def _count_checkouts(pool: Any, counts: list[int]) -> None:
    """Count ``pool.get_connection`` calls (the instance's own attribute wins)."""
    real = pool.get_connection
    if asyncio.iscoroutinefunction(real):

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            counts.append(1)
            return await real(*args, **kwargs)

        pool.get_connection = counted_async
    else:

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts.append(1)
            return real(*args, **kwargs)

        pool.get_connection = counted


async def test_commands_one_at_a_time_run_on_a_held_connection_not_a_pool_checkout_each(backend: RedisBackend) -> None:
    # driver.HeldConnection: redis-py's checkout (a socket poll, an event-loop turn) costs
    # as much as the command itself.
    checkouts: list[int] = []
    _count_checkouts(backend._async().connection_pool, checkouts)
    for _ in range(5):
        await backend.enqueue([new_job()])
    claimed = await backend.claim(worker_id="w", topics=["t"], limit=10, now=now(), locked_until=now())
    assert len(claimed) == 5
    assert len(checkouts) <= 1  # the held connection's own checkout


async def test_concurrent_commands_still_run_side_by_side_on_pooled_connections(backend: RedisBackend) -> None:
    checkouts: list[int] = []
    _count_checkouts(backend._async().connection_pool, checkouts)
    jobs = [new_job() for _ in range(20)]
    stored = await asyncio.gather(*(backend.enqueue([job]) for job in jobs))
    assert [s[0].id for s in stored] == [j.id for j in jobs]
    assert len(checkouts) >= 19  # one command on the held connection, the others pooled


async def test_a_held_connection_closed_while_idle_is_replaced_not_reported(backend: RedisBackend) -> None:
    await backend.enqueue([new_job()])
    holder = backend._held
    assert holder is not None and holder._held is not None
    held_id = await holder._held.client_id()
    await backend._async().execute_command("CLIENT", "KILL", "ID", held_id)  # as a server timeout or proxy would
    holder._used -= 5.0  # idle for longer than driver.HELD_IDLE
    [job] = await backend.enqueue([new_job()])
    assert (await backend.get(job.id)) is not None


def test_the_sync_facade_enqueues_on_a_held_connection_and_from_many_threads(redis_url: str) -> None:
    from conveyor import Conveyor

    app = Conveyor(redis_url)
    try:
        app.stats()
        app.enqueue("t", {"i": -1})  # makes the blocking client and its held connection
        backend = app.aio.backend
        assert isinstance(backend, RedisBackend)
        checkouts: list[int] = []
        _count_checkouts(backend._sync_client.connection_pool, checkouts)
        for i in range(5):
            app.enqueue("t", {"i": i})
        assert checkouts == []
        errors: list[BaseException] = []

        def enqueue_some() -> None:
            try:
                for i in range(20):
                    app.enqueue("t", {"i": i})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=enqueue_some) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert app.stats()["pending"] == 1 + 5 + 6 * 20
        # Idle for longer than driver.HELD_IDLE, the held connection was closed by the
        # server: the next enqueue takes another through the pool's checkout.
        holder = backend._sync_held
        assert holder is not None
        held = holder._held
        assert held is not None
        holder._used -= 5.0
        import redis

        killer = redis.Redis.from_url(redis_url.split("?", 1)[0])
        killer.execute_command("CLIENT", "KILL", "ID", held.client_id())
        killer.close()
        assert app.enqueue("t", {"i": 99}).payload == {"i": 99}
    finally:
        app.close()


def test_the_sync_facade_reports_a_server_gone_as_unavailable_from_the_first_enqueue(tmp_path: Path) -> None:
    # The blocking client connects when its held client is made (on the first enqueue
    # from the caller's thread, and after HELD_IDLE): a refused connection there is
    # BackendUnavailable too, and the held connection is used once the server is back.
    from conveyor import Conveyor

    server = services.RedisProcess(tmp_path / "redis")
    server.start()
    app = Conveyor(f"redis://127.0.0.1:{server.port}/0?prefix=gone")
    try:
        app.enqueue("t", {})  # opens the store (through the loop thread)
        server.stop()
        backend = app.aio.backend
        assert isinstance(backend, RedisBackend)
        for _ in range(2):
            if backend._sync_held is not None:
                backend._sync_held._used -= 5.0  # idle past driver.HELD_IDLE: made anew
            with pytest.raises(BackendUnavailable, match="unavailable"):
                app.enqueue("t", {})
        server.start()
        assert app.enqueue("t", {"back": True}).payload == {"back": True}
        holder = backend._sync_held
        assert holder is not None and holder._held is not None
        assert not holder._lock.locked()  # given back after each failure
    finally:
        app.close()
        server.stop()


def test_scripts_run_by_evalsha_and_reload_after_a_flush_on_both_clients(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # driver.run_script: EVALSHA directly, not through redis-py's script objects (their
    # call is ~5% of an enqueue's instructions); NOSCRIPT still loads the script again.
    import redis.commands.core

    from conveyor import Conveyor

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("called through redis-py's script object")

    monkeypatch.setattr(redis.commands.core.Script, "__call__", refused)
    monkeypatch.setattr(redis.commands.core.AsyncScript, "__call__", refused)
    with Conveyor(redis_url) as app:
        app.stats()
        backend = app.aio.backend
        assert isinstance(backend, RedisBackend)

        async def flush() -> None:
            await backend._async().execute_command("SCRIPT", "FLUSH")

        app.enqueue("t", 1)  # the blocking client
        app._call(flush())
        app.enqueue("t", 2)
        app._call(flush())
        assert app.stats()["pending"] == 2  # the asyncio client


def test_each_helper_of_a_built_script_carries_its_own_comment() -> None:
    """In every script, each helper of _lib.lua comes with the comment above it there,
    whichever other helpers the script leaves out."""
    import re

    from conveyor.backends.redis.lua import _read, scripts

    def comment_above(lines: list[str], i: int) -> list[str]:
        out: list[str] = []
        while i > 0 and lines[i - 1].startswith("--"):
            i -= 1
            out.insert(0, lines[i])
        return out

    lib = _read("_lib").splitlines()
    expected = {line: comment_above(lib, i) for i, line in enumerate(lib) if re.match(r"local function ", line)}
    for script in scripts().values():
        lines = script.text.splitlines()
        for i, line in enumerate(lines):
            if line in expected:
                assert comment_above(lines, i) == expected[line], (script.name, line)


async def test_key_calls_written_out_in_lua_build_the_names_keys_builds(backend: RedisBackend) -> None:
    from conveyor.backends.redis.keys import _LAYOUT, lua_with_keys

    calls = {name: [f"a{i}" for i in range(template.count("{}"))] for name, template in _LAYOUT.items()}
    lua = "return {" + ", ".join(f"k_{name}({', '.join(repr(a) for a in args)})" for name, args in calls.items()) + "}"
    prefix = backend.keys.prefix
    names = await backend._async().eval(lua_with_keys(lua), 1, prefix)
    assert [n.decode() for n in names] == [backend.keys._name(name, *args) for name, args in calls.items()]
