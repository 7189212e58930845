-- eventcore schema 14: a query as
-- arrays, and a leaner conditional append.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- 1. A query is passed as four arrays instead of a JSON document: every item's types
--    one after the other (p_types) and where each item's run ends (p_type_ends[i], 1-based,
--    inclusive; an item's run starts after the previous item's end), the same for tags.
--    Item i is p_types[p_type_ends[i-1]+1 : p_type_ends[i]] and the tags alike: array
--    slices, evaluated without a statement, where the JSON form parsed each item with
--    three statements. first_match, read_query and append_events_tagged take it.
-- 2. Their statements are planned once per session (force_generic_plan), as
--    append_events' are (schema 10 explains why: array-valued parameters make the
--    default mode re-plan them). Every table access is an index walk on a key the
--    statement names; first_match and append_events_tagged also set enable_seqscan off,
--    as append_events does, so a plan made while a table was small stays an index walk.
-- 3. append_events_tagged calls append_events itself (schema 10's function, which
--    takes the same shared locks again: they are held already and wait for nothing),
--    not through append_events_inner's extra call, takes no statement to find its lock
--    keys, and probes for a replay's ids only when the condition found a match. The
--    locks, their order, the condition check and every answer are schema 8's
--    (0008_event_tags.sql explains why they are race-free).
-- 4. A query read that matches nothing returns the head alone, without a second
--    statement.
--
-- The old jsonb functions are dropped; the new ones get their EXECUTE grants.

CREATE FUNCTION __SCHEMA__.first_match(
    p_types text[], p_type_ends integer[], p_tags text[], p_tag_ends integer[],
    p_after bigint
) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    tys  text[];
    tgs  text[];
    hit  bigint;
    best bigint;
BEGIN
    FOR i IN 1..coalesce(cardinality(p_type_ends), 0) LOOP
        tys := p_types[coalesce(p_type_ends[i - 1], 0) + 1 : p_type_ends[i]];
        tgs := p_tags[coalesce(p_tag_ends[i - 1], 0) + 1 : p_tag_ends[i]];
        IF cardinality(tgs) > 0 THEN
            SELECT t0.position INTO hit FROM __SCHEMA__.event_tags t0
             WHERE t0.tag = tgs[1] AND t0.position > p_after
               AND (cardinality(tgs) = 1 OR (SELECT count(*) FROM __SCHEMA__.event_tags tn
                     WHERE tn.position = t0.position AND tn.tag = ANY (tgs)) = cardinality(tgs))
               AND (cardinality(tys) = 0 OR (SELECT e.event_type FROM __SCHEMA__.events e
                     WHERE e.position = t0.position) = ANY (tys))
             ORDER BY t0.position LIMIT 1;
        ELSIF cardinality(tys) > 0 THEN
            SELECT min(x.p) INTO hit FROM unnest(tys) ty CROSS JOIN LATERAL (
                SELECT e.position AS p FROM __SCHEMA__.events e
                 WHERE e.event_type = ty AND e.position > p_after
                 ORDER BY e.position LIMIT 1) x;
        ELSE
            SELECT e.position INTO hit FROM __SCHEMA__.events e
             WHERE e.position > p_after ORDER BY e.position LIMIT 1;
        END IF;
        IF hit IS NOT NULL AND (best IS NULL OR hit < best) THEN
            best := hit;
        END IF;
        hit := NULL;
    END LOOP;
    RETURN best;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.first_match(text[], integer[], text[], integer[], bigint)
    FROM PUBLIC;

CREATE FUNCTION __SCHEMA__.read_query(
    p_types text[], p_type_ends integer[], p_tags text[], p_tag_ends integer[],
    p_after bigint, p_limit bigint
) RETURNS TABLE (head bigint, "position" bigint, event_id bytea, stream_id text,
                 version bigint, event_type text, payload bytea, recorded_at timestamptz,
                 metadata text, tags text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    h    bigint;
    tys  text[];
    tgs  text[];
    hits bigint[] := '{}';
BEGIN
    h := __SCHEMA__.safe_head();
    head := h;
    RETURN NEXT;
    head := NULL;
    IF h <= p_after OR p_limit = 0 THEN
        RETURN;
    END IF;
    FOR i IN 1..coalesce(cardinality(p_type_ends), 0) LOOP
        tys := p_types[coalesce(p_type_ends[i - 1], 0) + 1 : p_type_ends[i]];
        tgs := p_tags[coalesce(p_tag_ends[i - 1], 0) + 1 : p_tag_ends[i]];
        IF cardinality(tgs) > 0 THEN
            hits := hits || ARRAY(
                SELECT t0.position FROM __SCHEMA__.event_tags t0
                 WHERE t0.tag = tgs[1] AND t0.position > p_after AND t0.position <= h
                   AND (cardinality(tgs) = 1 OR (SELECT count(*) FROM __SCHEMA__.event_tags tn
                         WHERE tn.position = t0.position AND tn.tag = ANY (tgs)) = cardinality(tgs))
                   AND (cardinality(tys) = 0 OR (SELECT e.event_type FROM __SCHEMA__.events e
                         WHERE e.position = t0.position) = ANY (tys))
                 ORDER BY t0.position LIMIT p_limit);
        ELSIF cardinality(tys) > 0 THEN
            hits := hits || ARRAY(
                SELECT x.p FROM unnest(tys) ty CROSS JOIN LATERAL (
                    SELECT e.position AS p FROM __SCHEMA__.events e
                     WHERE e.event_type = ty AND e.position > p_after AND e.position <= h
                     ORDER BY e.position LIMIT p_limit) x
                 ORDER BY x.p LIMIT p_limit);
        ELSE
            hits := hits || ARRAY(
                SELECT e.position FROM __SCHEMA__.events e
                 WHERE e.position > p_after AND e.position <= h
                 ORDER BY e.position LIMIT p_limit);
        END IF;
    END LOOP;
    IF cardinality(hits) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT NULL::bigint, e.position, uuid_send(e.event_id), e.stream_id::text, e.version,
           e.event_type, e.payload, e.recorded_at,
           CASE WHEN e.causation_id IS NULL AND e.correlation_id IS NULL AND e.user_id IS NULL
                AND e.custom IS NULL THEN NULL
                ELSE json_build_array(e.causation_id, e.correlation_id, e.user_id,
                                      e.custom)::text END,
           ARRAY(SELECT t.tag::text FROM __SCHEMA__.event_tags t
                  WHERE t.position = e.position ORDER BY t.tag)
      FROM __SCHEMA__.events e
     WHERE e.position = ANY (hits)
     ORDER BY e.position LIMIT p_limit;
END
$$;

-- As in schema 8, with the condition as arrays (p_cond_type_ends NULL: no condition).
CREATE FUNCTION __SCHEMA__.append_events_tagged(
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    hit   bigint;
    keys  bigint[] := '{}';
    first integer;
    last  integer;
    bad   integer;
BEGIN
    IF cardinality(p_tags) IS DISTINCT FROM cardinality(p_tag_events)
       OR cardinality(p_cond_type_ends) IS DISTINCT FROM cardinality(p_cond_tag_ends) THEN
        RAISE EXCEPTION 'eventcore: append_events_tagged arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The exclusive key of each condition item (schema 8): its first tag, else each of
    -- its types, else the whole log.
    FOR i IN 1..coalesce(cardinality(p_cond_type_ends), 0) LOOP
        first := coalesce(p_cond_tag_ends[i - 1], 0) + 1;
        IF p_cond_tag_ends[i] >= first THEN
            keys := keys || hashtext('tag:' || p_cond_tags[first])::bigint;
        ELSE
            first := coalesce(p_cond_type_ends[i - 1], 0) + 1;
            last := p_cond_type_ends[i];
            IF last >= first THEN
                FOR j IN first..last LOOP
                    keys := keys || hashtext('type:' || p_cond_types[j])::bigint;
                END LOOP;
            ELSE
                keys := keys || hashtext('all:')::bigint;
            END IF;
        END IF;
    END LOOP;
    PERFORM __SCHEMA__.lock_written(p_event_types, p_tags, keys);
    -- A replay (an id stored) is not checked: the id probe runs only when a match is
    -- found, which a passing condition never has.
    IF p_cond_type_ends IS NOT NULL THEN
        hit := __SCHEMA__.first_match(p_cond_types, p_cond_type_ends, p_cond_tags,
                                      p_cond_tag_ends, p_after);
        IF hit IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids)) THEN
            status := 'condition';
            positions := ARRAY[hit];
            RETURN;
        END IF;
    END IF;
    SELECT * INTO status, positions, streams, versions, conflict_expected, duplicate_id,
                  detail, tail_streams, tail_types, tail_payloads, tail_versions,
                  tail_positions
      FROM __SCHEMA__.append_events(p_expected_streams, p_expected_versions,
           p_event_ids, p_stream_ids, p_event_types, p_payloads, p_causation_id,
           p_correlation_id, p_user_id, p_custom);
    IF status = 'ok' AND cardinality(positions) > 0 THEN
        INSERT INTO __SCHEMA__.event_tags (tag, position)
        SELECT DISTINCT g.tag, positions[g.i]
          FROM unnest(p_tags, p_tag_events) AS g(tag, i);
    ELSIF status = 'replay' THEN
        SELECT min(x.i) INTO bad
          FROM generate_subscripts(p_event_ids, 1) AS x(i)
         WHERE ARRAY(SELECT t.tag FROM __SCHEMA__.event_tags t
                      WHERE t.position = positions[x.i] ORDER BY t.tag)
               IS DISTINCT FROM
               ARRAY(SELECT DISTINCT g.tag FROM unnest(p_tags, p_tag_events) AS g(tag, j)
                      WHERE g.j = x.i ORDER BY g.tag);
        IF bad IS NOT NULL THEN
            status := 'duplicate';
            duplicate_id := p_event_ids[bad];
            detail := 'already stored with different tags';
        END IF;
    END IF;
END
$$;

-- The new functions get the EXECUTE grants of the ones they replace (PUBLIC's too);
-- then the old ones go.
DO $grants$
DECLARE
    pair text[];
    who text;
    public_may boolean;
BEGIN
    FOREACH pair SLICE 1 IN ARRAY ARRAY[
        ['__SCHEMA__.read_query(jsonb, bigint, bigint)',
         '__SCHEMA__.read_query(text[], integer[], text[], integer[], bigint, bigint)'],
        ['__SCHEMA__.append_events_tagged(text[], bigint[], uuid[], text[], text[], bytea[],'
         ' uuid, uuid, text, jsonb, text[], integer[], jsonb, bigint)',
         '__SCHEMA__.append_events_tagged(text[], bigint[], uuid[], text[], text[], bytea[],'
         ' uuid, uuid, text, jsonb, text[], integer[], text[], integer[], text[], integer[],'
         ' bigint)']
    ] LOOP
        public_may := false;
        FOR who IN
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
              FROM pg_proc f, aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a
              LEFT JOIN pg_roles r ON r.oid = a.grantee
             WHERE f.oid = pair[1]::regprocedure
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
        LOOP
            IF who = 'PUBLIC' THEN
                public_may := true;
            ELSE
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', pair[2], who);
            END IF;
        END LOOP;
        IF NOT public_may THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', pair[2]);
        END IF;
    END LOOP;
END
$grants$;

DROP FUNCTION __SCHEMA__.append_events_tagged(text[], bigint[], uuid[], text[], text[],
    bytea[], uuid, uuid, text, jsonb, text[], integer[], jsonb, bigint);
DROP FUNCTION __SCHEMA__.read_query(jsonb, bigint, bigint);
DROP FUNCTION __SCHEMA__.first_match(jsonb, bigint);
