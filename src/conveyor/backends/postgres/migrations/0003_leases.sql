-- 0003: store-wide leases. One row per lease name ('maintenance': the worker elected to
-- recover expired job leases, prune and fire schedules). Taken and renewed by one
-- compare-and-set upsert (ACQUIRE_LEADERSHIP), never a session advisory lock, so it
-- works through PgBouncer in transaction pooling mode.
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
