-- eventcore schema 2: projection checkpoints and dead letters (eventcore.projection).
--
-- Until this migration the projection runner created these two tables itself at run
-- time, which an application role with only the documented GRANTs may not do. IF NOT
-- EXISTS adopts the tables such a runner already created in a schema at version 1.

-- The position each projection has applied up to (its checkpoint).
CREATE TABLE IF NOT EXISTS __SCHEMA__.projection_checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The events a projection skipped after failing to apply them (strategy "skip").
CREATE TABLE IF NOT EXISTS __SCHEMA__.projection_dead_letters (
    id         bigserial   PRIMARY KEY,
    projection text        NOT NULL,
    position   bigint      NOT NULL,
    event_id   uuid,
    stream_id  text        NOT NULL,
    event_type text        NOT NULL,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS projection_dead_letters_projection_idx
    ON __SCHEMA__.projection_dead_letters (projection, id);

REVOKE ALL ON __SCHEMA__.projection_checkpoints, __SCHEMA__.projection_dead_letters
    FROM PUBLIC;
