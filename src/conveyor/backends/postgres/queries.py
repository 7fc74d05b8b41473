"""All SQL of the PostgreSQL backend, named after the Backend method it serves.

Templates: ``{jobs}``, ``{workers}``, ``{schedules}``, ``{leases}`` and ``{migrations}`` are replaced
by schema-qualified, quoted table names (``render``), so every query works on any
connection whatever its ``search_path`` (a caller's connection for transactional
enqueue included). Parameters use psycopg's ``%s`` placeholders. Pure: no I/O.
"""

from __future__ import annotations

import re

from conveyor.core.job import JOB_FIELDS
from conveyor.core.lifecycle import ERRORS_KEPT

# Column order == conveyor.core.job.Job field order, so a row builds a Job positionally.
JOB_COLUMNS = JOB_FIELDS
JSON_COLUMNS = frozenset({"payload", "result", "metadata", "errors"})
# Array types the columns travel in when a batch is sent as unnest(...) arrays; JSON goes
# as text and is cast once on the server.
_ARRAY_TYPES = {
    "id": "text[]",
    "topic": "text[]",
    "payload": "text[]",
    "status": "text[]",
    "priority": "int4[]",
    "run_at": "timestamptz[]",
    "attempts": "int4[]",
    "max_retries": "int4[]",
    "retry_delay": "float8[]",
    "backoff": "text[]",
    "timeout": "float8[]",
    "last_error": "text[]",
    "result": "text[]",
    "metadata": "text[]",
    "unique_key": "text[]",
    "schedule": "text[]",
    "created_at": "timestamptz[]",
    "updated_at": "timestamptz[]",
    "started_at": "timestamptz[]",
    "finished_at": "timestamptz[]",
    "locked_by": "text[]",
    "locked_until": "timestamptz[]",
    "cancel_requested": "bool[]",
    "errors": "text[]",
    "snoozes": "int4[]",
    "max_snoozes": "int4[]",
}


def _cols(prefix: str = "") -> str:
    return ", ".join(prefix + c for c in JOB_COLUMNS)


COLS = _cols()
J_COLS = _cols("j.")
_ACTIVE = "status IN ('pending', 'processing')"
# Unique keys are scoped per topic (migration 0005).
_UNIQUE_TARGET = "(topic, unique_key) WHERE unique_key IS NOT NULL AND " + _ACTIVE
# (topic, unique_key) pairs given as two parallel text arrays.
_KEY_PAIRS = "(topic, unique_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# A positional (%s) or named (%(name)s) placeholder.
_PLACEHOLDER = re.compile(r"%(\([a-z_]+\))?s")


def render(template: str, schema: str) -> str:
    """Fill a query template with the tables of ``schema``. Parameters are sent in
    binary (``%b``): arrays of timestamps and JSON dump many times faster than as text."""
    s = quote_ident(schema)
    return _PLACEHOLDER.sub(r"%\1b", template).format(
        jobs=f"{s}.jobs",
        workers=f"{s}.workers",
        schedules=f"{s}.schedules",
        leases=f"{s}.leases",
        migrations=f"{s}.conveyor_migrations",
        schema=s,
    )


# -- migrations ----------------------------------------------------------------------

# Two-key advisory lock: (constant, hash of the schema name) so that migrations of
# different schemas do not wait for each other.
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(1668247142, hashtext(%s))"
MIGRATE_CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"
MIGRATE_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {migrations} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
MIGRATE_APPLIED = "SELECT version FROM {migrations}"
MIGRATE_SET_PATH = "SET LOCAL search_path TO {schema}"
MIGRATE_RECORD = "INSERT INTO {migrations} (version, name) VALUES (%s, %s)"

PING = "SELECT 1"

# -- jobs ----------------------------------------------------------------------------


# One statement, so all or nothing. Rows are inserted in input order, so the first job
# of a batch holding a unique_key wins against later ones (ON CONFLICT DO NOTHING sees
# rows inserted earlier by the same command). Returns the ids actually inserted and the
# active jobs that already hold the batch's unique keys (as of the statement's snapshot).
# Any job record goes: every column travels (one array per column, unnest).
ENQUEUE_JOBS = (
    "WITH ins AS (INSERT INTO {jobs} ("
    + COLS
    + ") SELECT id, topic, payload::json, status, priority, run_at, attempts, max_retries, retry_delay,"
    " backoff, timeout, last_error, result::json, metadata::json, unique_key, schedule,"
    " created_at, updated_at, started_at, finished_at, locked_by, locked_until, cancel_requested,"
    " errors::json, snoozes, max_snoozes"
    " FROM unnest("
    + ", ".join(f"%s::{_ARRAY_TYPES[c]}" for c in JOB_COLUMNS)
    + ") WITH ORDINALITY AS i("
    + COLS
    + ", ord) ORDER BY ord ON CONFLICT "
    + _UNIQUE_TARGET
    + " DO NOTHING RETURNING id) SELECT (SELECT array_agg(id) FROM ins), "
    + _cols("e.")
    + " FROM (SELECT 1) AS one LEFT JOIN (SELECT "
    + COLS
    + " FROM {jobs} WHERE "
    + _KEY_PAIRS
    + " AND "
    + _ACTIVE
    + ") AS e ON true"
)

# The common case, new jobs without unique keys: only the columns a new job sets travel
# (the rest are literals), nothing comes back, and the job.scheduled events go out with
# pg_notify in the same statement (one round trip; delivered on commit, never for a
# rolled-back job). One job as plain values: psycopg dumps those several times faster
# than one-element arrays.
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
_NEW_INSERT = "INSERT INTO {jobs} (" + ", ".join(NEW_JOB_COLUMNS) + ", status, attempts, updated_at, cancel_requested) "
_NEW_VALUES = (
    "VALUES ("
    + ", ".join("%s::text::json" if c in JSON_COLUMNS else f"%s::{_ARRAY_TYPES[c][:-2]}" for c in NEW_JOB_COLUMNS)
    + ", 'pending', 0, %s::timestamptz, false)"
)
_NEW_UNNEST = (
    "SELECT id, topic, payload::json, priority, run_at, max_retries, retry_delay, backoff, timeout,"
    " metadata::json, schedule, created_at, max_snoozes, 'pending', 0, created_at, false FROM unnest("
    + ", ".join(f"%s::{_ARRAY_TYPES[c]}" for c in NEW_JOB_COLUMNS)
    + ") WITH ORDINALITY AS i("
    + ", ".join(NEW_JOB_COLUMNS)
    + ", ord) ORDER BY ord"
)
ENQUEUE_NEW_JOB = _NEW_INSERT + _NEW_VALUES
ENQUEUE_NEW_JOB_NOTIFY = "WITH ins AS (" + ENQUEUE_NEW_JOB + ") SELECT pg_notify(%s, %s)"
ENQUEUE_NEW_JOBS = _NEW_INSERT + _NEW_UNNEST
ENQUEUE_NEW_JOBS_NOTIFY = (
    "WITH ins AS (" + ENQUEUE_NEW_JOBS + ") SELECT count(pg_notify(%s, p)) FROM unnest(%s::text[]) AS p"
)

# Large batches of new jobs: binary COPY, the cheapest way into a table for the server
# and, with psycopg's C row writer, for the client. JSON travels as text (json's binary
# wire format is its text). The events follow in the same transaction.
COPY_NEW_JOB_COLUMNS = (*NEW_JOB_COLUMNS, "status", "updated_at")
COPY_NEW_JOB_TYPES = ["text" if c in JSON_COLUMNS else _ARRAY_TYPES[c][:-2] for c in NEW_JOB_COLUMNS] + [
    "text",
    "timestamptz",
]
COPY_NEW_JOBS = "COPY {jobs} (" + ", ".join(COPY_NEW_JOB_COLUMNS) + ") FROM STDIN (FORMAT BINARY)"
NOTIFY_EVENTS = "SELECT count(pg_notify(%s, p)) FROM unnest(%s::text[]) AS p"

# After a race with a concurrent enqueue that committed after ENQUEUE_JOBS's snapshot:
# the current holder of each key (active first, then the newest).
ENQUEUE_FIND_UNIQUE = (
    "SELECT DISTINCT ON (topic, unique_key) "
    + COLS
    + " FROM {jobs} WHERE "
    + _KEY_PAIRS
    + " ORDER BY topic, unique_key, ("
    + _ACTIVE
    + ") DESC, id DESC"
)

GET_JOB = "SELECT " + COLS + " FROM {jobs} WHERE id = %s"


# list_jobs: the total, whether a matching job lies behind the cursor, and one page in
# one round trip (a page past the end still returns one row carrying the total). The
# total comes from the counters (count_jobs, migration 0004); the page and the look
# behind the cursor walk an index in id order (migration 0004 says which), so the first
# page and any keyset page cost the same at any depth. One statement per shape
# (filters, cursor) so that each is planned for its index.
_STATUSES = "ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']"


def _list_source(*, by_status: bool, by_topic: bool, condition: str, order: str, limit: str) -> str:
    """The matching jobs meeting ``condition`` on id, in ``order``, at most ``limit``: a
    topic without a status merges one (topic, status, id) range per status."""
    if by_topic and not by_status:
        return (
            "(SELECT m.* FROM unnest("
            + _STATUSES
            + ") AS s(status) CROSS JOIN LATERAL (SELECT "
            + COLS
            + " FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status AND "
            + condition
            + " ORDER BY j.id "
            + order
            + " LIMIT "
            + limit
            + ") AS m ORDER BY m.id "
            + order
            + " LIMIT "
            + limit
            + ")"
        )
    where = ["j.status = %(status)s"] if by_status else []
    if by_topic:
        where.append("j.topic = %(topic)s")
    where.append(condition)
    return (
        "(SELECT "
        + COLS
        + " FROM {jobs} AS j WHERE "
        + " AND ".join(where)
        + " ORDER BY j.id "
        + order
        + " LIMIT "
        + limit
        + ")"
    )


def list_jobs(*, by_status: bool, by_topic: bool, cursor: str | None) -> str:
    """LIST_JOBS for the given filters and cursor (None, "after" or "before"). The page
    is read in walking order: newest first, or oldest first above a ``before`` cursor.
    Named params: status, topic (NULL when not filtered), limit (the page size + 1),
    offset (without a cursor), cursor (with one)."""
    total = "{schema}.count_jobs(%(status)s, %(topic)s)"
    if cursor is None:
        page = _list_source(
            by_status=by_status, by_topic=by_topic, condition="true", order="DESC", limit="%(limit)s + %(offset)s"
        )
        beyond = "false"
        tail = " OFFSET %(offset)s"
    else:
        further, back, order = ("<", ">=", "DESC") if cursor == "after" else (">", "<=", "ASC")
        page = _list_source(
            by_status=by_status,
            by_topic=by_topic,
            condition="j.id " + further + " %(cursor)s",
            order=order,
            limit="%(limit)s",
        )
        behind = _list_source(
            by_status=by_status,
            by_topic=by_topic,
            condition="j.id " + back + " %(cursor)s",
            order="ASC" if order == "DESC" else "DESC",
            limit="1",
        )
        beyond = "EXISTS " + behind
        tail = ""
    return (
        "SELECT t.total, t.beyond, "
        + _cols("p.")
        + " FROM (SELECT "
        + total
        + " AS total, "
        + beyond
        + " AS beyond) AS t LEFT JOIN LATERAL (SELECT * FROM "
        + page
        + " AS w LIMIT %(limit)s"
        + tail
        + ") AS p ON true"
    )


# Exact counts from the maintained counters (migration 0002), compacted on the way.
STATS = "SELECT topic, status, n FROM {schema}.current_job_counts()"

# The maintenance pass folds the counters' deltas (stats() does too).
COMPACT_COUNTS = "SELECT {schema}.compact_job_counts()"


# A manual operation (conveyor.core.operation.JobOp), the rules of lifecycle.apply driven
# by the op's fields; a NULL field keeps the column. Returns the updated row (flag true)
# or, when the status is not allowed, the current row (flag false): not-found and
# conflict told apart in one statement.
APPLY_JOB = (
    """
WITH upd AS (UPDATE {jobs} SET
    status = coalesce(%(status)b::text, status),
    finished_at = CASE WHEN %(status)b::text IN ('completed', 'failed', 'cancelled') THEN %(now)b::timestamptz
                       WHEN %(status)b::text IS NOT NULL THEN NULL ELSE finished_at END,
    result = CASE WHEN %(status)b::text = 'completed' THEN %(result)b::text::json
                  WHEN %(restart)b::bool THEN NULL ELSE result END,
    attempts = CASE WHEN %(restart)b::bool THEN 0 ELSE attempts END,
    snoozes = CASE WHEN %(restart)b::bool THEN 0 ELSE snoozes END,
    started_at = CASE WHEN %(restart)b::bool THEN NULL ELSE started_at END,
    run_at = coalesce(%(run_at)b::timestamptz, run_at),
    payload = CASE WHEN %(set_payload)b::bool THEN %(payload)b::text::json ELSE payload END,
    priority = coalesce(%(priority)b::int4, priority),
    max_retries = coalesce(%(max_retries)b::int4, max_retries),
    metadata = coalesce(%(metadata)b::text::json, metadata),
    last_error = coalesce(%(last_error)b::text, last_error),
    cancel_requested = coalesce(%(cancel_requested)b::bool, cancel_requested),
    locked_by = CASE WHEN coalesce(%(status)b::text, status) = 'processing' THEN locked_by END,
    locked_until = CASE WHEN coalesce(%(status)b::text, status) = 'processing' THEN locked_until END,
    updated_at = %(now)b::timestamptz
  WHERE id = %(id)b::text AND status = ANY(%(allowed)b::text[])
  RETURNING """
    + COLS
    + ") SELECT true, "
    + COLS
    + " FROM upd UNION ALL SELECT false, "
    + COLS
    + " FROM {jobs} WHERE id = %(id)b::text AND NOT EXISTS (SELECT 1 FROM upd)"
)


# Who holds a unique_key (scoped per topic) when an operation would make a second
# active job with it.
APPLY_UNIQUE_HOLDER = (
    "SELECT id FROM {jobs} WHERE topic = %s AND unique_key = %s AND " + _ACTIVE + " AND id <> %s LIMIT 1"
)

DELETE_JOB = (
    "WITH del AS (DELETE FROM {jobs} WHERE id = %s AND status = ANY(%s::text[]) RETURNING "
    + COLS
    + ") SELECT true, "
    + COLS
    + " FROM del UNION ALL SELECT false, "
    + COLS
    + " FROM {jobs} WHERE id = %s AND NOT EXISTS (SELECT 1 FROM del)"
)

# -- the worker's side ---------------------------------------------------------------

# Claim up to LIMIT due jobs in claim order and flip them to processing; the earliest
# run_at of the pending jobs of some topics. Both are functions of migration 0002, where
# their plans (index seeks per (topic, priority) group, never a scan or sort of the
# backlog) are explained. Params: topics, now, limit, worker_id, locked_until / topics.
CLAIM_JOBS = "SELECT " + COLS + " FROM {schema}.claim_jobs(%s, %s, %s, %s, %s)"
NEXT_RUN_AT = "SELECT {schema}.next_run_at(%s)"

HEARTBEAT = """
UPDATE {jobs} SET locked_until = %s
WHERE id = ANY(%s::text[]) AND status = 'processing' AND locked_by = %s
RETURNING id, cancel_requested"""

# Apply a batch of attempt outcomes, each fenced on (status, locked_by, attempts): the
# rules of conveyor.core.lifecycle.apply. ``eff`` is the status actually applied: a
# retry of a job whose cancellation was requested ends cancelled instead. A failure's
# ``errors`` entry (built by lifecycle.error_entry) is appended and the newest
# ERRORS_KEPT kept. FINISH_JOBS_ASYNC (CONVEYOR_PG_ASYNC_ACK, the default) commits
# without waiting for the WAL flush (synchronous_commit off for this transaction only):
# a PostgreSQL crash can lose the last fraction of a second of acknowledgements, whose
# jobs are then still processing under their old lease and run again once it expires.
# A re-run, never a lost job: claims and enqueues still commit durably. FINISH_JOBS
# keeps the server's setting (docs/postgres.md "Durability").
_EFF = "(CASE WHEN o.status = 'pending' AND j.cancel_requested THEN 'cancelled' ELSE o.status END)"
_ERRORS = (
    "CASE WHEN o.entry IS NULL THEN j.errors ELSE (SELECT json_agg(e.v ORDER BY e.n) FROM ("
    "SELECT v, n FROM json_array_elements(j.errors) WITH ORDINALITY AS a(v, n) "
    "UNION ALL SELECT o.entry::json, json_array_length(j.errors) + 1) AS e(v, n) "
    f"WHERE e.n > json_array_length(j.errors) + 1 - {ERRORS_KEPT}) END"
)
FINISH_JOBS = (
    (
        """
UPDATE {jobs} AS j
SET status = EFF,
    run_at = CASE WHEN EFF = 'pending' THEN coalesce(o.run_at, %s) ELSE j.run_at END,
    result = CASE WHEN EFF = 'completed' THEN o.result::json ELSE j.result END,
    last_error = coalesce(o.last_error, j.last_error),
    attempts = CASE WHEN o.refund THEN j.attempts - 1 ELSE j.attempts END,
    snoozes = CASE WHEN o.snooze THEN j.snoozes + 1 ELSE j.snoozes END,
    errors = ERRORS,
    finished_at = CASE WHEN EFF IN ('completed', 'failed', 'cancelled') THEN %s END,
    cancel_requested = CASE WHEN EFF = 'pending' THEN false ELSE j.cancel_requested END,
    locked_by = NULL,
    locked_until = NULL,
    updated_at = %s
FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::bool[],
            %s::bool[], %s::text[])
     AS o(id, locked_by, attempts, status, run_at, result, last_error, refund, snooze, entry)ASYNC_COMMIT
WHERE j.id = o.id AND j.status = 'processing' AND j.locked_by = o.locked_by AND j.attempts = o.attempts
RETURNING """
        + J_COLS
    )
    .replace("EFF", _EFF)
    .replace("ERRORS", _ERRORS)
)
FINISH_JOBS_ASYNC = FINISH_JOBS.replace(
    "ASYNC_COMMIT", ",\n     (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
)
FINISH_JOBS = FINISH_JOBS.replace("ASYNC_COMMIT", "")

# The maintenance pass: expired leases and finished jobs past the retention, oldest
# first, each an in-order walk of its partial index (functions of migration 0002).
# Params: now, limit / finished_before, limit.
EXPIRED_JOBS = "SELECT " + COLS + " FROM {schema}.expired_jobs(%s, %s)"
PRUNE_JOBS = "SELECT {schema}.prune_jobs(%s, %s)"

# count_finished: jobs finished since a time, per bucket (seconds, on the epoch) and
# status, through the partial index of finished jobs by finished_at (jobs_finished_idx).
COUNT_FINISHED = (
    "SELECT floor(extract(epoch FROM finished_at) / %(bucket)s)::bigint AS bucket, status, count(*) "
    "FROM {jobs} WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= %(since)s "
    "GROUP BY 1, 2"
)

# -- events --------------------------------------------------------------------------

PUBLISH_EVENTS = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p"

# -- live workers --------------------------------------------------------------------

WORKER_COLUMNS = "id, host, pid, topics, concurrency, active_jobs, started_at, last_heartbeat"

SAVE_WORKER = """
INSERT INTO {workers} (id, host, pid, topics, concurrency, active_jobs, started_at, last_heartbeat)
VALUES (%s, %s, %s, %s::text[], %s, %s::text[], %s, %s)
ON CONFLICT (id) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, topics = EXCLUDED.topics, concurrency = EXCLUDED.concurrency,
    active_jobs = EXCLUDED.active_jobs, started_at = EXCLUDED.started_at, last_heartbeat = EXCLUDED.last_heartbeat"""

REMOVE_WORKER = "DELETE FROM {workers} WHERE id = %s"

# Entries older than alive_since are deleted on the way (the CTE); the rest returned.
LIST_WORKERS = (
    "WITH gone AS (DELETE FROM {workers} WHERE last_heartbeat < %s RETURNING id) SELECT "
    + WORKER_COLUMNS
    + " FROM {workers} WHERE NOT (last_heartbeat IS NOT NULL AND last_heartbeat < %s) ORDER BY id"
)

# -- the maintenance leader ----------------------------------------------------------

# Take the lease when it is free, expired or already ours; a row comes back only then.
# Parameters: holder, expires_at, now.
ACQUIRE_LEADERSHIP = """
INSERT INTO {leases} AS l (name, holder, expires_at) VALUES ('maintenance', %s, %s)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= %s
RETURNING holder"""
RELEASE_LEADERSHIP = "DELETE FROM {leases} WHERE name = 'maintenance' AND holder = %s"
CURRENT_LEADER = "SELECT holder FROM {leases} WHERE name = 'maintenance' AND expires_at > %s"

# -- schedules -----------------------------------------------------------------------

SCHEDULE_COLUMNS = (
    "name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at, created_at, updated_at"
)

# Upsert by name; an existing schedule keeps its created_at and the newer last_fired_at
# (greatest() ignores NULL).
SAVE_SCHEDULE = (
    """
INSERT INTO {schedules} (name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at,
                         created_at, updated_at)
VALUES (%s, %s, %s, %s, %s::json, %s::json, %s, %s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron, topic = EXCLUDED.topic, timezone = EXCLUDED.timezone, payload = EXCLUDED.payload,
    options = EXCLUDED.options, enabled = EXCLUDED.enabled,
    last_fired_at = greatest(schedules.last_fired_at, EXCLUDED.last_fired_at),
    next_run_at = EXCLUDED.next_run_at, created_at = schedules.created_at, updated_at = EXCLUDED.updated_at
RETURNING """
    + SCHEDULE_COLUMNS
)

ADD_SCHEDULE = (
    """
INSERT INTO {schedules} (name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at,
                         created_at, updated_at)
VALUES (%s, %s, %s, %s, %s::json, %s::json, %s, %s, %s, %s, %s)
ON CONFLICT (name) DO NOTHING
RETURNING """
    + SCHEDULE_COLUMNS
)
GET_SCHEDULE = "SELECT " + SCHEDULE_COLUMNS + " FROM {schedules} WHERE name = %s"
LIST_SCHEDULES = "SELECT " + SCHEDULE_COLUMNS + " FROM {schedules} ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM {schedules} WHERE name = %s RETURNING name"
SET_SCHEDULE_ENABLED = (
    "UPDATE {schedules} SET enabled = %s, next_run_at = %s WHERE name = %s RETURNING " + SCHEDULE_COLUMNS
)

# Exactly-once firing in one statement: the conditional UPDATE takes the schedule's row
# lock, so of several racing schedulers one updates and the others (re-checking the
# condition on the updated row) match nothing and insert nothing. Returns one row:
# whether the schedule fired, and the inserted job (NULLs when its unique_key was held).
FIRE_SCHEDULE = (
    """
WITH s AS (
    UPDATE {schedules} SET last_fired_at = %s, next_run_at = %s
    WHERE name = %s AND enabled AND (last_fired_at IS NULL OR last_fired_at < %s)
    RETURNING name
), ins AS (
    INSERT INTO {jobs} ("""
    + COLS
    + """)
    SELECT """
    + ", ".join("%s::json" if c in JSON_COLUMNS else f"%s::{_ARRAY_TYPES[c][:-2]}" for c in JOB_COLUMNS)
    + """
    FROM s
    ON CONFLICT """
    + _UNIQUE_TARGET
    + """ DO NOTHING
    RETURNING """
    + COLS
    + """
)
SELECT (SELECT count(*) FROM s), """
    + _cols("ins.")
    + """ FROM (SELECT 1) AS one LEFT JOIN ins ON true"""
)
