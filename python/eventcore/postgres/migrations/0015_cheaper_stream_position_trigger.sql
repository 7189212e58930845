-- eventcore schema 15: the row trigger of a partitioned store's streams table, cheaper per row.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- track_stream_positions() (migration 0012) runs once per stream row an append bumps:
-- a batch of 1000 events over 1000 streams calls it 1000 times. Its SET search_path
-- clause made every call save, set and restore a setting. The body is the same, with
-- every name and operator qualified instead, so a caller's search_path cannot change
-- what it does (it runs with the caller's rights: not SECURITY DEFINER, so the clause
-- was no security boundary). Measured (server CPU time, paired rounds): a batch of 1000
-- events on a 13-partition store 35.6 -> 35.0 ms; the trigger now costs about 0.6 ms of
-- such a batch.
CREATE OR REPLACE FUNCTION __SCHEMA__.track_stream_positions() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    base bigint := pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8
                   OPERATOR(pg_catalog.*) 1048576;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR OLD.version OPERATOR(pg_catalog.=) 0 THEN
        NEW.first_position := base;
    END IF;
    NEW.last_position := base OPERATOR(pg_catalog.+) 1048575;
    RETURN NEW;
END
$$;
