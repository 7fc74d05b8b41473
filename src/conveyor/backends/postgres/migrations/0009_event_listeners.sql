-- conveyor PostgreSQL schema, version 9: events cost nothing when nobody listens.
--
-- Every job event used to be sent with pg_notify, and delivered by the server to every
-- connection listening on the events channel (each worker's LISTEN connection among
-- them), whether or not anything consumed them. Now a process with subscribers
-- (PostgresBackend.subscribe(): the HTTP API's event streams, `conveyor events`, ...)
-- registers in event_listeners and renews its entry while they last; events are sent
-- only while an entry is live. The entry is written before subscribe() returns, so
-- every event of a later statement reaches it; a process that dies without removing
-- its entry costs events sent to nobody until the entry expires.

CREATE TABLE event_listeners (
    id         text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

-- Whether any process listens for events now (a few rows at most, read by primary key
-- order; statement-level: evaluated once per call).
CREATE FUNCTION events_heard() RETURNS boolean LANGUAGE sql STABLE
    SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM event_listeners WHERE expires_at > now())
$$;

-- take_work (migration 0008), sending its events only while someone listens.
CREATE OR REPLACE FUNCTION take_work(
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
    IF cardinality(events) > 0 AND events_heard() THEN
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
