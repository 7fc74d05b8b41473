-- 0006: the failed attempts of a job (errors: a JSON array, oldest first, the newest 20
-- kept), how often a handler snoozed it (snoozes) and the cap on that (max_snoozes).
-- Existing jobs get an empty history, no snoozes and the default cap.
ALTER TABLE jobs ADD COLUMN errors BLOB NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN max_snoozes INTEGER NOT NULL DEFAULT 100;
