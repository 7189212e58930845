-- eventcore SQLite schema 2: stream lifecycle (soft delete, truncate-before, purge), with
-- the semantics of PostgreSQL's migration 0006 and of the in-memory store.
--
-- stream_lifecycle has a row only for a stream that was ever truncated or deleted:
-- - hidden_upto: versions 1..hidden_upto are hidden from stream reads and folds; it only
--   moves forward.
-- - truncated_at: the version the last truncation or deletion took (no event has it). A
--   stream's version is max(its last event's version, truncated_at): versions never go
--   back, and a state folded before truncated_at cannot be extended by a fold tail.
-- - purged_upto: versions 1..purged_upto were erased by a purge (<= hidden_upto).
--
-- purges is the audit trail of purge_stream (who, why, when, what). The global log keeps
-- hidden events until a purge deletes them; their positions stay empty and are never
-- taken again: the log's head is the highest position ever taken, in events or here.

CREATE TABLE IF NOT EXISTS stream_lifecycle (
    stream_id TEXT PRIMARY KEY,
    hidden_upto INTEGER NOT NULL,
    truncated_at INTEGER NOT NULL,
    purged_upto INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS purges (
    id INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    events INTEGER NOT NULL,
    from_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    purged_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS purges_by_stream ON purges (stream_id, id);

CREATE INDEX IF NOT EXISTS purges_by_last_position ON purges (last_position);
