"""The SQL of the PostgreSQL backend: the named queries of ``queries.sql``, loaded once
at import, and their rendering for a schema. Pure: no I/O besides reading that file.

A block starts with ``-- name: <name>``; the comment lines that follow say what the
query does and why, and the statement runs to the next block. See the head of
``queries.sql`` for the table and parameter conventions.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path

QUERIES_FILE = Path(__file__).with_name("queries.sql")

# The columns a COPY of new jobs sends, in the order of ``copy_new_jobs`` (COPY rows are
# positional by nature), and their types.
NEW_JOB_COLUMNS = (
    "id",
    "topic",
    "payload",
    "priority",
    "run_at",
    "max_retries",
    "retry_delay",
    "backoff",
    "timeout",
    "metadata",
    "schedule",
    "created_at",
    "max_snoozes",
)
# A new job's values (rows.new_job_values) in that order: one C call, where a generator
# over the names cost a COPY of 1,000 jobs ~0.4 ms more (~2 % of a bulk enqueue).
new_job_row = operator.itemgetter(*NEW_JOB_COLUMNS)
COPY_NEW_JOB_TYPES = [
    "text",
    "text",
    "text",
    "int4",
    "timestamptz",
    "int4",
    "float8",
    "text",
    "float8",
    "text",
    "text",
    "timestamptz",
    "int4",
    "text",  # status
    "timestamptz",  # updated_at
]

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """The named blocks of a ``.sql`` text: name → statement (comment lines dropped)."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{QUERIES_FILE.name}: query {name!r} is defined twice")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        sql = "\n".join(lines).strip()
        if not sql:
            raise ValueError(f"{QUERIES_FILE.name}: query {name!r} has no statement")
        queries[name] = sql
    return queries


QUERIES = parse(QUERIES_FILE.read_text(encoding="utf-8"))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# A positional (%s) or named (%(name)s) placeholder.
_PLACEHOLDER = re.compile(r"%(\([a-z_]+\))?s")


def render(template: str, schema: str) -> str:
    """A query (or any template in the same conventions) for the tables of ``schema``,
    its parameters sent in binary (``%b``)."""
    s = quote_ident(schema)
    return _PLACEHOLDER.sub(r"%\1b", template).format(
        jobs=f"{s}.jobs",
        workers=f"{s}.workers",
        schedules=f"{s}.schedules",
        leases=f"{s}.leases",
        migrations=f"{s}.conveyor_migrations",
        schema=s,
    )


def list_jobs(*, by_status: bool, by_topic: bool, cursor: str | None) -> str:
    """The name of the listing query for these filters and cursor (None, "after" or
    "before")."""
    name = "list_jobs" + ("_status" if by_status else "") + ("_topic" if by_topic else "")
    return name + ("" if cursor is None else "_" + cursor)
