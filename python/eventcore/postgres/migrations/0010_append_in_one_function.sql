-- eventcore schema 10: the append in one function, with cheaper input checks.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- Schema 8 made append_events a wrapper: take the shared locks of what it writes
-- (lock_written), then call schema 5's function (renamed append_events_inner) through a
-- function scan. The call costs as much server time as the locks themselves; here
-- append_events is schema 5's function again, taking the same locks at the same point
-- (before the stream locks and before the transaction has an id), and
-- append_events_inner calls it (append_events_tagged still does: it holds those locks
-- already, so taking them again waits for nothing). The input checks give the same
-- answers in fewer statements: one regular expression per stream id and type name
-- instead of three, one pass over the payloads instead of two.
--
-- Every path, lock and answer is schema 5's (0005_append_returns_tail.sql explains each
-- step); the signature is unchanged, so the grants stay as they are.

CREATE OR REPLACE FUNCTION __SCHEMA__.append_events(
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
    OUT status            text,
    OUT positions         bigint[],
    OUT streams           text[],
    OUT versions          bigint[],
    OUT conflict_expected bigint[],
    OUT duplicate_id      uuid,
    OUT detail            text,
    OUT tail_streams      text[],
    OUT tail_types        text[],
    OUT tail_payloads     bytea[],
    OUT tail_versions     bigint[],
    OUT tail_positions    bigint[]
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Plan each statement once per session: with the default (auto) mode PL/pgSQL re-plans
-- these array-parameter statements on every call (about 3/4 of the function's time).
-- A generic plan made while a table was still small must not scan it whole later on:
-- every table access here is meant to go through an index.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    n           integer := coalesce(cardinality(p_event_ids), 0);
    stored      integer;
    bad         record;
    all_streams text[];
    lock_read   boolean;
    s           text;
    is_write    boolean;
    lock_key    integer;
    first_pos   bigint;
    fresh       boolean;
    one_stream  boolean;
    many_written boolean;
    fits        boolean;
    wanted      integer;
    written     integer;
    expect      bigint;
    last_version bigint;
    refused     text;
    bad_payload boolean;
    payload_bytes bigint;
BEGIN
    IF cardinality(p_expected_streams) IS DISTINCT FROM cardinality(p_expected_versions)
       OR n <> coalesce(cardinality(p_stream_ids), 0)
       OR n <> coalesce(cardinality(p_event_types), 0)
       OR n <> coalesce(cardinality(p_payloads), 0) THEN
        RAISE EXCEPTION 'eventcore: append_events arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n > 1048576 THEN
        RAISE EXCEPTION 'eventcore: more than 1048576 events in one transaction'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    -- A transaction that already holds a transaction id is refused (SQLSTATE EC001):
    -- positions come from the id, so an id taken before this call's stream locks could
    -- place a stream's version 2 before its version 1 in the log, and a reader's horizon
    -- (log_horizon) only sees writers that locked the events table before taking an id.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore: append_events must run in a transaction that has not '
                        'written anything yet (this one already holds a transaction id)'
            USING ERRCODE = 'EC001',
                  HINT = 'call it in its own transaction (autocommit), once per transaction';
    END IF;

    -- The same input rules as the API (SQLSTATE EC002), for a role that calls this
    -- function directly: stream ids in normal form (no leading or trailing whitespace,
    -- 1..255 code points, no control character), event type names likewise (refused,
    -- never trimmed), payloads up to 16 MiB, one append's payloads up to 64 MiB, user_id
    -- up to 255 code points without control characters, custom a JSON object. Whitespace
    -- is Python's str.strip() set; control characters are Unicode Cc (text cannot hold
    -- U+0000, nor can jsonb). The API measures custom as compact JSON (<= 64 KiB, counted
    -- in the 64 MiB too); jsonb's text form adds a space after each ':' and ',', at most
    -- half as much again, so this backstop allows 96 KiB of it and never refuses what
    -- the API accepts.
    -- One regular expression per value (a control character, or whitespace at either
    -- end) and one pass over the payloads: the same rules as schema 5's five statements.
    SELECT format('%s %s', x.what, quote_literal(left(x.v, 300))) INTO refused
      FROM (SELECT 'stream id' AS what, u AS v FROM unnest(p_stream_ids) u
            UNION ALL SELECT 'stream id', u FROM unnest(p_expected_streams) u
            UNION ALL SELECT 'event type', u FROM unnest(p_event_types) u) x
     WHERE x.v IS NULL
        OR char_length(x.v) NOT BETWEEN 1 AND 255
        OR x.v ~ ('[\u0001-\u001f\u007f-\u009f]'
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

    -- The shared locks of what this append writes (schema 8's lock_written: its types,
    -- and the whole log), before the stream locks and before this transaction takes an
    -- id, as schema 8's wrapper took them. A conditional append
    -- (append_events_tagged) holds them already: taking them again waits for nothing.
    IF n = 1 THEN
        PERFORM __SCHEMA__.lock_written(p_event_types, '{}', '{}');
    ELSIF n > 1 THEN
        PERFORM __SCHEMA__.lock_written(
            ARRAY(SELECT DISTINCT t FROM unnest(p_event_types) t), '{}', '{}');
    END IF;

    -- Register as a writer of the events table BEFORE this transaction takes an id (the
    -- insert would take this lock too, but only after the id). Readers find in-flight
    -- appends by this lock (log_horizon): any transaction holding it with an id may
    -- still commit events; none other can.
    LOCK TABLE __SCHEMA__.events IN ROW EXCLUSIVE MODE;

    -- Path S: events for one stream, checked or not, nothing else checked (the common
    -- command, batches into one stream). Path F: several streams, every checked one
    -- written. Both take the stream locks and the positions the same way (S1/F1, S2/F2).
    one_stream := n > 0 AND p_stream_ids[1] = ALL (p_stream_ids)
        AND (coalesce(cardinality(p_expected_streams), 0) = 0
             OR (cardinality(p_expected_streams) = 1
                 AND p_expected_streams[1] = p_stream_ids[1]));
    many_written := NOT one_stream AND n > 0
        AND coalesce(p_expected_streams <@ p_stream_ids, false);
    IF one_stream OR many_written THEN
        -- S1/F1. The per-stream advisory locks (exclusive: every stream involved is
        --        written) in one fixed order, BEFORE this transaction takes an id: see
        --        step 2 of the general path.
        IF one_stream THEN
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.streams.__SCHEMA__'),
                                          hashtext(p_stream_ids[1]));
        ELSE
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.streams.__SCHEMA__'), k.key)
               FROM (SELECT DISTINCT hashtext(u) AS key FROM unnest(p_stream_ids) u
                      ORDER BY 1) k;
        END IF;
        -- S2/F2. Positions from this transaction's id, taken here (the transaction had
        --        none: refused above otherwise), after the stream locks.
        first_pos := pg_current_xact_id()::text::bigint * 1048576;
    END IF;

    IF one_stream THEN
        -- Path S: simple statements instead of path F's one statement, about half its
        -- server time.
        s := p_stream_ids[1];
        -- S3. A stored event id: step 1 answers (replay or duplicate).
        PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids);
        IF NOT FOUND THEN
            -- S4. Check the expected version and bump (or create) the stream row in one
            --     statement: no row comes back when the version does not hold.
            expect := coalesce(p_expected_versions[1], -1);
            IF expect > 0 OR expect = -2 THEN
                UPDATE __SCHEMA__.streams st SET version = st.version + n
                 WHERE st.stream_id = s
                   AND (st.version = expect OR (expect = -2 AND st.version > 0))
                RETURNING st.version INTO last_version;
            ELSE
                INSERT INTO __SCHEMA__.streams AS st (stream_id, version) VALUES (s, n)
                ON CONFLICT (stream_id) DO UPDATE SET version = st.version + n
                 WHERE expect = -1 OR st.version = 0
                RETURNING st.version INTO last_version;
            END IF;
            IF last_version IS NULL THEN
                status := 'conflict';
                streams := ARRAY[s];
                conflict_expected := ARRAY[expect];
                SELECT ARRAY[coalesce(max(st.version), 0)] INTO versions
                  FROM __SCHEMA__.streams st WHERE st.stream_id = s;
                SELECT t.s, t.t, t.p, t.v, t.pos
                  INTO tail_streams, tail_types, tail_payloads, tail_versions, tail_positions
                  FROM __SCHEMA__.conflict_tail(p_expected_streams, p_expected_versions) t;
                RETURN;
            END IF;
            -- S5. The events, numbered after the stream's previous version.
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT first_pos + y.i - 1, y.id, s, last_version - n + y.i, y.t, y.p,
                   p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM unnest(p_event_ids, p_event_types, p_payloads) WITH ORDINALITY AS y(id, t, p, i);
            status := 'ok';
            IF n = 1 THEN
                positions := ARRAY[first_pos];
            ELSE
                positions := ARRAY(SELECT first_pos + g FROM generate_series(0, n - 1) g);
            END IF;
            streams := ARRAY[s];
            versions := ARRAY[last_version];
            RETURN;
        END IF;
    ELSIF many_written THEN
        -- F3. One statement (one snapshot, taken after the locks were granted, so it sees
        --     every earlier writer of these streams): no event id stored yet (fresh), every
        --     expected version holds (fits); only then bump the existing stream rows (the
        --     version re-checked on the row, FOR a writer that bypassed the locks), create
        --     the new ones and insert the events with their versions.
        WITH x AS (
            SELECT w.s, w.c, coalesce(ex.e, -1) AS e, st.version AS v
              FROM (SELECT u AS s, count(*) AS c FROM unnest(p_stream_ids) u GROUP BY u) w
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
                   (SELECT count(*) FROM x) AS wanted
        ), upd AS (
            UPDATE __SCHEMA__.streams st SET version = st.version + x.c
              FROM x, chk
             WHERE chk.fresh AND chk.fits AND x.v IS NOT NULL
               AND st.stream_id = x.s AND st.version = x.v
            RETURNING st.stream_id, st.version, x.c
        ), ins AS (
            INSERT INTO __SCHEMA__.streams AS st (stream_id, version)
            SELECT x.s, x.c FROM x, chk
             WHERE chk.fresh AND chk.fits AND x.v IS NULL
             ORDER BY x.s
            ON CONFLICT (stream_id) DO NOTHING
            RETURNING st.stream_id, st.version, st.version AS c
        ), nv AS (
            SELECT * FROM upd UNION ALL SELECT * FROM ins
        ), ev AS (
            INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                           payload, causation_id, correlation_id, user_id,
                                           custom)
            SELECT first_pos + y.i - 1, y.id, y.s,
                   nv.version - nv.c + row_number() OVER (PARTITION BY y.s ORDER BY y.i),
                   y.t, y.p, p_causation_id, p_correlation_id, p_user_id, p_custom
              FROM unnest(p_event_ids, p_stream_ids, p_event_types, p_payloads)
                   WITH ORDINALITY AS y(id, s, t, p, i)
              JOIN nv ON nv.stream_id = y.s
             WHERE (SELECT count(*) FROM nv) = (SELECT chk.wanted FROM chk)
            RETURNING 1
        )
        SELECT chk.fresh, chk.fits, chk.wanted, (SELECT count(*) FROM ev), a.s, a.v
          INTO fresh, fits, wanted, written, streams, versions
          FROM chk, (SELECT array_agg(nv.stream_id) AS s, array_agg(nv.version) AS v
                       FROM nv) a;
        IF fresh AND fits THEN
            IF written <> n THEN
                -- Only a writer that bypassed the stream locks can get here: retry.
                RAISE EXCEPTION 'eventcore: a stream changed during the append'
                    USING ERRCODE = 'serialization_failure';
            END IF;
            status := 'ok';
            IF n = 1 THEN
                positions := ARRAY[first_pos];
            ELSE
                positions := ARRAY(SELECT first_pos + g FROM generate_series(0, n - 1) g);
            END IF;
            RETURN;
        END IF;
        IF fresh THEN
            -- Some expected version did not hold (the locks keep the versions still).
            SELECT array_agg(x.s ORDER BY x.i), array_agg(x.e ORDER BY x.i),
                   array_agg(coalesce(st.version, 0) ORDER BY x.i)
              INTO streams, conflict_expected, versions
              FROM unnest(p_expected_streams, p_expected_versions) WITH ORDINALITY AS x(s, e, i)
              LEFT JOIN __SCHEMA__.streams st ON st.stream_id = x.s
             WHERE NOT (x.e = -1
                        OR (x.e = -2 AND coalesce(st.version, 0) > 0)
                        OR (x.e >= 0 AND coalesce(st.version, 0) = x.e));
            status := 'conflict';
            SELECT t.s, t.t, t.p, t.v, t.pos
              INTO tail_streams, tail_types, tail_payloads, tail_versions, tail_positions
              FROM __SCHEMA__.conflict_tail(p_expected_streams, p_expected_versions) t;
            RETURN;
        END IF;
        -- Some event id is stored already: step 1 answers (replay or duplicate).
        streams := NULL;
        versions := NULL;
    END IF;

    -- 1. Idempotency: the same event ids again return the original result.
    IF n > 0 THEN
        SELECT count(*) INTO stored FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids);
        IF stored > 0 THEN
            -- A replay must be the very same events, stored as one run of the log in
            -- this order (like the in-memory store: consecutive there, and here no
            -- other event between them), with the same streams, types, payloads and
            -- metadata. The first event (in batch order) that breaks it is named.
            SELECT y.id, y.missing INTO bad
              FROM (SELECT x.id, x.i, e.event_id IS NULL AS missing,
                           e.stream_id <> x.s OR e.event_type <> x.t OR e.payload <> x.p
                           OR e.causation_id IS DISTINCT FROM p_causation_id
                           OR e.correlation_id IS DISTINCT FROM p_correlation_id
                           OR e.user_id IS DISTINCT FROM p_user_id
                           OR e.custom IS DISTINCT FROM p_custom AS differs,
                           e.position AS pos,
                           lag(e.position) OVER (ORDER BY x.i) AS prev
                      FROM unnest(p_event_ids, p_stream_ids, p_event_types, p_payloads)
                           WITH ORDINALITY AS x(id, s, t, p, i)
                      LEFT JOIN __SCHEMA__.events e ON e.event_id = x.id) y
             WHERE y.missing OR y.differs OR y.pos <= y.prev
                OR EXISTS (SELECT 1 FROM __SCHEMA__.events f
                            WHERE f.position > y.prev AND f.position < y.pos)
             ORDER BY y.i
             LIMIT 1;
            IF FOUND THEN
                status := 'duplicate';
                IF bad.missing THEN
                    SELECT x.id INTO duplicate_id
                      FROM unnest(p_event_ids) WITH ORDINALITY AS x(id, i)
                      JOIN __SCHEMA__.events e ON e.event_id = x.id
                     ORDER BY x.i LIMIT 1;
                    detail := 'only part of this batch was stored before';
                ELSE
                    duplicate_id := bad.id;
                    detail := 'already stored with different content';
                END IF;
                RETURN;
            END IF;
            status := 'replay';
            SELECT array_agg(e.position ORDER BY x.i) INTO positions
              FROM unnest(p_event_ids) WITH ORDINALITY AS x(id, i)
              JOIN __SCHEMA__.events e ON e.event_id = x.id;
            SELECT array_agg(v.stream_id), array_agg(v.version) INTO streams, versions
              FROM (SELECT e.stream_id, max(e.version) AS version
                      FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids)
                     GROUP BY e.stream_id
                    UNION ALL
                    SELECT x.s, coalesce(st.version, 0)
                      FROM (SELECT DISTINCT u AS s FROM unnest(p_expected_streams) u) x
                      LEFT JOIN __SCHEMA__.streams st ON st.stream_id = x.s
                     WHERE x.s <> ALL (p_stream_ids)) v;
            RETURN;
        END IF;
    END IF;

    -- 2. Serialize the writers of each stream BEFORE this transaction takes a transaction
    --    id (positions come from it, step 5). Advisory locks take no id, so a writer that
    --    waits here gets its id only after every earlier writer of its streams committed:
    --    a stream's events are positioned, and delivered by the global log, in version
    --    order. Written streams exclusive, only-checked streams shared (their versions
    --    stay true until commit), in one fixed order (no deadlocks). Two streams whose
    --    keys collide merely take turns.
    FOR lock_key, is_write IN
        SELECT hashtext(u.s), bool_or(u.w)
          FROM (SELECT x AS s, true AS w FROM unnest(p_stream_ids) x
                UNION ALL
                SELECT x, false FROM unnest(p_expected_streams) x) u
         GROUP BY 1 ORDER BY 1
    LOOP
        IF is_write THEN
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.streams.__SCHEMA__'), lock_key);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.streams.__SCHEMA__'), lock_key);
        END IF;
    END LOOP;

    -- 3. Lock the stream rows too, in one fixed order: the written ones
    --    FOR NO KEY UPDATE, the only-checked ones that exist FOR SHARE (uncontended after
    --    step 2 for writers that use this function; they guard against any that do not).
    --    No row is created for a stream that is only checked, and with no events nothing
    --    is locked or written at all: the shared stream locks of step 2 keep the checked
    --    versions still while step 4 reads them.
    lock_read := EXISTS (SELECT 1 FROM unnest(p_expected_streams) u WHERE u <> ALL (p_stream_ids));
    IF n = 0 THEN
        NULL;
    ELSIF NOT lock_read THEN
        -- Fast path (every checked stream is written): two set-based statements.
        INSERT INTO __SCHEMA__.streams (stream_id, version)
        SELECT u, 0 FROM (SELECT DISTINCT u FROM unnest(p_stream_ids) u) d ORDER BY u
        ON CONFLICT (stream_id) DO NOTHING;
        PERFORM 1 FROM __SCHEMA__.streams st
          WHERE st.stream_id = ANY (p_stream_ids)
          ORDER BY st.stream_id FOR NO KEY UPDATE;
    ELSE
        FOR s, is_write IN
            SELECT u.s, bool_or(u.w)
              FROM (SELECT x AS s, true AS w FROM unnest(p_stream_ids) x
                    UNION ALL
                    SELECT x, false FROM unnest(p_expected_streams) x) u
             GROUP BY u.s ORDER BY u.s COLLATE "C"
        LOOP
            IF is_write THEN
                FOR attempt IN 1..2 LOOP
                    PERFORM 1 FROM __SCHEMA__.streams st WHERE st.stream_id = s
                        FOR NO KEY UPDATE;
                    EXIT WHEN FOUND;
                    INSERT INTO __SCHEMA__.streams (stream_id, version) VALUES (s, 0)
                    ON CONFLICT (stream_id) DO NOTHING;
                END LOOP;
            ELSE
                PERFORM 1 FROM __SCHEMA__.streams st WHERE st.stream_id = s FOR SHARE;
            END IF;
        END LOOP;
    END IF;

    -- 4. Check every expected version; a mismatch is returned as data, nothing written.
    SELECT array_agg(x.s ORDER BY x.i), array_agg(x.e ORDER BY x.i),
           array_agg(coalesce(st.version, 0) ORDER BY x.i)
      INTO streams, conflict_expected, versions
      FROM unnest(p_expected_streams, p_expected_versions) WITH ORDINALITY AS x(s, e, i)
      LEFT JOIN __SCHEMA__.streams st ON st.stream_id = x.s
     WHERE NOT (x.e = -1
                OR (x.e = -2 AND coalesce(st.version, 0) > 0)
                OR (x.e >= 0 AND coalesce(st.version, 0) = x.e));
    IF streams IS NOT NULL THEN
        status := 'conflict';
        SELECT t.s, t.t, t.p, t.v, t.pos
          INTO tail_streams, tail_types, tail_payloads, tail_versions, tail_positions
          FROM __SCHEMA__.conflict_tail(p_expected_streams, p_expected_versions) t;
        RETURN;
    END IF;

    -- 5. Write: positions from this transaction's id, versions from the locked rows.
    status := 'ok';
    IF n > 0 THEN
        first_pos := pg_current_xact_id()::text::bigint * 1048576;
        INSERT INTO __SCHEMA__.events (position, event_id, stream_id, version, event_type,
                                       payload, causation_id, correlation_id, user_id, custom)
        SELECT first_pos + x.i - 1, x.id, x.s,
               st.version + row_number() OVER (PARTITION BY x.s ORDER BY x.i),
               x.t, x.p, p_causation_id, p_correlation_id, p_user_id, p_custom
          FROM unnest(p_event_ids, p_stream_ids, p_event_types, p_payloads)
               WITH ORDINALITY AS x(id, s, t, p, i)
          JOIN __SCHEMA__.streams st ON st.stream_id = x.s
         ORDER BY x.i;
        UPDATE __SCHEMA__.streams st SET version = st.version + c.n
          FROM (SELECT u AS s, count(*) AS n FROM unnest(p_stream_ids) u GROUP BY u) c
         WHERE st.stream_id = c.s;
        positions := ARRAY(SELECT first_pos + g FROM generate_series(0, n - 1) g);
    ELSE
        positions := '{}';
    END IF;
    all_streams := ARRAY(SELECT DISTINCT u FROM unnest(p_stream_ids || p_expected_streams) u);
    SELECT array_agg(a.s), array_agg(coalesce(st.version, 0)) INTO streams, versions
      FROM unnest(all_streams) a(s)
      LEFT JOIN __SCHEMA__.streams st ON st.stream_id = a.s;
    conflict_expected := NULL;
    RETURN;
END
$$;


-- The plain append for append_events_tagged (schema 8), which takes the locks of its
-- tags and condition first. Not granted to the application role (schema 8 revoked it).
CREATE OR REPLACE FUNCTION __SCHEMA__.append_events_inner(
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
    OUT status            text,
    OUT positions         bigint[],
    OUT streams           text[],
    OUT versions          bigint[],
    OUT conflict_expected bigint[],
    OUT duplicate_id      uuid,
    OUT detail            text,
    OUT tail_streams      text[],
    OUT tail_types        text[],
    OUT tail_payloads     bytea[],
    OUT tail_versions     bigint[],
    OUT tail_positions    bigint[]
)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM __SCHEMA__.append_events(p_expected_streams, p_expected_versions,
        p_event_ids, p_stream_ids, p_event_types, p_payloads, p_causation_id,
        p_correlation_id, p_user_id, p_custom)
$$;
