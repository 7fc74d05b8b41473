-- conveyor PostgreSQL schema, version 1.
--
-- Applied by PostgresBackend.migrate() inside one transaction, under an advisory lock,
-- with search_path set to the backend's schema (so names here are unqualified).
-- __JOBS_CHANNEL__ is replaced by the schema's NOTIFY channel for wake-ups.

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    topic            text NOT NULL,
    payload          json,
    status           text NOT NULL
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL DEFAULT 3,
    retry_delay      double precision NOT NULL DEFAULT 60,
    backoff          text NOT NULL DEFAULT 'quadratic',
    timeout          double precision,
    last_error       text,
    result           json,
    metadata         json NOT NULL DEFAULT '{}',
    unique_key       text,
    schedule         text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    locked_by        text,
    locked_until     timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false
);

-- A queue table churns: vacuum it early so dead tuples of claimed/finished jobs do not
-- slow the claim index scans down.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Claims: only pending rows are indexed, in claim order, so a claim stays an index range
-- scan however many finished jobs the table holds.
CREATE INDEX jobs_pending_idx ON jobs (topic, priority DESC, run_at, id) WHERE status = 'pending';
-- expired(): leases of running jobs.
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE status = 'processing';
-- prune(): finished jobs by age.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');
-- unique_key: at most one active job per key; enqueue uses ON CONFLICT on this index.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing');
-- list_jobs() walks the primary key newest first. No (status, id) / (topic, id) indexes on
-- purpose: every claim and finish rewrites the row (status is indexed, so no HOT update)
-- and would pay for them twice per job; listing is rare, claiming is the hot path.

-- Wake-ups: a NOTIFY on the schema's jobs channel whenever jobs are inserted or a job
-- becomes pending (retry, requeue, update). In a trigger so that it also happens for
-- enqueues through a caller's own connection, and is delivered only on commit.
CREATE FUNCTION notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_jobs('__JOBS_CHANNEL__');
CREATE TRIGGER jobs_notify_pending AFTER UPDATE ON jobs
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION notify_jobs('__JOBS_CHANNEL__');

CREATE TABLE workers (
    id             text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    topics         text[] NOT NULL,
    concurrency    integer NOT NULL,
    active_jobs    text[] NOT NULL,
    started_at     timestamptz,
    last_heartbeat timestamptz
);

CREATE TABLE schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    topic         text NOT NULL,
    timezone      text NOT NULL,
    payload       json,
    options       json NOT NULL,
    enabled       boolean NOT NULL,
    last_fired_at timestamptz,
    next_run_at   timestamptz,
    created_at    timestamptz,
    updated_at    timestamptz
);
