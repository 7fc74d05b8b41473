"""Schedule operations for the API, on the client's schedule methods (docs/schedules.md):
``schedule``, ``unschedule``, ``enable_schedule``, ``disable_schedule``, ``schedules``,
``next_runs``; plus ``create_and_arm`` for the ``cron_expr`` + ``is_repeat`` enqueue,
which returns the schedule's first job. No schedule rules live here.
"""

from __future__ import annotations

from typing import Any

from conveyor.api.errors import ApiError
from conveyor.client import AsyncConveyor
from conveyor.core.errors import ScheduleExists, ScheduleNotFound
from conveyor.core.job import Job
from conveyor.core.schedule import SCHEDULE_JOB_OPTIONS, Schedule


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


def merged(existing: Schedule, given: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``save`` for ``PUT /api/schedules/{name}`` on an existing schedule:
    what the body names (``given``: field → value, ``cron`` already resolved from its
    alias) over what the schedule has. A job option given as null is removed."""
    options = {k: v for k, v in existing.options.items() if k in SCHEDULE_JOB_OPTIONS}
    for key in sorted(SCHEDULE_JOB_OPTIONS):
        if key in given:
            if given[key] is None:
                options.pop(key, None)
            else:
                options[key] = given[key]
    return {
        "cron": given.get("cron", existing.cron),
        "topic": given.get("topic", existing.topic),
        "payload": given.get("payload", existing.payload),
        "timezone": given.get("timezone", existing.timezone),
        "enabled": given.get("enabled", existing.enabled),
        "options": options,
    }


async def find(client: AsyncConveyor, name: str) -> Schedule | None:
    """The schedule of that name, or None."""
    try:
        return await client.get_schedule(name)
    except ScheduleNotFound:
        return None


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
) -> tuple[Job, bool]:
    """The cron enqueue: ``AsyncConveyor.arm_schedule_reporting`` (the job, and whether
    this call armed it). ``may_replace`` False (an enqueue-role caller): changing
    someone's schedule takes the admin role (403)."""
    try:
        return await client.arm_schedule_reporting(
            name, cron, topic, payload, timezone=timezone or "UTC", replace=may_replace, **options
        )
    except ScheduleExists:
        raise ApiError(403, "forbidden", f"schedule {name!r} exists: replacing it needs the admin role") from None
