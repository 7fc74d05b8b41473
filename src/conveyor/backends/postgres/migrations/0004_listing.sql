-- conveyor PostgreSQL schema, version 4: listings whose first page, and any keyset page,
-- costs the same however many jobs the store holds.
--
-- Listings are newest first (id descending). Without a filter the primary key serves
-- them; a status filter walks (status, id); a topic filter, with or without a status,
-- walks (topic, status, id) (a topic alone: one range per status, merged). Two more
-- index entries per state change: the price of a dashboard that answers at once over a
-- million jobs. The totals come from the counters of migration 0002 (count_jobs).
-- Built in the migration's transaction (writers wait for it): on a large store run
-- `conveyor migrate` in a quiet moment.

CREATE INDEX jobs_status_id_idx ON jobs (status, id);
CREATE INDEX jobs_topic_status_id_idx ON jobs (topic, status, id);

-- How many jobs have this status and/or topic (NULL: any), exactly, from the counters
-- and the deltas not folded yet: a few rows per topic, never the jobs.
CREATE FUNCTION count_jobs(want_status text, want_topic text) RETURNS bigint LANGUAGE sql STABLE
    SET search_path FROM CURRENT AS $$
    SELECT coalesce(sum(a.n), 0)::bigint FROM (
        SELECT c.n FROM job_counts AS c
        WHERE (want_status IS NULL OR c.status = want_status) AND (want_topic IS NULL OR c.topic = want_topic)
        UNION ALL
        SELECT d.n FROM job_count_deltas AS d
        WHERE (want_status IS NULL OR d.status = want_status) AND (want_topic IS NULL OR d.topic = want_topic)
    ) AS a
$$;
