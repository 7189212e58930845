-- eventcore SQLite schema 1: the events, projection checkpoints and dead letters, snapshots.
--
-- Applied under the file's write lock by SqliteStore when PRAGMA user_version is below 1;
-- statements are separated by a semicolon at the end of a line.
--
-- position is the rowid: appends number it themselves (max + 1, under the write lock).
-- event_id: the UUID's 16 bytes; recorded_at: microseconds since the epoch (UTC);
-- metadata: Metadata.to_bytes(), NULL when empty.

CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    recorded_at INTEGER NOT NULL,
    metadata BLOB,
    UNIQUE (stream_id, version)
);

CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS projection_dead_letters (
    id INTEGER PRIMARY KEY,
    projection TEXT NOT NULL,
    position INTEGER NOT NULL,
    event_id BLOB,
    stream_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS projection_dead_letters_by_name ON projection_dead_letters (projection, id);

CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    streams TEXT NOT NULL,
    versions TEXT NOT NULL,
    fold_from INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    events INTEGER NOT NULL,
    state BLOB NOT NULL,
    taken_at REAL NOT NULL,
    checksum TEXT NOT NULL
) WITHOUT ROWID;
