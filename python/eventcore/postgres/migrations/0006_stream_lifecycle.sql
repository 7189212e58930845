-- eventcore schema 6: stream lifecycle. Soft delete and truncate-before hide a stream's
-- events from stream reads and folds; a purge, the owner's privileged and audited path,
-- erases hidden events.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- - streams.hidden_upto: versions 1..hidden_upto are hidden (stream reads and folds skip
--   them). It only moves forward. A truncation or deletion that hides something takes
--   the stream's next version (no event has it): a command that folded the stream before
--   it expects an older version and conflicts, also on the warm path that appends a
--   cached state without reading. The version never goes back: an append to a deleted
--   stream continues after it.
-- - streams.truncated_at: the version the last truncation took (0: never). A state
--   folded at an earlier version may hold events hidden now, so a fold tail (a state
--   cache entry, a snapshot, a conflict's tail) cannot extend it.
-- - streams.purged_upto: versions 1..purged_upto were erased by purge_stream.
-- - truncate_stream() is the application's (EXECUTE granted like append_events': see the
--   README's GRANTs). purge_stream() is the owner's: SECURITY DEFINER, EXECUTE granted to
--   nobody, each call leaves a row in purges (who, when, which stream, how many events,
--   which positions).
-- - The global log keeps hidden events until a purge; a purge leaves its positions empty.
--   Readers never wait on a hole: they wait only for in-flight appends (the horizon of
--   0003), and positions were never dense. The purge's transaction holds the events
--   table's ROW EXCLUSIVE lock, so readers stay below it until it ends, then read past the
--   deleted range (first_position..last_position in purges).

ALTER TABLE __SCHEMA__.streams
    ADD COLUMN hidden_upto  bigint NOT NULL DEFAULT 0,
    ADD COLUMN truncated_at bigint NOT NULL DEFAULT 0,
    ADD COLUMN purged_upto  bigint NOT NULL DEFAULT 0;

-- The audit trail of purges: written only by purge_stream, never changed.
CREATE TABLE __SCHEMA__.purges (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id      text        COLLATE "C" NOT NULL,
    events         bigint      NOT NULL,
    from_version   bigint      NOT NULL,
    to_version     bigint      NOT NULL,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL,
    actor          text        NOT NULL,
    database_user  text        NOT NULL DEFAULT session_user,
    reason         text        NOT NULL,
    purged_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purges_stream_id_idx ON __SCHEMA__.purges (stream_id);
REVOKE ALL ON __SCHEMA__.purges FROM PUBLIC;

-- Stored events and purge records never change; the one exception is purge_stream's
-- DELETE of hidden events, which it marks with a transaction-local setting. Only a role
-- with the DELETE privilege on events can get that far: the owner (granted below, for
-- purge_stream), never the application role.
CREATE OR REPLACE FUNCTION __SCHEMA__.forbid_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events'
       AND current_setting('eventcore.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'eventcore: stored events are immutable (% on %.% refused)',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER purges_immutable
    BEFORE UPDATE OR DELETE ON __SCHEMA__.purges
    FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.forbid_event_change();

CREATE TRIGGER purges_no_truncate
    BEFORE TRUNCATE ON __SCHEMA__.purges
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.forbid_event_change();

GRANT DELETE ON __SCHEMA__.events TO CURRENT_USER;

-- Hide the events of p_stream with a version below p_before (NULL: every event it has,
-- a soft delete) after checking p_expected like append_events (-1 any, -2 exists, else
-- exact). Returns (o_status, o_version: the version after it): 'ok', 'conflict' (nothing hidden) or 'range'
-- (p_before is not in 1..version + 1; nothing hidden). The stream's row is locked as an
-- append locks it, so a truncation and an append to one stream are serialized.
CREATE FUNCTION __SCHEMA__.truncate_stream(
    p_stream text, p_before bigint, p_expected bigint,
    OUT o_status text, OUT o_version bigint
)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hidden bigint;
    hide bigint;
BEGIN
    SELECT s.version, s.hidden_upto INTO o_version, hidden
      FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        o_version := 0;
        hidden := 0;
    END IF;
    IF NOT (p_expected = -1 OR (p_expected = -2 AND o_version > 0) OR p_expected = o_version)
    THEN
        o_status := 'conflict';
        RETURN;
    END IF;
    IF p_before IS NOT NULL AND (p_before < 1 OR p_before > o_version + 1) THEN
        o_status := 'range';
        RETURN;
    END IF;
    hide := coalesce(p_before - 1, o_version);
    -- Only a truncation that hides an event takes a version (and moves the point).
    IF EXISTS (SELECT 1 FROM __SCHEMA__.events e
                WHERE e.stream_id = p_stream AND e.version > hidden AND e.version <= hide) THEN
        UPDATE __SCHEMA__.streams s
           SET hidden_upto = hide, version = s.version + 1, truncated_at = s.version + 1
         WHERE s.stream_id = p_stream
        RETURNING s.version INTO o_version;
    END IF;
    o_status := 'ok';
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.truncate_stream(text, bigint, bigint) FROM PUBLIC;

-- Whoever may append may truncate (an application role granted EXECUTE on append_events
-- as the README shows).
DO $grants$
DECLARE
    who text;
BEGIN
    FOR who IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_proc f, aclexplode(f.proacl) a
          LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE f.oid = ('__SCHEMA__.append_events(text[], bigint[], uuid[], text[],'
                        ' text[], bytea[], uuid, uuid, text, jsonb)')::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.truncate_stream(text, bigint,'
                       ' bigint) TO %s', who);
    END LOOP;
END
$grants$;

-- Erase the hidden events of p_stream not erased yet, and record it in purges. The
-- owner's alone: EXECUTE is granted to nobody.
CREATE FUNCTION __SCHEMA__.purge_stream(p_stream text, p_actor text, p_reason text)
RETURNS SETOF __SCHEMA__.purges
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hidden bigint;
    purged bigint;
    n bigint := 0;
    v_from bigint := 0;
    v_to bigint := 0;
    p_first bigint := 0;
    p_last bigint := 0;
BEGIN
    IF p_actor IS NULL OR btrim(p_actor) = '' THEN
        RAISE EXCEPTION 'eventcore: a purge must name its actor'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.hidden_upto, s.purged_upto INTO hidden, purged
      FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream FOR UPDATE;
    IF FOUND AND hidden > purged THEN
        PERFORM set_config('eventcore.purging', 'on', true);
        WITH gone AS (
            DELETE FROM __SCHEMA__.events e
             WHERE e.stream_id = p_stream AND e.version > purged AND e.version <= hidden
            RETURNING e.version, e.position
        )
        SELECT count(*), coalesce(min(g.version), 0), coalesce(max(g.version), 0),
               coalesce(min(g.position), 0), coalesce(max(g.position), 0)
          INTO n, v_from, v_to, p_first, p_last
          FROM gone g;
        PERFORM set_config('eventcore.purging', '', true);
        UPDATE __SCHEMA__.streams s SET purged_upto = hidden WHERE s.stream_id = p_stream;
    END IF;
    RETURN QUERY
    INSERT INTO __SCHEMA__.purges (stream_id, events, from_version, to_version,
                                   first_position, last_position, actor, reason)
    VALUES (p_stream, n, v_from, v_to, p_first, p_last, p_actor, p_reason)
    RETURNING *;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.purge_stream(text, text, text) FROM PUBLIC;

-- 0005's conflict_tail, and: no tail (NULL, the caller reads) when a checked stream was
-- truncated after the version the caller folded up to.
CREATE OR REPLACE FUNCTION __SCHEMA__.conflict_tail(
    p_streams text[], p_after bigint[],
    OUT s text[], OUT t text[], OUT p bytea[], OUT v bigint[], OUT pos bigint[]
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM 1
       FROM unnest(p_streams, p_after) AS c(sid, after)
       JOIN __SCHEMA__.streams st ON st.stream_id = c.sid
      WHERE c.after >= 0 AND st.truncated_at > c.after;
    IF FOUND THEN
        RETURN;  -- every column NULL
    END IF;
    SELECT count(*), array_agg(e.stream_id ORDER BY e.position),
           array_agg(e.event_type ORDER BY e.position), array_agg(e.payload ORDER BY e.position),
           array_agg(e.version ORDER BY e.position), array_agg(e.position ORDER BY e.position)
      INTO n, s, t, p, v, pos
      FROM unnest(p_streams, p_after) AS c(sid, after)
      CROSS JOIN LATERAL (
          SELECT e.stream_id, e.event_type, e.payload, e.version, e.position
            FROM __SCHEMA__.events e
           WHERE e.stream_id = c.sid AND e.version >= c.after
           ORDER BY e.version
           LIMIT 257) e
     WHERE c.after >= 0;
    IF n > 256 THEN
        s := NULL; t := NULL; p := NULL; v := NULL; pos := NULL;
    ELSIF n = 0 THEN
        s := '{}'; t := '{}'; p := '{}'; v := '{}'; pos := '{}';
    END IF;
END
$$;
