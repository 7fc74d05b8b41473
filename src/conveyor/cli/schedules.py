"""``conveyor schedules list|add|remove|enable|disable|run|next``.

Registered by ``conveyor.cli.main``. Follows its conventions: ``--json`` for
machine-readable output, one ``error: ...`` line on stderr, exit 0/1/2.
"""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli._common import given, parse_json, run
from conveyor.cli._output import emit, job_dict, json_option
from conveyor.client import AsyncConveyor
from conveyor.core.schedule import Schedule


def _line(s: Schedule) -> str:
    state = "enabled" if s.enabled else "disabled"
    nxt = s.next_run_at.isoformat(timespec="seconds") if s.next_run_at and s.enabled else "-"
    last = s.last_fired_at.isoformat(timespec="seconds") if s.last_fired_at else "-"
    return f"{s.name}  {s.cron!r} {s.timezone}  topic={s.topic}  {state}  next={nxt}  last={last}"


@click.group()
def schedules() -> None:
    """List and manage recurring schedules."""


@schedules.command("list")
@json_option
@click.pass_context
def schedules_list(ctx: click.Context, as_json: bool) -> None:
    """List every schedule by name."""
    items = run(ctx, lambda client: client.schedules())
    lines = [*(_line(s) for s in items), f"{len(items)} schedule(s)"]
    emit(as_json, {"items": [s.to_dict() for s in items], "total": len(items)}, "\n".join(lines))


@schedules.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("topic")
@click.argument("payload_json", required=False, metavar="[PAYLOAD_JSON]")
@click.option("--timezone", "--tz", "timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--disabled", is_flag=True, help="Store the schedule disabled.")
@click.option("--priority", type=int, help="Priority of each job.")
@click.option("--max-retries", type=int, help="Retries of each job.")
@click.option("--retry-delay", metavar="DURATION", help="Base of the backoff.")
@click.option("--backoff", metavar="STRATEGY", help="none, constant, linear, exponential or quadratic.")
@click.option("--timeout", metavar="DURATION", help="Timeout of each attempt.")
@click.option("--metadata", "metadata_json", metavar="JSON", help="A JSON object stored with each job.")
@json_option
@click.pass_context
def schedules_add(
    ctx: click.Context,
    name: str,
    cron: str,
    topic: str,
    payload_json: str | None,
    timezone: str,
    disabled: bool,
    priority: int | None,
    max_retries: int | None,
    retry_delay: str | None,
    backoff: str | None,
    timeout: str | None,
    metadata_json: str | None,
    as_json: bool,
) -> None:
    """Add or replace schedule NAME: CRON ('0 9 * * *', '0 */5 * * * *', '@daily',
    '@every 5m') enqueues a job on TOPIC with an optional JSON payload."""
    payload = None if payload_json is None else parse_json(payload_json, "payload")
    options = given(
        priority=priority,
        max_retries=max_retries,
        retry_delay=retry_delay,
        backoff=backoff,
        timeout=timeout,
        metadata=None if metadata_json is None else parse_json(metadata_json, "metadata"),
    )
    stored = run(
        ctx,
        lambda client: client.schedule(name, cron, topic, payload, timezone=timezone, enabled=not disabled, **options),
    )
    emit(as_json, stored.to_dict(), f"schedule {stored.name} saved: {_line(stored)}")


@schedules.command("remove")
@click.argument("name")
@json_option
@click.pass_context
def schedules_remove(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove schedule NAME (jobs it already enqueued stay)."""
    run(ctx, lambda client: client.unschedule(name))
    emit(as_json, {"name": name, "removed": True}, f"schedule {name} removed")


def _toggle(enable: bool) -> click.Command:
    verb = "enable" if enable else "disable"

    @click.command(verb, help=f"{verb.capitalize()} schedule NAME.")
    @click.argument("name")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, name: str, as_json: bool) -> None:
        stored = run(ctx, lambda client: client.enable_schedule(name) if enable else client.disable_schedule(name))
        emit(as_json, stored.to_dict(), f"schedule {name} {verb}d")

    return command


schedules.add_command(_toggle(True))
schedules.add_command(_toggle(False))


@schedules.command("run")
@click.argument("name")
@json_option
@click.pass_context
def schedules_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Enqueue one job of schedule NAME now (its next runs stay as they are)."""

    async def go(client: AsyncConveyor) -> dict[str, Any]:
        job = await client.run_schedule(name)
        return job_dict(job, now=client.clock.now())

    data = run(ctx, go)
    emit(as_json, data, f"schedule {name} run now: job {data['id']} {data['status']}")


@schedules.command("next")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many.")
@json_option
@click.pass_context
def schedules_next(ctx: click.Context, name: str, count: int, as_json: bool) -> None:
    """Show the next fire times of schedule NAME (UTC)."""
    runs = [t.isoformat() for t in run(ctx, lambda client: client.next_runs(name, count))]
    # A disabled schedule has no next runs.
    emit(as_json, {"name": name, "next_runs": runs}, "\n".join(runs) if runs else f"schedule {name} is disabled")
