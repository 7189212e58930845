"""Applying the shipped migrations: once, in one transaction, under an advisory lock."""

from __future__ import annotations

import asyncpg

from eventcore.errors import StoreError
from eventcore.postgres._sql import (
    OUR_OBJECTS,
    VERSION_TABLE_COMMENT,
    Queries,
    migration_lock_key,
    migrations,
)


async def installed_version(conn: asyncpg.Connection, q: Queries, schema: str) -> int | None:
    """The installed schema version (None: no store here); refuses foreign or newer ones."""
    found = dict(await conn.fetch(q.relations, schema, list(OUR_OBJECTS)))
    if "schema_version" not in found:
        if found:
            raise StoreError(
                f"schema {schema!r} already holds {sorted(found)} not created by "
                "eventcore; nothing was changed (choose another schema= or move them)"
            )
        return None
    if found["schema_version"] != VERSION_TABLE_COMMENT:
        raise StoreError(
            f"{schema}.schema_version exists but was not created by eventcore; "
            "nothing was changed (choose another schema= or move it)"
        )
    version: int = await conn.fetchval(q.schema_version)
    # A partitioned events table (migration 0012) is read with position bounds.
    q.bound_stream_reads(bool(await conn.fetchval(q.is_partitioned)))
    latest = len(migrations())
    if version > latest:
        raise StoreError(
            f"the database schema {schema!r} is at version {version}, newer than "
            f"this eventcore knows ({latest}); upgrade eventcore before using it"
        )
    return version


async def migrate(conn: asyncpg.Connection, q: Queries, schema: str) -> int:
    """Apply the missing migrations on ``conn``; return the schema version (see the store)."""
    latest = len(migrations())
    if await installed_version(conn, q, schema) == latest:
        return latest  # nothing to do: needs no DDL privilege
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", migration_lock_key(schema))
        await conn.execute(q.create_schema)
        current = await installed_version(conn, q, schema)
        if current is None:
            await conn.execute(q.create_version_table)
            current = 0
        for migration in migrations()[current:]:
            await conn.execute(migration.sql(schema))
            await conn.execute(q.record_version, migration.version, migration.name)
    return latest
