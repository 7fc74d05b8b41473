-- 0007: who listens for job events (conveyor.backends.presence). A process with
-- subscribers keeps a row here, renewed while it listens and removed when it stops;
-- publishers build and append event rows only while some row is live, so that events
-- nobody tails cost an enqueue or an attempt nothing. A crashed process's row expires.
CREATE TABLE event_listeners (
    id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL  -- microseconds since the epoch
) WITHOUT ROWID;
