-- eventcore schema 4: durable snapshots of commands' folded states (eventcore.snapshot).
--
-- One row per snapshot key (a command class and a digest of its key fields): the state,
-- encoded with the store's codec, and exactly what it folds: the streams (declared, then
-- discovered), each stream's version, where the last discovery round starts and how many
-- rounds there were. A row only
-- ever makes a command faster: the executor ignores one of another schema_version, and
-- treats an unreadable, undecodable or corrupted one (its checksum, a BLAKE2b digest of
-- every other column but taken_at, does not match) as missing: a warning, a full fold. Dropping the table loses
-- nothing but speed; the next `migrate()` does not recreate it (drop the row in
-- schema_version and migrate, or restore it by hand).
--
-- The application role reads and writes it (see the README's GRANTs); nobody else.

CREATE TABLE __SCHEMA__.snapshots (
    key            text        PRIMARY KEY,
    schema_version integer     NOT NULL,
    streams        text[]      NOT NULL,
    versions       bigint[]    NOT NULL,
    fold_from      integer     NOT NULL,
    rounds         integer     NOT NULL,  -- discovery rounds that added streams
    events         bigint      NOT NULL,  -- sum(versions): a newer snapshot folds more
    state          bytea       NOT NULL,
    taken_at       timestamptz NOT NULL,
    checksum       bytea       NOT NULL
);

REVOKE ALL ON __SCHEMA__.snapshots FROM PUBLIC;
