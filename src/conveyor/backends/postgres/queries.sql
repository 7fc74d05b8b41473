-- Every query of the PostgreSQL backend, one named block each (`-- name: <name>`, then
-- comments saying what it does and why, then the statement), loaded once at import by
-- queries.py.
--
-- Tables are written {jobs}, {workers}, {schedules}, {leases}, {migrations} and the
-- schema {schema}: replaced by the schema-qualified, quoted names, so every query works
-- on any connection whatever its search_path (a caller's own connection for
-- transactional enqueue included). Parameters are named, %(name)s (psycopg); they are
-- sent in binary: arrays of timestamps and JSON dump many times faster than as text.
-- JSON travels as text and is cast once on the server. Rows are read by column name.

-- -- migrations ----------------------------------------------------------------------

-- name: migrate_lock
-- Serialises migrators of one schema: the two-key advisory lock (a constant, a hash of
-- the schema name) lets migrations of different schemas run side by side.
SELECT pg_advisory_xact_lock(1668247142, hashtext(%(schema)s))

-- name: migrate_create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: migrate_create_table
CREATE TABLE IF NOT EXISTS {migrations} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migrate_applied
SELECT version FROM {migrations}

-- name: migrate_set_path
-- Migration files name their objects unqualified.
SET LOCAL search_path TO {schema}

-- name: migrate_record
INSERT INTO {migrations} (version, name) VALUES (%(version)s, %(name)s)

-- name: ping
SELECT 1 AS ok

-- -- enqueue -------------------------------------------------------------------------

-- name: enqueue_new_job
-- The common enqueue: one new job without a unique key. Only the columns a new job sets
-- travel (the rest are literals) and nothing comes back.
INSERT INTO {jobs} (id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata,
                    schedule, created_at, max_snoozes, status, attempts, updated_at, cancel_requested)
VALUES (%(id)s::text, %(topic)s::text, %(payload)s::text::json, %(priority)s::int4, %(run_at)s::timestamptz,
        %(max_retries)s::int4, %(retry_delay)s::float8, %(backoff)s::text, %(timeout)s::float8,
        %(metadata)s::text::json, %(schedule)s::text, %(created_at)s::timestamptz, %(max_snoozes)s::int4,
        'pending', 0, %(created_at)s::timestamptz, false)

-- name: enqueue_new_job_notify
-- enqueue_new_job with its job.scheduled event sent by pg_notify in the same statement:
-- one round trip, delivered on commit, never for a rolled-back job. Events are sent only
-- while a process listens for them (events_heard, migration 0009).
WITH ins AS (
    INSERT INTO {jobs} (id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata,
                        schedule, created_at, max_snoozes, status, attempts, updated_at, cancel_requested)
    VALUES (%(id)s::text, %(topic)s::text, %(payload)s::text::json, %(priority)s::int4, %(run_at)s::timestamptz,
            %(max_retries)s::int4, %(retry_delay)s::float8, %(backoff)s::text, %(timeout)s::float8,
            %(metadata)s::text::json, %(schedule)s::text, %(created_at)s::timestamptz, %(max_snoozes)s::int4,
            'pending', 0, %(created_at)s::timestamptz, false)
)
SELECT pg_notify(%(channel)s, %(event)s) AS sent WHERE {schema}.events_heard()

-- name: enqueue_new_jobs
-- Several new jobs without unique keys: one array per column, inserted in input order.
INSERT INTO {jobs} (id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata,
                    schedule, created_at, max_snoozes, status, attempts, updated_at, cancel_requested)
SELECT id, topic, payload::json, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata::json,
       schedule, created_at, max_snoozes, 'pending', 0, created_at, false
FROM unnest(%(id)s::text[], %(topic)s::text[], %(payload)s::text[], %(priority)s::int4[],
            %(run_at)s::timestamptz[], %(max_retries)s::int4[], %(retry_delay)s::float8[], %(backoff)s::text[],
            %(timeout)s::float8[], %(metadata)s::text[], %(schedule)s::text[], %(created_at)s::timestamptz[],
            %(max_snoozes)s::int4[])
     WITH ORDINALITY AS i(id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout,
                          metadata, schedule, created_at, max_snoozes, ord)
ORDER BY ord

-- name: enqueue_new_jobs_notify
-- enqueue_new_jobs with the events' pg_notify in the same statement.
WITH ins AS (
    INSERT INTO {jobs} (id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata,
                        schedule, created_at, max_snoozes, status, attempts, updated_at, cancel_requested)
    SELECT id, topic, payload::json, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata::json,
           schedule, created_at, max_snoozes, 'pending', 0, created_at, false
    FROM unnest(%(id)s::text[], %(topic)s::text[], %(payload)s::text[], %(priority)s::int4[],
                %(run_at)s::timestamptz[], %(max_retries)s::int4[], %(retry_delay)s::float8[], %(backoff)s::text[],
                %(timeout)s::float8[], %(metadata)s::text[], %(schedule)s::text[], %(created_at)s::timestamptz[],
                %(max_snoozes)s::int4[])
         WITH ORDINALITY AS i(id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout,
                              metadata, schedule, created_at, max_snoozes, ord)
    ORDER BY ord
)
SELECT count(pg_notify(%(channel)s, p)) AS sent FROM unnest(%(events)s::text[]) AS p WHERE {schema}.events_heard()

-- name: copy_new_jobs
-- Large batches of new jobs: binary COPY, the cheapest way into a table for the server
-- and, with psycopg's C row writer, for the client. Column order: COPY_NEW_JOB_TYPES.
COPY {jobs} (id, topic, payload, priority, run_at, max_retries, retry_delay, backoff, timeout, metadata, schedule,
             created_at, max_snoozes, status, updated_at) FROM STDIN (FORMAT BINARY)

-- name: notify_events
-- Events sent in the caller's transaction (or after a COPY): delivered on commit.
SELECT count(pg_notify(%(channel)s, p)) AS sent FROM unnest(%(events)s::text[]) AS p WHERE {schema}.events_heard()

-- name: enqueue_jobs
-- Any job records (unique keys, any status): every column travels, one array each. One
-- statement, so all or nothing. Rows go in input order, so the first job of a batch
-- holding a unique_key wins against later ones (ON CONFLICT DO NOTHING sees the rows the
-- same command inserted before). Returns the ids inserted (on every row) and the active
-- jobs already holding the batch's (topic, unique_key) pairs as of the statement's
-- snapshot (one row with NULL columns when there is none).
WITH ins AS (
    INSERT INTO {jobs} (id, topic, payload, status, priority, run_at, attempts, max_retries, retry_delay, backoff,
                        timeout, last_error, result, metadata, unique_key, schedule, created_at, updated_at,
                        started_at, finished_at, locked_by, locked_until, cancel_requested, errors, snoozes,
                        max_snoozes)
    SELECT id, topic, payload::json, status, priority, run_at, attempts, max_retries, retry_delay, backoff,
           timeout, last_error, result::json, metadata::json, unique_key, schedule, created_at, updated_at,
           started_at, finished_at, locked_by, locked_until, cancel_requested, errors::json, snoozes, max_snoozes
    FROM unnest(%(id)s::text[], %(topic)s::text[], %(payload)s::text[], %(status)s::text[], %(priority)s::int4[],
                %(run_at)s::timestamptz[], %(attempts)s::int4[], %(max_retries)s::int4[],
                %(retry_delay)s::float8[], %(backoff)s::text[], %(timeout)s::float8[], %(last_error)s::text[],
                %(result)s::text[], %(metadata)s::text[], %(unique_key)s::text[], %(schedule)s::text[],
                %(created_at)s::timestamptz[], %(updated_at)s::timestamptz[], %(started_at)s::timestamptz[],
                %(finished_at)s::timestamptz[], %(locked_by)s::text[], %(locked_until)s::timestamptz[],
                %(cancel_requested)s::bool[], %(errors)s::text[], %(snoozes)s::int4[], %(max_snoozes)s::int4[])
         WITH ORDINALITY AS i(id, topic, payload, status, priority, run_at, attempts, max_retries, retry_delay,
                              backoff, timeout, last_error, result, metadata, unique_key, schedule, created_at,
                              updated_at, started_at, finished_at, locked_by, locked_until, cancel_requested,
                              errors, snoozes, max_snoozes, ord)
    ORDER BY ord
    ON CONFLICT (topic, unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')
    DO NOTHING
    RETURNING id
)
SELECT (SELECT array_agg(id) FROM ins) AS inserted, e.*
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT * FROM {jobs}
    WHERE (topic, unique_key) IN (SELECT * FROM unnest(%(key_topics)s::text[], %(keys)s::text[]))
      AND status IN ('pending', 'processing')
) AS e ON true

-- name: enqueue_find_unique
-- After a race with an enqueue that committed after enqueue_jobs' snapshot: the current
-- holder of each (topic, unique_key) pair (the active job first, else the newest).
SELECT DISTINCT ON (topic, unique_key) *
FROM {jobs}
WHERE (topic, unique_key) IN (SELECT * FROM unnest(%(key_topics)s::text[], %(keys)s::text[]))
ORDER BY topic, unique_key, (status IN ('pending', 'processing')) DESC, id DESC

-- -- reading jobs ----------------------------------------------------------------------

-- name: get_job
SELECT * FROM {jobs} WHERE id = %(id)s

-- Listings (list_jobs): one statement per shape (filter x cursor), each planned for its
-- index: the primary key without a filter, (topic, status, id) otherwise (migrations
-- 0004 and 0014): a topic alone merges one range per status, a status alone one range
-- per topic. Every shape returns the total (from the counters: count_jobs), whether a
-- matching job lies behind the cursor (beyond), and the page, newest first, or oldest
-- first above a `before` cursor; a page past the end is one row of NULL job columns
-- carrying the total. Params: status, topic, limit (the page size + 1), and offset (no cursor) or
-- cursor. Without a filter, whether a job lies behind the cursor is the newest (oldest)
-- id compared with it: an EXISTS there is planned as a sequential scan that stops at
-- its first match, which read half the table for a cursor in the middle. The OFFSET 0
-- keeps the total's subquery from being pulled up: without it the (stable) count_jobs
-- runs once per row of the page.

-- name: list_jobs
SELECT t.total, false AS beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, NULL) AS total OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j ORDER BY j.id DESC LIMIT %(limit)s OFFSET %(offset)s
) AS p ON true

-- name: list_jobs_after
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, NULL) AS total,
             coalesce((SELECT max(j.id) FROM {jobs} AS j) >= %(cursor)s, false) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j WHERE j.id < %(cursor)s ORDER BY j.id DESC LIMIT %(limit)s
) AS p ON true

-- name: list_jobs_before
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, NULL) AS total,
             coalesce((SELECT min(j.id) FROM {jobs} AS j) <= %(cursor)s, false) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j WHERE j.id > %(cursor)s ORDER BY j.id ASC LIMIT %(limit)s
) AS p ON true

-- A status without a topic: the first rows of each (topic, status, id) range, merged
-- (the topics from the counters: topics_with, migration 0014).
-- name: list_jobs_status
SELECT t.total, false AS beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, NULL) AS total OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM {schema}.topics_with(%(status)s) AS g(topic)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = g.topic AND j.status = %(status)s
        ORDER BY j.id DESC LIMIT %(limit)s + %(offset)s
    ) AS m
    ORDER BY m.id DESC LIMIT %(limit)s OFFSET %(offset)s
) AS p ON true

-- name: list_jobs_status_after
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, NULL) AS total,
             EXISTS (SELECT 1 FROM {schema}.topics_with(%(status)s) AS g(topic)
                     CROSS JOIN LATERAL (
                         SELECT 1 FROM {jobs} AS j WHERE j.topic = g.topic AND j.status = %(status)s
                             AND j.id >= %(cursor)s
                         LIMIT 1) AS b) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM {schema}.topics_with(%(status)s) AS g(topic)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = g.topic AND j.status = %(status)s AND j.id < %(cursor)s
        ORDER BY j.id DESC LIMIT %(limit)s
    ) AS m
    ORDER BY m.id DESC LIMIT %(limit)s
) AS p ON true

-- name: list_jobs_status_before
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, NULL) AS total,
             EXISTS (SELECT 1 FROM {schema}.topics_with(%(status)s) AS g(topic)
                     CROSS JOIN LATERAL (
                         SELECT 1 FROM {jobs} AS j WHERE j.topic = g.topic AND j.status = %(status)s
                             AND j.id <= %(cursor)s
                         LIMIT 1) AS b) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM {schema}.topics_with(%(status)s) AS g(topic)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = g.topic AND j.status = %(status)s AND j.id > %(cursor)s
        ORDER BY j.id ASC LIMIT %(limit)s
    ) AS m
    ORDER BY m.id ASC LIMIT %(limit)s
) AS p ON true

-- name: list_jobs_status_topic
SELECT t.total, false AS beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, %(topic)s) AS total OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = %(status)s
    ORDER BY j.id DESC LIMIT %(limit)s OFFSET %(offset)s
) AS p ON true

-- name: list_jobs_status_topic_after
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, %(topic)s) AS total,
             EXISTS (SELECT 1 FROM {jobs} AS j
                     WHERE j.topic = %(topic)s AND j.status = %(status)s AND j.id >= %(cursor)s) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = %(status)s AND j.id < %(cursor)s
    ORDER BY j.id DESC LIMIT %(limit)s
) AS p ON true

-- name: list_jobs_status_topic_before
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(%(status)s, %(topic)s) AS total,
             EXISTS (SELECT 1 FROM {jobs} AS j
                     WHERE j.topic = %(topic)s AND j.status = %(status)s AND j.id <= %(cursor)s) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = %(status)s AND j.id > %(cursor)s
    ORDER BY j.id ASC LIMIT %(limit)s
) AS p ON true

-- A topic without a status: the first rows of each (topic, status, id) range, merged.
-- name: list_jobs_topic
SELECT t.total, false AS beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, %(topic)s) AS total OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']) AS s(status)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status
        ORDER BY j.id DESC LIMIT %(limit)s + %(offset)s
    ) AS m
    ORDER BY m.id DESC LIMIT %(limit)s OFFSET %(offset)s
) AS p ON true

-- name: list_jobs_topic_after
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, %(topic)s) AS total,
             EXISTS (SELECT 1 FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']) AS s(status)
                     CROSS JOIN LATERAL (
                         SELECT 1 FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status
                             AND j.id >= %(cursor)s
                         LIMIT 1) AS b) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']) AS s(status)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status AND j.id < %(cursor)s
        ORDER BY j.id DESC LIMIT %(limit)s
    ) AS m
    ORDER BY m.id DESC LIMIT %(limit)s
) AS p ON true

-- name: list_jobs_topic_before
SELECT t.total, t.beyond, p.*
FROM (SELECT {schema}.count_jobs(NULL, %(topic)s) AS total,
             EXISTS (SELECT 1 FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']) AS s(status)
                     CROSS JOIN LATERAL (
                         SELECT 1 FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status
                             AND j.id <= %(cursor)s
                         LIMIT 1) AS b) AS beyond OFFSET 0) AS t
LEFT JOIN LATERAL (
    SELECT m.* FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed', 'cancelled']) AS s(status)
    CROSS JOIN LATERAL (
        SELECT * FROM {jobs} AS j WHERE j.topic = %(topic)s AND j.status = s.status AND j.id > %(cursor)s
        ORDER BY j.id ASC LIMIT %(limit)s
    ) AS m
    ORDER BY m.id ASC LIMIT %(limit)s
) AS p ON true

-- name: stats
-- Exact counts per (topic, status) from the maintained counters (migration 0002), which
-- it compacts on the way.
SELECT topic, status, n FROM {schema}.current_job_counts()

-- name: compact_counts
-- The maintenance pass folds the counters' deltas (stats does too).
SELECT {schema}.compact_job_counts() AS folded

-- name: count_finished
-- Jobs finished since a time, per bucket (seconds since the epoch) and status, through
-- the partial index of finished jobs by finished_at (jobs_finished_idx).
SELECT floor(extract(epoch FROM finished_at) / %(bucket)s)::bigint AS bucket, status, count(*) AS n
FROM {jobs}
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= %(since)s
GROUP BY 1, 2

-- -- manual operations ---------------------------------------------------------------

-- name: apply_job
-- A manual operation (conveyor.core.operation.JobOp): the rules of lifecycle.apply driven
-- by the op's fields; a NULL field keeps the column. Returns the updated row (applied
-- true) or, when the job's status is not allowed, its current row (applied false):
-- not-found and conflict told apart in one statement.
WITH upd AS (
    UPDATE {jobs} SET
        status = coalesce(%(status)s::text, status),
        finished_at = CASE WHEN %(status)s::text IN ('completed', 'failed', 'cancelled') THEN %(now)s::timestamptz
                           WHEN %(status)s::text IS NOT NULL THEN NULL ELSE finished_at END,
        result = CASE WHEN %(status)s::text = 'completed' THEN %(result)s::text::json
                      WHEN %(restart)s::bool THEN NULL ELSE result END,
        attempts = CASE WHEN %(restart)s::bool THEN 0 ELSE attempts END,
        snoozes = CASE WHEN %(restart)s::bool THEN 0 ELSE snoozes END,
        started_at = CASE WHEN %(restart)s::bool THEN NULL ELSE started_at END,
        run_at = coalesce(%(run_at)s::timestamptz, run_at),
        payload = CASE WHEN %(set_payload)s::bool THEN %(payload)s::text::json ELSE payload END,
        priority = coalesce(%(priority)s::int4, priority),
        max_retries = coalesce(%(max_retries)s::int4, max_retries),
        metadata = coalesce(%(metadata)s::text::json, metadata),
        last_error = coalesce(%(last_error)s::text, last_error),
        cancel_requested = coalesce(%(cancel_requested)s::bool, cancel_requested),
        locked_by = CASE WHEN coalesce(%(status)s::text, status) = 'processing' THEN locked_by END,
        locked_until = CASE WHEN coalesce(%(status)s::text, status) = 'processing' THEN locked_until END,
        updated_at = %(now)s::timestamptz
    WHERE id = %(id)s::text AND status = ANY(%(allowed)s::text[])
    RETURNING *
)
SELECT true AS applied, upd.* FROM upd
UNION ALL
SELECT false AS applied, j.* FROM {jobs} AS j WHERE j.id = %(id)s::text AND NOT EXISTS (SELECT 1 FROM upd)

-- name: apply_unique_holder
-- Who holds a unique_key (scoped per topic) when an operation would make a second
-- active job with it.
SELECT id FROM {jobs}
WHERE topic = %(topic)s AND unique_key = %(unique_key)s AND status IN ('pending', 'processing') AND id <> %(id)s
LIMIT 1

-- name: delete_job
-- Deletes the job when its status is allowed (deleted true), else returns it as it is
-- (deleted false); no row: no such job.
WITH del AS (
    DELETE FROM {jobs} WHERE id = %(id)s AND status = ANY(%(allowed)s::text[]) RETURNING *
)
SELECT true AS deleted, del.* FROM del
UNION ALL
SELECT false AS deleted, j.* FROM {jobs} AS j WHERE j.id = %(id)s AND NOT EXISTS (SELECT 1 FROM del)

-- -- the worker's side ---------------------------------------------------------------

-- name: take_work
-- The worker's round trip, one statement (take_work, migrations 0008, 0012): sends the events
-- waiting to ride along, stores a batch of attempt outcomes and claims up to `limit` due
-- jobs, any of the three possibly empty. Rows: the jobs the outcomes were stored on
-- (claimed false), then the jobs claimed (claimed true). async_ack (commit without
-- waiting for the WAL flush) is only ever true for a round trip that claims nothing
-- (worker_side.take_work): claims stay durable.
SELECT r.claimed, (r.job).*
FROM {schema}.take_work(
    %(channel)s::text, %(events)s::text[], %(async_ack)s::bool, %(now)s::timestamptz, %(outcomes)s::text::jsonb,
    %(topics)s::text[], %(limit)s::int4, %(worker_id)s::text, %(locked_until)s::timestamptz
) AS r

-- name: claim_jobs
-- Claim up to `limit` due jobs of some topics, in claim order, and flip them to
-- processing: a function of migration 0002/0006, where its plan (index seeks per
-- (topic, priority) group, never a scan or sort of the backlog) is explained. The
-- worker claims through take_work; this is the claim alone.
SELECT * FROM {schema}.claim_jobs(%(topics)s, %(now)s, %(limit)s, %(worker_id)s, %(locked_until)s)

-- name: next_run_at
-- The earliest run_at of the pending jobs of some topics (migration 0002).
SELECT {schema}.next_run_at(%(topics)s) AS run_at

-- name: heartbeat
-- Extends the leases this worker still holds; what comes back is what it holds, with
-- the cancellations requested meanwhile.
UPDATE {jobs} SET locked_until = %(locked_until)s
WHERE id = ANY(%(ids)s::text[]) AND status = 'processing' AND locked_by = %(worker_id)s
RETURNING id, cancel_requested

-- name: expired_jobs
-- The maintenance pass: expired leases, oldest first (a function of migration 0002).
SELECT * FROM {schema}.expired_jobs(%(now)s, %(limit)s)

-- name: prune_jobs
-- Finished jobs past the retention, oldest first (a function of migration 0002).
SELECT {schema}.prune_jobs(%(finished_before)s, %(limit)s) AS pruned

-- -- events --------------------------------------------------------------------------

-- name: publish_events
-- Events on their own (when no round trip of the worker went out to carry them), sent
-- only while a process listens for them.
SELECT count(pg_notify(%(channel)s, p)) AS sent FROM unnest(%(events)s::text[]) AS p WHERE {schema}.events_heard()

-- name: listen_for_events
-- This process has event subscribers: events are sent while the entry lives (it is
-- renewed well before it expires).
INSERT INTO {schema}.event_listeners AS l (id, expires_at) VALUES (%(id)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at

-- name: stop_listening_for_events
DELETE FROM {schema}.event_listeners WHERE id = %(id)s

-- name: events_heard
-- Whether any process listens for events now: publishers ask before building events.
SELECT {schema}.events_heard() AS heard

-- -- live workers --------------------------------------------------------------------

-- name: save_worker
INSERT INTO {workers} (id, host, pid, topics, concurrency, active_jobs, started_at, last_heartbeat)
VALUES (%(id)s, %(host)s, %(pid)s, %(topics)s::text[], %(concurrency)s, %(active_jobs)s::text[], %(started_at)s,
        %(last_heartbeat)s)
ON CONFLICT (id) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, topics = EXCLUDED.topics, concurrency = EXCLUDED.concurrency,
    active_jobs = EXCLUDED.active_jobs, started_at = EXCLUDED.started_at, last_heartbeat = EXCLUDED.last_heartbeat

-- name: remove_worker
DELETE FROM {workers} WHERE id = %(id)s

-- name: list_workers
-- The live workers; entries older than alive_since are deleted on the way.
WITH gone AS (DELETE FROM {workers} WHERE last_heartbeat < %(alive_since)s RETURNING id)
SELECT * FROM {workers}
WHERE NOT (last_heartbeat IS NOT NULL AND last_heartbeat < %(alive_since)s)
ORDER BY id

-- -- the maintenance leader ----------------------------------------------------------

-- name: acquire_leadership
-- Takes the lease when it is free, expired or already ours: a row comes back only then.
-- A compare-and-set upsert, never a session advisory lock (works behind PgBouncer).
INSERT INTO {leases} AS l (name, holder, expires_at) VALUES ('maintenance', %(holder)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= %(now)s
RETURNING holder

-- name: release_leadership
DELETE FROM {leases} WHERE name = 'maintenance' AND holder = %(holder)s

-- name: current_leader
SELECT holder FROM {leases} WHERE name = 'maintenance' AND expires_at > %(now)s

-- -- schedules -----------------------------------------------------------------------

-- name: save_schedule
-- Upsert by name; an existing schedule keeps its created_at and the newer last_fired_at
-- (greatest() ignores NULL).
INSERT INTO {schedules} (name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at,
                         created_at, updated_at)
VALUES (%(name)s, %(cron)s, %(topic)s, %(timezone)s, %(payload)s::json, %(options)s::json, %(enabled)s,
        %(last_fired_at)s, %(next_run_at)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron, topic = EXCLUDED.topic, timezone = EXCLUDED.timezone, payload = EXCLUDED.payload,
    options = EXCLUDED.options, enabled = EXCLUDED.enabled,
    last_fired_at = greatest(schedules.last_fired_at, EXCLUDED.last_fired_at),
    next_run_at = EXCLUDED.next_run_at, created_at = schedules.created_at, updated_at = EXCLUDED.updated_at
RETURNING *

-- name: add_schedule
-- Inserts a schedule unless one of that name exists (no row back then).
INSERT INTO {schedules} (name, cron, topic, timezone, payload, options, enabled, last_fired_at, next_run_at,
                         created_at, updated_at)
VALUES (%(name)s, %(cron)s, %(topic)s, %(timezone)s, %(payload)s::json, %(options)s::json, %(enabled)s,
        %(last_fired_at)s, %(next_run_at)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (name) DO NOTHING
RETURNING *

-- name: get_schedule
SELECT * FROM {schedules} WHERE name = %(name)s

-- name: list_schedules
SELECT * FROM {schedules} ORDER BY name

-- name: delete_schedule
DELETE FROM {schedules} WHERE name = %(name)s RETURNING name

-- name: set_schedule_enabled
UPDATE {schedules} SET enabled = %(enabled)s, next_run_at = %(next_run_at)s WHERE name = %(name)s RETURNING *

-- name: fire_schedule
-- Exactly-once firing in one statement: the conditional UPDATE takes the schedule's row
-- lock, so of several racing schedulers one updates and the others (re-checking the
-- condition on the updated row) match nothing and insert nothing. Returns one row:
-- whether the schedule fired, and the inserted job (NULL columns when its unique_key
-- was held by an active job).
WITH s AS (
    UPDATE {schedules} SET last_fired_at = %(fire_at)s, next_run_at = %(next_run_at)s
    WHERE name = %(name)s AND enabled AND (last_fired_at IS NULL OR last_fired_at < %(fire_at)s)
    RETURNING name
), ins AS (
    INSERT INTO {jobs} (id, topic, payload, status, priority, run_at, attempts, max_retries, retry_delay, backoff,
                        timeout, last_error, result, metadata, unique_key, schedule, created_at, updated_at,
                        started_at, finished_at, locked_by, locked_until, cancel_requested, errors, snoozes,
                        max_snoozes)
    SELECT %(id)s::text, %(topic)s::text, %(payload)s::text::json, %(status)s::text, %(priority)s::int4,
           %(run_at)s::timestamptz, %(attempts)s::int4, %(max_retries)s::int4, %(retry_delay)s::float8,
           %(backoff)s::text, %(timeout)s::float8, %(last_error)s::text, %(result)s::text::json,
           %(metadata)s::text::json, %(unique_key)s::text, %(schedule)s::text, %(created_at)s::timestamptz,
           %(updated_at)s::timestamptz, %(started_at)s::timestamptz, %(finished_at)s::timestamptz,
           %(locked_by)s::text, %(locked_until)s::timestamptz, %(cancel_requested)s::bool,
           %(errors)s::text::json, %(snoozes)s::int4, %(max_snoozes)s::int4
    FROM s
    ON CONFLICT (topic, unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')
    DO NOTHING
    RETURNING *
)
SELECT (SELECT count(*) FROM s) > 0 AS fired, ins.*
FROM (SELECT 1) AS one LEFT JOIN ins ON true
