"""RunSlots (worker/slots.py): run slots given out in claim order, and held back while a
claim sent before a job's own may still bring an earlier job."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conveyor.core.job import Job
from conveyor.core.options import JobDefaults, build_job
from conveyor.worker.slots import RunSlots, Turn

BASE = datetime(2030, 1, 1, tzinfo=UTC)


def job(name: str, *, second: int, priority: int = 0) -> Job:
    made = build_job(
        "t", name, now=BASE, defaults=JobDefaults(), priority=priority, run_at=BASE + timedelta(seconds=second)
    )
    return replace(made, id=name)


async def run(turn: Turn, started: list[str], name: str, release: asyncio.Event) -> None:
    async with turn:
        started.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiting_jobs_start_in_claim_order_not_arrival_order() -> None:
    slots = RunSlots(1)
    started: list[str] = []
    release = asyncio.Event()
    first = slots.claim_sent()
    horizon = slots.claim_back(first)
    arrivals = [job("late", second=9), job("urgent", second=20, priority=5), job("early", second=1)]
    tasks = [asyncio.create_task(run(slots.enter(j, horizon), started, j.id, release)) for j in arrivals]
    slots.hand_out()
    await settle()
    assert started == ["urgent"]  # the first in claim order took the one slot
    release.set()
    await asyncio.gather(*tasks)
    assert started == ["urgent", "early", "late"]


async def test_jobs_wait_for_the_claims_sent_before_theirs() -> None:
    slots = RunSlots(2)
    started: list[str] = []
    release = asyncio.Event()
    release.set()
    a, b = slots.claim_sent(), slots.claim_sent()
    # b comes back first; a, sent before it, may hold an earlier job.
    later = asyncio.create_task(
        run(slots.enter(job("later", second=5), slots.claim_back(b)), started, "later", release)
    )
    slots.hand_out()
    await settle()
    assert started == []
    earlier = asyncio.create_task(
        run(slots.enter(job("earlier", second=1), slots.claim_back(a)), started, "earlier", release)
    )
    slots.hand_out()
    await asyncio.gather(later, earlier)
    assert started == ["earlier", "later"]


async def test_a_claim_sent_after_one_came_back_does_not_hold_its_jobs() -> None:
    slots = RunSlots(1)
    started: list[str] = []
    release = asyncio.Event()
    release.set()
    a = slots.claim_sent()
    horizon = slots.claim_back(a)
    slots.claim_sent()  # still in flight: sent after a came back
    task = asyncio.create_task(run(slots.enter(job("x", second=1), horizon), started, "x", release))
    slots.hand_out()
    await task
    assert started == ["x"]


async def test_a_withdrawn_turn_frees_its_slot_even_before_its_task_ran() -> None:
    slots = RunSlots(1)
    started: list[str] = []
    release = asyncio.Event()
    release.set()
    granted = slots.enter(job("granted", second=1), 0)
    waiting = slots.enter(job("waiting", second=2), 0)
    slots.hand_out()
    assert (granted.state, waiting.state) == ("granted", "waiting")
    granted.withdraw()  # e.g. handed back by a stop before its task ever ran
    assert waiting.state == "granted"
    await run(waiting, started, "waiting", release)
    third = slots.enter(job("third", second=3), 0)
    slots.hand_out()
    assert third.state == "granted"  # every slot came back


async def test_cancelling_a_waiting_task_skips_its_turn() -> None:
    slots = RunSlots(1)
    started: list[str] = []
    release = asyncio.Event()
    holder = asyncio.create_task(run(slots.enter(job("holder", second=0), 0), started, "holder", release))
    slots.hand_out()
    await settle()
    turn = slots.enter(job("cancelled", second=1), 0)
    cancelled = asyncio.create_task(run(turn, started, "cancelled", release))
    after = asyncio.create_task(run(slots.enter(job("after", second=2), 0), started, "after", release))
    await settle()
    turn.withdraw()
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, after)
    assert cancelled.cancelled()
    assert started == ["holder", "after"]
