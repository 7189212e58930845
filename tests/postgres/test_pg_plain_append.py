"""The lean append of one stream without tags (migration 0013, issue 11 section 3).

``append_stream`` serves appends to one stream whose only checked version is that
stream's; every other append still goes through ``append_events``. Both must give the
same answers (results, conflicts with their tails, replays, duplicates, refusals) and
leave the same log.
"""

from __future__ import annotations

import uuid
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
    """The functions each append statement of ``store`` calls, in order."""
    called: list[str] = []
    send = store._send_append

    async def spying(pool: Any, query: str, *args: Any, **kw: Any) -> Any:
        called.append(query.split(".", 1)[1].split("(", 1)[0])
        return await send(pool, query, *args, **kw)

    store._send_append = spying  # type: ignore[method-assign]
    return called


async def test_plain_appends_to_one_stream_take_the_lean_function(postgres_store):
    store = postgres_store
    called = spy(store)
    first = await store.append([NewEvent("a", "t", b"1")])
    assert called == ["append_stream"]
    batch = await store.append(
        [NewEvent("a", "t", b"2"), NewEvent("a", "u", b"3"), NewEvent("a", "t", b"4")],
        expected={"a": 1},
    )
    assert list(batch.positions) == [batch.positions[0] + i for i in range(3)]
    assert batch.positions[0] > first.positions[0]
    assert dict(batch.stream_versions) == {"a": 4}
    assert [e.version for e in await store.read_stream("a")] == [1, 2, 3, 4]
    assert called == ["append_stream"] * 2
    # Several streams, a checked stream not written: append_events as before; tags:
    # append_tagged_stream (migration 0016, tests/dcb/test_pg_lean_tagged_append.py).
    await store.append([NewEvent("a", "t", b""), NewEvent("b", "t", b"")])
    await store.append([NewEvent("a", "t", b"")], expected={"a": 5, "b": 1})
    await store.append([NewEvent("a", "t", b"", tags=("x",))])
    assert called == ["append_stream"] * 2 + [
        "append_events",
        "append_events",
        "append_tagged_stream",
    ]


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


async def test_the_lean_function_answers_as_append_events(postgres_store_factory):
    lean = await postgres_store_factory()
    general = await postgres_store_factory()
    general._append_stream = False  # every append through append_events
    called = spy(general)
    got, want = await scenario(lean), await scenario(general)
    assert set(called) == {"append_events"}
    assert got[0] == want[0]
    assert [a[0] for a in got[0]] == [
        "ok", "conflict", "conflict", "conflict", "ok", "ok", "conflict", "conflict",
        "ok", "ok", "duplicate", "duplicate", "duplicate", "duplicate", "conflict", "ok",
    ]  # fmt: skip
    assert got[1] == want[1]
    assert got[0][6][2] is not None and len(got[0][6][2]) == 3  # the tail after v1
    assert got[0][14][2] is None  # truncated after the expected version: no tail


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
    schema = postgres_store.schema
    role = f"old_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        await admin.execute(
            f'GRANT SELECT ON "{schema}".events, "{schema}".streams, "{schema}".schema_version,'
            f' "{schema}".event_tags TO {role}'
        )
        await admin.execute(
            f'GRANT EXECUTE ON FUNCTION "{schema}".append_events(text[], bigint[], uuid[],'
            f" text[], text[], bytea[], uuid, uuid, text, jsonb) TO {role}"
        )
        parts = urlsplit(postgres_dsn)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
        async with PostgresStore(
            urlunsplit(parts._replace(netloc=netloc)), schema=schema, snapshots=False
        ) as app:
            called = spy(app)
            await app.append([NewEvent("s", "t", b"1")], expected={"s": NO_STREAM})
            await app.append([NewEvent("s", "t", b"2")], expected={"s": 1})
            assert called == ["append_stream", "append_events", "append_events"]
        assert [e.payload for e in await postgres_store.read_stream("s")] == [b"1", b"2"]
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


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
