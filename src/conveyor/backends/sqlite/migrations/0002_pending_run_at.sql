-- 0002: pending jobs by topic and run_at.
-- jobs_claim (status, topic, priority DESC, run_at, id) cannot seek on run_at across
-- priorities, so "earliest pending run_at" (next_run_at) and "is anything due?" (the
-- read-only check before a claim takes the write lock) scanned every pending job of the
-- topic: O(backlog of delayed jobs) for every idle poll. This index makes both a seek.
-- It holds pending jobs only: a claim removes the entry, acks never touch it.
CREATE INDEX jobs_pending_run_at ON jobs (topic, run_at) WHERE status = 'pending';
