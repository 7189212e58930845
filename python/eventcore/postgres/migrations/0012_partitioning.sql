-- eventcore schema 12: an events table that outgrows one table. Opt-in partitioning by
-- position range, and what every store needs so that it can be switched on later.
--
-- __SCHEMA__ is replaced by the quoted, validated schema name; nothing else is templated.
--
-- Nothing changes for a store until its owner calls partition_events() (the Python API
-- eventcore.postgres.partition, or `eventcore partitions convert`). That call turns
-- `events` into a table partitioned by RANGE (position), in one transaction:
--
-- - The existing table becomes the first partition (FROM MINVALUE up to the converting
--   transaction's id): no row is copied, its indexes stay; attaching it scans it once to
--   check the bound, under an exclusive lock (appends wait for the conversion).
-- - Positions are (transaction id << 20) + index, so a partition covers a range of
--   transaction ids and every append lands, whole, in one partition. add_partitions()
--   creates the next ones ahead; a DEFAULT partition takes the appends if nobody did (and
--   later partitions then start above what it holds).
-- - Event-id uniqueness across partitions (a unique index on a partitioned table must
--   hold the partition key): a side table event_ids (event_id PRIMARY KEY, the constraint
--   named events_event_id_key as the unpartitioned table's, which the store recognises)
--   filled by ONE statement-level trigger per insert statement from its transition
--   table. It holds the ids appended after the conversion: the ids stored before it are
--   in the first partition, and append_events' own id probe (which reads every
--   partition) refuses them; only two appends in flight at once need the key. A purge
--   frees its events' ids; a detached partition's ids stay taken (re-attaching it must
--   not meet a copy).
-- - (stream_id, version) uniqueness: per partition by a unique index, across partitions
--   by the streams table (every append bumps its streams' rows under their locks).
-- - Stream reads prune partitions: each streams row keeps a position range holding all
--   of its events (first_position, last_position; NULL: unbounded). A row trigger on
--   streams sets them when the version moves (the transaction's id bounds its
--   positions), so append_events itself is unchanged; the stream read statements bound
--   position by them and the planner skips the other partitions at run time.
--
-- Here, for every store: the two columns (NULL: no bound), the immutability guard
-- recognising partitions, and the functions. The bookkeeping triggers and event_ids exist
-- only once partitioned. The readers' horizon (0003's log_horizon) needs no change: the
-- appends lock the partitioned parent, and its regclass constant is re-resolved when the
-- table it named is renamed (PostgreSQL re-plans; tests/postgres/test_pg_partition.py
-- checks it on a session that planned it before the conversion).

ALTER TABLE __SCHEMA__.streams
    ADD COLUMN first_position bigint,
    ADD COLUMN last_position  bigint;

-- 0006's guard, with a purge's DELETE recognised on a partition of events too (a row
-- trigger on a partitioned table fires with the partition's name).
CREATE OR REPLACE FUNCTION __SCHEMA__.forbid_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('eventcore.purging', true) = 'on'
       AND (TG_TABLE_NAME = 'events'
            OR (SELECT c.relname FROM pg_catalog.pg_class c
                 WHERE c.oid = pg_catalog.pg_partition_root(TG_RELID)) = 'events') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'eventcore: stored events are immutable (% on %.% refused)',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- A stream's position range: its first events' transaction id (as a position) when its
-- version first leaves 0, and the end of the range of the transaction that moved it
-- last. Installed by partition_events().
CREATE FUNCTION __SCHEMA__.track_stream_positions() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base bigint := pg_current_xact_id()::text::bigint * 1048576;
BEGIN
    IF TG_OP = 'INSERT' OR OLD.version = 0 THEN
        NEW.first_position := base;
    END IF;
    NEW.last_position := base + 1048575;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.track_stream_positions() FROM PUBLIC;

-- Claims the ids of one insert statement's events (the transition table). Installed by
-- partition_events().
CREATE FUNCTION __SCHEMA__.claim_event_ids() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO __SCHEMA__.event_ids (event_id) SELECT f.event_id FROM fresh f;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.claim_event_ids() FROM PUBLIC;

-- A purge frees its events' ids (as the unpartitioned table's unique index does).
CREATE FUNCTION __SCHEMA__.release_event_ids() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM __SCHEMA__.event_ids i USING gone g WHERE i.event_id = g.event_id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.release_event_ids() FROM PUBLIC;

-- Partitions detached by detach_partition(), with the range to re-attach them at.
CREATE TABLE __SCHEMA__.detached_partitions (
    name           text        NOT NULL,
    lower_position bigint,                  -- NULL: MINVALUE
    upper_position bigint      NOT NULL,
    detached_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT detached_partitions_pkey PRIMARY KEY (name)
);
REVOKE ALL ON __SCHEMA__.detached_partitions FROM PUBLIC;

-- The partitions of events (attached, then detached ones), bounds as positions (NULL:
-- unbounded; both NULL for the DEFAULT partition, is_default true).
CREATE FUNCTION __SCHEMA__.event_partitions(
    OUT name text, OUT lower_position bigint, OUT upper_position bigint,
    OUT is_default boolean, OUT attached boolean, OUT estimated_rows bigint,
    OUT table_bytes bigint, OUT index_bytes bigint
) RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.relname::text,
           nullif(substring(b.expr FROM 'FROM \(''?([-0-9A-Z]+)'), 'MINVALUE')::bigint,
           nullif(substring(b.expr FROM 'TO \(''?([-0-9A-Z]+)'), 'MAXVALUE')::bigint,
           b.expr = 'DEFAULT', true, greatest(c.reltuples, 0)::bigint,
           pg_table_size(c.oid), pg_indexes_size(c.oid)
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS expr) b
     WHERE i.inhparent = to_regclass('__SCHEMA__.events')
    UNION ALL
    SELECT d.name, d.lower_position, d.upper_position, false, false,
           greatest(c.reltuples, 0)::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid)
      FROM __SCHEMA__.detached_partitions d
      JOIN pg_class c ON c.relname = d.name
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.oid = (
           SELECT r.relnamespace FROM pg_class r WHERE r.oid = to_regclass('__SCHEMA__.events'))
     ORDER BY 5 DESC, 4, 2 NULLS FIRST
$$;

-- The unique indexes a partition keeps for itself (the partitioned parent cannot hold
-- them), and the guard against a TRUNCATE of the partition itself.
CREATE FUNCTION __SCHEMA__.equip_partition(p_name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE UNIQUE INDEX %I ON __SCHEMA__.%I (stream_id, version)',
                   p_name || '_stream_version_key', p_name);
    EXECUTE format('CREATE INDEX %I ON __SCHEMA__.%I (event_id)',
                   p_name || '_event_id_idx', p_name);
    EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON __SCHEMA__.%I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.forbid_event_change()',
                   p_name);
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.equip_partition(text) FROM PUBLIC;

-- Make sure partitions cover the positions of the next p_ahead spans of p_span
-- transaction ids after the current one (p_span NULL: the newest partition's width).
-- Returns the names of the partitions made.
CREATE FUNCTION __SCHEMA__.add_partitions(p_ahead integer, p_span bigint)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    span bigint := p_span;
    lo bigint;
    stop bigint;
    name text;
    in_default bigint;
BEGIN
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = to_regclass('__SCHEMA__.events');
    IF kind IS DISTINCT FROM 'p' THEN
        RAISE EXCEPTION 'eventcore: the events table is not partitioned'
            USING ERRCODE = 'EC010', HINT = 'convert it first: partition_events()';
    END IF;
    IF p_ahead IS NULL OR p_ahead < 1 OR p_ahead > 1000 THEN
        RAISE EXCEPTION 'eventcore: ahead must be 1..1000 (got %)', p_ahead
            USING ERRCODE = 'EC011';
    END IF;
    SELECT max(p.upper_position), (array_agg((p.upper_position - p.lower_position) / 1048576
                                             ORDER BY p.upper_position DESC))[1]
      INTO lo, span
      FROM __SCHEMA__.event_partitions() p
     WHERE p.attached AND p.upper_position IS NOT NULL AND p.lower_position IS NOT NULL;
    span := coalesce(p_span, span);
    IF span IS NULL OR span < 1 THEN
        RAISE EXCEPTION 'eventcore: span must be a positive number of transaction ids'
            USING ERRCODE = 'EC011';
    END IF;
    IF lo IS NULL THEN
        SELECT max(p.upper_position) INTO lo FROM __SCHEMA__.event_partitions() p
         WHERE p.attached;
    END IF;
    -- Appends that found no partition went to the default one: start above them.
    EXECUTE 'SELECT max(position) FROM __SCHEMA__.events_default' INTO in_default;
    IF in_default IS NOT NULL AND in_default >= lo THEN
        lo := (in_default / 1048576 + 1) * 1048576;
    END IF;
    stop := (pg_current_xact_id()::text::bigint + p_ahead * span) * 1048576;
    WHILE lo < stop LOOP
        name := 'events_from_' || (lo / 1048576);
        EXECUTE format('CREATE TABLE __SCHEMA__.%I PARTITION OF __SCHEMA__.events'
                       ' FOR VALUES FROM (%s) TO (%s)', name, lo, lo + span * 1048576);
        PERFORM __SCHEMA__.equip_partition(name);
        RETURN NEXT name;
        lo := lo + span * 1048576;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.add_partitions(integer, bigint) FROM PUBLIC;

-- Turn events into a table partitioned by position range (see the top of this file):
-- the existing table becomes the first partition, then partitions of p_span transaction
-- ids cover the next p_ahead spans, and a DEFAULT partition the rest. Returns the names
-- of the partitions made. The owner's: it needs the DDL rights on the schema.
CREATE FUNCTION __SCHEMA__.partition_events(p_span bigint, p_ahead integer)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind "char";
    boundary bigint;
    defs text[];
    idx text[];
    d text;
BEGIN
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = to_regclass('__SCHEMA__.events');
    IF kind = 'p' THEN
        RAISE EXCEPTION 'eventcore: the events table is partitioned already'
            USING ERRCODE = 'EC010';
    END IF;
    IF p_span IS NULL OR p_span < 1 THEN
        RAISE EXCEPTION 'eventcore: span must be a positive number of transaction ids'
            USING ERRCODE = 'EC011';
    END IF;
    -- Appends wait from here to the commit; every committed one has a smaller id.
    LOCK TABLE __SCHEMA__.events IN ACCESS EXCLUSIVE MODE;
    boundary := pg_current_xact_id()::text::bigint * 1048576;

    -- The table's triggers (row ones move to the parent, which gives them to every
    -- partition; statement ones are copied) and plain indexes (made on the parent, which
    -- adopts the first partition's identical ones), as their definitions name `events`.
    SELECT array_agg(pg_get_triggerdef(t.oid)) INTO defs
      FROM pg_trigger t WHERE t.tgrelid = '__SCHEMA__.events'::regclass AND NOT t.tgisinternal;
    SELECT array_agg(pg_get_indexdef(i.indexrelid)) INTO idx
      FROM pg_index i
     WHERE i.indrelid = '__SCHEMA__.events'::regclass AND NOT i.indisunique;
    FOR d IN SELECT t.tgname FROM pg_trigger t
              WHERE t.tgrelid = '__SCHEMA__.events'::regclass AND NOT t.tgisinternal
                AND (t.tgtype & 1) = 1  -- row triggers
    LOOP
        EXECUTE format('DROP TRIGGER %I ON __SCHEMA__.events', d);
    END LOOP;

    ALTER TABLE __SCHEMA__.events RENAME TO events_from_0;
    FOR d IN SELECT c.conname FROM pg_constraint c
              WHERE c.conrelid = '__SCHEMA__.events_from_0'::regclass
                AND c.contype IN ('p', 'u')
    LOOP
        EXECUTE format('ALTER TABLE __SCHEMA__.events_from_0 RENAME CONSTRAINT %I TO %I',
                       d, 'events_from_0' || substring(d FROM 7));
    END LOOP;
    FOR d IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = '__SCHEMA__.events_from_0'::regclass AND NOT i.indisunique
    LOOP
        EXECUTE format('ALTER INDEX __SCHEMA__.%I RENAME TO %I',
                       d, 'events_from_0' || substring(d FROM 7));
    END LOOP;

    CREATE TABLE __SCHEMA__.events (
        LIKE __SCHEMA__.events_from_0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS
    ) PARTITION BY RANGE (position);
    ALTER TABLE __SCHEMA__.events ADD CONSTRAINT events_pkey PRIMARY KEY (position);
    -- The same rights on the parent as the table had (SELECT for readers, DELETE for the
    -- owner's purge); a partition's own rights do not matter for access through it.
    FOR d IN
        SELECT format('GRANT %s ON __SCHEMA__.events TO %s', a.privilege_type,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END)
          FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE c.oid = '__SCHEMA__.events_from_0'::regclass
    LOOP
        EXECUTE d;
    END LOOP;
    REVOKE UPDATE, TRUNCATE ON __SCHEMA__.events FROM CURRENT_USER;
    IF NOT has_table_privilege('__SCHEMA__.events_from_0', 'DELETE') THEN
        REVOKE DELETE ON __SCHEMA__.events FROM CURRENT_USER;
    END IF;
    IF NOT has_table_privilege('__SCHEMA__.events_from_0', 'INSERT') THEN
        REVOKE INSERT ON __SCHEMA__.events FROM CURRENT_USER;
    END IF;

    EXECUTE format('ALTER TABLE __SCHEMA__.events ATTACH PARTITION __SCHEMA__.events_from_0'
                   ' FOR VALUES FROM (MINVALUE) TO (%s)', boundary);
    FOREACH d IN ARRAY coalesce(defs, '{}') LOOP
        EXECUTE d;
    END LOOP;
    FOREACH d IN ARRAY coalesce(idx, '{}') LOOP
        -- The definition names the old index: the parent's gets the table's old name.
        EXECUTE replace(d, '.events_from_0 ', '.events ');
    END LOOP;

    CREATE TABLE __SCHEMA__.events_default PARTITION OF __SCHEMA__.events DEFAULT;
    PERFORM __SCHEMA__.equip_partition('events_default');

    CREATE TABLE __SCHEMA__.event_ids (
        event_id uuid NOT NULL,
        CONSTRAINT events_event_id_key PRIMARY KEY (event_id)
    );
    REVOKE ALL ON __SCHEMA__.event_ids FROM PUBLIC;
    CREATE TRIGGER events_claim_ids AFTER INSERT ON __SCHEMA__.events
        REFERENCING NEW TABLE AS fresh
        FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.claim_event_ids();
    CREATE TRIGGER events_release_ids AFTER DELETE ON __SCHEMA__.events
        REFERENCING OLD TABLE AS gone
        FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.release_event_ids();

    -- Every stream written so far has all its events below the boundary.
    UPDATE __SCHEMA__.streams SET last_position = boundary - 1 WHERE version > 0;
    CREATE TRIGGER streams_track_positions BEFORE INSERT ON __SCHEMA__.streams
        FOR EACH ROW WHEN (NEW.version > 0)
        EXECUTE FUNCTION __SCHEMA__.track_stream_positions();
    CREATE TRIGGER streams_track_positions_update BEFORE UPDATE OF version ON __SCHEMA__.streams
        FOR EACH ROW WHEN (NEW.version > OLD.version)
        EXECUTE FUNCTION __SCHEMA__.track_stream_positions();

    EXECUTE format('CREATE TABLE __SCHEMA__.%I PARTITION OF __SCHEMA__.events'
                   ' FOR VALUES FROM (%s) TO (%s)',
                   'events_from_' || (boundary / 1048576), boundary, boundary + p_span * 1048576);
    PERFORM __SCHEMA__.equip_partition('events_from_' || (boundary / 1048576));
    RETURN NEXT 'events_from_0';
    RETURN NEXT 'events_default';
    RETURN NEXT 'events_from_' || (boundary / 1048576);
    RETURN QUERY SELECT * FROM __SCHEMA__.add_partitions(p_ahead, p_span);
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.partition_events(bigint, integer) FROM PUBLIC;

-- Detach a partition wholly below the readers' horizon (nothing in flight can still
-- land in it), refusing (EC012) one that holds a visible event (not hidden by a
-- truncation or deletion) unless p_force: stream reads and folds would lose it. Readers
-- of the global log read past its range, as past a purge. The detached table keeps its
-- rows, indexes and name (archive it with pg_dump, then drop it, or attach it again).
CREATE FUNCTION __SCHEMA__.detach_partition(p_name text, p_force boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part record;
    visible boolean;
BEGIN
    SELECT * INTO part FROM __SCHEMA__.event_partitions() p WHERE p.name = p_name AND p.attached;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'eventcore: % is not a partition of events', p_name
            USING ERRCODE = 'EC011';
    END IF;
    IF part.is_default OR part.upper_position IS NULL
       OR part.upper_position > __SCHEMA__.log_horizon() * 1048576 THEN
        RAISE EXCEPTION 'eventcore: % may still receive appends; only a partition wholly '
                        'in the past can be detached', p_name
            USING ERRCODE = 'EC012';
    END IF;
    IF NOT coalesce(p_force, false) THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM __SCHEMA__.%I e'
                       ' JOIN __SCHEMA__.streams st ON st.stream_id = e.stream_id'
                       ' WHERE e.version > st.hidden_upto)', p_name) INTO visible;
        IF visible THEN
            RAISE EXCEPTION 'eventcore: % holds events that stream reads still return',
                            p_name
                USING ERRCODE = 'EC012',
                      HINT = 'truncate or delete those streams first, or force';
        END IF;
    END IF;
    EXECUTE format('ALTER TABLE __SCHEMA__.events DETACH PARTITION __SCHEMA__.%I', p_name);
    -- It lost the row triggers it had from the parent: it stays immutable on its own.
    EXECUTE format('CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON __SCHEMA__.%I'
                   ' FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.forbid_event_change()', p_name);
    INSERT INTO __SCHEMA__.detached_partitions (name, lower_position, upper_position)
    VALUES (p_name, part.lower_position, part.upper_position);
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.detach_partition(text, boolean) FROM PUBLIC;

-- Attach a partition detach_partition() detached, at its old range.
CREATE FUNCTION __SCHEMA__.attach_partition(p_name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part record;
BEGIN
    SELECT * INTO part FROM __SCHEMA__.detached_partitions d WHERE d.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'eventcore: % is not a detached partition of events', p_name
            USING ERRCODE = 'EC011';
    END IF;
    EXECUTE format('DROP TRIGGER events_immutable ON __SCHEMA__.%I', p_name);
    EXECUTE format('ALTER TABLE __SCHEMA__.events ATTACH PARTITION __SCHEMA__.%I'
                   ' FOR VALUES FROM (%s) TO (%s)', p_name,
                   coalesce(part.lower_position::text, 'MINVALUE'), part.upper_position);
    DELETE FROM __SCHEMA__.detached_partitions d WHERE d.name = p_name;
END
$$;
REVOKE ALL ON FUNCTION __SCHEMA__.attach_partition(text) FROM PUBLIC;
