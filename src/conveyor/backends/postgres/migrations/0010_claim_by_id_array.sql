-- conveyor PostgreSQL schema, version 10: claim_jobs() updates the rows it picked
-- through `id = ANY (ARRAY(...))`, an index probe per picked id, instead of joining the
-- picked rows to jobs. Once the table had statistics (autoanalyze after a bulk import),
-- the planner estimated `LIMIT quota` of each group at a tenth of the group's due rows
-- (46,540 picked rows on a 1,000,000-job store for 10 actual), hashed the whole jobs
-- table to join them and spilled it to disk: ~500 ms per claim, a worker draining 30
-- jobs/s. The body is 0006's otherwise.

CREATE OR REPLACE FUNCTION claim_jobs(
    claim_topics text[], due timestamptz, wanted integer, worker text, lease_until timestamptz
) RETURNS SETOF jobs LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
DECLARE
    group_topics text[];
    group_priorities integer[];
BEGIN
    -- The groups holding pending jobs: a loose index scan of jobs_pending_idx (see 0002).
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
    )
    SELECT array_agg(g.topic), array_agg(g.priority) INTO group_topics, group_priorities
    FROM pending_groups AS g
    WHERE g.priority IS NOT NULL;

    IF group_topics IS NULL THEN
        RETURN;
    END IF;

    IF cardinality(group_topics) = 1 THEN
        -- One group: its first due jobs, locked as the range is read.
        RETURN QUERY
        WITH picked AS (
            SELECT j.id FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = group_topics[1] AND j.priority = group_priorities[1]
                AND j.run_at <= due
            ORDER BY j.run_at, j.id
            LIMIT wanted
            FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs AS j
        SET status = 'processing', attempts = j.attempts + 1, locked_by = worker, locked_until = lease_until,
            started_at = due, updated_at = due
        WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))
        RETURNING j.*;
        RETURN;
    END IF;

    -- Several groups: candidates merged in claim order, quotas, each quota locked (see 0002).
    RETURN QUERY
    WITH candidates AS (
        SELECT g.topic, g.priority, c.run_at, c.id
        FROM unnest(group_topics, group_priorities) AS g(topic, priority)
        CROSS JOIN LATERAL (
            SELECT j.run_at, j.id FROM jobs AS j
            WHERE j.status = 'pending' AND j.topic = g.topic AND j.priority = g.priority AND j.run_at <= due
            ORDER BY j.run_at, j.id
            LIMIT wanted
        ) AS c
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
    WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))
    RETURNING j.*;
END
$$;
