-- eventcore SQLite schema 3: event tags (query reads and conditional appends).
--
-- One row per (event, tag); an untagged event has none. The primary key finds an event's
-- tags (reads return them), the index finds a tag's events after a position (queries).
CREATE TABLE IF NOT EXISTS event_tags (
    position INTEGER NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (position, tag)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS event_tags_by_tag ON event_tags (tag, position);
