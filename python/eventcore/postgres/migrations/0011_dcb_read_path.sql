-- eventcore schema 11: the read side of tags and queries (eventcore.query).
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- 1. A type index. A query item with types only (no tag) used to read the log after its
--    position; events_type_position_idx walks each of its types from that position on.
--    It costs every append one more index entry per event; read_all's event_types
--    filter may use it too. CREATE INDEX here blocks appends while it builds (the
--    migration's transaction): on a large log, migrate when writers may wait.
-- 2. first_match (an append condition) and read_query use it: one index walk per type
--    of an item without tags, each limited, merged in position order.
-- 3. read_all_page returns each event's tags (NULL: none) from the same statement as the
--    event, so a read of the log needs no second query for them. In the same statement
--    because it has the event's snapshot: a later query would see tags the read did not
--    need, an earlier one (the caller's statement) could miss those of an event that
--    committed in between. The plain reads (streams, ids) do the same in their
--    statement (eventcore.postgres._sql).

CREATE INDEX events_type_position_idx ON __SCHEMA__.events (event_type, position);

-- As in schema 8; an item with types only walks the type index.
CREATE OR REPLACE FUNCTION __SCHEMA__.first_match(p_items jsonb, p_after bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item jsonb;
    tys  text[];
    tgs  text[];
    hit  bigint;
    best bigint;
BEGIN
    FOR item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        tys := ARRAY(SELECT jsonb_array_elements_text(item -> 'types'));
        tgs := ARRAY(SELECT jsonb_array_elements_text(item -> 'tags'));
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

-- As in schema 8; an item with types only walks the type index.
CREATE OR REPLACE FUNCTION __SCHEMA__.read_query(p_items jsonb, p_after bigint, p_limit bigint)
RETURNS TABLE (head bigint, "position" bigint, event_id bytea, stream_id text,
               version bigint, event_type text, payload bytea, recorded_at timestamptz,
               metadata text, tags text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h    bigint;
    item jsonb;
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
    FOR item IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        tys := ARRAY(SELECT jsonb_array_elements_text(item -> 'types'));
        tgs := ARRAY(SELECT jsonb_array_elements_text(item -> 'tags'));
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

-- As in schema 3, with one more column: the event's tags, sorted (NULL: none). The
-- return type changes, so the function is made again (the old one renamed, its grants
-- copied, then dropped).
ALTER FUNCTION __SCHEMA__.read_all_page(bigint, bigint, text[], text)
    RENAME TO read_all_page_schema3;

CREATE FUNCTION __SCHEMA__.read_all_page(
    p_after bigint, p_limit bigint, p_types text[], p_prefix text
) RETURNS TABLE (
    o_position bigint, o_event_id bytea, o_stream_id text, o_version bigint,
    o_event_type text, o_payload bytea, o_recorded_at timestamptz, o_metadata text,
    o_tags text[]
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    low_bound bigint;
    bound bigint;
    got bigint := 0;
    next_after bigint;
BEGIN
    low_bound := pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 1048576;
    bound := low_bound;
    next_after := p_after;
    FOR part IN 1..2 LOOP
        IF part = 2 THEN
            IF p_limit IS NOT NULL AND got >= p_limit THEN
                RETURN;
            END IF;
            -- Nothing visible above xmin: no need to know how far above it is safe.
            PERFORM 1 FROM __SCHEMA__.events e
              WHERE e.position >= low_bound AND e.position > p_after LIMIT 1;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            bound := __SCHEMA__.log_horizon() * 1048576;  -- snapshot, lock scan
            IF bound <= low_bound THEN
                RETURN;
            END IF;
            next_after := greatest(p_after, low_bound - 1);
        END IF;
        RETURN QUERY                                      -- a newer snapshot
        SELECT page.*, (SELECT array_agg(t.tag::text ORDER BY t.tag)
                          FROM __SCHEMA__.event_tags t WHERE t.position = page.position)
          FROM (
            SELECT e.position, uuid_send(e.event_id), e.stream_id, e.version, e.event_type,
                   e.payload, e.recorded_at,
                   CASE WHEN e.causation_id IS NULL AND e.correlation_id IS NULL
                             AND e.user_id IS NULL AND e.custom IS NULL THEN NULL
                        ELSE json_build_array(e.causation_id, e.correlation_id, e.user_id,
                                              e.custom)::text END
              FROM __SCHEMA__.events e
             WHERE e.position > next_after
               AND (p_types IS NULL OR e.event_type = ANY (p_types))
               AND (p_prefix IS NULL OR starts_with(e.stream_id, p_prefix))
             ORDER BY e.position LIMIT p_limit - got) page
         WHERE page.position < bound
         ORDER BY page.position;
        GET DIAGNOSTICS got = ROW_COUNT;
    END LOOP;
END
$$;

DO $grants$
DECLARE
    who text;
    public_may boolean := false;
BEGIN
    FOR who IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_proc f, aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a
          LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE f.oid = '__SCHEMA__.read_all_page_schema3(bigint, bigint, text[], text)'
                       ::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
    LOOP
        IF who = 'PUBLIC' THEN
            public_may := true;
        ELSE
            EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.read_all_page(bigint,'
                           ' bigint, text[], text) TO %s', who);
        END IF;
    END LOOP;
    IF NOT public_may THEN
        REVOKE ALL ON FUNCTION __SCHEMA__.read_all_page(bigint, bigint, text[], text)
            FROM PUBLIC;
    END IF;
END
$grants$;

DROP FUNCTION __SCHEMA__.read_all_page_schema3(bigint, bigint, text[], text);
