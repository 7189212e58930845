"""Migration 0005: a conflicting append_events also returns the events the caller missed."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from tests.pgserver import drop_schema, new_schema_name

from eventcore import ConcurrencyConflict, NewEvent
from eventcore.postgres import PostgresStore
from eventcore.postgres._sql import Queries, migrations

pytestmark = pytest.mark.postgres

TAIL_LIMIT = 256  # as in migration 0005


@pytest.mark.parametrize("missed", [TAIL_LIMIT, TAIL_LIMIT + 1])
async def test_the_tail_is_bounded(postgres_store: PostgresStore, missed: int) -> None:
    await postgres_store.append([NewEvent("s", "T", str(i).encode()) for i in range(missed)])
    with pytest.raises(ConcurrencyConflict) as info:
        await postgres_store.append([NewEvent("s", "T", b"x")], expected={"s": 0})
    tail = info.value.tail
    if missed > TAIL_LIMIT:
        assert tail is None  # too many: the caller reads
    else:
        assert tail is not None
        assert [(r[0], r[2], r[3]) for r in tail] == [
            ("s", str(i).encode(), i + 1) for i in range(missed)
        ]
    # Several streams together count against the same bound.
    await postgres_store.append([NewEvent("t", "T", b"y")])
    with pytest.raises(ConcurrencyConflict) as info:
        await postgres_store.append(
            [NewEvent("s", "T", b"x"), NewEvent("t", "T", b"x")],
            expected={"s": missed - 1, "t": 0},
        )
    assert info.value.tail is not None
    assert [(r[0], r[3]) for r in info.value.tail] == [("s", missed), ("t", 1)]


async def test_the_tail_is_what_moved_the_version_under_concurrency(
    postgres_store: PostgresStore,
) -> None:
    """Writers race on one stream from version 0; every loser's tail is exactly the
    events between its expected version and the version the conflict reports."""
    await postgres_store.append([NewEvent("hot", "T", b"0")])

    async def writer(k: int) -> list[tuple[int, int, int]]:
        seen: list[tuple[int, int, int]] = []
        expected = 1
        for _ in range(15):
            try:
                await postgres_store.append(
                    [NewEvent("hot", "T", f"{k}".encode())], expected={"hot": expected}
                )
                expected += 1
            except ConcurrencyConflict as c:
                assert c.tail is not None
                (conflict,) = c.conflicts
                versions = [r[3] for r in c.tail]
                assert versions == list(range(expected + 1, conflict.actual + 1))
                seen.append((expected, conflict.actual, len(versions)))
                expected = conflict.actual  # the tail brought us up to date
        return seen

    results = await asyncio.gather(*(writer(k) for k in range(6)))
    assert any(results), "no conflict happened: the test checked nothing"
    log = await postgres_store.read_stream("hot")
    assert [e.version for e in log] == list(range(1, len(log) + 1))


async def test_upgrading_keeps_the_grants_of_append_events(postgres_dsn: str) -> None:
    """A role granted EXECUTE on append_events (README) keeps it through migration 0005."""
    schema = new_schema_name()
    role = f"app_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    q = Queries(schema)
    try:
        old = [m for m in migrations() if m.name != "append_returns_tail"]
        await admin.execute(q.create_schema)
        await admin.execute(q.create_version_table)
        for m in old[:3]:
            await admin.execute(m.sql(schema))
            await admin.execute(q.record_version, m.version, m.name)
        await admin.execute(f"CREATE ROLE {role}")
        sig = "text[], bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb"
        await admin.execute(f'GRANT EXECUTE ON FUNCTION "{schema}".append_events({sig}) TO {role}')
        store = PostgresStore(postgres_dsn, schema=schema)
        try:
            assert await store.migrate() == len(migrations())
            await store.append([NewEvent("s", "T", b"1")])
        finally:
            await store.close()
        allowed = await admin.fetchval(
            "SELECT has_function_privilege($1, $2, 'EXECUTE')",
            role,
            f'"{schema}".append_events({sig})',
        )
        public = await admin.fetchval(
            "SELECT has_function_privilege('public', $1, 'EXECUTE')",
            f'"{schema}".append_events({sig})',
        )
        assert (allowed, public) == (True, False)
        left = await admin.fetchval(
            "SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = $1 AND p.proname LIKE 'append_events%'",
            schema,
        )
        # 0003's function is gone; 0008 wraps 0005's (append_events_inner, not granted)
        # and adds the tagged append, granted to whoever could append (with event_tags);
        # 0014 replaces it (the condition as arrays) and carries the grant over.
        assert left == ["append_events", "append_events_inner", "append_events_tagged"]
        tagged_sig = f"{sig}, text[], integer[], text[], integer[], text[], integer[], bigint"
        privileges = await admin.fetchrow(
            "SELECT has_function_privilege($1, $2, 'EXECUTE'),"
            " has_function_privilege($1, $3, 'EXECUTE'), has_table_privilege($1, $4, 'SELECT')",
            role,
            f'"{schema}".append_events_tagged({tagged_sig})',
            f'"{schema}".append_events_inner({sig})',
            f'"{schema}".event_tags',
        )
        assert tuple(privileges) == (True, False, True)
    finally:
        await drop_schema(postgres_dsn, schema)
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
