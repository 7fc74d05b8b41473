-- conveyor PostgreSQL schema, version 7: the failed attempts of a job (errors: a JSON
-- array, oldest first, the newest 20 kept), how often a handler snoozed it (snoozes)
-- and the cap on that (max_snoozes). Constant defaults: no table rewrite, existing jobs
-- get an empty history, no snoozes and the default cap.
ALTER TABLE jobs
    ADD COLUMN errors json NOT NULL DEFAULT '[]',
    ADD COLUMN snoozes integer NOT NULL DEFAULT 0,
    ADD COLUMN max_snoozes integer NOT NULL DEFAULT 100;
