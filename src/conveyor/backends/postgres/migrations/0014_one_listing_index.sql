-- conveyor PostgreSQL schema, version 14: one listing index instead of two.
--
-- Every state change rewrites a job's row (status is indexed, so no HOT update) and
-- adds an entry to each index: jobs_status_id_idx cost every job three entries (insert,
-- claim, finish), about 8 % of PostgreSQL's CPU per job in a drain (bench/README.md).
-- What it served, (topic, status, id) serves too, one range per topic: a listing by
-- status alone merges the first rows of each topic holding jobs of that status (as a
-- topic alone already merges one range per status), and the lease recovery walks the
-- running jobs of each topic. Both cost a few index seeks per topic, never a read of
-- the backlog; the topics come from the job counters (migration 0002), not the jobs.

DROP INDEX jobs_status_id_idx;

-- The topics that may hold jobs of `want_status`: those of its counters and of the
-- deltas not folded yet. A topic holding such a job has a nonzero sum over the two, so
-- a row in one of them (a topic whose jobs of that status are gone may still appear: a
-- range with nothing in it).
CREATE FUNCTION topics_with(want_status text) RETURNS SETOF text LANGUAGE sql STABLE
    SET search_path FROM CURRENT AS $$
    SELECT c.topic FROM job_counts AS c WHERE c.status = want_status
    UNION
    SELECT d.topic FROM job_count_deltas AS d WHERE d.status = want_status
$$;

-- Expired leases, oldest first: the running jobs of each topic (bounded by the workers'
-- concurrency, never by the backlog), sorted by lease.
CREATE OR REPLACE FUNCTION expired_jobs(lease_before timestamptz, wanted integer) RETURNS SETOF jobs LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off
    SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    RETURN QUERY
    SELECT j.* FROM topics_with('processing') AS g(topic)
    CROSS JOIN LATERAL (
        SELECT * FROM jobs AS r
        WHERE r.topic = g.topic AND r.status = 'processing' AND r.locked_until < lease_before
    ) AS j
    ORDER BY j.locked_until
    LIMIT wanted;
END
$$;
