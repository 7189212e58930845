"""PostgreSQL: the application role deletes and truncates, but only the owner purges.

The application role is the README's (its GRANTs taken from the README's SQL block by
``tests/postgres/test_pg_app_role.py``'s helper): it stays append-only. It cannot UPDATE or
DELETE events, cannot call the purge function nor read or write the audit table; the
owner's purge deletes hidden events and leaves one immutable audit row naming who ran it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventcore import NO_STREAM, NewEvent, StoreError, default_registry
from eventcore.postgres import PostgresStore
from eventcore.projection import Subscription
from tests.postgres.test_pg_app_role import readme_grants

from ..bank_domain import AccountOpened, Deposited

pytestmark = pytest.mark.postgres

encode = default_registry.encode


def new(stream_id: str, event: object) -> NewEvent:
    return NewEvent(stream_id, *encode(event), None)


@pytest.fixture
async def app_and_owner(
    postgres_store: Any, postgres_dsn: str
) -> AsyncIterator[tuple[PostgresStore, Any, asyncpg.Connection, asyncpg.Connection]]:
    """(the store as the README's app role, the owner's store, an app and an owner
    connection)."""
    schema = postgres_store.schema
    role, password = f"app_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    admin = await asyncpg.connect(postgres_dsn)
    for statement in readme_grants(schema, role, password):
        await admin.execute(statement)
    parts = urlsplit(postgres_dsn)
    app_dsn = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))
    app_conn = await asyncpg.connect(app_dsn)
    try:
        async with PostgresStore(app_dsn, schema=schema) as app:
            yield app, postgres_store, app_conn, admin
    finally:
        await app_conn.close()
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()


async def test_the_app_role_deletes_and_truncates_but_never_purges(
    app_and_owner: tuple[PostgresStore, Any, asyncpg.Connection, asyncpg.Connection],
) -> None:
    app, owner, app_conn, _ = app_and_owner
    s = f'"{owner.schema}"'
    await app.append(
        [new("acc-1", AccountOpened("ann")), new("acc-1", Deposited(5))],
        expected={"acc-1": NO_STREAM},
    )
    await app.append([new("acc-2", AccountOpened("bob"))])
    assert await app.truncate_stream("acc-1", 2) == 3
    assert [e.version for e in await app.read_stream("acc-1")] == [2]
    assert await app.delete_stream("acc-2", expected=1) == 2
    assert await app.read_stream("acc-2") == []

    with pytest.raises(StoreError, match="owner"):
        await app.purge_stream("acc-2", actor="app", reason="try")
    for sql in (
        f"SELECT * FROM {s}.purge_stream('acc-2', 'app', 'direct')",
        f"DELETE FROM {s}.events WHERE stream_id = 'acc-2'",
        f"UPDATE {s}.events SET payload = '' WHERE stream_id = 'acc-2'",
        f"UPDATE {s}.streams SET hidden_upto = 0",
        f"SELECT * FROM {s}.purges",
        f"INSERT INTO {s}.purges (stream_id, events, from_version, to_version,"
        " first_position, last_position, actor, reason) VALUES ('x', 0, 0, 0, 0, 0, 'a', 'b')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(sql)
    # ... nor set the purge marker and delete through it
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('eventcore.purging', 'on', true)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(f"DELETE FROM {s}.events")
    assert len(await app.read_all()) == 3  # nothing was erased


async def test_the_owner_purges_with_an_audit_row_and_the_log_reads_on(
    app_and_owner: tuple[PostgresStore, Any, asyncpg.Connection, asyncpg.Connection],
) -> None:
    app, owner, _, admin = app_and_owner
    s = f'"{owner.schema}"'
    await app.append([new("acc-1", AccountOpened("ann")), new("acc-1", Deposited(5))])
    await app.append([new("acc-2", AccountOpened("bob"))])
    before = await app.read_all()
    await app.delete_stream("acc-1")
    # even the owner cannot delete events by hand: the trigger refuses outside a purge
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await admin.execute(f"DELETE FROM {s}.events WHERE stream_id = 'acc-1'")
    record = await owner.purge_stream("acc-1", actor="dpo@example.com", reason="erasure #42")
    assert (record.events, record.from_version, record.to_version) == (2, 1, 2)
    assert (record.first_position, record.last_position) == (
        before[0].position,
        before[1].position,
    )
    assert record.database_user == await admin.fetchval("SELECT session_user")
    assert [p.reason for p in await owner.purge_log()] == ["erasure #42"]
    # the audit row cannot be changed or removed, even by the owner
    for sql in (f"UPDATE {s}.purges SET reason = 'x'", f"DELETE FROM {s}.purges"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await admin.execute(sql)
    # a reader positioned before the deleted range reads on past it, without waiting
    sub = Subscription(app, live=False, page_size=1)
    delivered = [e.stream_id async for page in sub for e in page.events]
    assert delivered == ["acc-2"]
    assert sub.position >= before[2].position
