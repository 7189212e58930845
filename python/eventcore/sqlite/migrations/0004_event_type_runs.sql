-- eventcore SQLite schema 4: a type index for type-only query items.
--
-- One row per event type per append (not per event): the first and last position of
-- that type's events in the append. A query for a type walks its runs whose last
-- position lies after the query's, and reads the events in each run's span that have
-- the type (other types may lie in between). A purge leaves its runs: their spans then
-- hold fewer events, or none. Existing events get one run per type per 1024 positions.
CREATE TABLE IF NOT EXISTS event_type_runs (
    event_type TEXT NOT NULL,
    last_position INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    PRIMARY KEY (event_type, last_position)
) WITHOUT ROWID;

INSERT INTO event_type_runs (event_type, last_position, first_position)
SELECT event_type, max(position), min(position) FROM events
GROUP BY event_type, (position - 1) / 1024;
