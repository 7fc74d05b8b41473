-- 0003: store-wide leases. One row per lease name ('maintenance': the worker elected to
-- recover expired job leases, prune and fire schedules). Taken and renewed by one
-- compare-and-set upsert (ACQUIRE_LEADERSHIP), so it needs no lock held across calls.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
