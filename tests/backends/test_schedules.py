"""Recurring schedules on every backend (docs/schedules.md): firing, exactly-once across
schedulers, enable/disable, catch-up after downtime, declarations in code."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.client import AsyncConveyor
from conveyor.clock import FakeClock
from conveyor.core.cron import every
from conveyor.core.errors import ScheduleNotFound, ValidationError
from conveyor.core.job import Job
from conveyor.scheduler.scheduler import Scheduler
from tests.backends.conftest import fast_settings


@pytest.fixture
def clock() -> FakeClock:
    # A whole minute (so @every 10s instants are round) near the real time.
    return FakeClock(datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture
async def fake_client(backend_url: str, clock: FakeClock) -> AsyncConveyor:
    app = AsyncConveyor(settings=fast_settings(backend_url), clock=clock)
    await app.connect()
    yield app  # type: ignore[misc]
    await app.close()


async def scheduled_jobs(client: AsyncConveyor, name: str) -> list[Job]:
    page = await client.list(topic="sched.topic", limit=1000)
    return sorted((j for j in page.items if j.schedule == name), key=lambda j: j.run_at)


async def run_schedulers(schedulers: list[Scheduler], seconds: float) -> None:
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stopping)) for s in schedulers]
    await asyncio.sleep(seconds)
    stopping.set()
    await asyncio.gather(*tasks)


# -- management ------------------------------------------------------------------------


async def test_schedule_add_get_list_remove(client: AsyncConveyor) -> None:
    stored = await client.schedule("nightly", "0 3 * * *", "sched.topic", {"a": 1}, priority=5, timeout="10m")
    assert stored.enabled and stored.next_run_at is not None
    got = await client.get_schedule("nightly")
    assert (got.cron, got.topic, got.payload, got.timezone) == ("0 3 * * *", "sched.topic", {"a": 1}, "UTC")
    assert got.options["priority"] == 5 and got.options["timeout"] == "10m"
    assert [s.name for s in await client.schedules()] == ["nightly"]
    await client.unschedule("nightly")
    assert await client.schedules() == []
    with pytest.raises(ScheduleNotFound):
        await client.get_schedule("nightly")


async def test_add_schedule_inserts_only_and_one_of_concurrent_adds_wins(client: AsyncConveyor) -> None:
    store = await client.connect()
    first = client.build_schedule("once", "@hourly", "sched.topic", {"v": 1})
    added = await store.add_schedule(first)
    assert added is not None and added.payload == {"v": 1}
    assert await store.add_schedule(client.build_schedule("once", "@daily", "sched.topic", {"v": 2})) is None
    kept = await store.get_schedule("once")
    assert kept is not None and (kept.cron, kept.payload) == ("@hourly", {"v": 1})
    rivals = [client.build_schedule("race", "@hourly", "sched.topic", {"v": i}) for i in range(8)]
    results = await asyncio.gather(*(store.add_schedule(r) for r in rivals))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get_schedule("race")).payload == winners[0].payload  # type: ignore[union-attr]


async def test_schedule_replace_keeps_one(client: AsyncConveyor) -> None:
    await client.schedule("s", "@hourly", "sched.topic")
    await client.schedule("s", every("5m"), "sched.topic", timezone="Europe/Berlin")
    (only,) = await client.schedules()
    assert (only.cron, only.timezone) == ("@every 5m", "Europe/Berlin")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad name!", "cron": "@daily", "topic": "t"}, "name"),
        ({"name": "n", "cron": "61 * * * *", "topic": "t"}, "cron"),
        ({"name": "n", "cron": "@daily", "topic": "t", "timezone": "Mars/Base"}, "timezone"),
        ({"name": "n", "cron": "@daily", "topic": "bad topic"}, "topic"),
        ({"name": "n", "cron": "@daily", "topic": "t", "priority": "high"}, "priority"),
        ({"name": "n", "cron": "@daily", "topic": "t", "backoff": "sometimes"}, "backoff"),
        ({"name": "n", "cron": "@daily", "topic": "t", "delay": "5m"}, "delay"),
    ],
)
async def test_schedule_validation_at_save(client: AsyncConveyor, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        await client.schedule(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await client.schedules() == []


async def test_schedule_unknown_name_raises(client: AsyncConveyor) -> None:
    for call in (client.unschedule, client.enable_schedule, client.disable_schedule, client.next_runs):
        with pytest.raises(ScheduleNotFound):
            await call("missing")


async def test_next_runs(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    runs = await fake_client.next_runs("s", n=3)
    assert runs == [clock.now() + timedelta(seconds=10 * i) for i in (1, 2, 3)]
    await fake_client.disable_schedule("s")
    assert await fake_client.next_runs("s") == []


# -- firing (fake clock) -----------------------------------------------------------------


async def test_schedule_fires_once_per_instant(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic", {"x": 1}, priority=3)
    scheduler = Scheduler(fake_client)
    await scheduler.tick()
    assert await scheduled_jobs(fake_client, "s") == []
    clock.advance(10)
    await scheduler.tick()
    await scheduler.tick()
    (job,) = await scheduled_jobs(fake_client, "s")
    assert (job.run_at, job.payload, job.priority, job.schedule) == (clock.now(), {"x": 1}, 3, "s")
    stored = await fake_client.get_schedule("s")
    assert stored.last_fired_at == clock.now()
    assert stored.next_run_at == clock.now() + timedelta(seconds=10)


async def test_two_schedulers_fire_each_instant_once(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    first, second = Scheduler(fake_client), Scheduler(fake_client)
    for _ in range(5):
        clock.advance(10)
        await asyncio.gather(first.tick(), second.tick(), first.tick())
    jobs = await scheduled_jobs(fake_client, "s")
    assert len(jobs) == 5
    assert len({j.run_at for j in jobs}) == 5
    assert first.fired + second.fired == 5


async def test_disable_stops_and_enable_resumes(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    scheduler = Scheduler(fake_client)
    clock.advance(10)
    await scheduler.tick()
    assert len(await scheduled_jobs(fake_client, "s")) == 1
    await fake_client.disable_schedule("s")
    for _ in range(3):
        clock.advance(10)
        await scheduler.tick()
    assert len(await scheduled_jobs(fake_client, "s")) == 1
    clock.advance(5)
    enabled = await fake_client.enable_schedule("s")
    assert enabled.enabled and enabled.next_run_at == clock.now() + timedelta(seconds=5)
    await scheduler.tick()  # instants missed while disabled are not fired
    assert len(await scheduled_jobs(fake_client, "s")) == 1
    clock.advance(5)
    await scheduler.tick()
    jobs = await scheduled_jobs(fake_client, "s")
    assert [j.run_at for j in jobs][-1] == clock.now() and len(jobs) == 2


async def test_downtime_fires_latest_missed_instant_once(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    clock.advance(95)  # instants +10 … +90 missed
    scheduler = Scheduler(fake_client)
    await scheduler.tick()
    await scheduler.tick()
    (job,) = await scheduled_jobs(fake_client, "s")
    assert job.run_at == clock.now() - timedelta(seconds=5)
    clock.advance(5)
    await scheduler.tick()
    assert len(await scheduled_jobs(fake_client, "s")) == 2


async def test_replace_with_same_timing_keeps_missed_instant(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    clock.advance(25)
    await fake_client.schedule("s", "@every 10s", "sched.topic", {"v": 2})  # e.g. a redeploy
    await Scheduler(fake_client).tick()
    (job,) = await scheduled_jobs(fake_client, "s")
    assert job.run_at == clock.now() - timedelta(seconds=5) and job.payload == {"v": 2}


async def test_removed_schedule_stops_firing(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    await fake_client.unschedule("s")
    clock.advance(30)
    await Scheduler(fake_client).tick()
    assert await scheduled_jobs(fake_client, "s") == []


async def test_fired_job_emits_scheduled_event(fake_client: AsyncConveyor, clock: FakeClock) -> None:
    await fake_client.schedule("s", "@every 10s", "sched.topic")
    events = fake_client.events()
    waiter = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)  # subscribed before firing
    clock.advance(10)
    await Scheduler(fake_client).tick()
    event = await asyncio.wait_for(waiter, 5)
    await events.aclose()
    assert event.type == "job.scheduled" and event.topic == "sched.topic"
    assert event.metadata.get("schedule") == "s"
    assert event.metadata["is_repeat"] is True and event.metadata["trigger_at"] == event.data["run_at"]


# -- declarations in code ----------------------------------------------------------------


async def test_declared_schedules_upserted_without_duplicates(backend_url: str, clock: FakeClock) -> None:
    app = AsyncConveyor(settings=fast_settings(backend_url), clock=clock)
    declared = app.declare_schedule("code", "@every 10s", "sched.topic", {"k": 1})
    assert declared.options["source"] == "code" and not app.is_connected
    try:
        await app.connect()  # opening the store stores nothing: declarations are for workers
        assert await app.schedules() == []
        assert await app.sync_schedules() == {"saved": ["code"], "disabled": []}
        assert [s.name for s in await app.schedules()] == ["code"]
        assert await app.sync_schedules() == {"saved": [], "disabled": []}
        # An operator's disable survives an unchanged declaration at the next start.
        await app.disable_schedule("code")
        await app.sync_schedules()
        assert not (await app.get_schedule("code")).enabled
        # A changed declaration is applied in full.
        app.declare_schedule("code", "@every 20s", "sched.topic", {"k": 2})
        assert (await app.sync_schedules())["saved"] == ["code"]
        stored = await app.get_schedule("code")
        assert (stored.cron, stored.payload, stored.enabled) == ("@every 20s", {"k": 2}, True)
        # Removed from code: disabled (not deleted) at the next start.
        await app.schedule("manual", "@hourly", "sched.topic")
        del app._schedule_decls["code"]
        app.declare_schedule("other", "@daily", "sched.topic")
        assert await app.sync_schedules() == {"saved": ["other"], "disabled": ["code"]}
        assert not (await app.get_schedule("code")).enabled
        assert (await app.get_schedule("manual")).enabled
        # Declared again: enabled again.
        app.declare_schedule("code", "@every 20s", "sched.topic", {"k": 2})
        await app.sync_schedules()
        assert (await app.get_schedule("code")).enabled
    finally:
        await app.close()


async def test_scheduler_run_syncs_declarations(backend_url: str) -> None:
    app = AsyncConveyor(settings=fast_settings(backend_url))
    app.declare_schedule("declared", "@every 1h", "sched.topic")
    try:
        await run_schedulers([Scheduler(app)], 0.3)
        assert [s.name for s in await app.schedules()] == ["declared"]
    finally:
        await app.close()


# -- real time -------------------------------------------------------------------------


async def test_every_second_fires_about_once_a_second(client: AsyncConveyor) -> None:
    await client.schedule("tick", every("1s"), "sched.topic")
    await run_schedulers([Scheduler(client)], 3.3)
    jobs = await scheduled_jobs(client, "tick")
    assert 2 <= len(jobs) <= 4, [j.run_at for j in jobs]
    instants = [j.run_at for j in jobs]
    assert len(set(instants)) == len(instants)
    assert all(t.microsecond == 0 for t in instants)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(instants))


async def test_two_schedulers_real_time_never_duplicate(client: AsyncConveyor, backend_url: str) -> None:
    await client.schedule("tick", every("1s"), "sched.topic")
    schedulers = [Scheduler(client), Scheduler(client)]
    other: AsyncConveyor | None = None
    if client.backend.capabilities.multi_process:
        other = AsyncConveyor(settings=fast_settings(backend_url))  # a second connection to the store
        await other.connect()
        schedulers.append(Scheduler(other))
    try:
        await run_schedulers(schedulers, 2.6)
    finally:
        if other is not None:
            await other.close()
    counts = Counter(j.run_at for j in await scheduled_jobs(client, "tick"))
    assert counts and max(counts.values()) == 1, counts


SCHEDULER_PROCESS = """
import asyncio, sys
from conveyor.client import AsyncConveyor
from conveyor.scheduler.scheduler import Scheduler

async def main() -> None:
    client = AsyncConveyor(sys.argv[1])
    await client.connect()
    stopping = asyncio.Event()
    task = asyncio.create_task(Scheduler(client).run(stopping))
    await asyncio.sleep(float(sys.argv[2]))
    stopping.set()
    await task
    await client.close()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_two_scheduler_processes_never_duplicate(client: AsyncConveyor, backend_url: str) -> None:
    if not client.backend.capabilities.multi_process:
        pytest.skip("the store is not shared between processes")
    await client.schedule("tick", every("1s"), "sched.topic")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCHEDULER_PROCESS, backend_url, "4", stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    jobs = await scheduled_jobs(client, "tick")
    counts = Counter(j.run_at for j in jobs)
    assert len(counts) >= 2, counts  # start-up (imports, connect) takes part of the 4 s
    assert max(counts.values()) == 1, counts
