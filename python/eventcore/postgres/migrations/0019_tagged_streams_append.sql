-- eventcore schema 19: a tagged or conditional append into several streams in one pass.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- append_tagged_streams is append_events_tagged (schema 14) for an append of one or more
-- events into several streams (or one stream and a check of another): the same arguments
-- plus p_read_limit, the same locks and the same answers, with each lock taken once.
-- append_events_tagged took the advisory keys of what it writes and of the condition
-- (lock_written), checked the condition, then called append_events, which took the
-- written types' keys again before its stream locks. Here, per call:
--
-- 1. every advisory key once (schema 8's lock_written: shared the whole log and each
--    written type and tag, exclusive each condition item's first tag, else its types,
--    else the whole log), sorted, a key both shared and exclusive taken exclusive; then
--    the stream locks (append_events' step 2: every stream written exclusive, every
--    stream only checked shared), sorted. Every writer takes the keys of the DCB key
--    space before those of the streams' and each space in ascending order: one order,
--    no deadlock. All before this transaction takes an id;
-- 2. the condition: condition_match (schema 18) after the locks, a VOLATILE function whose
--    statements read a snapshot taken after them (so it sees every writer it waited
--    for). A match answers "condition" (matched: its position) with read_query's rows
--    (the carried read, as append_tagged_stream); -1 (an event id of the append stored:
--    a replay of an append that passed) answers all NULL;
-- 3. write_tagged_streams (below): ONE statement: no event id stored, every expected
--    version holds (the stream locks keep them still), then the stream rows bumped or
--    created, the events and their tag rows. It holds the events table's lock from its
--    start and its first row written takes the transaction id, after every lock (the
--    never-skipping log: 0003). The store's direct statement (a role that may write the
--    tables) takes the same locks itself and calls it too: one check and write for both.
--
-- Answers (the first row): first_position set: written (positions consecutive from it),
-- streams and versions: every stream written or checked with its version now.
-- streams set without first_position: a version conflict (the streams whose check failed,
-- in the order given, conflict_expected and versions), with append_events' tail columns.
-- matched set: the condition failed (read_query's rows follow, in its columns). All NULL:
-- an event id is stored already; the store sends the same append to append_events_tagged,
-- which answers replay or duplicate.

-- What append_tagged_streams and the store's direct statement do after the locks and the
-- condition (step 3): ONE statement, append_events' path F with the tag rows and the
-- streams only checked. Nothing is written unless no event id is stored (fresh) and
-- every expected version holds (fits); an existing stream row is bumped only from the
-- version read (re-checked on the row, for a writer that bypassed the locks: then fewer
-- rows than streams, the events are not written and it raises serialization_failure).
-- The statement holds the events table's lock from its start and its first row written
-- takes the transaction id; a caller's transaction that holds an id already is refused
-- (EC001, as append_events). Its answer is append_tagged_streams' first row without
-- matched: written, a conflict, or all NULL (an event id is stored).
-- A VOLATILE function's statement reads a snapshot taken when it starts: after the
-- caller's locks, where the direct statement's own was taken before them. SECURITY
-- DEFINER and granted to nobody, as stream_conflict (0016), which the direct statements
-- call likewise: a role that may not call it takes append_tagged_streams.
CREATE TYPE __SCHEMA__.tagged_streams_written AS (
    first_position    bigint,
    streams           text[],
    versions          bigint[],
    conflict_expected bigint[],
    tail_streams      text[],
    tail_types        text[],
    tail_payloads     bytea[],
    tail_versions     bigint[],
    tail_positions    bigint[]
);
CREATE FUNCTION __SCHEMA__.write_tagged_streams(
    p_expected_streams  text[],
    p_expected_versions bigint[],
    p_event_ids         uuid[],
    p_stream_ids        text[],
    p_event_types       text[],
    p_payloads          bytea[],
    p_causation_id      uuid,
    p_correlation_id    uuid,
    p_user_id           text,
    p_custom            jsonb,
    p_tags              text[],
    p_tag_events        integer[]
) RETURNS __SCHEMA__.tagged_streams_written
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    answer  __SCHEMA__.tagged_streams_written;
    n       integer := coalesce(cardinality(p_event_ids), 0);
    fresh   boolean;
    fits    boolean;
    written bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: append_events must run in a transaction that has not '
                        'written anything yet (this one already holds a transaction id)'
            USING ERRCODE = 'EC001',
                  HINT = 'call it in its own transaction (autocommit), once per transaction';
    END IF;
    WITH x AS (
        SELECT w.s, w.c, coalesce(ex.e, -1) AS e, st.version AS v
          FROM (SELECT u.s, sum(u.c)::integer AS c
                  FROM (SELECT s, 1 AS c FROM unnest(p_stream_ids) s
                        UNION ALL SELECT s, 0 FROM unnest(p_expected_streams) s) u
                 GROUP BY u.s) w
          LEFT JOIN unnest(p_expected_streams, p_expected_versions) AS ex(s, e)
                 ON ex.s = w.s
          LEFT JOIN __SCHEMA__.streams st ON st.stream_id = w.s
    ), chk AS (
        SELECT NOT EXISTS (SELECT 1 FROM __SCHEMA__.events e
                            WHERE e.event_id = ANY (p_event_ids)) AS fresh,
               (SELECT coalesce(bool_and(x.e = -1
                                         OR (x.e = -2 AND coalesce(x.v, 0) > 0)
                                         OR (x.e >= 0 AND coalesce(x.v, 0) = x.e)), true)
                  FROM x) AS fits,
               (SELECT count(*) FROM x WHERE x.c > 0) AS wanted
    ), upd AS (
        UPDATE __SCHEMA__.streams st SET version = st.version + x.c
          FROM x, chk
         WHERE chk.fresh AND chk.fits AND x.c > 0 AND x.v IS NOT NULL
           AND st.stream_id = x.s AND st.version = x.v
        RETURNING st.stream_id, st.version, x.c
    ), ins AS (
        INSERT INTO __SCHEMA__.streams AS st (stream_id, version)
        SELECT x.s, x.c FROM x, chk
         WHERE chk.fresh AND chk.fits AND x.c > 0 AND x.v IS NULL
         ORDER BY x.s
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING st.stream_id, st.version, st.version AS c
    ), nv AS (
        SELECT * FROM upd UNION ALL SELECT * FROM ins
    ), ev AS (
        INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                       payload, causation_id, correlation_id, user_id,
                                       custom)
        SELECT pg_current_xact_id()::text::bigint * 1048576 + y.i - 1, y.id, y.s,
               nv.version - nv.c + row_number() OVER (PARTITION BY y.s ORDER BY y.i),
               y.t, y.p, p_causation_id, p_correlation_id, p_user_id, p_custom
          FROM ROWS FROM (unnest(p_event_ids), unnest(p_stream_ids), unnest(p_event_types),
                          unnest(p_payloads)) WITH ORDINALITY AS y(id, s, t, p, i)
          JOIN nv ON nv.stream_id = y.s
         WHERE (SELECT count(*) FROM nv) = (SELECT chk.wanted FROM chk)
        RETURNING events.position
    ), fw AS (
        SELECT min(ev.position) AS first, count(*) AS written FROM ev
    ), tg AS (
        INSERT INTO __SCHEMA__.event_tags (tag, position)
        SELECT DISTINCT g.tag, fw.first + g.i - 1
          FROM fw, unnest(p_tags, p_tag_events) AS g(tag, i)
         WHERE fw.first IS NOT NULL
    )
    SELECT chk.fresh, chk.fits, fw.first, fw.written, a.s, a.v
      INTO fresh, fits, answer.first_position, written, answer.streams, answer.versions
      FROM chk, fw, (SELECT array_agg(x.s) AS s,
                            array_agg(coalesce(nv.version, x.v, 0)) AS v
                       FROM x LEFT JOIN nv ON nv.stream_id = x.s) a;
    IF fresh AND fits THEN
        IF written <> n THEN
            -- Only a writer that bypassed the stream locks can get here: retry.
            RAISE EXCEPTION 'eventcore: a stream changed during the append'
                USING ERRCODE = 'serialization_failure';
        END IF;
        RETURN answer;
    END IF;
    answer := NULL;
    IF fresh THEN
        -- Some expected version did not hold (the locks keep the versions still).
        SELECT array_agg(c.s ORDER BY c.i), array_agg(c.e ORDER BY c.i),
               array_agg(coalesce(st.version, 0) ORDER BY c.i)
          INTO answer.streams, answer.conflict_expected, answer.versions
          FROM unnest(p_expected_streams, p_expected_versions) WITH ORDINALITY AS c(s, e, i)
          LEFT JOIN __SCHEMA__.streams st ON st.stream_id = c.s
         WHERE NOT (c.e = -1
                    OR (c.e = -2 AND coalesce(st.version, 0) > 0)
                    OR (c.e >= 0 AND coalesce(st.version, 0) = c.e));
        SELECT t.s, t.t, t.p, t.v, t.pos
          INTO answer.tail_streams, answer.tail_types, answer.tail_payloads,
               answer.tail_versions, answer.tail_positions
          FROM __SCHEMA__.conflict_tail(p_expected_streams, p_expected_versions) t;
    END IF;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.write_tagged_streams(text[], bigint[], uuid[], text[],
    text[], bytea[], uuid, uuid, text, jsonb, text[], integer[]) FROM PUBLIC;

CREATE FUNCTION __SCHEMA__.append_tagged_streams(
    p_expected_streams  text[],
    p_expected_versions bigint[],
    p_event_ids         uuid[],
    p_stream_ids        text[],
    p_event_types       text[],
    p_payloads          bytea[],
    p_causation_id      uuid,
    p_correlation_id    uuid,
    p_user_id           text,
    p_custom            jsonb,
    p_tags              text[],
    p_tag_events        integer[],
    p_cond_types        text[],
    p_cond_type_ends    integer[],
    p_cond_tags         text[],
    p_cond_tag_ends     integer[],
    p_after             bigint,
    p_read_limit        bigint
) RETURNS TABLE (first_position bigint, streams text[], versions bigint[], matched bigint,
                 conflict_expected bigint[], tail_streams text[], tail_types text[],
                 tail_payloads bytea[], tail_versions bigint[], tail_positions bigint[],
                 head bigint, "position" bigint, event_id bytea, stream_id text,
                 event_version bigint, event_type text, payload bytea,
                 recorded_at timestamptz, metadata text, tags text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
-- The result's columns share names with the tables' (stream_id, version, ...): a name
-- in a statement is the column.
#variable_conflict use_column
DECLARE
    n       integer := coalesce(cardinality(p_event_ids), 0);
    refused text;
    bad_payload boolean;
    payload_bytes bigint;
    lk      integer;
    lx      boolean;
BEGIN
    IF cardinality(p_tags) IS DISTINCT FROM cardinality(p_tag_events)
       OR cardinality(p_cond_type_ends) IS DISTINCT FROM cardinality(p_cond_tag_ends)
       OR cardinality(p_expected_streams) IS DISTINCT FROM cardinality(p_expected_versions)
       OR n = 0
       OR n <> coalesce(cardinality(p_stream_ids), 0)
       OR n <> coalesce(cardinality(p_event_types), 0)
       OR n <> coalesce(cardinality(p_payloads), 0) THEN
        RAISE EXCEPTION 'eventcore: append_tagged_streams needs 1 or more events and '
                        'arrays of matching lengths'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n > 1048576 THEN
        RAISE EXCEPTION 'eventcore: more than 1048576 events in one transaction'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- As append_events (SQLSTATE EC001): positions come from this transaction's id.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: append_events must run in a transaction that has not '
                        'written anything yet (this one already holds a transaction id)'
            USING ERRCODE = 'EC001',
                  HINT = 'call it in its own transaction (autocommit), once per transaction';
    END IF;

    -- append_events' input rules (SQLSTATE EC002), its expressions (schema 10).
    SELECT format('%s %s', v.what, quote_literal(left(v.v, 300))) INTO refused
      FROM (SELECT 'stream id' AS what, u AS v FROM unnest(p_stream_ids) u
            UNION ALL SELECT 'stream id', u FROM unnest(p_expected_streams) u
            UNION ALL SELECT 'event type', u FROM unnest(p_event_types) u) v
     WHERE v.v IS NULL
        OR char_length(v.v) NOT BETWEEN 1 AND 255
        OR v.v ~ ('[\u0001-\u001f\u007f-\u009f]'
                  '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                  '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$')
     LIMIT 1;
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: invalid %: must be 1..255 code points, without control '
                        'characters or leading/trailing whitespace', refused
            USING ERRCODE = 'EC002';
    END IF;
    SELECT coalesce(bool_or(p IS NULL OR octet_length(p) > 16777216), false),
           coalesce(sum(octet_length(p)), 0)
      INTO bad_payload, payload_bytes
      FROM unnest(p_payloads) p;
    IF bad_payload THEN
        RAISE EXCEPTION 'eventcore: a payload is NULL or over 16 MiB (16777216 bytes)'
            USING ERRCODE = 'EC002';
    END IF;
    IF p_user_id IS NOT NULL AND (char_length(p_user_id) > 255
                                  OR p_user_id ~ '[\u0001-\u001f\u007f-\u009f]') THEN
        RAISE EXCEPTION 'eventcore: user_id must be at most 255 code points without '
                        'control characters'
            USING ERRCODE = 'EC002';
    END IF;
    IF p_custom IS NOT NULL AND (jsonb_typeof(p_custom) <> 'object'
                                 OR octet_length(p_custom::text) > 98304) THEN
        RAISE EXCEPTION 'eventcore: custom metadata must be a JSON object of at most 64 KiB'
            USING ERRCODE = 'EC002';
    END IF;
    IF payload_bytes > 67108864 THEN
        RAISE EXCEPTION 'eventcore: one append may hold at most 64 MiB (67108864 bytes) '
                        'of payloads and metadata'
            USING ERRCODE = 'EC002';
    END IF;

    -- 1. Every advisory key once, sorted (exclusive if any of its entries is), then the
    --    stream locks, sorted: all before this transaction takes an id.
    FOR lk, lx IN
        SELECT u.key, bool_or(u.x)
          FROM (SELECT hashtext('type:' || t) AS key, false AS x FROM unnest(p_event_types) t
                UNION ALL SELECT hashtext('tag:' || t), false FROM unnest(p_tags) t
                UNION ALL SELECT hashtext('all:'), false
                UNION ALL
                SELECT hashtext(CASE
                           WHEN p_cond_tag_ends[i] > coalesce(p_cond_tag_ends[i - 1], 0)
                           THEN 'tag:' || p_cond_tags[coalesce(p_cond_tag_ends[i - 1], 0) + 1]
                           WHEN j IS NOT NULL THEN 'type:' || p_cond_types[j]
                           ELSE 'all:' END), true
                  FROM generate_subscripts(p_cond_type_ends, 1) i
                  LEFT JOIN LATERAL generate_series(coalesce(p_cond_type_ends[i - 1], 0) + 1,
                                                    p_cond_type_ends[i]) j
                    ON p_cond_tag_ends[i] = coalesce(p_cond_tag_ends[i - 1], 0)) u
         GROUP BY 1 ORDER BY 1
    LOOP
        IF lx THEN
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.dcb.__SCHEMA__'), lk);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), lk);
        END IF;
    END LOOP;
    FOR lk, lx IN
        SELECT hashtext(u.s), bool_or(u.w)
          FROM (SELECT s, true AS w FROM unnest(p_stream_ids) s
                UNION ALL SELECT s, false FROM unnest(p_expected_streams) s) u
         GROUP BY 1 ORDER BY 1
    LOOP
        IF lx THEN
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.streams.__SCHEMA__'), lk);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.streams.__SCHEMA__'), lk);
        END IF;
    END LOOP;

    -- 2. The condition, after the locks.
    IF p_cond_type_ends IS NOT NULL THEN
        matched := __SCHEMA__.condition_match(p_cond_types, p_cond_type_ends, p_cond_tags,
                                              p_cond_tag_ends, p_after, p_event_ids);
        IF matched = -1 THEN
            matched := NULL;
            RETURN NEXT;
            RETURN;
        END IF;
        IF matched IS NOT NULL THEN
            RETURN NEXT;
            IF p_read_limit > 0 THEN
                RETURN QUERY
                SELECT NULL::bigint, NULL::text[], NULL::bigint[], NULL::bigint,
                       NULL::bigint[], NULL::text[], NULL::text[], NULL::bytea[],
                       NULL::bigint[], NULL::bigint[], r.*
                  FROM __SCHEMA__.read_query(p_cond_types, p_cond_type_ends, p_cond_tags,
                                             p_cond_tag_ends, p_after, p_read_limit) r;
            END IF;
            RETURN;
        END IF;
    END IF;

    -- 3. The checks and the write: write_tagged_streams (below), whose statement reads a
    --    snapshot taken after the locks.
    SELECT w.first_position, w.streams, w.versions, w.conflict_expected, w.tail_streams,
           w.tail_types, w.tail_payloads, w.tail_versions, w.tail_positions
      INTO first_position, streams, versions, conflict_expected, tail_streams, tail_types,
           tail_payloads, tail_versions, tail_positions
      FROM __SCHEMA__.write_tagged_streams(p_expected_streams, p_expected_versions,
               p_event_ids, p_stream_ids, p_event_types, p_payloads, p_causation_id,
               p_correlation_id, p_user_id, p_custom, p_tags, p_tag_events) w;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.append_tagged_streams(text[], bigint[], uuid[], text[],
    text[], bytea[], uuid, uuid, text, jsonb, text[], integer[], text[], integer[], text[],
    integer[], bigint, bigint) FROM PUBLIC;

-- Whoever may make tagged appends may make them this way (a role granted EXECUTE on
-- append_events_tagged as the README shows), as schema 17 granted append_tagged_stream.
DO $grants$
DECLARE
    who text;
BEGIN
    FOR who IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_proc f, aclexplode(f.proacl) a
          LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE f.oid = ('__SCHEMA__.append_events_tagged(text[], bigint[], uuid[], text[],'
                        ' text[], bytea[], uuid, uuid, text, jsonb, text[], integer[], text[],'
                        ' integer[], text[], integer[], bigint)')::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.append_tagged_streams(text[],'
                       ' bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb,'
                       ' text[], integer[], text[], integer[], text[], integer[], bigint,'
                       ' bigint) TO %s', who);
    END LOOP;
END
$grants$;
