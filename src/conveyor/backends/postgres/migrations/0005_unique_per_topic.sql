-- conveyor PostgreSQL schema, version 5: unique keys are scoped per topic (docs/api.md
-- "Unique keys and roles"): two topics may each have an active job with the same key.
-- The partial index enqueue uses as its ON CONFLICT target now covers (topic,
-- unique_key); existing jobs keep their keys (the old index could only be stricter).

DROP INDEX jobs_unique_key_idx;
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (topic, unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing');
