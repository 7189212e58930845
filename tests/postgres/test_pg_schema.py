"""Migrations, foreign tables, newer schemas, immutability and a least-privilege role."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tests.pgserver import drop_schema, new_schema_name

from eventcore import NewEvent, StoreError
from eventcore.postgres import PostgresStore
from eventcore.postgres._sql import migrations

pytestmark = pytest.mark.postgres


@pytest.fixture
async def schema(postgres_dsn):
    name = new_schema_name()
    yield name
    await drop_schema(postgres_dsn, name)


async def test_migrate_is_idempotent_and_safe_concurrently(postgres_dsn, schema):
    stores = [PostgresStore(postgres_dsn, schema=schema) for _ in range(4)]
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert versions == [PostgresStore.latest_schema_version()] * 4
        assert await stores[0].migrate() == versions[0]
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(f'SELECT version, name FROM "{schema}".schema_version')
        finally:
            await conn.close()
        assert [tuple(r) for r in rows] == [(m.version, m.name) for m in migrations()]
        assert rows[0]["name"] == "initial"
        await stores[1].append([NewEvent("s", "t", b"")])
        assert len(await stores[2].read_all()) == 1
    finally:
        for s in stores:
            await s.close()


async def test_newer_schema_is_refused(postgres_dsn, schema):
    async with PostgresStore(postgres_dsn, schema=schema) as store:
        await store.migrate()
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f"INSERT INTO \"{schema}\".schema_version VALUES (99, 'future')")
    await conn.close()
    store = PostgresStore(postgres_dsn, schema=schema)
    with pytest.raises(StoreError, match="newer than this eventcore"):
        await store.open()
    with pytest.raises(StoreError, match="newer"):
        await store.migrate()
    await store.close()


@pytest.mark.parametrize("table", ["events", "schema_version"])
async def test_foreign_table_is_refused_and_left_alone(postgres_dsn, schema, table):
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".{table} (id int, what text)')
        await conn.execute(f"INSERT INTO \"{schema}\".{table} VALUES (1, 'precious')")
        store = PostgresStore(postgres_dsn, schema=schema)
        with pytest.raises(StoreError, match="not created by eventcore"):
            await store.migrate()
        await store.close()
        rows = await conn.fetch(f'SELECT id, what FROM "{schema}".{table}')
        assert [tuple(r) for r in rows] == [(1, "precious")]
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname <> $2",
            schema,
            table,
        )
        assert others == 0  # nothing else was created
    finally:
        await conn.close()


async def test_unmigrated_store_says_so(postgres_dsn, schema):
    async with PostgresStore(postgres_dsn, schema=schema) as store:
        with pytest.raises(StoreError, match="migrate"):
            await store.read_all()


async def test_events_cannot_be_changed_even_by_the_owner(postgres_store, postgres_dsn):
    await postgres_store.append([NewEvent("s", "t", b"1")])
    conn = await asyncpg.connect(postgres_dsn)  # a superuser: only the trigger stops it
    try:
        table = f'"{postgres_store.schema}".events'
        for sql in (
            f"UPDATE {table} SET payload = 'x'",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="immutable"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert [e.payload for e in await postgres_store.read_all()] == [b"1"]


def grants(schema: str, role: str) -> list[str]:
    """The least-privilege GRANTs for an application role (as in the README)."""
    return [
        f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
        f'GRANT SELECT ON "{schema}".events, "{schema}".streams, "{schema}".schema_version'
        f" TO {role}",
        f'GRANT EXECUTE ON FUNCTION "{schema}".append_events(text[], bigint[], uuid[], text[],'
        f" text[], bytea[], uuid, uuid, text, jsonb) TO {role}",
        # appends to one stream without tags (migration 0013)
        f'GRANT EXECUTE ON FUNCTION "{schema}".append_stream(text, bigint, uuid[], text[],'
        f" bytea[], uuid, uuid, text, jsonb) TO {role}",
        # event tags (migration 0008): reads return them, tagged appends write them
        f'GRANT SELECT ON "{schema}".event_tags TO {role}',
        f'GRANT EXECUTE ON FUNCTION "{schema}".append_events_tagged(text[], bigint[], uuid[],'
        f" text[], text[], bytea[], uuid, uuid, text, jsonb, text[], integer[], text[],"
        f" integer[], text[], integer[], bigint) TO {role}",
    ]


async def test_least_privilege_role_reads_and_appends_only(postgres_store, postgres_dsn):
    schema = postgres_store.schema
    role = f"app_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        for statement in grants(schema, role):
            await admin.execute(statement)
        parts = urlsplit(postgres_dsn)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
        app_dsn = urlunsplit(parts._replace(netloc=netloc))
        async with PostgresStore(app_dsn, schema=schema) as app:
            assert await app.migrate() == PostgresStore.latest_schema_version()  # no DDL
            result = await app.append([NewEvent("s", "t", b"1")], expected={"s": 0})
            assert [e.event_id for e in await app.read_all()] == result.event_ids
            conn = await asyncpg.connect(app_dsn)
            try:
                for sql in (
                    f"UPDATE \"{schema}\".events SET payload = 'x'",
                    f'DELETE FROM "{schema}".events',
                    f"INSERT INTO \"{schema}\".streams VALUES ('x', 5)",
                    f'UPDATE "{schema}".streams SET version = 0',
                ):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql)
            finally:
                await conn.close()
        assert await postgres_store.stream_version("s") == 1
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
