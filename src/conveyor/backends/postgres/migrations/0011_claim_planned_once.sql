-- conveyor PostgreSQL schema, version 11: claim_jobs() plans its statements once per
-- connection, not once per claim.
--
-- Its statements took custom plans: the walk of the (topic, priority) groups has the
-- worker's topics as a parameter, so PL/pgSQL's plan cache kept planning it for each
-- call (a recursive CTE: ~11% of the server's CPU in a drain, profiled with perf). A
-- generic plan is made once and reused. Without the parameters' values the planner
-- could prefer a scan of the whole table or a sort of a group's due jobs (a generic
-- plan on a 2,000-job store updated the picked rows through a sequential scan), so
-- those are disabled here as in expired_jobs() and prune_jobs(): the only plans left
-- are the index walks explained in migrations 0002, 0006 and 0010 (the sort of the
-- several-group path's few candidates stays: it has no alternative).
-- Drain loop (bench/postgres_costs.py), server CPU per job: 104-125 µs before, 86-96 µs
-- after in most runs (bench/README.md).

ALTER FUNCTION claim_jobs(text[], timestamptz, integer, text, timestamptz)
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_bitmapscan = off
    SET enable_sort = off;
