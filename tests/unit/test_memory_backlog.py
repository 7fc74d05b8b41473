"""memory:// under a backlog: stats(), listings and claims come from maintained indexes,
never from a walk over every job, and agree with a count of the jobs themselves."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.backends.memory import MemoryBackend
from conveyor.core import lifecycle, operation
from conveyor.core.job import Job, JobStatus
from conveyor.core.options import JobDefaults, build_job

TOPICS = ["a", "b", "c"]


class _NoWalk(dict[str, Job]):
    """The backend's job table, refusing to be walked whole."""

    def values(self) -> Any:
        raise AssertionError("read every job")

    def items(self) -> Any:
        raise AssertionError("read every job")

    def __iter__(self) -> Any:
        raise AssertionError("read every job")


async def _store(n: int) -> tuple[MemoryBackend, datetime]:
    b = MemoryBackend()
    await b.connect()
    now = datetime.now(UTC)
    await b.enqueue(
        [
            build_job(TOPICS[i % 3], {"i": i}, now=now, defaults=JobDefaults(), delay=3600 if i % 4 == 0 else None)
            for i in range(n)
        ]
    )
    claimed = await b.claim(
        worker_id="w", topics=TOPICS, limit=n // 4, now=now, locked_until=now + timedelta(minutes=5)
    )
    half = len(claimed) // 2
    await b.finish([lifecycle.completed(j, "w", None) for j in claimed[:half]], now=now)
    for job in claimed[half : half + 10]:
        await b.apply(operation.fail(job.id, "boom"), now=now)
    pending = (await b.list_jobs(status=JobStatus.PENDING, limit=20)).items
    for job in pending[:10]:
        await b.apply(operation.cancel(job.id), now=now)
    await b.apply(operation.delete(pending[10].id), now=now)
    return b, now


async def test_stats_and_totals_match_the_jobs_without_reading_them() -> None:
    b, _ = await _store(600)
    jobs = list(b._jobs.values())
    expected = Counter((j.status.value, j.topic) for j in jobs)
    b._jobs = _NoWalk(b._jobs)

    stats = await b.stats()
    assert {(s, t): n for t, by in stats.by_topic.items() for s, n in by.items()} == dict(expected)
    assert sum(stats.by_status.values()) == len(jobs)
    for status in (None, *JobStatus):
        for topic in (None, *TOPICS):
            page = await b.list_jobs(status=status, topic=topic, limit=5)
            want = sorted((j.id for j in jobs if status in (None, j.status) and topic in (None, j.topic)), reverse=True)
            assert (page.total, [j.id for j in page.items]) == (len(want), want[:5])


@pytest.mark.parametrize(("status", "topic"), [(None, None), (JobStatus.PENDING, None), (None, "b")])
async def test_keyset_and_offset_pages_walk_the_index_in_order(status: JobStatus | None, topic: str | None) -> None:
    b, _ = await _store(300)
    want = sorted(j.id for j in b._jobs.values() if status in (None, j.status) and topic in (None, j.topic))[::-1]
    b._jobs = _NoWalk(b._jobs)

    seen: list[str] = []
    cursor = None
    while True:
        page = await b.list_jobs(status=status, topic=topic, limit=7, after=cursor)
        seen += [j.id for j in page.items]
        if page.next is None:
            break
        cursor = page.next
    assert seen == want
    back = await b.list_jobs(status=status, topic=topic, limit=7, before=want[20])
    assert [j.id for j in back.items] == want[13:20]
    assert back.prev == want[13] and back.next == want[19]
    deep = await b.list_jobs(status=status, topic=topic, limit=7, offset=21)
    assert [j.id for j in deep.items] == want[21:28]
    assert deep.total == len(want)


async def test_claims_prune_and_expiry_keep_the_counts() -> None:
    b, now = await _store(200)
    later = now + timedelta(hours=2)
    assert len(await b.expired(now=later, limit=1000)) == (await b.stats()).by_status["processing"]
    pruned = await b.prune(finished_before=later, limit=1000)
    stats = await b.stats()
    assert pruned > 0
    assert stats.by_status["completed"] == stats.by_status["failed"] == stats.by_status["cancelled"] == 0
    assert sum(stats.by_status.values()) == len(b._jobs) == (await b.list_jobs(limit=1)).total
