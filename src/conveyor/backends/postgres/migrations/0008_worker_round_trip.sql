-- conveyor PostgreSQL schema, version 8: one statement per worker round trip.
--
-- A draining worker used to send a claim, an acknowledgement and its events as separate
-- statements (the events in pipeline mode beside one of the others). take_work() does
-- all three in one call: it sends the waiting events, stores a batch of attempt
-- outcomes and claims the next jobs, any of the three possibly empty. Being a function,
-- its statements are planned once per server connection and cached, also behind
-- PgBouncer where the client prepares nothing.

-- A batch of attempt outcomes, each fenced on (status, locked_by, attempts): the rules
-- of conveyor.core.lifecycle.apply. An outcome of status pending is a retry, except for
-- a job whose cancellation was requested meanwhile: that one ends cancelled. A failure's
-- errors entry (built by lifecycle.error_entry) is appended and the newest 20
-- (lifecycle.ERRORS_KEPT) kept. Returns the jobs as stored; an outcome whose fence does
-- not hold (the lease was lost) changes nothing and returns nothing.
CREATE FUNCTION finish_jobs(
    done_at timestamptz, outcome_ids text[], outcome_holders text[], outcome_attempts integer[],
    outcome_statuses text[], outcome_run_ats timestamptz[], outcome_results text[], outcome_errors text[],
    outcome_refunds boolean[], outcome_snoozes boolean[], outcome_entries text[]
) RETURNS SETOF jobs LANGUAGE plpgsql
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
    FROM unnest(outcome_ids, outcome_holders, outcome_attempts, outcome_statuses, outcome_run_ats,
                outcome_results, outcome_errors, outcome_refunds, outcome_snoozes, outcome_entries)
         AS o(id, locked_by, attempts, status, run_at, result, last_error, refund, snooze, entry)
    WHERE j.id = o.id AND j.status = 'processing' AND j.locked_by = o.locked_by AND j.attempts = o.attempts
    RETURNING j.*;
END
$$;

-- The worker's round trip: events, outcomes, claim. Rows come back as (claimed, job):
-- first the jobs the outcomes were stored on (claimed false), then the jobs claimed
-- (claimed true; a retry due at once may be both).
-- - events: payloads for pg_notify on `channel` (delivered on commit);
-- - async_ack (CONVEYOR_PG_ASYNC_ACK): the transaction commits without waiting for the
--   WAL flush (synchronous_commit off for it alone). A PostgreSQL crash can then forget
--   its last fraction of a second: outcomes whose jobs are still processing under their
--   old lease and run again once it expires, claims whose jobs are pending again and
--   run again. A re-run, never a lost job (docs/postgres.md "Durability").
-- - claim: up to `wanted` due jobs of `claim_topics` (claim_jobs, migrations 0002/0006).
CREATE FUNCTION take_work(
    channel text, events text[], async_ack boolean, done_at timestamptz,
    outcome_ids text[], outcome_holders text[], outcome_attempts integer[], outcome_statuses text[],
    outcome_run_ats timestamptz[], outcome_results text[], outcome_errors text[], outcome_refunds boolean[],
    outcome_snoozes boolean[], outcome_entries text[],
    claim_topics text[], wanted integer, worker text, lease_until timestamptz
) RETURNS TABLE (claimed boolean, job jobs) LANGUAGE plpgsql
    SET search_path FROM CURRENT SET jit = off AS $$
BEGIN
    IF async_ack THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF cardinality(events) > 0 THEN
        PERFORM pg_notify(channel, e) FROM unnest(events) AS e;
    END IF;
    IF cardinality(outcome_ids) > 0 THEN
        RETURN QUERY
        SELECT false, f FROM finish_jobs(done_at, outcome_ids, outcome_holders, outcome_attempts, outcome_statuses,
                                         outcome_run_ats, outcome_results, outcome_errors, outcome_refunds,
                                         outcome_snoozes, outcome_entries) AS f;
    END IF;
    IF wanted > 0 THEN
        RETURN QUERY
        SELECT true, c FROM claim_jobs(claim_topics, done_at, wanted, worker, lease_until) AS c;
    END IF;
END
$$;
