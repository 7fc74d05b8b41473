-- 0001: jobs, live workers, schedules and the cross-process event outbox.
-- Times are INTEGER microseconds since the Unix epoch (UTC): sortable, compact, exact.
-- payload/result/metadata/options are orjson-encoded JSON stored as BLOB.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation time
    topic            TEXT NOT NULL,
    payload          BLOB NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    retry_delay      REAL NOT NULL,
    backoff          TEXT NOT NULL,
    timeout          REAL,
    last_error       TEXT,
    result           BLOB,
    metadata         BLOB NOT NULL,
    unique_key       TEXT,
    schedule         TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    locked_by        TEXT,
    locked_until     INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

-- The claim: due jobs of one topic by priority desc, run_at, id, read in index order
-- (no sort). Also serves counts by status/topic (stats, list_jobs totals) and expired
-- leases: processing jobs are few (bounded by the workers' concurrency), so scanning
-- them beats maintaining a lease index on every claim, heartbeat and finish.
CREATE INDEX jobs_claim ON jobs (status, topic, priority DESC, run_at, id);

-- At most one active job per unique_key; enqueue uses it as its ON CONFLICT target.
CREATE UNIQUE INDEX jobs_unique_active ON jobs (unique_key)
    WHERE status IN ('pending', 'processing') AND unique_key IS NOT NULL;

-- Pruning of finished jobs past their retention.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    topics         BLOB NOT NULL,
    concurrency    INTEGER NOT NULL,
    active_jobs    BLOB NOT NULL,
    started_at     INTEGER,
    last_heartbeat INTEGER
);

CREATE TABLE schedules (
    name          TEXT PRIMARY KEY,
    cron          TEXT NOT NULL,
    topic         TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    payload       BLOB NOT NULL,
    options       BLOB NOT NULL,
    enabled       INTEGER NOT NULL,
    last_fired_at INTEGER,
    next_run_at   INTEGER,
    created_at    INTEGER,
    updated_at    INTEGER
);

-- Event outbox tailed by rowid. Pruning always keeps the newest row, so max(id) never
-- goes back and new rows always get ids above every subscriber's position.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    body       BLOB NOT NULL
);
