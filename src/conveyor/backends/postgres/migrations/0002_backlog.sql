-- conveyor PostgreSQL schema, version 2: exact counts without counting rows.
--
-- stats() and the totals of list_jobs() read maintained counters instead of counting
-- the jobs table (a million rows took ~150 ms per call). Every statement that inserts,
-- deletes or changes the status/topic of jobs appends its net changes to job_count_deltas
-- from a statement-level trigger, in the same transaction: exact under concurrent
-- writers and crashes (a rolled-back statement leaves no delta), for every writer
-- (a caller's own connection and COPY included). Appending, never updating, means
-- concurrent workers never wait for each other on a hot counter row. The deltas are
-- folded into job_counts by compact_job_counts(), which stats() and the maintenance
-- pass call, so the deltas table stays small.
--
-- The functions run with this schema's search_path (SET ... FROM CURRENT), whatever the
-- connection that fires them uses.

CREATE TABLE job_counts (
    topic  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (topic, status)
);

CREATE TABLE job_count_deltas (
    topic  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL
);
-- Append-and-delete churn: vacuum early so the compaction scan stays short.
ALTER TABLE job_count_deltas SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- The jobs already stored (CREATE TRIGGER below locks out writers until we commit, so
-- this count and the triggers' deltas add up exactly).
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO job_counts (topic, status, n) SELECT topic, status, count(*) FROM jobs GROUP BY topic, status;

CREATE FUNCTION count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_count_deltas (topic, status, n)
    SELECT topic, status, count(*) FROM inserted GROUP BY topic, status;
    RETURN NULL;
END
$$;

CREATE FUNCTION count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_count_deltas (topic, status, n)
    SELECT topic, status, -count(*) FROM deleted GROUP BY topic, status;
    RETURN NULL;
END
$$;

-- Updates that keep every status (heartbeats, payload edits) net to nothing and append
-- no row.
CREATE FUNCTION count_updated_jobs() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_count_deltas (topic, status, n)
    SELECT topic, status, sum(n) FROM (
        SELECT topic, status, 1 AS n FROM after_rows
        UNION ALL
        SELECT topic, status, -1 AS n FROM before_rows
    ) AS changes
    GROUP BY topic, status
    HAVING sum(n) <> 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_jobs();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_jobs();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_updated_jobs();

-- Folds the deltas into job_counts in one transaction. Deltas another compaction is
-- folding right now are skipped (SKIP LOCKED), not waited for; counters are upserted in
-- key order so concurrent compactions cannot deadlock. Rows that reach zero go.
CREATE FUNCTION compact_job_counts() RETURNS bigint LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
DECLARE
    folded bigint;
BEGIN
    WITH moved AS (
        DELETE FROM job_count_deltas
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM job_count_deltas FOR UPDATE SKIP LOCKED))
        RETURNING topic, status, n
    ), summed AS (
        SELECT topic, status, sum(n) AS n, count(*) AS deltas FROM moved GROUP BY topic, status
    ), upserted AS (
        INSERT INTO job_counts AS c (topic, status, n)
        SELECT topic, status, n FROM summed ORDER BY topic, status
        ON CONFLICT (topic, status) DO UPDATE SET n = c.n + EXCLUDED.n
        RETURNING 1
    )
    SELECT coalesce(sum(deltas), 0) INTO folded FROM summed;
    DELETE FROM job_counts WHERE n = 0;
    RETURN folded;
END
$$;

-- stats(): compacts, then reads the counters and the deltas appended since (the read
-- adds both, so it is exact whatever compaction skipped).
CREATE FUNCTION current_job_counts() RETURNS TABLE (topic text, status text, n bigint) LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM compact_job_counts();
    RETURN QUERY
        SELECT a.topic, a.status, sum(a.n)::bigint FROM (
            SELECT c.topic, c.status, c.n FROM job_counts AS c
            UNION ALL
            SELECT d.topic, d.status, d.n FROM job_count_deltas AS d
        ) AS a
        GROUP BY a.topic, a.status
        HAVING sum(a.n) <> 0;
END
$$;

-- ---------------------------------------------------------------------------------
-- Claims and "when is the next job due" at a cost independent of the backlog.
--
-- Both walk the (topic, priority) groups that hold pending jobs of the worker's topics:
-- a loose index scan of jobs_pending_idx (one seek per group, highest priority first),
-- so they cost a few index seeks per group however many jobs wait, and their plan does
-- not depend on statistics (a table filled a second ago is claimed as fast). They are
-- functions so that their plans are cached per connection and planned with JIT off:
-- the planner's guess for the recursive walk is large enough to trigger JIT
-- compilation, which costs tens of milliseconds per claim and saves nothing here.

-- Claim up to `wanted` due jobs of `claim_topics` in claim order (priority DESC, run_at,
-- id) for `worker`, flipping them to processing:
-- - candidates: each group offers its first `wanted` due jobs, an exact index range
--   (run_at <= due, in run_at, id order: delayed jobs are never read);
-- - quotas: the first `wanted` candidates in claim order (a sort of at most
--   groups x wanted rows, never of the backlog) say how many jobs to take per group;
-- - picked: each group's range is read again, locking its quota and skipping rows other
--   claimers hold, so concurrent claimers go on down the range instead of coming back
--   empty, and no more rows are locked than are claimed.
CREATE FUNCTION claim_jobs(
    claim_topics text[], due timestamptz, wanted integer, worker text, lease_until timestamptz
) RETURNS SETOF jobs LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE pending_groups(topic, priority) AS (
        SELECT t.topic, (
            SELECT j.priority FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = t.topic
            ORDER BY j.priority DESC LIMIT 1)
        FROM unnest(claim_topics) AS t(topic)
        UNION ALL
        SELECT g.topic, (
            SELECT j.priority FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = g.topic AND j.priority < g.priority
            ORDER BY j.priority DESC LIMIT 1)
        FROM pending_groups AS g
        WHERE g.priority IS NOT NULL
    ), candidates AS (
        SELECT g.topic, g.priority, c.run_at, c.id
        FROM pending_groups AS g
        CROSS JOIN LATERAL (
            SELECT j.run_at, j.id FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = g.topic AND j.priority = g.priority AND j.run_at <= due
            ORDER BY j.run_at, j.id
            LIMIT wanted
        ) AS c
        WHERE g.priority IS NOT NULL
    ), quotas AS (
        SELECT f.topic, f.priority, count(*) AS quota
        FROM (SELECT c.topic, c.priority FROM candidates AS c
              ORDER BY c.priority DESC, c.run_at, c.id LIMIT wanted) AS f
        GROUP BY f.topic, f.priority
    ), picked AS (
        SELECT l.id
        FROM quotas AS q
        CROSS JOIN LATERAL (
            SELECT j.id FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = q.topic AND j.priority = q.priority AND j.run_at <= due
            ORDER BY j.run_at, j.id
            LIMIT q.quota
            FOR UPDATE SKIP LOCKED
        ) AS l
    )
    UPDATE jobs AS j
    SET status = 'processing', attempts = j.attempts + 1, locked_by = worker, locked_until = lease_until,
        started_at = due, updated_at = due
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.*;
END
$$;

-- The earliest run_at of the pending jobs of `wanted_topics` (NULL when there is none):
-- the first index entry of each group.
CREATE FUNCTION next_run_at(wanted_topics text[]) RETURNS timestamptz LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    RETURN (
        WITH RECURSIVE pending_groups(topic, priority) AS (
            SELECT t.topic, (
                SELECT j.priority FROM jobs AS j
                WHERE j.status = 'pending' AND j.topic = t.topic
                ORDER BY j.priority DESC LIMIT 1)
            FROM unnest(wanted_topics) AS t(topic)
            UNION ALL
            SELECT g.topic, (
                SELECT j.priority FROM jobs AS j
                WHERE j.status = 'pending' AND j.topic = g.topic AND j.priority < g.priority
                ORDER BY j.priority DESC LIMIT 1)
            FROM pending_groups AS g
            WHERE g.priority IS NOT NULL
        )
        SELECT min(f.run_at)
        FROM pending_groups AS g
        CROSS JOIN LATERAL (
            SELECT j.run_at FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = g.topic AND j.priority = g.priority
            ORDER BY j.run_at
            LIMIT 1
        ) AS f
        WHERE g.priority IS NOT NULL
    );
END
$$;

-- ---------------------------------------------------------------------------------
-- The maintenance pass: leases that expired (oldest first) and finished jobs past the
-- retention (oldest first), each an in-order walk of its partial index that stops after
-- `wanted` rows. Planned with sorts and bitmap/sequential scans disabled: on a table
-- filled a moment ago the planner, without statistics, would rather collect every
-- finished job and sort them, a cost that grows with the backlog.
CREATE FUNCTION expired_jobs(lease_before timestamptz, wanted integer) RETURNS SETOF jobs LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off AS $$
BEGIN
    RETURN QUERY
    SELECT j.* FROM jobs AS j
    WHERE j.status = 'processing' AND j.locked_until < lease_before
    ORDER BY j.locked_until
    LIMIT wanted;
END
$$;

CREATE FUNCTION prune_jobs(finished_before timestamptz, wanted integer) RETURNS bigint LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off AS $$
DECLARE
    pruned bigint;
BEGIN
    DELETE FROM jobs WHERE id = ANY (ARRAY(
        SELECT j.id FROM jobs AS j
        WHERE j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < finished_before
        ORDER BY j.finished_at
        LIMIT wanted));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;
