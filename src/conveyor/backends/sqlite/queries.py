"""Every SQL statement of the SQLite backend, named after the Backend method it serves.

Imports only ``conveyor.core``. Statements that depend on the shape of the input (how many topics,
which states) are built by the small functions at the end; their text is
stable per shape, so sqlite3's statement cache reuses them.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.core.job import JOB_FIELDS, JobStatus

# Column order == Job field order, so a row builds a Job positionally.
JOB_COLUMNS = JOB_FIELDS
_COLS = ", ".join(JOB_COLUMNS)
_MARKS = ", ".join("?" for _ in JOB_COLUMNS)

# -- connection set-up and migrations ----------------------------------------------------

SET_WAL = "PRAGMA journal_mode = WAL"
# cache_size: 2 MB of pages per connection (SQLite's default). The pages a worker keeps
# reading (index interiors, the heads of the due ranges) fit in it; a 16 MB cache saved
# no CPU per drained job on a large store, and only made every worker's memory grow by
# 16 MB as it filled.
CONNECTION_PRAGMAS = (
    "PRAGMA synchronous = {synchronous}",
    "PRAGMA busy_timeout = {busy_timeout_ms}",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -2000",
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
    "ON CONFLICT (topic, unique_key) WHERE status IN ('pending', 'processing') AND unique_key IS NOT NULL DO NOTHING"
)
# Keys are scoped per topic: the holder is looked up by (topic, unique_key).
GET_ACTIVE_BY_UNIQUE_KEY = (
    f"SELECT {_COLS} FROM jobs WHERE topic = ? AND unique_key = ? AND unique_key IS NOT NULL"
    " AND status IN ('pending', 'processing')"
)

GET_JOB = f"SELECT {_COLS} FROM jobs WHERE id = ?"
# apply_many(): each job read inside the write transaction, changed by
# conveyor.core.lifecycle.apply, written back: every field a JobOp can change.
APPLY_JOB = (
    "UPDATE jobs SET status = ?, run_at = ?, payload = ?, priority = ?, attempts = ?, max_retries = ?, "
    "metadata = ?, last_error = ?, result = ?, started_at = ?, finished_at = ?, locked_by = ?, "
    f"locked_until = ?, cancel_requested = ?, snoozes = ?, updated_at = ? WHERE id = ? RETURNING {_COLS}"
)
DELETE_JOB = "DELETE FROM jobs WHERE id = ?"

# job_counts is kept by triggers (migration 0004): a row per status and topic, not a
# count of the backlog. Rows whose count dropped to 0 stay; they are skipped.
STATS = "SELECT status, topic, n FROM job_counts WHERE n > 0"


HEARTBEAT = (
    "UPDATE jobs SET locked_until = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'processing' AND locked_by = ? "
    "RETURNING id, cancel_requested"
)

# finish() reads the rows of a batch of outcomes, works out each new row with
# conveyor.core.lifecycle.apply and writes them with one executemany, all in one write
# transaction. Parameters of FINISH_JOB: status, run_at, attempts, last_error, result,
# updated_at, finished_at, errors, snoozes, then the fence: id, locked_by, attempts
# (kept as the invariant; it holds by the read).
FINISH_READ = f"SELECT {_COLS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
FINISH_JOB = (
    "UPDATE jobs SET status = ?, run_at = ?, attempts = ?, last_error = ?, result = ?, updated_at = ?, "
    "finished_at = ?, errors = ?, snoozes = ?, locked_by = NULL, locked_until = NULL "
    "WHERE id = ? AND status = 'processing' AND locked_by = ? AND attempts = ?"
)

# Processing jobs are few (bounded by the workers' concurrency): read them through
# jobs_list_status, never the backlog, and sort those whose lease ended in Python (the
# longest expired first: no index is kept in lease order, which would cost every
# claim, heartbeat and finish an index write). INDEXED BY
# pins jobs_finished for the prune: without statistics the planner might pick
# jobs_list_status (status = ?) and scan every finished job.
EXPIRED_JOBS = f"SELECT {_COLS} FROM jobs INDEXED BY jobs_list_status WHERE status = 'processing' AND locked_until < ?"
PRUNE_JOBS = (
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_finished "
    "WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ? LIMIT ?)"
)

# count_finished: jobs finished since a time (µs), per bucket (µs) and status, through
# the partial index of finished jobs by finished_at (the one PRUNE_JOBS reads).
COUNT_FINISHED = (
    "SELECT finished_at / ? AS bucket, status, count(*) FROM jobs INDEXED BY jobs_finished "
    "WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= ? GROUP BY bucket, status"
)

# -- events --------------------------------------------------------------------------------

PUBLISH_EVENT = "INSERT INTO events (created_at, body) VALUES (?, ?)"
LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM events"
READ_EVENTS = "SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?"
# Rows are in id order and created_at grows with id (give or take clock skew between
# processes). The newest row is always kept: max(id) never goes back, so ids are never
# reused. At most the oldest ?3 ids go per call, and the search for the first recent row
# reads only those (ids have no gaps: rows only ever leave from the oldest end): a store
# that a bulk import left with hundreds of thousands of event rows is trimmed a batch
# per write, never in one statement that stalls the writer and holds every doomed rowid
# in memory (tens of MB of a worker's RSS, kept by the allocator afterwards), and no
# write reads the whole table.
PRUNE_EVENTS = """
DELETE FROM events WHERE id < min(
    max(coalesce((SELECT id FROM events WHERE id < (SELECT min(id) FROM events) + ?3 AND created_at >= ?1
                  ORDER BY id LIMIT 1), 9223372036854775807),
        (SELECT max(id) FROM events) - ?2 + 1),
    (SELECT max(id) FROM events),
    (SELECT min(id) FROM events) + ?3)"""

# The registry of event listeners (migration 0007): a listener's row, live until
# expires_at; entering also clears rows that expired (crashed processes).
LISTEN_FOR_EVENTS = (
    "INSERT INTO event_listeners (id, expires_at) VALUES (?1, ?2) "
    "ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at"
)
FORGET_EXPIRED_LISTENERS = "DELETE FROM event_listeners WHERE expires_at <= ?"
STOP_LISTENING_FOR_EVENTS = "DELETE FROM event_listeners WHERE id = ?"
EVENTS_HEARD = "SELECT EXISTS (SELECT 1 FROM event_listeners WHERE expires_at > ?)"

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


# The pending priority levels of the worker's topics, each with its earliest run_at:
# (topic, priority, first run_at), found by a loose index scan of jobs_claim (one seek
# per level: the next lower priority of the topic), never reading the jobs of a level.
# It answers "is anything due?" (before the claim takes the write lock), which levels a
# claim reads, and next_run_at. Parameter: the topics as a JSON array.
CLAIM_LEVELS = """
WITH RECURSIVE level(topic, priority) AS (
    SELECT t.value, (SELECT max(j.priority) FROM jobs AS j INDEXED BY jobs_claim
                     WHERE j.status = 'pending' AND j.topic = t.value)
    FROM json_each(?) AS t
    UNION ALL
    SELECT l.topic, (SELECT max(j.priority) FROM jobs AS j INDEXED BY jobs_claim
                     WHERE j.status = 'pending' AND j.topic = l.topic AND j.priority < l.priority)
    FROM level AS l WHERE l.priority IS NOT NULL
)
SELECT l.topic, l.priority, (SELECT min(j.run_at) FROM jobs AS j INDEXED BY jobs_claim
                             WHERE j.status = 'pending' AND j.topic = l.topic AND j.priority = l.priority)
FROM level AS l WHERE l.priority IS NOT NULL"""


def claim_jobs(level_count: int) -> str:
    """CLAIM_JOBS over ``level_count`` (topic, priority) levels that have due jobs.

    Each level is read from jobs_claim in (run_at, id) order from its first job up to
    ``now``, so a delayed job is never read; SQLite merges the levels' ordered streams
    (MERGE (UNION ALL): no sort) by priority desc, run_at, id and stops after LIMIT rows.
    ``AND +status = 'pending'`` in the outer UPDATE is the compare-and-set (redundant
    under BEGIN IMMEDIATE, kept as the invariant). Parameters: worker_id, locked_until,
    started_at, updated_at, then (topic, priority, now) per level, then the limit.
    """
    level = (
        "SELECT id, priority, run_at FROM jobs INDEXED BY jobs_claim "
        "WHERE status = 'pending' AND topic = ? AND priority = ? AND run_at <= ?"
    )
    chosen = " UNION ALL ".join([level] * level_count) + " ORDER BY priority DESC, run_at, id LIMIT ?"
    return (
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, locked_by = ?, locked_until = ?, "
        f"started_at = ?, updated_at = ? WHERE id IN (SELECT id FROM ({chosen})) AND +status = 'pending' "
        f"RETURNING {_COLS}"
    )


_LIST_INDEX = {(True, False): "jobs_list_status", (True, True): "jobs_list_status_topic"}


def list_jobs(*, by_status: bool, by_topic: bool, cursor: str | None) -> tuple[str, str, str | None, int]:
    """(COUNT_JOBS, LIST_JOBS, JOBS_BEYOND, arms) for the given filters and cursor
    (None, "after" or "before").

    Every page is read in index order (the primary key, jobs_list_status, or
    jobs_list_status_topic) from the cursor or the start; with a topic but no status,
    one read per status of jobs_list_status_topic, merged by id. COUNT_JOBS adds up
    job_counts rows. LIST_JOBS reads in walking order: newest first for an offset or
    ``after`` page, oldest first (ids above the cursor) for a ``before`` page. Its
    parameters: per arm the filter values then the cursor (if any), then LIMIT, then
    OFFSET without a cursor. JOBS_BEYOND (None without a cursor) tells whether a
    matching job lies behind the cursor; it takes the same per-arm parameters.
    """
    filters = []
    if by_status:
        filters.append("status = ?")
    if by_topic:
        filters.append("topic = ?")
    count = "SELECT coalesce(sum(n), 0) FROM job_counts" + (" WHERE " + " AND ".join(filters) if filters else "")
    if by_topic and not by_status:
        # A literal list of statuses: the count is a seek per status, not a scan.
        count += f" AND status IN ({_status_list(JobStatus)})"
        arms = [f"status = '{status.value}'" for status in JobStatus]
        index = " INDEXED BY jobs_list_status_topic"
        filters = ["topic = ?"]
    else:
        arms = [""]
        index = f" INDEXED BY {_LIST_INDEX[by_status, by_topic]}" if by_status else ""

    def select(what: str, key: str | None) -> str:
        return " UNION ALL ".join(
            f"SELECT {what} FROM jobs{index}"
            + (" WHERE " + " AND ".join(w) if (w := [a for a in (arm, *filters, key) if a]) else "")
            for arm in arms
        )

    if cursor is None:
        page = select(_COLS, None) + " ORDER BY id DESC LIMIT ? OFFSET ?"
        return count, page, None, len(arms)
    further, back, order = ("<", ">=", "DESC") if cursor == "after" else (">", "<=", "ASC")
    page = select(_COLS, f"id {further} ?") + f" ORDER BY id {order} LIMIT ?"
    beyond = f"SELECT EXISTS ({select('1', f'id {back} ?')})"
    return count, page, beyond, len(arms)
