"""Schedule operations for the API, on the client's schedule methods (SPEC §2):
``schedule``, ``unschedule``, ``enable_schedule``, ``disable_schedule``, ``schedules``,
``next_runs``; plus ``create_and_arm`` for the seed's ``cron_expr`` + ``is_repeat``
enqueue, which returns the schedule's first job.
"""

from __future__ import annotations

from typing import Any

from conveyor.api.errors import ApiError
from conveyor.client import AsyncConveyor, scheduled_event
from conveyor.core.errors import ValidationError
from conveyor.core.job import Job
from conveyor.core.options import build_job
from conveyor.core.schedule import Schedule
from conveyor.scheduler.methods import SCHEDULE_MARKERS


async def save(
    client: AsyncConveyor,
    *,
    name: str,
    cron: str,
    topic: str,
    payload: Any,
    timezone: str | None,
    enabled: bool,
    options: dict[str, Any],
) -> Schedule:
    return await client.schedule(
        name, cron=cron, topic=topic, payload=payload, timezone=timezone or "UTC", enabled=enabled, **options
    )


async def get(client: AsyncConveyor, name: str) -> Schedule:
    return await client.get_schedule(name)


async def list_all(client: AsyncConveyor) -> list[Schedule]:
    return await client.schedules()


async def remove(client: AsyncConveyor, name: str) -> None:
    await client.unschedule(name)


async def set_enabled(client: AsyncConveyor, name: str, enabled: bool) -> Schedule:
    return await (client.enable_schedule(name) if enabled else client.disable_schedule(name))


async def create_and_arm(
    client: AsyncConveyor,
    *,
    name: str,
    cron: str,
    topic: str,
    payload: Any,
    timezone: str | None,
    options: dict[str, Any],
    may_replace: bool,
) -> Job:
    """Add (or replace) the schedule, and enqueue the job of its next fire instant now,
    marking that instant fired so that no scheduler enqueues it again. Returns that job.

    ``may_replace`` False (an enqueue-role caller): a schedule of that name must not
    exist yet, or already have exactly this definition (the same request sent again);
    changing someone's schedule takes the admin role."""
    if not may_replace:
        wanted = client.build_schedule(name, cron, topic, payload, timezone=timezone or "UTC", **options)
        store = await client.store()
        for _ in range(2):  # insert-only: no window for someone else's schedule to be replaced
            if await store.add_schedule(wanted) is not None:
                break
            existing = await store.get_schedule(name)
            if existing is None:
                continue  # removed meanwhile: add it again
            if _definition(existing) != _definition(wanted):
                raise ApiError(403, "forbidden", f"schedule {name!r} exists: replacing it needs the admin role")
            break
    else:
        await save(
            client, name=name, cron=cron, topic=topic, payload=payload, timezone=timezone, enabled=True, options=options
        )
    runs = await client.next_runs(name, n=2)
    if not runs:
        raise ValidationError("cron", f"{cron!r} never fires")
    fire_at = runs[0]
    following = runs[1] if len(runs) > 1 else None
    now = client.clock.now()
    job = build_job(
        topic,
        payload,
        now=now,
        defaults=client.defaults_for(topic),
        run_at=fire_at,
        schedule=name,
        unique_key=f"schedule:{name}:{fire_at.isoformat()}",
        **options,
    )
    store = await client.store()
    fired = await store.fire_schedule(name, fire_at=fire_at, next_run_at=following, job=job)
    if fired is None:
        # This instant was already armed (e.g. the same request sent twice): its unique
        # key returns the job that holds it.
        fired = (await store.enqueue([job]))[0]
    if fired.id == job.id:
        client.emit([scheduled_event(fired, now)])
    return fired


def _definition(s: Schedule) -> tuple[Any, ...]:
    """What a schedule does (not where it came from nor when it fires next)."""
    options = {k: v for k, v in s.options.items() if k not in SCHEDULE_MARKERS}
    return (s.cron, s.timezone, s.topic, s.payload, options, s.enabled)
