"""The worker, its maintenance leader and the scheduler on a ``FakeClock``: delays,
backoff, leases and cron move only when the test moves the clock (no real sleeps drive
them; the real poll interval is an hour, so only the clock can wake the worker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import AsyncConveyor, Job, JobStatus
from conveyor.clock import FakeClock
from conveyor.settings import Settings
from conveyor.worker.maintenance import Maintainer

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[AsyncConveyor]:
    settings = Settings(url="memory://", poll_interval=3600, lock_duration=60, retention=0)
    client = AsyncConveyor(settings=settings, clock=clock)
    yield client
    await client.close()


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Let the event loop run (real time passes, the fake clock does not) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def status(app: AsyncConveyor, job_id: str) -> JobStatus:
    return (await app.get(job_id)).status


async def has_status(app: AsyncConveyor, job_id: str, expected: JobStatus) -> bool:
    return await status(app, job_id) is expected


async def settle() -> None:
    """Give every task a chance to reach its next wait."""
    for _ in range(20):
        await asyncio.sleep(0.001)


async def test_fake_clock_sleep_ends_only_when_the_clock_passes_its_deadline(clock: FakeClock) -> None:
    sleeper = asyncio.create_task(clock.sleep(10))
    await settle()
    assert not sleeper.done() and clock.sleeping == 1
    clock.advance("9s")
    await settle()
    assert not sleeper.done()
    clock.advance(timedelta(seconds=1))
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == START + timedelta(seconds=10)
    with pytest.raises(ValueError, match="forward"):
        clock.set(START)


async def test_a_delayed_job_runs_when_the_clock_reaches_it(app: AsyncConveyor, clock: FakeClock) -> None:
    ran: list[datetime] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        ran.append(clock.now())

    await app.start()
    job = await app.enqueue("later", None, delay="1h")
    await settle()
    clock.advance("59m")
    await settle()
    assert ran == [] and await status(app, job.id) is JobStatus.PENDING
    clock.advance("1m")
    await until(lambda: has_status(app, job.id, JobStatus.COMPLETED))
    assert ran == [START + timedelta(hours=1)]


async def test_retries_wait_their_backoff_on_the_clock(app: AsyncConveyor, clock: FakeClock) -> None:
    attempts: list[datetime] = []

    @app.handler("flaky")
    async def flaky(job: Job) -> str:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"

    await app.start()
    job = await app.enqueue("flaky", None, retry_delay="10m", backoff="linear", max_retries=5)
    await until(lambda: len(attempts) == 1)
    await until(lambda: has_status(app, job.id, JobStatus.PENDING))
    clock.advance("9m59s")
    await settle()
    assert len(attempts) == 1  # 10 minutes after the first failure, not earlier
    clock.advance("1s")
    await until(lambda: len(attempts) == 2)
    await until(lambda: has_status(app, job.id, JobStatus.PENDING))
    clock.advance("19m")
    await settle()
    assert len(attempts) == 2  # the second retry waits 2 x 10 minutes
    clock.advance("1m")
    await until(lambda: has_status(app, job.id, JobStatus.COMPLETED))
    assert [a - START for a in attempts] == [timedelta(0), timedelta(minutes=10), timedelta(minutes=30)]


async def test_the_leader_recovers_a_dead_worker_s_job_once_its_lease_expires(
    app: AsyncConveyor, clock: FakeClock
) -> None:
    @app.handler("work")
    async def work(job: Job) -> int:
        return job.attempts

    store = await app.connect()
    job = await app.enqueue("work", None, retry_delay=0)
    # A worker that died while running it: its lease ends in 60 s of clock time.
    [taken] = await store.claim(
        worker_id="dead", topics=["work"], limit=1, now=clock.now(), locked_until=clock.now() + timedelta(seconds=60)
    )
    assert taken.id == job.id
    await app.start()
    await until(lambda: app.worker is not None and app.worker.leading)
    clock.advance("59s")
    await settle()
    assert await status(app, job.id) is JobStatus.PROCESSING  # the lease still holds
    clock.advance("6s")  # past the lease and the leader's next look (every 5 s)
    await until(lambda: has_status(app, job.id, JobStatus.COMPLETED))
    final = await app.get(job.id)
    assert final.attempts == 2 and final.result == 2 and "worker lost" in (final.last_error or "")


async def test_cron_instants_fire_once_each_as_the_clock_reaches_them(app: AsyncConveyor, clock: FakeClock) -> None:
    await app.schedule("hourly", "@hourly", "report", {"n": 1})
    await app.start()
    await until(lambda: app.worker is not None and app.worker.leading)

    async def fired() -> list[datetime]:
        page = await app.list(topic="report", limit=100)
        return sorted(j.run_at for j in page.items)

    await settle()
    assert await fired() == []
    clock.advance("1h")
    await until(lambda: _eq(fired(), [START + timedelta(hours=1)]))
    clock.advance("30m")
    await settle()
    clock.advance("30m")
    await until(lambda: _eq(fired(), [START + timedelta(hours=1), START + timedelta(hours=2)]))


async def _eq(values: Any, expected: list[datetime]) -> bool:
    return await values == expected


async def test_a_dead_leader_is_replaced_after_one_lock_duration(app: AsyncConveyor, clock: FakeClock) -> None:
    store = await app.connect()
    # The previous leader died holding the lease (no release): it ends in 60 s.
    assert await store.acquire_leadership(holder="dead", now=clock.now(), until=clock.now() + timedelta(seconds=60))
    stopping = asyncio.Event()
    successor = Maintainer(app, "successor", lock_duration=60)
    task = asyncio.create_task(successor.run(stopping))
    await settle()
    assert not successor.leading
    clock.advance("55s")
    await settle()
    assert not successor.leading and await store.current_leader(now=clock.now()) == "dead"
    clock.advance("10s")  # past the lease, and the candidate's next try (every 5 s at most)
    await until(lambda: successor.leading)
    assert await store.current_leader(now=clock.now()) == "successor"
    # A leader that stops releases the lease: another takes it at its next try.
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert await store.current_leader(now=clock.now()) is None
    other = Maintainer(app, "other", lock_duration=60)
    other_task = asyncio.create_task(other.run(asyncio.Event()))
    await until(lambda: other.leading)
    other_task.cancel()
    await asyncio.gather(other_task, return_exceptions=True)


async def test_a_leader_that_dies_is_replaced_within_one_lock_duration_of_its_last_renewal(
    app: AsyncConveyor, clock: FakeClock
) -> None:
    # SPEC: when the leader dies another takes over within one lock duration. The
    # candidate tries every renewal interval (5 s here): the lease must end that much
    # earlier than one lock duration after the leader's last renewal.
    store = await app.connect()
    renewals: list[datetime] = []
    acquire = store.acquire_leadership

    async def recorded(*, holder: str, now: datetime, until: datetime) -> bool:
        if holder == "leader":
            renewals.append(now)
        return await acquire(holder=holder, now=now, until=until)

    store.acquire_leadership = recorded  # type: ignore[method-assign]
    leader = Maintainer(app, "leader", lock_duration=60)
    leader_task = asyncio.create_task(leader.run(asyncio.Event()))
    await until(lambda: leader.leading)
    for _ in range(7):  # it renews at 0 s and 5 s
        clock.advance("1s")
        await settle()

    async def no_release(*, holder: str) -> None:  # it dies: no release
        return None

    store.release_leadership = no_release  # type: ignore[method-assign]
    leader_task.cancel()
    await asyncio.gather(leader_task, return_exceptions=True)
    last_renewal = renewals[-1]
    successor = Maintainer(app, "successor", lock_duration=60)
    successor_task = asyncio.create_task(successor.run(asyncio.Event()))
    await settle()
    while not successor.leading:
        assert clock.now() - last_renewal <= timedelta(seconds=60), "not replaced within one lock duration"
        clock.advance("1s")
        await settle()
    assert clock.now() - last_renewal <= timedelta(seconds=60)
    successor_task.cancel()
    await asyncio.gather(successor_task, return_exceptions=True)


async def test_only_one_of_several_workers_leads_and_the_api_lists_it(clock: FakeClock) -> None:
    app = AsyncConveyor(settings=Settings(url="memory://", poll_interval=3600, lock_duration=60), clock=clock)
    try:
        await app.connect()
        stop_all = asyncio.Event()
        candidates = [Maintainer(app, f"w{i}", lock_duration=60) for i in range(3)]
        tasks = [asyncio.create_task(m.run(stop_all)) for m in candidates]
        await until(lambda: sum(m.leading for m in candidates) == 1)
        for _ in range(5):
            clock.advance("20s")
            await settle()
            assert sum(m.leading for m in candidates) == 1
        stop_all.set()
        await asyncio.gather(*tasks)
        app.handler("t")(lambda job: None)
        await app.start(worker_id="only")
        await until(lambda: app.worker is not None and app.worker.leading)
        clock.advance("3s")  # its registry entry refreshes
        await until(lambda: _leaders(app, ["only"]))
    finally:
        await app.close()


async def _leaders(app: AsyncConveyor, expected: list[str]) -> bool:
    return [w.id for w in await app.workers() if w.leader] == expected


async def test_declared_schedules_are_stored_again_when_the_store_lost_them(
    app: AsyncConveyor, clock: FakeClock
) -> None:
    app.declare_schedule("nightly", "0 3 * * *", "report")
    app.declare_schedule("hourly", "@hourly", "report")
    await app.start()
    await until(lambda: _names(app, {"hourly", "nightly"}))
    store = await app.connect()
    # The store lost its data (e.g. Redis restarted without persistence).
    for name in ("hourly", "nightly"):
        assert await store.delete_schedule(name)
    clock.advance("1s")  # the leader's next scheduler pass notices
    await until(lambda: _names(app, {"hourly", "nightly"}))


async def _names(app: AsyncConveyor, expected: set[str]) -> bool:
    return {s.name for s in await app.schedules()} == expected


async def test_the_leader_renews_its_lease_at_the_renewal_pace_not_on_every_pass(
    app: AsyncConveyor, clock: FakeClock
) -> None:
    store = await app.connect()
    calls: list[datetime] = []
    acquire = store.acquire_leadership

    async def counted(*, holder: str, now: datetime, until: datetime) -> bool:
        calls.append(now)
        return await acquire(holder=holder, now=now, until=until)

    store.acquire_leadership = counted  # type: ignore[method-assign]
    await app.schedule("often", "@every 1s", "report")  # the leader's scheduler passes every second
    stopping = asyncio.Event()
    leader = Maintainer(app, "leader", lock_duration=60)
    task = asyncio.create_task(leader.run(stopping))
    await until(lambda: leader.leading)
    for _ in range(30):
        clock.advance("1s")
        await settle()
    fired = await app.list(topic="report", limit=100)
    assert fired.total >= 25  # it kept firing every second...
    assert len(calls) <= 30 // 5 + 2  # ...while renewing every 5 s
    stopping.set()
    await asyncio.wait_for(task, 5)
