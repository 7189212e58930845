-- eventcore schema 17: a lean tagged or conditional append into one stream.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- append_tagged_stream is append_stream (schema 13) with tags and a condition: what a
-- DCB decision sends (one stream or one event, tags, a condition). The store calls it
-- when every event goes to one stream and at most that stream's version is checked;
-- every other tagged append still goes through append_events_tagged. Per call it does:
--
-- 1. every advisory lock once: the shared keys of what it writes (its types, its tags,
--    the whole log) and the exclusive key of each condition item (its first tag, else
--    each of its types, else the whole log), sorted, a key both shared and exclusive
--    taken exclusive: exactly the keys and the order of schema 8's lock_written
--    (0008_event_tags.sql explains why the condition is race-free), where
--    append_events_tagged took them with a loop, a call and a statement, and then again
--    through append_events. Up to 16 keys (a decision has three or four) they are
--    gathered and ordered with expressions alone: no statement to start and sort;
--    more take one statement;
-- 2. the condition: first_match (schema 14) after p_after. A match answers "condition"
--    (matched: its position) unless an event id of the append is stored already (a
--    replay of an append that passed): then every column is NULL. With the answer come
--    the rows of read_query(condition's query, p_after, p_read_limit) (its head row,
--    then the events): what the caller would read next, so that a retry needs no read
--    (p_read_limit 0: no rows);
-- 3. the write: append_stream itself (its shared locks are held already and wait for
--    nothing), then the tag rows in one insert; positions are consecutive from
--    first_position. A stored event id makes append_stream answer NULL (or fail on the
--    events table's unique event id: nothing is written either way).
--
-- Answers (the first row): first_position set: written, version is the stream's new
-- version. version set without first_position: a version conflict, with the stream's
-- version and its tail (as append_stream). matched set: the condition failed (then
-- read_query's rows follow, in its columns). All NULL: the store sends the same append to
-- append_events_tagged, which answers replay or duplicate.

CREATE FUNCTION __SCHEMA__.append_tagged_stream(
    p_stream_id        text,
    p_expected         bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_payloads         bytea[],
    p_causation_id     uuid,
    p_correlation_id   uuid,
    p_user_id          text,
    p_custom           jsonb,
    p_tags             text[],
    p_tag_events       integer[],
    p_cond_types       text[],
    p_cond_type_ends   integer[],
    p_cond_tags        text[],
    p_cond_tag_ends    integer[],
    p_after            bigint,
    p_read_limit       bigint
) RETURNS TABLE (first_position bigint, version bigint, matched bigint, tail_types text[],
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
DECLARE
    k     integer;
    x     boolean;
    keys  integer[];
    excl  boolean[];
    w     text;
    first integer;
    prev  integer;
BEGIN
    IF cardinality(p_tags) IS DISTINCT FROM cardinality(p_tag_events)
       OR cardinality(p_cond_type_ends) IS DISTINCT FROM cardinality(p_cond_tag_ends) THEN
        RAISE EXCEPTION 'eventcore: append_tagged_stream arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(p_event_types), 0) + coalesce(cardinality(p_tags), 0)
       + coalesce(cardinality(p_cond_types), 0) + coalesce(cardinality(p_cond_type_ends), 0)
       <= 15 THEN
        keys := ARRAY[hashtext('all:')];
        excl := ARRAY[false];
        FOREACH w IN ARRAY coalesce(p_event_types, '{}') LOOP
            keys := keys || hashtext('type:' || w);
            excl := excl || false;
        END LOOP;
        FOREACH w IN ARRAY coalesce(p_tags, '{}') LOOP
            keys := keys || hashtext('tag:' || w);
            excl := excl || false;
        END LOOP;
        FOR i IN 1..coalesce(cardinality(p_cond_type_ends), 0) LOOP
            first := coalesce(p_cond_tag_ends[i - 1], 0) + 1;
            IF p_cond_tag_ends[i] >= first THEN
                keys := keys || hashtext('tag:' || p_cond_tags[first]);
                excl := excl || true;
            ELSE
                first := coalesce(p_cond_type_ends[i - 1], 0) + 1;
                IF p_cond_type_ends[i] >= first THEN
                    FOR j IN first..p_cond_type_ends[i] LOOP
                        keys := keys || hashtext('type:' || p_cond_types[j]);
                        excl := excl || true;
                    END LOOP;
                ELSE
                    keys := keys || hashtext('all:');
                    excl := excl || true;
                END IF;
            END IF;
        END LOOP;
        -- Ascending, each key once: the least key above the last one taken, exclusive if
        -- any of its entries is.
        LOOP
            k := NULL;
            FOR i IN 1..cardinality(keys) LOOP
                IF prev IS NULL OR keys[i] > prev THEN
                    IF k IS NULL OR keys[i] < k THEN
                        k := keys[i];
                        x := excl[i];
                    ELSIF keys[i] = k THEN
                        x := x OR excl[i];
                    END IF;
                END IF;
            END LOOP;
            EXIT WHEN k IS NULL;
            IF x THEN
                PERFORM pg_advisory_xact_lock(hashtext('eventcore.dcb.__SCHEMA__'), k);
            ELSE
                PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), k);
            END IF;
            prev := k;
        END LOOP;
    ELSE
        FOR k, x IN
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
            IF x THEN
                PERFORM pg_advisory_xact_lock(hashtext('eventcore.dcb.__SCHEMA__'), k);
            ELSE
                PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), k);
            END IF;
        END LOOP;
    END IF;
    IF p_cond_type_ends IS NOT NULL THEN
        matched := __SCHEMA__.first_match(p_cond_types, p_cond_type_ends, p_cond_tags,
                                          p_cond_tag_ends, p_after);
        IF matched IS NOT NULL THEN
            PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids);
            IF FOUND THEN
                matched := NULL;
                RETURN NEXT;
                RETURN;
            END IF;
            RETURN NEXT;
            IF p_read_limit > 0 THEN
                RETURN QUERY
                SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::text[], NULL::bytea[],
                       NULL::bigint[], NULL::bigint[], r.*
                  FROM __SCHEMA__.read_query(p_cond_types, p_cond_type_ends, p_cond_tags,
                                             p_cond_tag_ends, p_after, p_read_limit) r;
            END IF;
            RETURN;
        END IF;
    END IF;
    SELECT s.first_position, s.version, s.tail_types, s.tail_payloads, s.tail_versions,
           s.tail_positions
      INTO first_position, version, tail_types, tail_payloads, tail_versions, tail_positions
      FROM __SCHEMA__.append_stream(p_stream_id, p_expected, p_event_ids, p_event_types,
                                    p_payloads, p_causation_id, p_correlation_id, p_user_id,
                                    p_custom) s;
    IF first_position IS NOT NULL AND cardinality(p_tags) > 0 THEN
        INSERT INTO __SCHEMA__.event_tags (tag, position)
        SELECT DISTINCT g.tag, first_position + g.i - 1
          FROM unnest(p_tags, p_tag_events) AS g(tag, i);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.append_tagged_stream(text, bigint, uuid[], text[], bytea[],
    uuid, uuid, text, jsonb, text[], integer[], text[], integer[], text[], integer[], bigint,
    bigint) FROM PUBLIC;

-- Whoever may make tagged appends may make them this way (a role granted EXECUTE on
-- append_events_tagged as the README shows).
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
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.append_tagged_stream(text,'
                       ' bigint, uuid[], text[], bytea[], uuid, uuid, text, jsonb, text[],'
                       ' integer[], text[], integer[], text[], integer[], bigint, bigint) TO %s',
                       who);
    END LOOP;
END
$grants$;
