-- conveyor PostgreSQL schema, version 15: the worker's round trip claims before it
-- stores its outcomes.
--
-- A worker keeps several round trips in flight on separate connections. Storing the
-- outcomes first made a round trip wait for the row locks of the jobs it finishes (a
-- heartbeat renewing their leases, say) before it claimed, so a round trip sent later
-- could claim first and take the earlier jobs: jobs then started out of run_at order
-- (worker/slots.py orders a worker's jobs by the order its round trips were sent).
-- Claiming first, a round trip takes its jobs as soon as it runs. A job one of its own
-- outcomes retries at once is claimed by the next round trip instead of this one.
CREATE OR REPLACE FUNCTION take_work(
    channel text, events text[], async_ack boolean, done_at timestamptz, outcomes jsonb,
    claim_topics text[], wanted integer, worker text, lease_until timestamptz
) RETURNS TABLE (claimed boolean, job jobs) LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    IF async_ack THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF wanted > 0 THEN
        RETURN QUERY
        SELECT true, c FROM claim_jobs(claim_topics, done_at, wanted, worker, lease_until) AS c;
    END IF;
    IF cardinality(events) > 0 AND events_heard() THEN
        PERFORM pg_notify(channel, e) FROM unnest(events) AS e;
    END IF;
    IF jsonb_array_length(outcomes) > 0 THEN
        RETURN QUERY
        SELECT false, f FROM finish_jobs(done_at, outcomes) AS f;
    END IF;
END
$$;
