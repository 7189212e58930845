-- eventcore SQLite schema 5: events stored by segment, not by row.
--
-- A segment is a run of consecutive events of one stream within one append: one row
-- for all of them (a batch of 1000 events of one stream is one row; a transfer is two).
-- Its events have the positions last_position - n + 1 .. last_position and the versions
-- last_version - n + 1 .. last_version, in the same order. A purge erases a prefix of a
-- stream, so it trims segments from the front (n shrinks) or deletes them: the positions
-- and versions of the events left never change.
-- - types: the events' type as TEXT when they all have one, else a JSON array (BLOB).
-- - payloads: n = 1: the payload; else a msgpack array of the payloads.
-- - ids: the events' ids, 16 bytes each, concatenated.
-- - recorded_at, metadata: those of the append (one per append).
--
-- event_id_runs finds events by id without a row per event: each segment's ids, sorted
-- and grouped by their first 6 bytes (a UUIDv7's millisecond), give one run (lo, hi)
-- per group. An id can only be in a run of its own bucket whose range holds it; the
-- segment (its last_position) is then decoded to be sure. UUIDv7 ids of one append make
-- one or a few runs; random ids one run each.
--
-- From this schema on the type index (migration 0004) has one run per type per segment
-- (not per append); a segment of one type gets its run, and a segment of one event its id
-- run, from the triggers below (in the INSERT's own statement); the store writes the rest.
--
-- Existing events become segments of one event each (nothing is decoded in SQL); the
-- triggers are made after they are copied (their type runs exist already).

CREATE TABLE IF NOT EXISTS segments (
    last_position INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    last_version INTEGER NOT NULL,
    types NOT NULL,
    payloads BLOB NOT NULL,
    ids BLOB NOT NULL,
    recorded_at INTEGER NOT NULL,
    metadata BLOB,
    UNIQUE (stream_id, last_version)
);

CREATE TABLE IF NOT EXISTS event_id_runs (
    bucket BLOB NOT NULL,
    hi BLOB NOT NULL,
    lo BLOB NOT NULL,
    last_position INTEGER NOT NULL,
    PRIMARY KEY (bucket, hi, last_position)
) WITHOUT ROWID;

INSERT INTO segments (last_position, n, stream_id, last_version, types, payloads, ids,
    recorded_at, metadata)
SELECT position, 1, stream_id, version, event_type, payload, event_id, recorded_at, metadata
FROM events ORDER BY position;

INSERT INTO event_id_runs (bucket, hi, lo, last_position)
SELECT substr(event_id, 1, 6), event_id, event_id, position FROM events;

DROP TABLE events;

CREATE TRIGGER IF NOT EXISTS segments_id_run AFTER INSERT ON segments WHEN NEW.n = 1
BEGIN
    INSERT INTO event_id_runs (bucket, hi, lo, last_position)
    VALUES (substr(NEW.ids, 1, 6), NEW.ids, NEW.ids, NEW.last_position); END;

CREATE TRIGGER IF NOT EXISTS segments_type_run AFTER INSERT ON segments
WHEN typeof(NEW.types) = 'text'
BEGIN
    INSERT INTO event_type_runs (event_type, last_position, first_position)
    VALUES (NEW.types, NEW.last_position, NEW.last_position - NEW.n + 1); END;
