-- eventcore schema 8: event tags, query reads and conditional appends (eventcore.query).
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- Tags live in a table of their own, one row per (tag, event): an untagged event costs
-- nothing, an append of tagged events inserts rows (no update of the events table), and
-- the primary key walks a tag's events after a position (a query read or an append
-- condition); a second index finds an event's tags (reads return them).
--
-- Race-free conditions without serializing unrelated writers: transaction-scoped
-- advisory locks in a key space of their own, taken BEFORE the transaction has an id and
-- before the stream locks (one fixed order: these keys sorted, then the stream locks as
-- before, so no deadlock). Every append takes SHARED locks on the keys of what it writes:
-- each tag of each event ('tag:' || tag), each event type ('type:' || type) and the
-- whole log ('all:'). An append with a condition takes an EXCLUSIVE lock per query item:
-- its first tag, or each of its types when it has no tag, or the whole log when it has
-- neither. An event that matches an item carries the item's first tag (or has one of its
-- types, or is in the log), so its writer holds that key shared: the condition's check
-- waits for a writer in flight to commit (then sees its events: each statement of the
-- function reads a fresh snapshot) and a later writer waits for it. Writers that touch no
-- key a condition holds never wait for it, nor for each other (shared locks).
--
-- append_events keeps its signature (the README's GRANT still names it): it takes the
-- shared locks, then runs the append of schema 5 (renamed append_events_inner).

CREATE TABLE __SCHEMA__.event_tags (
    tag      text   COLLATE "C" NOT NULL,
    position bigint NOT NULL,
    CONSTRAINT event_tags_pkey PRIMARY KEY (tag, position)
);
CREATE INDEX event_tags_position_idx ON __SCHEMA__.event_tags (position);
REVOKE ALL ON __SCHEMA__.event_tags FROM PUBLIC;

ALTER FUNCTION __SCHEMA__.append_events(text[], bigint[], uuid[], text[], text[],
    bytea[], uuid, uuid, text, jsonb)
    RENAME TO append_events_inner;
REVOKE ALL ON FUNCTION __SCHEMA__.append_events_inner(text[], bigint[], uuid[], text[],
    text[], bytea[], uuid, uuid, text, jsonb) FROM PUBLIC;

-- The shared locks of an append that writes these types and tags.
CREATE FUNCTION __SCHEMA__.lock_written(p_types text[], p_tags text[], p_exclusive bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k integer;
    x boolean;
BEGIN
    FOR k, x IN
        SELECT u.key, bool_or(u.x)
          FROM (SELECT hashtext('type:' || t) AS key, false AS x FROM unnest(p_types) t
                UNION ALL SELECT hashtext('tag:' || t), false FROM unnest(p_tags) t
                UNION ALL SELECT hashtext('all:'), false
                UNION ALL SELECT e::integer, true FROM unnest(p_exclusive) e) u
         GROUP BY 1 ORDER BY 1
    LOOP
        IF x THEN
            PERFORM pg_advisory_xact_lock(hashtext('eventcore.dcb.__SCHEMA__'), k);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(hashtext('eventcore.dcb.__SCHEMA__'), k);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.lock_written(text[], text[], bigint[]) FROM PUBLIC;

CREATE FUNCTION __SCHEMA__.append_events(
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
AS $$
BEGIN
    IF coalesce(cardinality(p_event_ids), 0) > 0 THEN
        PERFORM __SCHEMA__.lock_written(
            ARRAY(SELECT DISTINCT t FROM unnest(p_event_types) t), '{}', '{}');
    END IF;
    SELECT * INTO status, positions, streams, versions, conflict_expected, duplicate_id,
                  detail, tail_streams, tail_types, tail_payloads, tail_versions,
                  tail_positions
      FROM __SCHEMA__.append_events_inner(p_expected_streams, p_expected_versions,
           p_event_ids, p_stream_ids, p_event_types, p_payloads, p_causation_id,
           p_correlation_id, p_user_id, p_custom);
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.append_events(text[], bigint[], uuid[], text[], text[],
    bytea[], uuid, uuid, text, jsonb) FROM PUBLIC;

-- The first event after p_after matching the query p_items (a JSON array of
-- {"types": [...], "tags": [...]}, checked by the caller), or NULL.
CREATE FUNCTION __SCHEMA__.first_match(p_items jsonb, p_after bigint) RETURNS bigint
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
        ELSE
            SELECT e.position INTO hit FROM __SCHEMA__.events e
             WHERE e.position > p_after AND (cardinality(tys) = 0 OR e.event_type = ANY (tys))
             ORDER BY e.position LIMIT 1;
        END IF;
        IF hit IS NOT NULL AND (best IS NULL OR hit < best) THEN
            best := hit;
        END IF;
        hit := NULL;
    END LOOP;
    RETURN best;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.first_match(jsonb, bigint) FROM PUBLIC;

-- A query read: the first row carries only the safe head (read first: every event at or
-- below it has committed, and each later statement here reads a fresh snapshot that sees
-- them); the others are the events after p_after and up to that head matching p_items
-- (as first_match), in position order, at most p_limit (NULL: all), with their tags.
-- Runs with the caller's rights: it reads events and event_tags as the caller may.
CREATE FUNCTION __SCHEMA__.read_query(p_items jsonb, p_after bigint, p_limit bigint)
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
        ELSE
            hits := hits || ARRAY(
                SELECT e.position FROM __SCHEMA__.events e
                 WHERE e.position > p_after AND e.position <= h
                   AND (cardinality(tys) = 0 OR e.event_type = ANY (tys))
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

-- An append with tags (p_tags[i] belongs to event p_tag_events[i], 1-based) and an
-- optional condition: status 'condition' (positions = {the first matching event}) when
-- an event matching p_condition lies after p_after. A replay (an id stored) is not
-- checked again; its tags must be the stored ones ('duplicate' otherwise).
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
    p_condition         jsonb,
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
AS $$
DECLARE
    hit  bigint;
    keys bigint[] := '{}';
    item jsonb;
    bad  integer;
BEGIN
    IF cardinality(p_tags) IS DISTINCT FROM cardinality(p_tag_events) THEN
        RAISE EXCEPTION 'eventcore: append_events_tagged tag arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_condition IS NOT NULL THEN
        FOR item IN SELECT value FROM jsonb_array_elements(p_condition) LOOP
            IF jsonb_array_length(item -> 'tags') > 0 THEN
                keys := keys || hashtext('tag:' || (item -> 'tags' ->> 0))::bigint;
            ELSIF jsonb_array_length(item -> 'types') > 0 THEN
                keys := keys || ARRAY(SELECT hashtext('type:' || t)::bigint
                                        FROM jsonb_array_elements_text(item -> 'types') t);
            ELSE
                keys := keys || hashtext('all:')::bigint;
            END IF;
        END LOOP;
    END IF;
    PERFORM __SCHEMA__.lock_written(
        ARRAY(SELECT DISTINCT t FROM unnest(p_event_types) t),
        ARRAY(SELECT DISTINCT t FROM unnest(p_tags) t), keys);
    IF p_condition IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_event_ids)) THEN
        hit := __SCHEMA__.first_match(p_condition, p_after);
        IF hit IS NOT NULL THEN
            status := 'condition';
            positions := ARRAY[hit];
            RETURN;
        END IF;
    END IF;
    SELECT * INTO status, positions, streams, versions, conflict_expected, duplicate_id,
                  detail, tail_streams, tail_types, tail_payloads, tail_versions,
                  tail_positions
      FROM __SCHEMA__.append_events_inner(p_expected_streams, p_expected_versions,
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
REVOKE ALL ON FUNCTION __SCHEMA__.append_events_tagged(text[], bigint[], uuid[], text[],
    text[], bytea[], uuid, uuid, text, jsonb, text[], integer[], jsonb, bigint) FROM PUBLIC;

-- Whoever could append can append with tags and conditions, and read tags.
DO $grants$
DECLARE
    who text;
BEGIN
    FOR who IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_proc f, aclexplode(f.proacl) a
          LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE f.oid = ('__SCHEMA__.append_events_inner(text[], bigint[], uuid[], text[],'
                        ' text[], bytea[], uuid, uuid, text, jsonb)')::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.append_events(text[], bigint[],'
                       ' uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb) TO %s', who);
        EXECUTE format('GRANT EXECUTE ON FUNCTION __SCHEMA__.append_events_tagged(text[],'
                       ' bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb,'
                       ' text[], integer[], jsonb, bigint) TO %s', who);
        EXECUTE format('GRANT SELECT ON __SCHEMA__.event_tags TO %s', who);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION __SCHEMA__.append_events_inner(text[],'
                       ' bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb)'
                       ' FROM %s', who);
    END LOOP;
END
$grants$;
