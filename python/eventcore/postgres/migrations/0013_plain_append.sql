-- eventcore schema 13: a lean append for the common case (one stream, no tags, no condition).
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- append_stream writes events into ONE stream, checking at most that stream's expected
-- version: what a command with a cached state sends, and most batches. The store calls
-- it for such appends; every other append (several streams, a checked stream not
-- written, tags, a condition) still goes through append_events. It keeps every
-- guarantee of append_events' path S (0005_append_returns_tail.sql explains each step)
-- and gives the same answers, with less work per call:
--
-- - scalar stream id and expected version, three event arrays, two result columns on
--   success (the first position and the stream's new version: positions are
--   consecutive), and a conflict's tail from conflict_tail as before;
-- - the input checks of one event are expressions on scalars (no query);
-- - the shared locks of the written type and of the whole log (0008's lock_written keys,
--   taken in the same sorted order) for one event without a call of lock_written;
-- - the stream row's version check and bump and the events' insert are ONE statement;
-- - no probe for stored event ids before the write. A stored id is found where it must
--   be answered: on a version conflict (a replay whose stream moved on must still be a
--   replay), and by the events table's unique event id (the insert fails, so nothing is
--   written). Either way the answer is "general" (both result columns NULL) and the store
--   sends the same append to append_events, whose step 1 answers replay or duplicate.

CREATE FUNCTION __SCHEMA__.append_stream(
    p_stream_id      text,
    p_expected       bigint,
    p_event_ids      uuid[],
    p_event_types    text[],
    p_payloads       bytea[],
    p_causation_id   uuid,
    p_correlation_id uuid,
    p_user_id        text,
    p_custom         jsonb,
    OUT first_position bigint,
    OUT version        bigint,
    OUT tail_types     text[],
    OUT tail_payloads  bytea[],
    OUT tail_versions  bigint[],
    OUT tail_positions bigint[]
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- As append_events: plan each statement once per session, and never a whole-table scan.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    n        integer := coalesce(cardinality(p_event_ids), 0);
    expect   bigint := coalesce(p_expected, -1);
    refused  text;
    bad_payload boolean;
    payload_bytes bigint;
    type_key integer;
    all_key  integer;
    first_pos bigint;
BEGIN
    IF n = 0 OR n <> coalesce(cardinality(p_event_types), 0)
       OR n <> coalesce(cardinality(p_payloads), 0) THEN
        RAISE EXCEPTION 'eventcore: append_stream needs 1 or more events and arrays of one length'
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

    -- append_events' input rules (SQLSTATE EC002), the same expressions: for one event on
    -- the scalars themselves, for more in one pass over the arrays.
    IF p_stream_id IS NULL
       OR char_length(p_stream_id) NOT BETWEEN 1 AND 255
       OR p_stream_id ~ ('[\u0001-\u001f\u007f-\u009f]'
                         '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                         '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$') THEN
        refused := format('stream id %s', quote_literal(left(p_stream_id, 300)));
    ELSIF n = 1 THEN
        IF p_event_types[1] IS NULL
           OR char_length(p_event_types[1]) NOT BETWEEN 1 AND 255
           OR p_event_types[1] ~ ('[\u0001-\u001f\u007f-\u009f]'
                  '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                  '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$') THEN
            refused := format('event type %s', quote_literal(left(p_event_types[1], 300)));
        END IF;
        bad_payload := p_payloads[1] IS NULL OR octet_length(p_payloads[1]) > 16777216;
        payload_bytes := coalesce(octet_length(p_payloads[1]), 0);
    ELSE
        SELECT format('event type %s', quote_literal(left(u, 300))) INTO refused
          FROM unnest(p_event_types) u
         WHERE u IS NULL
            OR char_length(u) NOT BETWEEN 1 AND 255
            OR u ~ ('[\u0001-\u001f\u007f-\u009f]'
                    '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                    '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$')
         LIMIT 1;
        SELECT coalesce(bool_or(p IS NULL OR octet_length(p) > 16777216), false),
               coalesce(sum(octet_length(p)), 0)
          INTO bad_payload, payload_bytes
          FROM unnest(p_payloads) p;
    END IF;
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: invalid %: must be 1..255 code points, without control '
                        'characters or leading/trailing whitespace', refused
            USING ERRCODE = 'EC002';
    END IF;
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

    -- The shared locks of what this append writes (0008's keys: its types and the whole
    -- log), in lock_written's order (sorted keys; a colliding pair is one lock), before
    -- the stream lock and before this transaction takes an id.
    IF n = 1 THEN
        type_key := hashtext('type:' || p_event_types[1]);
        all_key := hashtext('all:');
        IF type_key < all_key THEN
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), type_key);
        END IF;
        PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), all_key);
        IF type_key > all_key THEN
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), type_key);
        END IF;
    ELSE
        PERFORM __SCHEMA__.lock_written(
            ARRAY(SELECT DISTINCT t FROM unnest(p_event_types) t), '{}', '{}');
    END IF;

    -- As append_events: register as a writer of the events table, then the stream lock,
    -- then the positions from this transaction's id (taken here, after the locks).
    LOCK TABLE __SCHEMA__.events IN ROW EXCLUSIVE MODE;
    PERFORM pg_advisory_xact_lock(hashtext('eventcore.streams.__SCHEMA__'), hashtext(p_stream_id));
    first_pos := pg_current_xact_id()::text::bigint * 1048576;

    -- Check the expected version and bump (or create) the stream row, and insert the
    -- events numbered after the stream's previous version, in one statement: nothing is
    -- written when the version does not hold (the row comes back empty).
    IF expect > 0 OR expect = -2 THEN
        WITH st AS (
            UPDATE __SCHEMA__.streams st SET version = st.version + n
             WHERE st.stream_id = p_stream_id
               AND (st.version = expect OR (expect = -2 AND st.version > 0))
            RETURNING st.version
        ), ev AS (
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT first_pos + y.i - 1, y.id, p_stream_id, st.version - n + y.i, y.t, y.p,
                   p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM st, unnest(p_event_ids, p_event_types, p_payloads)
                       WITH ORDINALITY AS y(id, t, p, i)
        )
        SELECT st.version INTO version FROM st;
    ELSE
        WITH st AS (
            INSERT INTO __SCHEMA__.streams AS st (stream_id, version) VALUES (p_stream_id, n)
            ON CONFLICT (stream_id) DO UPDATE SET version = st.version + n
             WHERE expect = -1 OR st.version = 0
            RETURNING st.version
        ), ev AS (
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT first_pos + y.i - 1, y.id, p_stream_id, st.version - n + y.i, y.t, y.p,
                   p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM st, unnest(p_event_ids, p_event_types, p_payloads)
                       WITH ORDINALITY AS y(id, t, p, i)
        )
        SELECT st.version INTO version FROM st;
    END IF;
    IF version IS NOT NULL THEN
        first_position := first_pos;
        RETURN;
    END IF;

    -- A conflict, unless an event id is stored already: then append_events answers
    -- (replay or duplicate), both columns NULL.
    PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids);
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(max(st.version), 0) INTO version
      FROM __SCHEMA__.streams st WHERE st.stream_id = p_stream_id;
    SELECT t.t, t.p, t.v, t.pos INTO tail_types, tail_payloads, tail_versions, tail_positions
      FROM __SCHEMA__.conflict_tail(ARRAY[p_stream_id], ARRAY[expect]) t;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.append_stream(text, bigint, uuid[], text[], bytea[], uuid,
    uuid, text, jsonb) FROM PUBLIC;

-- Whoever may append may append this way (a role granted EXECUTE on append_events as the
-- README shows).
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
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.append_stream(text, bigint,'
                       ' uuid[], text[], bytea[], uuid, uuid, text, jsonb) TO %s', who);
    END LOOP;
END
$grants$;
