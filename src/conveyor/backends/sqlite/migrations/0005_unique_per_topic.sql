-- 0005: unique keys are scoped per topic (docs/api.md "Unique keys and roles"): two
-- topics may each have an active job with the same key. The partial index that enqueue
-- uses as its ON CONFLICT target now covers (topic, unique_key). Existing jobs keep
-- their keys; an old index entry can only be stricter than the new one.
DROP INDEX IF EXISTS jobs_unique_active;
CREATE UNIQUE INDEX jobs_unique_active ON jobs (topic, unique_key)
    WHERE status IN ('pending', 'processing') AND unique_key IS NOT NULL;
