"""The ``conveyor`` entry point (README.md): ``worker``, ``enqueue``, ``jobs``, ``stats``,
``migrate``; ``serve`` and ``schedules`` come from their own modules when present.

``--url`` wins over the app's own URL, which wins over ``CONVEYOR_URL``. Every
command that opens the store validates the ``CONVEYOR_*`` environment first. Errors
are one ``error: ...`` line on stderr; exit 0 ok, 1 failure, 2 usage.
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Callable
from typing import Any

import click

from conveyor import stop_signals
from conveyor.bulk import STATUS_ALIASES, BulkAction
from conveyor.cli._common import (
    LOGGING_COMMANDS,
    URL_HELP,
    CliError,
    CliState,
    ErrorReportingGroup,
    error_message,
    given,
    log_format_requested,
    parse_json,
    redact_url,
    run,
)
from conveyor.cli._output import (
    JSON_META_KEY,
    emit,
    emit_json,
    job_detail,
    job_dict,
    job_table,
    json_option,
    page_summary,
    search_summary,
    stats_summary,
)
from conveyor.cli.job_edit import jobs_run_now, jobs_update
from conveyor.cli.worker import worker, workers
from conveyor.client import AsyncConveyor
from conveyor.core.errors import ValidationError
from conveyor.core.job import JobStatus
from conveyor.core.query import PENDING_VIEWS, PendingView
from conveyor.finder import DEFAULT_SCAN
from conveyor.logs import configure_logging

logger = logging.getLogger("conveyor")


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", default=None, help=URL_HELP + " Also accepted after the command.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (as each command's --json).")
@click.version_option(package_name="conveyor", prog_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """conveyor: a persistent job queue.

    --url and --json work before or after the command: conveyor --url URL migrate,
    conveyor migrate --url URL.
    """
    if ctx.invoked_subcommand in LOGGING_COMMANDS:
        # Their log format before anything is validated: in JSON mode an error in their
        # options, URL or settings is a JSON line too, as every line they write.
        configure_logging(fmt="json" if log_format_requested() == "json" else "text")
    if url is not None and not url.strip():
        raise click.BadParameter("must not be empty", param_hint="'--url'")
    ctx.meta[JSON_META_KEY] = as_json
    ctx.obj = CliState(url=url, json=as_json)


# -- worker ------------------------------------------------------------------------------


# -- enqueue -----------------------------------------------------------------------------


@cli.command()
@click.argument("topic")
@click.argument("payload_json", required=False, metavar="[PAYLOAD_JSON]")
@click.option("--delay", metavar="DURATION", help="Run after this long, e.g. 30s, 10m, 1h30m.")
@click.option("--at", "--run-at", "run_at", metavar="ISO", help="Run at this ISO 8601 time (naive means UTC).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--max-retries", type=int, help="Retries after the first attempt [CONVEYOR_MAX_RETRIES].")
@click.option("--retry-delay", metavar="DURATION", help="Base of the backoff (default 60s).")
@click.option("--backoff", metavar="STRATEGY", help="none, constant, linear, exponential or quadratic.")
@click.option("--timeout", metavar="DURATION", help="Fail an attempt that runs longer than this.")
@click.option("--metadata", "metadata_json", metavar="JSON", help="A JSON object stored with the job.")
@click.option("--unique-key", metavar="KEY", help="Return the active job with this key instead of a new one.")
@click.option("--max-snoozes", type=int, help="Snoozes before the job fails (default 100).")
@json_option
@click.pass_context
def enqueue(
    ctx: click.Context,
    topic: str,
    payload_json: str | None,
    delay: str | None,
    run_at: str | None,
    priority: int | None,
    max_retries: int | None,
    retry_delay: str | None,
    backoff: str | None,
    timeout: str | None,
    metadata_json: str | None,
    unique_key: str | None,
    max_snoozes: int | None,
    as_json: bool,
) -> None:
    """Enqueue a job on TOPIC with an optional JSON payload ('-' reads stdin); print the job
    as one line of JSON. With --unique-key held by an active job, that job is returned and
    a note on stderr says so."""
    # '-' reads stdin; NaN and Infinity are not JSON, so they are refused.
    payload = None if payload_json is None else parse_json(payload_json, "payload")
    metadata = None if metadata_json is None else parse_json(metadata_json, "metadata")
    options = given(
        delay=delay,
        run_at=run_at,
        priority=priority,
        max_retries=max_retries,
        retry_delay=retry_delay,
        backoff=backoff,
        timeout=timeout,
        metadata=metadata,
        unique_key=unique_key,
        max_snoozes=max_snoozes,
    )

    async def go(client: AsyncConveyor) -> tuple[dict[str, Any], bool]:
        built = client.build_job(topic, payload, **options)
        stored = (await client.insert([built]))[0]
        return job_dict(stored, now=client.clock.now()), stored.id != built.id

    data, existing = run(ctx, go)
    if existing:
        # Not an error (the key did its job), but never silent: no new job was made.
        click.echo(
            f"note: job {data['id']} ({data['status']}) already holds unique key {unique_key!r}: "
            "it was returned, no new job was enqueued",
            err=True,
        )
    # The job as JSON either way (SPEC; scripts parse it), on one line.
    emit_json(data)


# -- jobs --------------------------------------------------------------------------------


@cli.group()
def jobs() -> None:
    """List, inspect and manage jobs."""


# Status names the CLI accepts: the job states, and running/success (as the HTTP API).
STATUS_CHOICES = [*(s.value for s in JobStatus), *STATUS_ALIASES]
# The HTTP API's page size limit: one limit for both.
MAX_PAGE = 100


@jobs.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUS_CHOICES, case_sensitive=False),
    help="Only jobs of this status (running = processing, success = completed).",
)
@click.option("--topic", metavar="TOPIC")
@click.option("--limit", type=int, default=50, show_default=True, help="Page size, 1-100.")
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--after", metavar="ID", help="Jobs older than this job id (the previous page's next cursor).")
@click.option("--before", metavar="ID", help="Jobs newer than this job id (the previous page's prev cursor).")
@json_option
@click.pass_context
def jobs_list(
    ctx: click.Context,
    status: str | None,
    topic: str | None,
    limit: int,
    offset: int,
    after: str | None,
    before: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first, optionally filtered by status and topic. Page with
    --after/--before (constant time at any depth) or --offset."""

    async def go(client: AsyncConveyor) -> dict[str, Any]:
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be between 1 and {MAX_PAGE} (as the HTTP API's), got {limit}")
        state = None if status is None else STATUS_ALIASES.get(status.lower(), status.lower())
        page = await client.list(status=state, topic=topic, limit=limit, offset=offset, after=after, before=before)
        now = client.clock.now()
        data = page.to_dict()
        data["items"] = [job_dict(j, now=now) for j in page.items]
        if not as_json:
            if page.items:
                click.echo(job_table(page.items))
            click.echo(page_summary(page))
        return data

    data = run(ctx, go)
    if as_json:
        emit_json(data)


@jobs.command("search")
@click.option("--text", metavar="TEXT", help="Text in the payload (case-insensitive).")
@click.option("--id", "id_suffix", metavar="ID", help="A job id's end (at least 4 characters).")
@click.option("--view", type=click.Choice(PENDING_VIEWS), help="Pending jobs: due, scheduled or retrying.")
@click.option("--schedule", metavar="NAME", help="Jobs made by this schedule.")
@click.option("--status", type=click.Choice(STATUS_CHOICES, case_sensitive=False), help="Only jobs of this status.")
@click.option("--topic", metavar="TOPIC")
@click.option("--limit", type=int, default=50, show_default=True, help="Most jobs shown, 1-100.")
@click.option("--after", metavar="ID", help="Search jobs older than this id (the previous search's next).")
@click.option("--scan", type=int, default=DEFAULT_SCAN, show_default=True, help="Most jobs read.")
@click.option("--exact-total", is_flag=True, help="Count every match (reads every job of the status and topic).")
@json_option
@click.pass_context
def jobs_search(
    ctx: click.Context,
    text: str | None,
    id_suffix: str | None,
    view: PendingView | None,
    schedule: str | None,
    status: str | None,
    topic: str | None,
    limit: int,
    after: str | None,
    scan: int,
    exact_total: bool,
    as_json: bool,
) -> None:
    """Search jobs by payload text, id ending, pending view or schedule: a scan of at
    most --scan jobs, newest first; the total is an estimate ("about N") unless exact."""

    async def go(client: AsyncConveyor) -> dict[str, Any]:
        state = None if status is None else STATUS_ALIASES.get(status.lower(), status.lower())
        found = await client.find_jobs(
            status=state,
            topic=topic,
            view=view,
            schedule=schedule,
            id_suffix=id_suffix,
            text=text,
            limit=limit,
            after=after,
            scan=scan,
            exact_total=exact_total,
        )
        now = client.clock.now()
        data = found.to_dict()
        data["items"] = [job_dict(j, now=now) for j in found.items]
        if not as_json:
            if found.items:
                click.echo(job_table(found.items))
            click.echo(search_summary(found))
        return data

    data = run(ctx, go)
    if as_json:
        emit_json(data)


@jobs.command("get")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def jobs_get(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job (ID: a full id, or its end as the dashboard shows it)."""

    async def go(client: AsyncConveyor) -> None:
        job = await client.get(await client.resolve_job_id(job_id))
        emit(as_json, job_dict(job, now=client.clock.now()), job_detail(job))

    run(ctx, go)


def _target_options(fn: Callable[..., None]) -> Callable[..., None]:
    """ID, or ``--status S [--topic T]``: one job, or every matching job in batches."""
    fn = click.option("--topic", metavar="TOPIC", help="With --status: only jobs of this topic.")(fn)
    fn = click.option(
        "--status",
        type=click.Choice(STATUS_CHOICES, case_sensitive=False),
        help="Act on every job of this status server-side, in batches, and print the count.",
    )(fn)
    return click.argument("job_id", metavar="[ID]", required=False)(fn)


def _bulk_target(job_id: str | None, status: str | None, topic: str | None) -> bool:
    """True for a bulk operation; a usage error unless exactly one of ID and --status."""
    if job_id is not None and status is not None:
        raise click.UsageError("give a job ID or --status (with --topic), not both")
    if topic is not None and status is None:
        raise click.UsageError("--topic needs --status")
    if job_id is None and status is None:
        raise click.UsageError("give a job ID, or --status S [--topic T] for every matching job")
    return status is not None


def _run_bulk(ctx: click.Context, action: BulkAction, status: str, topic: str | None, as_json: bool) -> None:
    count = run(ctx, lambda client: client.bulk(action, status=status.lower(), topic=topic))
    done = {"requeue": "requeued", "cancel": "cancelled", "delete": "deleted"}[action]
    scope = f" of topic {topic}" if topic else ""
    text = f"{count} {status.lower()} job{'s' if count != 1 else ''}{scope} {done}"
    if action == "cancel" and status.lower() in ("processing", "running"):
        text = f"{count} running job{'s' if count != 1 else ''}{scope}: cancellation requested"
    emit(as_json, {"count": count, "action": action, "status": status.lower(), "topic": topic}, text)


def _transition_command(action: BulkAction, done: str, doc: str) -> click.Command:
    @click.command(action, help=doc)
    @_target_options
    @json_option
    @click.pass_context
    def command(ctx: click.Context, job_id: str | None, status: str | None, topic: str | None, as_json: bool) -> None:
        if _bulk_target(job_id, status, topic):
            assert status is not None
            _run_bulk(ctx, action, status, topic, as_json)
            return
        assert job_id is not None

        async def go(client: AsyncConveyor) -> None:
            job = await getattr(client, action)(await client.resolve_job_id(job_id))
            if job.status == JobStatus.PROCESSING and job.cancel_requested:
                text = f"job {job.id} is running: cancellation requested"
            else:
                text = f"job {job.id} {done}"
            emit(as_json, job_dict(job, now=client.clock.now()), text)

        run(ctx, go)

    return command


jobs_cancel = _transition_command(
    "cancel",
    "cancelled",
    "Cancel a pending job, or ask a running one to stop (it ends cancelled); "
    "with --status pending|processing [--topic T], every matching job.",
)
jobs_requeue = _transition_command(
    "requeue",
    "requeued",
    "Run a failed or cancelled job again now, with a fresh retry budget; "
    "with --status failed|cancelled [--topic T], every matching job.",
)
jobs.add_command(jobs_cancel)
jobs.add_command(jobs_requeue)
jobs_retry = copy.copy(jobs_requeue)
jobs_retry.name = "retry"
jobs_retry.help = "Alias of requeue."
jobs.add_command(jobs_retry)
jobs.add_command(jobs_update)
jobs.add_command(jobs_run_now)


@jobs.command("delete")
@_target_options
@json_option
@click.pass_context
def jobs_delete(ctx: click.Context, job_id: str | None, status: str | None, topic: str | None, as_json: bool) -> None:
    """Delete a job in any state but processing; with --status S [--topic T], every matching job."""
    if _bulk_target(job_id, status, topic):
        assert status is not None
        _run_bulk(ctx, "delete", status, topic, as_json)
        return
    assert job_id is not None

    async def go(client: AsyncConveyor) -> str:
        full = await client.resolve_job_id(job_id)
        await client.delete(full)
        return full

    deleted = run(ctx, go)
    emit(as_json, {"id": deleted, "deleted": True}, f"job {deleted} deleted")


# -- stats, migrate ----------------------------------------------------------------------


@cli.command()
@json_option
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Job counts per status and topic, and live workers."""
    data = run(ctx, lambda client: client.stats())
    emit(as_json, data, stats_summary(data))


@cli.command()
@json_option
@click.pass_context
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Apply pending schema migrations to the store."""

    async def go(client: AsyncConveyor) -> tuple[str, int]:
        return client.url, await client.migrate()

    url, applied = run(ctx, go)
    shown = redact_url(url)
    emit(
        as_json,
        {"url": shown, "applied": applied},
        f"{shown}: {applied} migration(s) applied" if applied else f"{shown}: up to date",
    )


# -- commands from other modules ---------------------------------------------------------


def _optional_command(module_name: str, attr: str) -> None:
    """Add ``conveyor.cli.<module>.<attr>`` if that module exists; if it exists but cannot
    be imported (e.g. an optional extra is missing), add a stub that says why."""
    qualified = f"conveyor.cli.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return
        reason = error_message(exc)
    except Exception as exc:
        reason = error_message(exc)
    else:
        command = getattr(module, attr, None)
        if isinstance(command, click.Command):
            cli.add_command(command, name=attr)
        return

    @click.command(attr, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        raise CliError(f"{attr} is unavailable: {reason}")

    unavailable.help = f"Unavailable here: {reason}"
    cli.add_command(unavailable)


cli.add_command(worker)
cli.add_command(workers)
_optional_command("serve", "serve")
_optional_command("schedules", "schedules")


def main() -> None:
    """Console-script entry point."""
    stop_signals.own_process()
    cli(prog_name="conveyor")


if __name__ == "__main__":
    main()
