"""Every SQL statement of the SQLite backend, named after the Backend method it serves.

Imports only ``conveyor.core``. Statements that depend on the shape of the input (how many topics,
which fields change) are built by the small functions at the end; their text is
stable per shape, so sqlite3's statement cache reuses them.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.core.job import JOB_FIELDS

# Column order == Job field order, so a row builds a Job positionally.
JOB_COLUMNS = JOB_FIELDS
_COLS = ", ".join(JOB_COLUMNS)
_MARKS = ", ".join("?" for _ in JOB_COLUMNS)

# -- connection set-up and migrations ----------------------------------------------------

SET_WAL = "PRAGMA journal_mode = WAL"
CONNECTION_PRAGMAS = (
    "PRAGMA synchronous = {synchronous}",
    "PRAGMA busy_timeout = {busy_timeout_ms}",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -16000",
    "PRAGMA journal_size_limit = 67108864",
    "PRAGMA foreign_keys = OFF",
)
DATA_VERSION = "PRAGMA data_version"
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)"""
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"

PING = "SELECT 1"

# -- jobs ----------------------------------------------------------------------------------

ENQUEUE_JOB = f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS})"
# The conflict target is the partial unique index jobs_unique_active: a second active
# job with the key is skipped (rowcount 0) and the holder is read back instead.
ENQUEUE_UNIQUE_JOB = (
    f"INSERT INTO jobs ({_COLS}) VALUES ({_MARKS}) "
    "ON CONFLICT (unique_key) WHERE status IN ('pending', 'processing') AND unique_key IS NOT NULL DO NOTHING"
)
GET_ACTIVE_BY_UNIQUE_KEY = (
    f"SELECT {_COLS} FROM jobs WHERE unique_key = ? AND unique_key IS NOT NULL AND status IN ('pending', 'processing')"
)

GET_JOB = f"SELECT {_COLS} FROM jobs WHERE id = ?"
GET_STATUS = "SELECT status FROM jobs WHERE id = ?"

STATS = "SELECT status, topic, count(*) FROM jobs GROUP BY status, topic"

DELETE_JOB_RETURNING = "DELETE FROM jobs WHERE id = ? AND status IN ({allowed}) RETURNING " + _COLS

HEARTBEAT = (
    "UPDATE jobs SET locked_until = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'processing' AND locked_by = ? "
    "RETURNING id, cancel_requested"
)

# finish() reads the rows of a batch of outcomes, works out each new row in Python and
# writes them with one executemany, all in one write transaction. Parameters of
# FINISH_JOB: status, run_at, attempts, last_error, result, updated_at, finished_at,
# then the fence: id, locked_by, attempts (kept as the invariant; it holds by the read).
FINISH_READ = f"SELECT {_COLS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
FINISH_JOB = (
    "UPDATE jobs SET status = ?, run_at = ?, attempts = ?, last_error = ?, result = ?, updated_at = ?, "
    "finished_at = ?, locked_by = NULL, locked_until = NULL "
    "WHERE id = ? AND status = 'processing' AND locked_by = ? AND attempts = ?"
)

# Processing jobs are few (bounded by the workers' concurrency): read them through
# jobs_claim and sort. INDEXED BY pins jobs_finished for the prune: without statistics
# the planner would pick jobs_claim (status = ?) and scan every finished job.
EXPIRED_JOBS = (
    f"SELECT {_COLS} FROM jobs INDEXED BY jobs_claim "
    "WHERE status = 'processing' AND locked_until < ? ORDER BY locked_until LIMIT ?"
)
PRUNE_JOBS = (
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished "
    "WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ? LIMIT ?)"
)

# -- events --------------------------------------------------------------------------------

PUBLISH_EVENT = "INSERT INTO events (created_at, body) VALUES (?, ?)"
LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM events"
READ_EVENTS = "SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?"
# Rows are in id order and created_at grows with id (give or take clock skew between
# processes), so the inner scan stops right after the rows it deletes. The newest row
# is always kept: max(id) never goes back, so ids are never reused.
PRUNE_EVENTS = """
DELETE FROM events WHERE id < min(
    max(coalesce((SELECT id FROM events WHERE created_at >= ? ORDER BY id LIMIT 1), 9223372036854775807),
        (SELECT max(id) FROM events) - ? + 1),
    (SELECT max(id) FROM events))"""

# -- workers ---------------------------------------------------------------------------------

SAVE_WORKER = """
INSERT INTO workers (id, host, pid, topics, concurrency, active_jobs, started_at, last_heartbeat)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, topics = excluded.topics,
    concurrency = excluded.concurrency, active_jobs = excluded.active_jobs,
    started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat"""
REMOVE_WORKER = "DELETE FROM workers WHERE id = ?"
LIST_WORKERS = (
    "SELECT id, host, pid, topics, concurrency, active_jobs, started_at, last_heartbeat FROM workers ORDER BY id"
)
DELETE_STALE_WORKERS = "DELETE FROM workers WHERE last_heartbeat IS NOT NULL AND last_heartbeat < ?"

# -- the maintenance leader ------------------------------------------------------------------

# Take the lease when it is free, expired or already ours; a row comes back only then.
# Parameters: holder, expires_at (µs), now (µs).
ACQUIRE_LEADERSHIP = """
INSERT INTO leases (name, holder, expires_at) VALUES ('maintenance', ?1, ?2)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3
RETURNING holder"""
RELEASE_LEADERSHIP = "DELETE FROM leases WHERE name = 'maintenance' AND holder = ?"
CURRENT_LEADER = "SELECT holder FROM leases WHERE name = 'maintenance' AND expires_at > ?"

# -- schedules -------------------------------------------------------------------------------

_SCHEDULE_COLS = (
    "name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at, created_at, updated_at"
)
# last_fired_at never goes back: the stored value wins unless the caller's is newer.
SAVE_SCHEDULE = f"""
INSERT INTO schedules ({_SCHEDULE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, topic = excluded.topic, timezone = excluded.timezone,
    payload = excluded.payload, options = excluded.options, enabled = excluded.enabled,
    last_fired_at = CASE
        WHEN schedules.last_fired_at IS NOT NULL
             AND (excluded.last_fired_at IS NULL OR excluded.last_fired_at < schedules.last_fired_at)
        THEN schedules.last_fired_at ELSE excluded.last_fired_at END,
    next_run_at = excluded.next_run_at,
    created_at = schedules.created_at,
    updated_at = excluded.updated_at
RETURNING {_SCHEDULE_COLS}"""
ADD_SCHEDULE = f"""
INSERT INTO schedules ({_SCHEDULE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO NOTHING
RETURNING {_SCHEDULE_COLS}"""
GET_SCHEDULE = f"SELECT {_SCHEDULE_COLS} FROM schedules WHERE name = ?"
LIST_SCHEDULES = f"SELECT {_SCHEDULE_COLS} FROM schedules ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
SET_SCHEDULE_ENABLED = f"UPDATE schedules SET enabled = ?, next_run_at = ? WHERE name = ? RETURNING {_SCHEDULE_COLS}"
# The compare-and-set that makes a fire exactly-once across schedulers.
FIRE_SCHEDULE = (
    "UPDATE schedules SET last_fired_at = ?, next_run_at = ? "
    "WHERE name = ? AND enabled AND (last_fired_at IS NULL OR last_fired_at < ?)"
)


# -- statements built per input shape ----------------------------------------------------------


def _status_list(statuses: Iterable[str]) -> str:
    # Only JobStatus values reach here (never user text), so inlining is safe; literal
    # lists let the planner match the partial indexes.
    return ", ".join(f"'{s}'" for s in sorted(statuses)) or "NULL"


def claim_jobs(topic_count: int) -> str:
    """CLAIM_JOBS for ``topic_count`` topics.

    Each topic is read in jobs_claim index order (status, topic, priority desc, run_at,
    id) and stops after LIMIT rows, so a claim never sorts the whole backlog; the
    union of those short lists is then ordered and cut. ``AND status = 'pending'``
    in the outer UPDATE is the compare-and-set (redundant under BEGIN IMMEDIATE, kept
    as the invariant). Parameters: worker_id, locked_until, started_at, updated_at,
    then (topic, now, limit) per topic, then limit again when there are several topics.
    """
    due = (
        "SELECT id, priority, run_at FROM jobs WHERE status = 'pending' AND topic = ? AND run_at <= ? "
        "ORDER BY priority DESC, run_at, id LIMIT ?"
    )
    if topic_count == 1:
        chosen = due
    else:
        chosen = (
            "SELECT id FROM ("
            + " UNION ALL ".join([f"SELECT * FROM ({due})"] * topic_count)
            + ") ORDER BY priority DESC, run_at, id LIMIT ?"
        )
    return (
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, locked_by = ?, locked_until = ?, "
        f"started_at = ?, updated_at = ? WHERE id IN (SELECT id FROM ({chosen})) AND +status = 'pending' "
        f"RETURNING {_COLS}"
    )


def next_run_at(topic_count: int) -> str:
    """NEXT_RUN_AT: the earliest run_at of pending jobs over ``topic_count`` topics; one
    seek in jobs_pending_run_at per topic."""
    per_topic = (
        "SELECT min(run_at) AS m FROM jobs INDEXED BY jobs_pending_run_at WHERE status = 'pending' AND topic = ?"
    )
    return "SELECT min(m) FROM (" + " UNION ALL ".join([per_topic] * topic_count) + ")"


def any_due(topic_count: int) -> str:
    """ANY_DUE: is a pending job of one of ``topic_count`` topics due (run_at <= ?)? A
    read (no write lock) done before a claim; one seek in jobs_pending_run_at per topic.
    Parameters: (topic, now) per topic."""
    per_topic = (
        "SELECT 1 FROM jobs INDEXED BY jobs_pending_run_at WHERE status = 'pending' AND topic = ? AND run_at <= ?"
    )
    return "SELECT EXISTS (" + " UNION ALL ".join([per_topic] * topic_count) + ")"


def list_jobs(*, by_status: bool, by_topic: bool, cursor: str | None) -> tuple[str, str, str | None]:
    """(COUNT_JOBS, LIST_JOBS, JOBS_BEYOND) for the given filters and cursor (None,
    "after" or "before").

    LIST_JOBS reads the page in walking order: newest first for an offset or ``after``
    page, oldest first (ids above the cursor) for a ``before`` page; it takes the filter
    values, then the cursor if any, then LIMIT (and OFFSET without a cursor).
    JOBS_BEYOND (None without a cursor): whether a matching job lies behind the cursor.
    """
    where = []
    if by_status:
        where.append("status = ?")
    if by_topic:
        where.append("topic = ?")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    count = f"SELECT count(*) FROM jobs{clause}"
    if cursor is None:
        return count, f"SELECT {_COLS} FROM jobs{clause} ORDER BY id DESC LIMIT ? OFFSET ?", None
    further, back, order = ("<", ">=", "DESC") if cursor == "after" else (">", "<=", "ASC")
    keyed = " WHERE " + " AND ".join([*where, f"id {further} ?"])
    behind = " WHERE " + " AND ".join([*where, f"id {back} ?"])
    return (
        count,
        f"SELECT {_COLS} FROM jobs{keyed} ORDER BY id {order} LIMIT ?",
        f"SELECT EXISTS (SELECT 1 FROM jobs{behind})",
    )


def transition_job(columns: Iterable[str], allowed: Iterable[str]) -> str:
    """TRANSITION_JOB: set ``columns`` if the status is one of ``allowed``.
    Parameters: one per column, then the job id."""
    sets = ", ".join(f"{c} = ?" for c in columns) or "status = status"
    return f"UPDATE jobs SET {sets} WHERE id = ? AND status IN ({_status_list(allowed)}) RETURNING {_COLS}"


def delete_job(allowed: Iterable[str]) -> str:
    """DELETE_JOB for the allowed source states."""
    return DELETE_JOB_RETURNING.format(allowed=_status_list(allowed))
