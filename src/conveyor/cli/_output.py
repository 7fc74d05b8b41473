"""Rendering for the CLI: the ``--json`` option, JSON with it, short tables and
summaries otherwise.

Pure formatting: no store access, no environment reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

from conveyor.core.duration import format_duration
from conveyor.core.job import Job, JobStatus
from conveyor.core.page import JobPage

if TYPE_CHECKING:
    from conveyor.finder import FoundJobs


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    # ``conveyor --json stats`` as ``conveyor stats --json``: the group keeps its flag in meta.
    return bool(value or ctx.meta.get(JSON_META_KEY, False))


JSON_META_KEY = "conveyor.json"
# Every command that prints a result takes the same flag, with the same help text.
json_option = click.option("--json", "as_json", is_flag=True, callback=_json_flag, help="Print machine-readable JSON.")


def job_dict(job: Job, *, now: datetime | None = None) -> dict[str, Any]:
    """A job as JSON-ready data, with ``next_run_in`` for pending jobs (as the HTTP API)."""
    data = job.to_dict()
    if job.status == JobStatus.PENDING:
        now = now or datetime.now(UTC)
        data["next_run_in"] = format_duration((job.run_at - now).total_seconds())
    return data


def emit_json(data: Any, *, pretty: bool = False) -> None:
    """Write ``data`` as JSON on stdout: one line, or indented when ``pretty``."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    click.echo(orjson.dumps(data, option=option | orjson.OPT_NON_STR_KEYS, default=str).decode())


def emit(as_json: bool, data: Any, text: str) -> None:
    """A command's result: ``data`` as one JSON line with ``--json``, else ``text``."""
    if as_json:
        emit_json(data)
    else:
        click.echo(text)


def _short(value: Any, width: int = 60) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def job_detail(job: Job) -> str:
    """A job as aligned ``field: value`` lines."""
    data = job_dict(job)
    rows: list[tuple[str, str]] = []
    for key in (
        "id",
        "topic",
        "status",
        "priority",
        "run_at",
        "next_run_in",
        "attempts",
        "max_retries",
        "retry_delay",
        "backoff",
        "timeout",
        "unique_key",
        "schedule",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "locked_by",
        "locked_until",
    ):
        if key not in data:
            continue
        value = data[key]
        if key == "attempts":
            value = f"{job.attempts} of {1 + job.max_retries}"
        elif key in ("retry_delay", "timeout") and value is not None:
            value = format_duration(float(value))
        rows.append((key, "-" if value is None else str(value)))
    if job.snoozes:
        rows.append(("snoozes", f"{job.snoozes} of {job.max_snoozes}"))
    if job.cancel_requested:
        rows.append(("cancel_requested", "yes"))
    rows.append(("payload", _short(job.payload, 200)))
    if job.metadata:
        rows.append(("metadata", _short(job.metadata, 200)))
    if job.result is not None:
        rows.append(("result", _short(job.result, 200)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k + ':':<{width + 1}} {v}" for k, v in rows]
    if job.last_error:
        lines.append("last_error:")
        lines.extend("  " + line for line in job.last_error.rstrip().splitlines())
    if job.errors:
        lines.append(f"errors ({len(job.errors)} failed attempts kept, oldest first):")
        for entry in job.errors:
            first = (entry.get("error") or "").strip().splitlines()
            lines.append(
                f"  attempt {entry.get('attempt')} at {entry.get('at')} on {entry.get('worker')}: {first[0] if first else ''}"
            )
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned text table with a header row."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def job_table(jobs: Sequence[Job]) -> str:
    rows = [
        (
            j.id,
            j.topic,
            j.status.value + (" (cancel requested)" if j.cancel_requested else ""),
            str(j.priority),
            f"{j.attempts}/{1 + j.max_retries}",
            _time(j.run_at),
            _short(j.last_error, 40) if j.last_error else "",
        )
        for j in jobs
    ]
    return table(("ID", "TOPIC", "STATUS", "PRIORITY", "ATTEMPTS", "RUN AT", "LAST ERROR"), rows)


def count_text(total: int, exact: bool) -> str:
    """A total as shown to people: an estimate reads "about N"."""
    return str(total) if exact else f"about {total}"


def search_summary(found: FoundJobs) -> str:
    """One line under a search's job table: matches shown, the total, the jobs read and
    where to go on from."""
    line = (
        f"{len(found.items)} found of {count_text(found.total, found.total_exact)} matching; {found.scanned} jobs read"
    )
    if not found.total_exact:
        line += " (--exact-total to count every match)"
    if found.next:
        line += f"; older: --after {found.next}"
    return line


def page_summary(page: JobPage) -> str:
    """One line under a job table: which jobs these are, and the cursors of the pages
    around them (for ``--after``/``--before``)."""
    count = len(page.items)
    total = count_text(page.total, page.total_exact)
    if count == 0:
        return f"no jobs shown ({total} in total)" if page.total else "no jobs"
    # A keyset page deep in the listing does not know its position; any other page does.
    keyset = page.offset == 0 and page.prev is not None
    line = (
        f"{count} job{'s' if count != 1 else ''} of {total}"
        if keyset
        else f"jobs {page.offset + 1}-{page.offset + count} of {total}"
    )
    if page.next:
        line += f"; older: --after {page.next}"
    if page.prev:
        line += f"; newer: --before {page.prev}"
    return line


def stats_summary(stats: Mapping[str, Any]) -> str:
    by_status: Mapping[str, int] = stats.get("by_status", {})
    lines = [
        "status      jobs",
        *(f"{status:<11} {by_status.get(status, 0)}" for status in (s.value for s in JobStatus)),
        f"{'total':<11} {stats.get('total', 0)}",
        "",
        f"live workers: {stats.get('workers', 0)}",
    ]
    by_topic: Mapping[str, Mapping[str, int]] = stats.get("by_topic", {})
    if by_topic:
        statuses = [s.value for s in JobStatus]
        rows = [(topic, *(str(counts.get(s, 0)) for s in statuses)) for topic, counts in by_topic.items()]
        lines += ["", table(("TOPIC", *(s.upper() for s in statuses)), rows)]
    return "\n".join(lines)
