-- conveyor PostgreSQL schema, version 13: heartbeats write no index entries, and a claim
-- one fewer.
--
-- jobs_lease_idx indexed locked_until, which every heartbeat renews (each running job,
-- about once a second): no renewal could be a HOT update, so each one added an entry to
-- every index of the table (primary key, pending, both listing indexes, lease) and left
-- them dead at the next. Without it a renewal changes no indexed column and can stay on
-- its page (HOT), and a claim writes four index entries instead of five. The lease
-- recovery finds expired leases among the running jobs through (status, id) instead: the
-- maintenance leader reads every running job once a pass, a cost bounded by the jobs
-- running (the workers' concurrency), never by the backlog; it sorts those that expired.

DROP INDEX jobs_lease_idx;

-- Room on each page for the renewals' new row versions. 200 running jobs renewed four
-- times each: 0 of 800 renewals were HOT before this migration, 339 with it (fillfactor
-- 90), 451 at 80 and 512 at 70; 90 keeps the table of finished jobs nearly as dense.
ALTER TABLE jobs SET (fillfactor = 90);

ALTER FUNCTION expired_jobs(timestamptz, integer) RESET enable_sort;
