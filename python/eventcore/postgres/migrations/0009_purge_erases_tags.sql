-- eventcore schema 9: a purge erases the purged events' tags with them.
--
-- Tags (schema 8) live in their own table, and purge_stream (schema 6) predates them:
-- without this, a purged event's tags would outlive it (tags may be personal data, and
-- a tag read must not find what is gone). A row trigger on the events a purge deletes
-- (the only deletes the events table allows) deletes their tags in the same transaction,
-- as the purge's caller (purge_stream runs as the schema owner).

CREATE FUNCTION __SCHEMA__.erase_purged_tags() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM __SCHEMA__.event_tags t WHERE t.position = OLD.position;
    RETURN OLD;
END;
$$;

REVOKE ALL ON FUNCTION __SCHEMA__.erase_purged_tags() FROM PUBLIC;

CREATE TRIGGER events_purge_erases_tags
    AFTER DELETE ON __SCHEMA__.events
    FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.erase_purged_tags();
