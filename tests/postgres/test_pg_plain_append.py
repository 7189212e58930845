"""The lean append of one stream without tags (migrations 0013 and 0016, issue 11 section 3).

``append_stream``, or the same work as one SQL statement when the store's role may
write the tables (the direct path, 0016), serves appends to one stream whose only checked
version is that stream's; every other append still goes through ``append_events``. Each
path must give the same answers (results, conflicts with their tails, replays,
duplicates, refusals) and leave the same log.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    DuplicateEventId,
    Metadata,
    NewEvent,
)
from eventcore.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LEAN = (
    "SELECT first_position, version FROM {s}.append_stream($1::text, $2::bigint, $3::uuid[],"
    " $4::text[], $5::bytea[], NULL, NULL, $6::text, $7::jsonb)"
)
MiB = 1024 * 1024


def spy(store: PostgresStore) -> list[str]:
    """The functions each append statement of ``store`` calls, in order (``append_direct``:
    the store's direct statement, migration 0016; ``append_tagged_direct``: its direct
    tagged append, migration 0018; ``append_tagged_streams_direct``: into several streams,
    migration 0019)."""
    called: list[str] = []
    send = store._send_append
    direct = set(store._q.append_direct.values())
    tagged = set(store._q.append_tagged_direct.values())

    async def spying(pool: Any, query: str, *args: Any, **kw: Any) -> Any:
        called.append(
            "append_direct"
            if query in direct
            else "append_tagged_direct"
            if query in tagged
            else "append_tagged_streams_direct"
            if query is store._q.append_tagged_streams_direct
            else query.split(".", 1)[1].split("(", 1)[0]
        )
        return await send(pool, query, *args, **kw)

    store._send_append = spying  # type: ignore[method-assign]
    return called


# The append functions' signatures, as GRANT names them.
APPEND_EVENTS = (
    "append_events(text[], bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text, jsonb)"
)
APPEND_STREAM = "append_stream(text, bigint, uuid[], text[], bytea[], uuid, uuid, text, jsonb)"
APPEND_EVENTS_TAGGED = (
    "append_events_tagged(text[], bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text,"
    " jsonb, text[], integer[], text[], integer[], text[], integer[], bigint)"
)


@contextlib.asynccontextmanager
async def store_as_role(
    postgres_dsn: str, schema: str, functions: Sequence[str]
) -> AsyncIterator[PostgresStore]:
    """A store on ``schema`` logged in as a new role that may read the tables and call
    only ``functions`` (signatures as GRANT names them); the role is dropped after."""
    role = f"app_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        await admin.execute(
            f'GRANT SELECT ON "{schema}".events, "{schema}".streams, "{schema}".schema_version,'
            f' "{schema}".event_tags TO {role}'
        )
        for fn in functions:
            await admin.execute(f'GRANT EXECUTE ON FUNCTION "{schema}".{fn} TO {role}')
        parts = urlsplit(postgres_dsn)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
        async with PostgresStore(
            urlunsplit(parts._replace(netloc=netloc)), schema=schema, snapshots=False
        ) as app:
            yield app
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


# The plain append's two paths (PostgresStore._append_plain): the direct statement of a
# role that may write the tables, and append_stream. Every test below runs on both.
PATHS = {"direct": "append_direct", "function": "append_stream"}


@pytest.fixture(params=list(PATHS))
def plain_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_plain_appends_to_one_stream_take_the_lean_path(postgres_store, plain_path):
    store = postgres_store
    store._plain = plain_path
    lean = PATHS[plain_path]
    called = spy(store)
    first = await store.append([NewEvent("a", "t", b"1")])
    assert called == [lean]
    batch = await store.append(
        [NewEvent("a", "t", b"2"), NewEvent("a", "u", b"3"), NewEvent("a", "t", b"4")],
        expected={"a": 1},
    )
    assert list(batch.positions) == [batch.positions[0] + i for i in range(3)]
    assert batch.positions[0] > first.positions[0]
    assert dict(batch.stream_versions) == {"a": 4}
    assert [e.version for e in await store.read_stream("a")] == [1, 2, 3, 4]
    assert called == [lean] * 2
    # Several streams, a checked stream not written: append_events as before; tags: the
    # direct tagged append (migration 0018, tests/dcb/test_pg_lean_tagged_append.py).
    await store.append([NewEvent("a", "t", b""), NewEvent("b", "t", b"")])
    await store.append([NewEvent("a", "t", b"")], expected={"a": 5, "b": 1})
    await store.append([NewEvent("a", "t", b"", tags=("x",))])
    assert called == [lean] * 2 + [
        "append_events",
        "append_events",
        "append_tagged_direct",
    ]
    assert store._plain == plain_path  # the path stays


async def scenario(store: PostgresStore) -> list[Any]:
    """Every answer of a plain one-stream append, as comparable values."""
    out: list[Any] = []

    async def run(events: list[NewEvent], **kw: Any) -> None:
        try:
            r = await store.append(events, **kw)
            out.append(("ok", len(r.positions), dict(r.stream_versions)))
        except ConcurrencyConflict as exc:
            tail = None if exc.tail is None else [(r[0], r[1], r[2], r[3]) for r in exc.tail]
            base = None if exc.tail_base is None else {s: v for s, (v, _) in exc.tail_base.items()}
            out.append(("conflict", exc.conflicts, tail, base))
        except DuplicateEventId as exc:
            out.append(("duplicate", str(exc).replace(str(exc.event_id), "<id>")))

    ids = [uuid.uuid4() for _ in range(3)]
    meta = Metadata(user_id="u", custom={"k": 1})
    await run(
        [NewEvent("s", "t", b"1", ids[0]), NewEvent("s", "t", b"2", ids[1])],
        expected={"s": NO_STREAM},
        metadata=meta,
    )
    await run([NewEvent("s", "t", b"3")], expected={"s": NO_STREAM})  # exists already
    await run([NewEvent("new", "t", b"")], expected={"new": STREAM_EXISTS})  # missing
    await run([NewEvent("new", "t", b"")], expected={"new": 3})  # missing
    await run([NewEvent("s", "t", b"3")], expected={"s": 2})
    await run([NewEvent("s", "u", b"4")], expected={"s": ANY})
    await run([NewEvent("s", "t", b"x")], expected={"s": 1})  # stale: a tail of 3 after v1
    await run([NewEvent("s", "t", b"x")], expected={"s": 0})  # stale from the start
    # A replay after the stream moved on (its version check fails: still a replay), and
    # with no check at all (the insert meets the stored id).
    await run(
        [NewEvent("s", "t", b"1", ids[0]), NewEvent("s", "t", b"2", ids[1])],
        expected={"s": NO_STREAM},
        metadata=meta,
    )
    await run([NewEvent("s", "t", b"1", ids[0]), NewEvent("s", "t", b"2", ids[1])], metadata=meta)
    await run([NewEvent("s", "t", b"other", ids[0])], expected={"s": 4})
    await run([NewEvent("s", "t", b"other", ids[0])])
    await run(
        [NewEvent("s", "t", b"1", ids[0]), NewEvent("s", "t", b"9", ids[2])], expected={"s": 4}
    )
    await run([NewEvent("s", "t", b"1", ids[0])], metadata=Metadata(user_id="someone else"))
    await store.truncate_stream("s", 3, expected=4)
    await run([NewEvent("s", "t", b"x")], expected={"s": 2})  # truncated since: no tail
    await run([NewEvent("s", "t", b"5")], expected={"s": 5})
    log = [
        (e.stream_id, e.version, e.event_type, e.payload, e.metadata)
        for e in await store.read_all()
    ]
    return [out, log]


async def test_the_lean_path_answers_as_append_events(postgres_store_factory, plain_path):
    lean = await postgres_store_factory()
    lean._plain = plain_path
    general = await postgres_store_factory()
    general._plain = None  # every append through append_events
    called, lean_called = spy(general), spy(lean)
    got, want = await scenario(lean), await scenario(general)
    assert set(called) == {"append_events"}
    assert PATHS[plain_path] in lean_called
    assert got[0] == want[0]
    assert [a[0] for a in got[0]] == [
        "ok", "conflict", "conflict", "conflict", "ok", "ok", "conflict", "conflict",
        "ok", "ok", "duplicate", "duplicate", "duplicate", "duplicate", "conflict", "ok",
    ]  # fmt: skip
    assert got[1] == want[1]
    assert got[0][6][2] is not None and len(got[0][6][2]) == 3  # the tail after v1
    assert got[0][14][2] is None  # truncated after the expected version: no tail


async def test_the_lean_path_answers_as_append_events_on_a_partitioned_store(
    partitioned_postgres_store, postgres_store_factory, plain_path
):
    """The same on a partitioned events table (a stored event id is found by the
    event_ids table's key of the same name; the streams rows' position bounds move)."""
    lean = partitioned_postgres_store
    lean._plain = plain_path
    general = await postgres_store_factory()
    general._plain = None
    got, want = await scenario(lean), await scenario(general)
    assert got == want
    for row in await lean._fetch(
        f'SELECT first_position, last_position FROM "{lean.schema}".streams'
    ):
        assert row[0] is not None and row[1] is not None


BAD = {
    "empty stream id": dict(stream=""),
    "control char in stream id": dict(stream="a\x01b"),
    "C1 control in stream id": dict(stream="a\x85b"),
    "leading space": dict(stream=" a"),
    "trailing ideographic space": dict(stream="a\u3000"),
    "stream id of 256 code points": dict(stream="é" * 256),
    "empty type": dict(types=[""]),
    "type with a newline": dict(types=["t\n"]),
    "type of 256 code points": dict(types=["t" * 256]),
    "second type bad": dict(types=["t", " t"], payloads=[b"", b""]),
    "payload over 16 MiB": dict(payloads=[b"x" * (16 * MiB + 1)]),
    "NULL payload": dict(payloads=[None]),
    "NULL payload second": dict(types=["t", "t"], payloads=[b"", None]),
    "over 64 MiB in total": dict(types=["t"] * 5, payloads=[b"x" * (16 * MiB)] * 5),
    "user_id with a control char": dict(user_id="u\x1b"),
    "custom not an object": dict(custom="[1, 2]"),
}


@pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
async def test_a_direct_call_with_bad_input_is_refused_and_writes_nothing(
    postgres_store, postgres_dsn, bad
):
    s = f'"{postgres_store.schema}"'
    types = bad.get("types", ["t"])
    args = (
        bad.get("stream", "s"),
        -1,
        [uuid.uuid4() for _ in types],
        types,
        bad.get("payloads", [b"p"]),
        bad.get("user_id"),
        bad.get("custom"),
    )
    conn = await asyncpg.connect(postgres_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.fetchrow(LEAN.format(s=s), *args)
        assert info.value.sqlstate == "EC002"
        assert await conn.fetchval(f"SELECT count(*) FROM {s}.events") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {s}.streams") == 0
        # The rules' edges themselves pass.
        row = await conn.fetchrow(
            LEAN.format(s=s), "é" * 255, 0, [uuid.uuid4()], ["t" * 255], [b"x" * (16 * MiB)],
            "u" * 255, '{"k": 1}',
        )  # fmt: skip
        assert row["version"] == 1 and row["first_position"] > 0
    finally:
        await conn.close()


async def test_mismatched_arrays_and_a_caller_transaction_are_refused(postgres_store, postgres_dsn):
    s = f'"{postgres_store.schema}"'
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for ids, types in (([], []), ([uuid.uuid4()], ["t", "t"])):
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await conn.fetchrow(LEAN.format(s=s), "s", -1, ids, types, [b""], None, None)
        async with conn.transaction():
            await conn.fetchrow(LEAN.format(s=s), "s", -1, [uuid.uuid4()], ["t"], [b""], None, None)
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetchrow(
                    LEAN.format(s=s), "s", -1, [uuid.uuid4()], ["t"], [b""], None, None
                )
            assert info.value.sqlstate == "EC001"
    finally:
        await conn.close()
    assert await postgres_store.stream_version("s") == 0


async def test_a_role_granted_only_append_events_still_appends(postgres_store, postgres_dsn):
    """The GRANTs of before schema 13 (no append_stream): the store uses append_events."""
    async with store_as_role(postgres_dsn, postgres_store.schema, [APPEND_EVENTS]) as app:
        called = spy(app)
        await app.append([NewEvent("s", "t", b"1")], expected={"s": NO_STREAM})
        await app.append([NewEvent("s", "t", b"2")], expected={"s": 1})
        assert called == ["append_direct", "append_stream", "append_events", "append_events"]
    assert [e.payload for e in await postgres_store.read_stream("s")] == [b"1", b"2"]


async def test_the_migration_grants_it_to_whoever_may_call_append_events(
    postgres_store_factory, postgres_dsn
):
    """A role granted EXECUTE on append_events before schema 13 may call append_stream
    after the migration (existing deployments keep their GRANTs)."""
    from eventcore.postgres._sql import migrations

    store = await postgres_store_factory()
    s = f'"{store.schema}"'
    role = f"pre_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role}")
        await admin.execute(f"DROP FUNCTION {s}.append_stream")
        await admin.execute(
            f"GRANT EXECUTE ON FUNCTION {s}.append_events(text[], bigint[], uuid[], text[],"
            f" text[], bytea[], uuid, uuid, text, jsonb) TO {role}"
        )
        [m13] = [m for m in migrations() if m.version == 13]
        await admin.execute(m13.sql(store.schema))
        allowed = await admin.fetchval(
            "SELECT has_function_privilege($1, $2, 'EXECUTE')",
            role,
            f"{s}.append_stream(text, bigint, uuid[], text[], bytea[], uuid, uuid, text, jsonb)",
        )
        assert allowed is True
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_callers_search_path_does_not_change_what_the_lean_function_does(
    postgres_store, postgres_dsn
):
    """append_stream runs with its owner's rights and no SET search_path (migration 0016):
    a caller whose search_path puts its own operators and functions first (an ``=`` that
    is always true, a ``char_length`` of 1, a constant ``hashtext``) changes nothing."""
    s = f'"{postgres_store.schema}"'
    evil = f"evil_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {evil}")
        for t in ("text", "bigint", "integer"):
            await admin.execute(
                f"CREATE FUNCTION {evil}.yes({t}, {t}) RETURNS boolean LANGUAGE sql"
                f" AS 'SELECT true'"
            )
            for op in ("=", "<>", "<", ">"):
                await admin.execute(
                    f"CREATE OPERATOR {evil}.{op} (LEFTARG = {t}, RIGHTARG = {t},"
                    f" FUNCTION = {evil}.yes)"
                )
        await admin.execute(
            f"CREATE FUNCTION {evil}.char_length(text) RETURNS integer LANGUAGE sql AS 'SELECT 1'"
        )
        await admin.execute(
            f"CREATE FUNCTION {evil}.hashtext(text) RETURNS integer LANGUAGE sql AS 'SELECT 0'"
        )
        conn = await asyncpg.connect(
            postgres_dsn, server_settings={"search_path": f"{evil}, pg_catalog"}
        )
        try:
            assert await conn.fetchval("SELECT 1 = 2") is True  # the caller's = wins here
            ok = await conn.fetchrow(LEAN.format(s=s), "s", 0, [uuid.uuid4()], ["t"], [b""],
                                     None, None)  # fmt: skip
            assert ok["version"] == 1
            # A stale expected version still conflicts (nothing written) ...
            stale = await conn.fetchrow(LEAN.format(s=s), "s", 5, [uuid.uuid4()], ["t"], [b""],
                                        None, None)  # fmt: skip
            assert stale["first_position"] is None and stale["version"] == 1
            # ... and a stream id over 255 code points is still refused.
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.fetchrow(LEAN.format(s=s), "x" * 256, -1, [uuid.uuid4()], ["t"],
                                    [b""], None, None)  # fmt: skip
            assert info.value.sqlstate == "EC002"
        finally:
            await conn.close()
        assert [e.version for e in await postgres_store.read_stream("s")] == [1]
    finally:
        await admin.execute(f"DROP SCHEMA {evil} CASCADE")
        await admin.close()


async def test_the_direct_statement_refuses_a_caller_transaction(postgres_store, postgres_dsn):
    """As append_stream (EC001): in a transaction that already holds an id, each direct
    statement writes nothing; its positions would not come from its own id."""
    store = postgres_store

    def args(one: bool, expect: int) -> tuple[Any, ...]:
        event = (uuid.uuid4(), "t", b"")  # one event: scalars; else arrays
        return ("s", expect, *(event if one else ([x] for x in event)), None, None, None, None)

    conn = await asyncpg.connect(postgres_dsn)
    try:
        async with conn.transaction():
            first = await conn.fetchrow(store._q.append_direct[True, False], *args(True, -1))
            assert first[0] > 0 and first[1] == 1 and first[2] is None
            for key, query in store._q.append_direct.items():
                with pytest.raises(asyncpg.PostgresError) as info:
                    async with conn.transaction():  # a savepoint: the outer one goes on
                        await conn.fetchrow(query, *args(key[0], 1))
                assert info.value.sqlstate == "EC001"
    finally:
        await conn.close()
    assert [e.version for e in await store.read_stream("s")] == [1]


async def test_a_role_that_may_not_write_the_tables_takes_append_stream(
    postgres_store, postgres_dsn
):
    """The README's GRANTs (EXECUTE on the append functions, SELECT on the tables): the
    first plain append's direct statement is refused for privilege, writes nothing, and
    the same append goes through append_stream, as every later one."""
    functions = [APPEND_EVENTS, APPEND_STREAM]
    async with store_as_role(postgres_dsn, postgres_store.schema, functions) as app:
        called = spy(app)
        await app.append([NewEvent("s", "t", b"1")], expected={"s": NO_STREAM})
        with pytest.raises(ConcurrencyConflict) as info:
            await app.append([NewEvent("s", "t", b"x")], expected={"s": 0})
        assert [tuple(c) for c in info.value.conflicts] == [("s", 0, 1)]
        await app.append([NewEvent("s", "t", b"2")], expected={"s": 1})
        assert called == ["append_direct"] + ["append_stream"] * 3
        assert app._plain == "function"
    assert [e.payload for e in await postgres_store.read_stream("s")] == [b"1", b"2"]
