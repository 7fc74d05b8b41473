-- 0004: costs that do not grow with the backlog.
--
-- Counts by status and topic, kept by triggers in the transaction of every insert,
-- delete and status (or topic) change, whichever statement makes it: stats() and the
-- totals of list_jobs() read this table (a row per topic and status) instead of
-- counting a million jobs, and stay exact after crashes (a rolled-back change rolls
-- its count back too). A count that drops to 0 keeps its row; readers skip it.
CREATE TABLE job_counts (
    status TEXT NOT NULL,
    topic  TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (status, topic)
) WITHOUT ROWID;

INSERT INTO job_counts (status, topic, n) SELECT status, topic, count(*) FROM jobs GROUP BY status, topic;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (status, topic, n) VALUES (NEW.status, NEW.topic, 1)
        ON CONFLICT (status, topic) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND topic = OLD.topic;
END;

CREATE TRIGGER jobs_counted_update AFTER UPDATE OF status, topic ON jobs
    WHEN NEW.status IS NOT OLD.status OR NEW.topic IS NOT OLD.topic
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND topic = OLD.topic;
    INSERT INTO job_counts (status, topic, n) VALUES (NEW.status, NEW.topic, 1)
        ON CONFLICT (status, topic) DO UPDATE SET n = n + 1;
END;

-- Listing newest first with a status filter, with status and topic, and (a merge of one
-- read per status) with a topic filter: the first page and every keyset page are read
-- in index order, however many jobs match.
CREATE INDEX jobs_list_status ON jobs (status, id);
CREATE INDEX jobs_list_status_topic ON jobs (status, topic, id);

-- The claim index holds pending jobs only: a claim, "is anything due?" and next_run_at
-- read it per priority level of a topic (see queries.CLAIM_LEVELS), which never
-- touches a delayed job; finished jobs no longer sit in it, and finishing a job no
-- longer updates it. jobs_pending_run_at served the last two only: one index less to
-- update on every enqueue and claim. Expired leases are read with jobs_list_status.
DROP INDEX jobs_pending_run_at;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (topic, priority DESC, run_at, id) WHERE status = 'pending';
