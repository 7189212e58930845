-- eventcore schema 16: the plain append (append_stream, migration 0013) with less server
-- work per call; the same arguments, the same result, the same answers.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- What changed, each measured by the backend's CPU time per call (commit flush off,
-- candidates alternated on one connection):
--
-- - No SET clauses. Each one made every call save, set and restore a setting (and a new
--   search_path made the next name lookup rebuild it). Without SET search_path, a
--   SECURITY DEFINER body must not let the caller's search_path choose what runs: every
--   function, operator, aggregate and type name below is qualified with pg_catalog (or
--   the schema); BETWEEN and multi-argument unnest are spelled out, as they look names
--   up unqualified. (INTEGER, BIGINT and BOOLEAN are keywords: the grammar qualifies
--   them.) Without SET plan_cache_mode and enable_seqscan, PL/pgSQL plans each statement
--   as usual (a few custom plans, then the generic one); every statement here is a
--   primary-key or unique-index lookup, which the planner takes by the table's actual
--   size.
-- - The locks in ONE statement instead of three PERFORMs and a LOCK TABLE: the shared
--   locks of the written type and the whole log (0008's keys, in lock_written's sorted
--   order), then the stream lock, in the order of the select list. The events table's
--   ROW EXCLUSIVE lock, which log_horizon (0003) needs before the transaction has an
--   id, is now taken by the write statement itself: PostgreSQL locks every table a
--   statement writes before running it, and the id is taken by the statement's first
--   row written. So the lock still comes before the id, after the stream lock instead
--   of before it (ROW EXCLUSIVE conflicts with no lock an append takes, so the order
--   makes no deadlock).
-- - The positions come from the id inside the write statement, and an append of one
--   event (every command's) writes from the scalars (no unnest function scan).
--
-- Everything else is 0013's: the input rules (SQLSTATE EC002), a caller's transaction
-- with an id refused (EC001), the version check and the insert in one statement, and a
-- stored event id or a conflict answered as before. CREATE OR REPLACE keeps the owner and
-- every GRANT on it.

-- The answer of a plain append that wrote nothing, read after its write statement (a
-- fresh snapshot, the stream lock held): NULL when one of its event ids is stored (a
-- replay or a duplicate: the store sends the append to append_events, whose step 1
-- answers), else the stream's version and its conflict tail (conflict_tail). Called by
-- append_stream and by the store's direct statement; p_in_callers_transaction: that
-- statement found its transaction holding an id already (SQLSTATE EC001, as
-- append_events). Only a conflict runs it, so it keeps its SET clause. It returns a
-- named row type (one column of the direct statement, which asyncpg decodes).
CREATE TYPE __SCHEMA__.stream_conflict AS (
    version        bigint,
    tail_types     text[],
    tail_payloads  bytea[],
    tail_versions  bigint[],
    tail_positions bigint[]
);
CREATE FUNCTION __SCHEMA__.stream_conflict(
    p_stream_id text,
    p_expected  bigint,
    p_event_ids uuid[],
    p_in_callers_transaction boolean
)
RETURNS __SCHEMA__.stream_conflict
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer __SCHEMA__.stream_conflict;
BEGIN
    IF p_in_callers_transaction THEN
        RAISE EXCEPTION 'eventcore: append_events must run in a transaction that has not '
                        'written anything yet (this one already holds a transaction id)'
            USING ERRCODE = 'EC001',
                  HINT = 'call it in its own transaction (autocommit), once per transaction';
    END IF;
    PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids);
    IF FOUND THEN
        RETURN answer;
    END IF;
    SELECT coalesce(max(st.version), 0) INTO answer.version
      FROM __SCHEMA__.streams st WHERE st.stream_id = p_stream_id;
    SELECT t.t, t.p, t.v, t.pos
      INTO answer.tail_types, answer.tail_payloads, answer.tail_versions, answer.tail_positions
      FROM __SCHEMA__.conflict_tail(ARRAY[p_stream_id], ARRAY[p_expected]) t;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.stream_conflict(text, bigint, uuid[], boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION __SCHEMA__.append_stream(
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
AS $$
DECLARE
    n        integer := coalesce(pg_catalog.cardinality(p_event_ids), 0);
    expect   bigint := coalesce(p_expected, -1);
    refused  pg_catalog.text;
    bad_payload boolean;
    payload_bytes bigint;
    type_key integer;
    all_key  integer;
BEGIN
    IF n OPERATOR(pg_catalog.=) 0
       OR n OPERATOR(pg_catalog.<>) coalesce(pg_catalog.cardinality(p_event_types), 0)
       OR n OPERATOR(pg_catalog.<>) coalesce(pg_catalog.cardinality(p_payloads), 0) THEN
        RAISE EXCEPTION 'eventcore: append_stream needs 1 or more events and arrays of one length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n OPERATOR(pg_catalog.>) 1048576 THEN
        RAISE EXCEPTION 'eventcore: more than 1048576 events in one transaction'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- As append_events (SQLSTATE EC001): positions come from this transaction's id.
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: append_events must run in a transaction that has not '
                        'written anything yet (this one already holds a transaction id)'
            USING ERRCODE = 'EC001',
                  HINT = 'call it in its own transaction (autocommit), once per transaction';
    END IF;

    -- append_events' input rules (SQLSTATE EC002), the same expressions: for one event on
    -- the scalars themselves, for more in one pass over the arrays.
    IF p_stream_id IS NULL
       OR pg_catalog.char_length(p_stream_id) OPERATOR(pg_catalog.<) 1
       OR pg_catalog.char_length(p_stream_id) OPERATOR(pg_catalog.>) 255
       OR p_stream_id OPERATOR(pg_catalog.~) ('[\u0001-\u001f\u007f-\u009f]'
                         '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                         '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$') THEN
        refused := pg_catalog.format('stream id %s',
                                     pg_catalog.quote_literal(pg_catalog."left"(p_stream_id, 300)));
    ELSIF n OPERATOR(pg_catalog.=) 1 THEN
        IF p_event_types[1] IS NULL
           OR pg_catalog.char_length(p_event_types[1]) OPERATOR(pg_catalog.<) 1
           OR pg_catalog.char_length(p_event_types[1]) OPERATOR(pg_catalog.>) 255
           OR p_event_types[1] OPERATOR(pg_catalog.~) ('[\u0001-\u001f\u007f-\u009f]'
                  '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                  '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$') THEN
            refused := pg_catalog.format('event type %s',
                           pg_catalog.quote_literal(pg_catalog."left"(p_event_types[1], 300)));
        END IF;
        bad_payload := p_payloads[1] IS NULL
                       OR pg_catalog.octet_length(p_payloads[1]) OPERATOR(pg_catalog.>) 16777216;
        payload_bytes := coalesce(pg_catalog.octet_length(p_payloads[1]), 0);
    ELSE
        SELECT pg_catalog.format('event type %s',
                                 pg_catalog.quote_literal(pg_catalog."left"(u, 300)))
          INTO refused
          FROM pg_catalog.unnest(p_event_types) u
         WHERE u IS NULL
            OR pg_catalog.char_length(u) OPERATOR(pg_catalog.<) 1
            OR pg_catalog.char_length(u) OPERATOR(pg_catalog.>) 255
            OR u OPERATOR(pg_catalog.~) ('[\u0001-\u001f\u007f-\u009f]'
                    '|^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
                    '|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$')
         LIMIT 1;
        SELECT coalesce(pg_catalog.bool_or(p IS NULL
                            OR pg_catalog.octet_length(p) OPERATOR(pg_catalog.>) 16777216),
                        false),
               coalesce(pg_catalog.sum(pg_catalog.octet_length(p)), 0)
          INTO bad_payload, payload_bytes
          FROM pg_catalog.unnest(p_payloads) p;
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
    IF p_user_id IS NOT NULL
       AND (pg_catalog.char_length(p_user_id) OPERATOR(pg_catalog.>) 255
            OR p_user_id OPERATOR(pg_catalog.~) '[\u0001-\u001f\u007f-\u009f]') THEN
        RAISE EXCEPTION 'eventcore: user_id must be at most 255 code points without '
                        'control characters'
            USING ERRCODE = 'EC002';
    END IF;
    IF p_custom IS NOT NULL
       AND (pg_catalog.jsonb_typeof(p_custom) OPERATOR(pg_catalog.<>) 'object'
            OR pg_catalog.octet_length(p_custom::pg_catalog.text)
               OPERATOR(pg_catalog.>) 98304) THEN
        RAISE EXCEPTION 'eventcore: custom metadata must be a JSON object of at most 64 KiB'
            USING ERRCODE = 'EC002';
    END IF;
    IF payload_bytes OPERATOR(pg_catalog.>) 67108864 THEN
        RAISE EXCEPTION 'eventcore: one append may hold at most 64 MiB (67108864 bytes) '
                        'of payloads and metadata'
            USING ERRCODE = 'EC002';
    END IF;

    -- The shared locks of what this append writes (0008's keys: its types and the whole
    -- log) in lock_written's order (sorted keys; a colliding pair takes one lock twice),
    -- then the stream lock: all before this transaction takes an id.
    IF n OPERATOR(pg_catalog.=) 1 THEN
        type_key := pg_catalog.hashtext('type:' OPERATOR(pg_catalog.||) p_event_types[1]);
        all_key := pg_catalog.hashtext('all:');
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(
                    pg_catalog.hashtext('eventcore.dcb.__SCHEMA__'), least(type_key, all_key)),
                pg_catalog.pg_advisory_xact_lock_shared(
                    pg_catalog.hashtext('eventcore.dcb.__SCHEMA__'), greatest(type_key, all_key)),
                pg_catalog.pg_advisory_xact_lock(
                    pg_catalog.hashtext('eventcore.streams.__SCHEMA__'),
                    pg_catalog.hashtext(p_stream_id));
    ELSE
        PERFORM __SCHEMA__.lock_written(
                    ARRAY(SELECT DISTINCT t FROM pg_catalog.unnest(p_event_types) t), '{}', '{}'),
                pg_catalog.pg_advisory_xact_lock(
                    pg_catalog.hashtext('eventcore.streams.__SCHEMA__'),
                    pg_catalog.hashtext(p_stream_id));
    END IF;

    -- Check the expected version and bump (or create) the stream row, and insert the
    -- events numbered after the stream's previous version, in one statement: nothing is
    -- written when the version does not hold (no row comes back). The statement holds the
    -- events table's lock before it runs; its first row written takes the id.
    IF n OPERATOR(pg_catalog.=) 1 AND (expect OPERATOR(pg_catalog.>) 0 OR expect OPERATOR(pg_catalog.=) -2) THEN
        WITH st AS (
            UPDATE __SCHEMA__.streams st SET version = st.version OPERATOR(pg_catalog.+) n
             WHERE st.stream_id OPERATOR(pg_catalog.=) p_stream_id
               AND (st.version OPERATOR(pg_catalog.=) expect
                    OR (expect OPERATOR(pg_catalog.=) -2 AND st.version OPERATOR(pg_catalog.>) 0))
            RETURNING st.version
        )
        INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
        SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::bigint
                   OPERATOR(pg_catalog.*) 1048576,
               p_event_ids[1], p_stream_id, st.version, p_event_types[1], p_payloads[1],
               p_causation_id, p_correlation_id, p_user_id, p_custom
          FROM st
        RETURNING __SCHEMA__.events.version INTO version;
    ELSIF n OPERATOR(pg_catalog.=) 1 THEN
        WITH st AS (
            INSERT INTO __SCHEMA__.streams AS st (stream_id, version) VALUES (p_stream_id, n)
            ON CONFLICT (stream_id) DO UPDATE SET version = st.version OPERATOR(pg_catalog.+) n
             WHERE expect OPERATOR(pg_catalog.=) -1 OR st.version OPERATOR(pg_catalog.=) 0
            RETURNING st.version
        )
        INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
        SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::bigint
                   OPERATOR(pg_catalog.*) 1048576,
               p_event_ids[1], p_stream_id, st.version, p_event_types[1], p_payloads[1],
               p_causation_id, p_correlation_id, p_user_id, p_custom
          FROM st
        RETURNING __SCHEMA__.events.version INTO version;
    ELSIF expect OPERATOR(pg_catalog.>) 0 OR expect OPERATOR(pg_catalog.=) -2 THEN
        WITH st AS (
            UPDATE __SCHEMA__.streams st SET version = st.version OPERATOR(pg_catalog.+) n
             WHERE st.stream_id OPERATOR(pg_catalog.=) p_stream_id
               AND (st.version OPERATOR(pg_catalog.=) expect
                    OR (expect OPERATOR(pg_catalog.=) -2 AND st.version OPERATOR(pg_catalog.>) 0))
            RETURNING st.version
        ), ev AS (
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::bigint
                       OPERATOR(pg_catalog.*) 1048576
                       OPERATOR(pg_catalog.+) y.i OPERATOR(pg_catalog.-) 1,
                   y.id, p_stream_id,
                   st.version OPERATOR(pg_catalog.-) n OPERATOR(pg_catalog.+) y.i,
                   y.t, y.p, p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM st, ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types),
                                  pg_catalog.unnest(p_payloads)) WITH ORDINALITY AS y(id, t, p, i)
        )
        SELECT st.version INTO version FROM st;
    ELSE
        WITH st AS (
            INSERT INTO __SCHEMA__.streams AS st (stream_id, version) VALUES (p_stream_id, n)
            ON CONFLICT (stream_id) DO UPDATE SET version = st.version OPERATOR(pg_catalog.+) n
             WHERE expect OPERATOR(pg_catalog.=) -1 OR st.version OPERATOR(pg_catalog.=) 0
            RETURNING st.version
        ), ev AS (
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::bigint
                       OPERATOR(pg_catalog.*) 1048576
                       OPERATOR(pg_catalog.+) y.i OPERATOR(pg_catalog.-) 1,
                   y.id, p_stream_id,
                   st.version OPERATOR(pg_catalog.-) n OPERATOR(pg_catalog.+) y.i,
                   y.t, y.p, p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM st, ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types),
                                  pg_catalog.unnest(p_payloads)) WITH ORDINALITY AS y(id, t, p, i)
        )
        SELECT st.version INTO version FROM st;
    END IF;
    IF version IS NOT NULL THEN
        first_position := pg_catalog.pg_current_xact_id()::pg_catalog.text::bigint
                          OPERATOR(pg_catalog.*) 1048576;
        RETURN;
    END IF;

    -- Nothing written: a conflict, or a stored event id (see stream_conflict).
    SELECT c.version, c.tail_types, c.tail_payloads, c.tail_versions, c.tail_positions
      INTO version, tail_types, tail_payloads, tail_versions, tail_positions
      FROM __SCHEMA__.stream_conflict(p_stream_id, expect, p_event_ids, false) c;
END
$$;
