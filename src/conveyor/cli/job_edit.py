"""``conveyor jobs update`` and ``conveyor jobs run-now``: change a pending job.

Added to the ``jobs`` group by ``conveyor.cli.main``; follows its conventions (``--json``,
one ``error: ...`` line on stderr, exit 0/1/2). Imports no other CLI command module.
"""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli._common import given, parse_json, run
from conveyor.cli._output import emit, job_detail, job_dict, json_option
from conveyor.client import AsyncConveyor


@click.command("update")
@click.argument("job_id", metavar="ID")
@click.option("--payload", "payload_json", metavar="JSON", help="New payload ('-' reads stdin).")
@click.option("--delay", metavar="DURATION", help="Run after this long from now, e.g. 30s, 10m.")
@click.option("--at", "--run-at", "run_at", metavar="ISO", help="Run at this ISO 8601 time (naive means UTC).")
@click.option("--priority", type=int, help="New priority (higher runs first).")
@click.option("--max-retries", type=int, help="New retry budget.")
@click.option("--metadata", "metadata_json", metavar="JSON", help="New metadata (a JSON object; replaces it).")
@json_option
@click.pass_context
def jobs_update(
    ctx: click.Context,
    job_id: str,
    payload_json: str | None,
    delay: str | None,
    run_at: str | None,
    priority: int | None,
    max_retries: int | None,
    metadata_json: str | None,
    as_json: bool,
) -> None:
    """Change a pending job: its payload, run time, priority, retry budget or metadata."""
    changes: dict[str, Any] = given(delay=delay, run_at=run_at, priority=priority, max_retries=max_retries)
    if payload_json is not None:
        changes["payload"] = parse_json(payload_json, "payload")
    if metadata_json is not None:
        changes["metadata"] = parse_json(metadata_json, "metadata")
    if not changes:
        raise click.UsageError(
            "nothing to change: give --payload, --delay, --at, --priority, --max-retries or --metadata"
        )

    async def go(client: AsyncConveyor) -> None:
        job = await client.update(await client.resolve_job_id(job_id), **changes)
        emit(as_json, job_dict(job, now=client.clock.now()), f"job {job.id} updated\n{job_detail(job)}")

    run(ctx, go)


@click.command("run-now")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def jobs_run_now(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Make a pending job (delayed, or waiting for its retry) due now."""

    async def go(client: AsyncConveyor) -> None:
        job = await client.update(await client.resolve_job_id(job_id), run_at=client.clock.now())
        emit(as_json, job_dict(job, now=client.clock.now()), f"job {job.id} is due now")

    run(ctx, go)
