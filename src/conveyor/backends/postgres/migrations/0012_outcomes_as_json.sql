-- conveyor PostgreSQL schema, version 12: a batch of attempt outcomes travels as one
-- JSON array instead of ten parallel arrays.
--
-- psycopg works out the element type of every list parameter on every call, in Python:
-- for the ten arrays of a worker's round trip that cost ~6 µs of the worker's CPU per
-- job in a drain, more than the rest of the statement's parameters together. One
-- orjson-encoded text costs a fraction of that; the server parses it once into jsonb
-- and reads it with jsonb_to_recordset for about what unnest of ten array literals
-- cost (bench/README.md). The bodies are 0008's and 0009's otherwise.

DROP FUNCTION take_work(text, text[], boolean, timestamptz, text[], text[], integer[], text[], timestamptz[],
                        text[], text[], boolean[], boolean[], text[], text[], integer, text, timestamptz);
DROP FUNCTION finish_jobs(timestamptz, text[], text[], integer[], text[], timestamptz[], text[], text[], boolean[],
                          boolean[], text[]);

-- Stores attempt outcomes, each only while the attempt still holds the job (the fence:
-- processing, same lease holder, same attempt). `outcomes`: a JSON array of objects
-- with the keys of the record below (worker_side.outcomes_json). Returns the rows
-- stored.
CREATE FUNCTION finish_jobs(done_at timestamptz, outcomes jsonb) RETURNS SETOF jobs LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs AS j
    SET status = CASE WHEN o.status = 'pending' AND j.cancel_requested THEN 'cancelled' ELSE o.status END,
        run_at = CASE WHEN o.status = 'pending' AND NOT j.cancel_requested THEN coalesce(o.run_at, done_at)
                      ELSE j.run_at END,
        result = CASE WHEN o.status = 'completed' THEN o.result::json ELSE j.result END,
        last_error = coalesce(o.last_error, j.last_error),
        attempts = CASE WHEN o.refund THEN j.attempts - 1 ELSE j.attempts END,
        snoozes = CASE WHEN o.snooze THEN j.snoozes + 1 ELSE j.snoozes END,
        errors = CASE WHEN o.entry IS NULL THEN j.errors ELSE (
            SELECT json_agg(e.v ORDER BY e.n)
            FROM (SELECT a.v, a.n FROM json_array_elements(j.errors) WITH ORDINALITY AS a(v, n)
                  UNION ALL
                  SELECT o.entry::json, json_array_length(j.errors) + 1) AS e(v, n)
            WHERE e.n > json_array_length(j.errors) + 1 - 20) END,
        finished_at = CASE WHEN o.status <> 'pending' OR j.cancel_requested THEN done_at END,
        locked_by = NULL,
        locked_until = NULL,
        updated_at = done_at
    FROM (
        -- The LIMIT cuts nothing; without it the planner takes jsonb_to_recordset for 100
        -- rows (an array parameter's unnest: 10) and hashes them against a scan of every
        -- processing job. With it, 10 rows: one primary key probe per outcome.
        SELECT * FROM jsonb_to_recordset(outcomes)
            AS r(id text, locked_by text, attempts integer, status text, run_at timestamptz, result text,
                 last_error text, refund boolean, snooze boolean, entry text)
        LIMIT jsonb_array_length(outcomes)
    ) AS o
    WHERE j.id = o.id AND j.status = 'processing' AND j.locked_by = o.locked_by AND j.attempts = o.attempts
    RETURNING j.*;
END
$$;

-- The worker's round trip, as in 0008/0009 with the outcomes as one JSON array.
CREATE FUNCTION take_work(
    channel text, events text[], async_ack boolean, done_at timestamptz, outcomes jsonb,
    claim_topics text[], wanted integer, worker text, lease_until timestamptz
) RETURNS TABLE (claimed boolean, job jobs) LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    IF async_ack THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF cardinality(events) > 0 AND events_heard() THEN
        PERFORM pg_notify(channel, e) FROM unnest(events) AS e;
    END IF;
    IF jsonb_array_length(outcomes) > 0 THEN
        RETURN QUERY
        SELECT false, f FROM finish_jobs(done_at, outcomes) AS f;
    END IF;
    IF wanted > 0 THEN
        RETURN QUERY
        SELECT true, c FROM claim_jobs(claim_topics, done_at, wanted, worker, lease_until) AS c;
    END IF;
END
$$;
