"""The lean tagged or conditional append into one stream (PostgreSQL migration 0017).

``append_tagged_stream`` serves a tagged or conditional append whose events all go to one
stream and whose only checked version is that stream's (a DCB decision); one into several
streams goes through ``append_tagged_streams`` (migration 0019,
test_pg_tagged_streams_append.py). A store whose role may write
the tables sends the same append as one statement instead (``append_tagged_direct``,
migration 0018). All must give the same answers (results, failed conditions, conflicts
with their tails, replays, duplicates) and leave the same log and tags, and take the same
locks.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from eventcore import (
    NO_STREAM,
    ConcurrencyConflict,
    ConditionFailed,
    DuplicateEventId,
    Metadata,
    NewEvent,
)
from eventcore.postgres import PostgresStore
from eventcore.postgres._sql import query_arrays
from eventcore.query import AppendCondition, Query, QueryItem, query_arg
from tests.postgres.test_pg_plain_append import (
    APPEND_EVENTS_TAGGED,
    APPEND_STREAM,
    spy,
    store_as_role,
)

pytestmark = pytest.mark.postgres


def ev(stream: str, event_type: str, payload: bytes, *tags: str, id: Any = None) -> NewEvent:
    return NewEvent(stream, event_type, payload, id, tags)


@pytest.mark.parametrize("path", ["append_tagged_direct", "append_tagged_stream"])
async def test_one_stream_tagged_appends_take_the_lean_path(postgres_store: Any, path: str) -> None:
    store = postgres_store
    store._tagged_direct = store._tagged_streams_direct = path == "append_tagged_direct"
    called = spy(store)
    q = Query.of(["Registered"], ["user:a"])
    await store.append([ev("u-a", "Registered", b"1", "user:a")], condition=AppendCondition(q, 0))
    await store.append([ev("u-b", "Registered", b"2", "user:b")])
    await store.append([ev("u-b", "Renamed", b"3")], condition=AppendCondition(q, 1 << 62))
    assert called == [path] * 3
    # Several streams, a checked stream not written: the several-stream path (0019).
    called.clear()
    await store.append([ev("x", "T", b"", "t:1"), ev("y", "T", b"", "t:1")])
    await store.append([ev("x", "T", b"", "t:1")], expected={"x": 1, "y": 1})
    several = "append_tagged_streams" + ("_direct" if path == "append_tagged_direct" else "")
    assert called == [several] * 2


async def answer(store: PostgresStore, events: list[NewEvent], **kw: Any) -> tuple[Any, ...]:
    """What ``store.append(events, **kw)`` answers, as a comparable value (the id of a
    duplicate left out)."""
    try:
        r = await store.append(events, **kw)
        return ("ok", len(r.positions), dict(r.stream_versions))
    except ConditionFailed as exc:
        return ("condition", exc.after == kw["condition"].after, exc.position > 0)
    except ConcurrencyConflict as exc:
        tail = None if exc.tail is None else [(r[0], r[1], r[2], r[3]) for r in exc.tail]
        return ("conflict", exc.conflicts, tail)
    except DuplicateEventId as exc:
        return ("duplicate", str(exc).replace(str(exc.event_id), "<id>"))


async def scenario(store: PostgresStore) -> list[Any]:
    """Every answer of a tagged one-stream append, as comparable values, and the log."""
    out: list[Any] = []

    async def run(events: list[NewEvent], **kw: Any) -> None:
        out.append(await answer(store, events, **kw))

    ids = [uuid.uuid4() for _ in range(4)]
    meta = Metadata(user_id="u", custom={"k": 1})
    name = Query.of(["Registered"], ["username:ann"])
    typed = Query.of(["Closed"])
    everything = Query(QueryItem.of())
    two = Query.of(["Enrolled"], ["course:c1"]) | Query.of(["Enrolled"], ["student:s1"])
    await run(
        [ev("u1", "Registered", b"1", "username:ann", "x", id=ids[0])],
        condition=AppendCondition(name, 0),
        metadata=meta,
    )
    await run([ev("u2", "Registered", b"2", "username:ann")], condition=AppendCondition(name, 0))
    # A replay of the append that passed: still a replay though its condition now matches.
    await run(
        [ev("u1", "Registered", b"1", "username:ann", "x", id=ids[0])],
        condition=AppendCondition(name, 0),
        metadata=meta,
    )
    await run(
        [ev("u1", "Registered", b"1", "username:ann", "x", id=ids[0])],
        metadata=meta,
    )
    await run([ev("u1", "Registered", b"1", "username:ann", id=ids[0])], metadata=meta)
    await run([ev("u1", "Registered", b"other", "username:ann", "x", id=ids[0])], metadata=meta)
    # Several events, tags on some, an expected version of the stream written.
    await run(
        [
            ev("c", "Enrolled", b"a", "course:c1", "student:s1", "course:c1", id=ids[1]),
            ev("c", "Noted", b"b", id=ids[2]),
            ev("c", "Enrolled", b"c", "course:c1", "student:s2"),
        ],
        expected={"c": NO_STREAM},
        condition=AppendCondition(two, 0),
    )
    await run([ev("c", "Enrolled", b"d", "course:c1")], expected={"c": 1})  # a conflict
    await run([ev("c", "Enrolled", b"d", "student:s1")], condition=AppendCondition(two, 0))
    head = (await store.read_query(typed)).position
    await run([ev("d", "Closed", b"", "door")], condition=AppendCondition(typed, head))
    await run([ev("d", "Closed", b"", "door")], condition=AppendCondition(typed, head))
    await run([ev("e", "Any", b"", "t")], condition=AppendCondition(everything, head))
    head = (await store.read_query(everything)).position
    await run([ev("e", "Any", b"", "t")], condition=AppendCondition(everything, head))
    await run([ev("e", "Any", b"", "t")], expected={"e": 1}, condition=AppendCondition(two, head))
    await run([ev("e", "Any", b"", "t")], expected={"e": 3}, condition=AppendCondition(two, 0))
    # One item with two tags: matched by the event that has both, not by one with one.
    pair = Query.of(["Enrolled"], ["course:c1", "student:s1"])
    await run([ev("f", "Any", b"")], condition=AppendCondition(pair, 0))
    await run([ev("f", "Any", b"")], condition=AppendCondition(pair | typed, head))
    await run(
        [ev("f", "Any", b"")],
        condition=AppendCondition(Query.of(["Enrolled"], ["course:c1", "x"]), 0),
    )
    log = [
        (e.stream_id, e.version, e.event_type, e.payload, e.metadata, e.tags)
        for e in await store.read_all()
    ]
    return [out, log]


async def test_the_lean_function_answers_as_append_events_tagged(
    postgres_store_factory: Any,
) -> None:
    direct = await postgres_store_factory()
    lean = await postgres_store_factory()
    lean._tagged_direct = False  # append_tagged_stream, as a role that may not write tables
    general = await postgres_store_factory()
    general._append_tagged_stream = False  # every tagged append through append_events_tagged
    general._append_tagged_streams = False
    called = spy(general)
    direct_called, lean_called = spy(direct), spy(lean)
    got, want = await scenario(lean), await scenario(general)
    assert await scenario(direct) == got
    assert set(called) == {"append_events_tagged"}
    assert "append_tagged_direct" in direct_called and "append_tagged_stream" not in direct_called
    assert "append_tagged_stream" in lean_called and "append_tagged_direct" not in lean_called
    assert got[0] == want[0]
    assert [a[0] for a in got[0]] == [
        "ok",
        "condition",
        "ok",
        "ok",
        "duplicate",
        "duplicate",
        "ok",
        "conflict",
        "condition",
        "ok",
        "condition",
        "condition",
        "ok",
        "ok",
        "condition",  # the condition is checked before the versions
        "condition",
        "ok",
        "ok",
    ]  # fmt: skip
    assert got[0][7][2] is not None and len(got[0][7][2]) == 2  # the tail after v1
    assert got[1] == want[1]
    assert got[1][0][5] == ("username:ann", "x")  # its tags, each once


@pytest.mark.parametrize(
    ("held", "query", "waits"),
    [
        ("'{}', ARRAY['course:c1']", Query.of(["Enrolled"], ["course:c1", "x"]), True),
        ("'{}', ARRAY['course:c2']", Query.of(["Enrolled"], ["course:c1"]), False),
        ("ARRAY['Closed'], '{}'", Query.of(["Closed"]), True),
        ("ARRAY['Opened'], '{}'", Query.of(["Closed"]), False),
        ("ARRAY['Opened'], '{}'", Query(QueryItem.of()), True),
        ("ARRAY['Opened'], '{}'", Query.of(["Closed"]) | Query.of(["Opened"]), True),
    ],
)
@pytest.mark.parametrize("path", ["append_tagged_direct", "append_tagged_stream"])
async def test_a_condition_waits_for_the_writers_of_its_keys_only(
    postgres_store: Any, held: str, query: Query, waits: bool, path: str
) -> None:
    """A transaction holding a writer's shared keys (as an append in flight holds them
    until commit) blocks a lean conditional append whose query such a write could match
    (its first tag, a type, the whole log) and no other."""
    store = postgres_store
    store._tagged_direct = path == "append_tagged_direct"
    pool = await store._get_pool()
    s = f'"{store.schema}"'
    called = spy(store)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"SELECT {s}.lock_written({held}, '{{}}'::bigint[])")
        pending = asyncio.ensure_future(
            store.append([ev("w", "Enrolled", b"", "z")], condition=AppendCondition(query, 0))
        )
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert bool(done) is not waits
        await tx.commit()
    await asyncio.wait_for(pending, 5)
    assert called == [path]


@pytest.mark.parametrize(
    "q",
    [
        Query.of(["Registered"], ["username:ann"]),
        Query.of(["Registered"], ["username:ann", "kind:user"]),  # one item, two tags
        Query.of(["Registered"], ["email:a"]) | Query.of(["Registered"], ["username:ann"]),
        Query.of(["Registered", "Renamed"]),  # types only
        Query(QueryItem.of()),  # the whole log
    ],
    ids=["one-tag", "two-tags", "two-items", "types", "all"],
)
@pytest.mark.parametrize("id_first", [True, False])
@pytest.mark.parametrize("path", ["append_tagged_direct", "append_tagged_stream"])
async def test_a_writer_that_commits_while_the_condition_waits_fails_it(
    postgres_store: Any, path: str, id_first: bool, q: Query
) -> None:
    """A writer of the condition's key in flight when a conditional append starts (its id
    taken, or still to take: ``id_first``): the append waits for the key, and once the
    writer commits its event fails the condition, though the direct statement's own
    snapshot, taken before it waited, does not show it (it checks again). For every
    shape of query: the direct statement checks each inline."""
    store = postgres_store
    store._tagged_direct = path == "append_tagged_direct"
    tags = sorted({tag for item in q.items for tag in item.tags}) or ["username:ann"]
    start = await store.read_query(q)
    pool = await store._get_pool()
    s = f'"{store.schema}"'
    write = (
        store._q.append_tagged_stream,
        "u-w",
        -1,
        [uuid.uuid4()],
        ["Registered"],
        [b"w"],
        None,
        None,
        None,
        None,
        tags,
        [1] * len(tags),
        None,
        None,
        None,
        None,
        None,
        0,
    )
    called = spy(store)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        if id_first:
            await conn.fetch(*write)
        else:  # the writer's shared keys only: its id comes after the append started
            await conn.execute(
                f"SELECT {s}.lock_written(ARRAY['Registered'], $1::text[], '{{}}')", tags
            )
        pending = asyncio.ensure_future(
            store.append(
                [ev("u-x", "Registered", b"x", "username:ann")],
                condition=AppendCondition(q, start.position),
            )
        )
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # it waits for the writer's key
        if not id_first:
            await conn.fetch(*write)
        await tx.commit()
    with pytest.raises(ConditionFailed):
        await asyncio.wait_for(pending, 5)
    assert called == [path]
    found = await store.read_query(q)
    assert [e.payload for e in found.events] == [b"w"]


async def test_a_role_granted_only_append_events_tagged_still_appends(
    postgres_store: Any, postgres_dsn: str
) -> None:
    """The GRANTs of before schema 17 (no append_tagged_stream): the store uses
    append_events_tagged, and keeps the lean plain append."""
    functions = [APPEND_STREAM, APPEND_EVENTS_TAGGED]
    async with store_as_role(postgres_dsn, postgres_store.schema, functions) as app:
        called = spy(app)
        q = Query.of(["T"], ["k"])
        await app.append([ev("s", "T", b"1", "k")], condition=AppendCondition(q, 0))
        with pytest.raises(ConditionFailed):
            await app.append([ev("s", "T", b"2", "k")], condition=AppendCondition(q, 0))
        await app.append([ev("s", "T", b"3")])
        assert called == [
            "append_tagged_direct",  # refused (no INSERT on the tables): nothing written
            "append_tagged_stream",
            "append_events_tagged",
            "append_events_tagged",
            "append_direct",  # refused (no INSERT on the tables): nothing written
            "append_stream",
        ]
    found = await postgres_store.read_query(Query.of(tags=["k"]))
    assert [e.payload for e in found.events] == [b"1"]


APPEND_TAGGED_STREAM = (
    "append_tagged_stream(text, bigint, uuid[], text[], bytea[], uuid, uuid, text, jsonb,"
    " text[], integer[], text[], integer[], text[], integer[], bigint, bigint)"
)


async def test_a_role_that_may_not_write_the_tables_takes_append_tagged_stream(
    postgres_store: Any, postgres_dsn: str
) -> None:
    """The README's GRANTs (EXECUTE on the append functions, SELECT on the tables): the
    first tagged append's direct statement is refused for privilege and writes nothing;
    the same append goes through append_tagged_stream, as every later one. Its query
    reads (one statement) need only SELECT."""
    functions = [APPEND_STREAM, APPEND_EVENTS_TAGGED, APPEND_TAGGED_STREAM]
    async with store_as_role(postgres_dsn, postgres_store.schema, functions) as app:
        called = spy(app)
        q = Query.of(["T"], ["k"])
        await app.append([ev("s", "T", b"1", "k")], condition=AppendCondition(q, 0))
        with pytest.raises(ConditionFailed) as failed:
            await app.append([ev("s", "T", b"2", "k")], condition=AppendCondition(q, 0))
        read = failed.value.read
        assert read is not None and [e.payload for e in read.events] == [b"1"]
        assert called == ["append_tagged_direct", "append_tagged_stream", "append_tagged_stream"]
        found = await app.read_query(q)
        assert [e.payload for e in found.events] == [b"1"]
        assert found.position == read.position
    found = await postgres_store.read_query(Query.of(tags=["k"]))
    assert [e.payload for e in found.events] == [b"1"]


async def test_the_migration_grants_it_to_whoever_may_call_append_events_tagged(
    postgres_store_factory: Any, postgres_dsn: str
) -> None:
    """A role granted EXECUTE on append_events_tagged before schema 17 may call
    append_tagged_stream after the migration (existing deployments keep their GRANTs)."""
    from eventcore.postgres._sql import migrations

    store = await postgres_store_factory()
    s = f'"{store.schema}"'
    role = f"pre_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role}")
        await admin.execute(f"DROP FUNCTION {s}.append_tagged_stream")
        await admin.execute(
            f"GRANT EXECUTE ON FUNCTION {s}.append_events_tagged(text[], bigint[], uuid[],"
            " text[], text[], bytea[], uuid, uuid, text, jsonb, text[], integer[], text[],"
            f" integer[], text[], integer[], bigint) TO {role}"
        )
        [m16] = [m for m in migrations() if m.name.endswith("lean_tagged_append")]
        await admin.execute(m16.sql(store.schema))
        allowed = await admin.fetchval(
            "SELECT has_function_privilege($1, $2, 'EXECUTE')",
            role,
            f"{s}.append_tagged_stream(text, bigint, uuid[], text[], bytea[], uuid, uuid, text,"
            " jsonb, text[], integer[], text[], integer[], text[], integer[], bigint, bigint)",
        )
        assert allowed is True
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.mark.parametrize("path", ["append_tagged_direct", "append_tagged_stream"])
async def test_a_failed_condition_carries_the_read_a_retry_would_make(
    postgres_store: Any, path: str
) -> None:
    """The failure carries what read_query(query, after=after) returns at that moment (the
    events and the position), so a query command's retry needs no read; none when more
    events match than it carries, or through append_events_tagged."""
    from eventcore.postgres.store import CARRIED_READ_LIMIT

    store = postgres_store
    store._tagged_direct = path == "append_tagged_direct"
    q = Query.of(["Enrolled"], ["course:c1"])
    await store.append([ev("s0", "Enrolled", b"0", "course:c1")])
    start = await store.read_query(q)
    await store.append([ev("s1", "Enrolled", b"1", "course:c1", "student:s1")])
    await store.append([ev("s2", "Dropped", b"x", "course:c1")])  # not a match
    await store.append([ev("s3", "Enrolled", b"3", "course:c1")], metadata=Metadata(user_id="u"))
    with pytest.raises(ConditionFailed) as failed:
        await store.append(
            [ev("s9", "Enrolled", b"9", "course:c1")], condition=AppendCondition(q, start.position)
        )
    read = failed.value.read
    want = await store.read_query(q, after=start.position)
    assert read is not None
    assert read.position == want.position > start.position
    assert [(e.position, e.event_id, e.payload, e.tags, e.metadata) for e in read.events] == [
        (e.position, e.event_id, e.payload, e.tags, e.metadata) for e in want.events
    ]
    assert [e.payload for e in read.events] == [b"1", b"3"]
    assert failed.value.position == read.events[0].position
    # More matches than a failure carries: the retry reads.
    await store.append(
        [ev(f"m{i}", "Enrolled", b"", "course:c1") for i in range(CARRIED_READ_LIMIT)]
    )
    with pytest.raises(ConditionFailed) as failed:
        await store.append(
            [ev("s9", "Enrolled", b"9", "course:c1")], condition=AppendCondition(q, start.position)
        )
    assert failed.value.read is None
    head = (await store.read_query(q)).position
    await store.append([ev("s8", "Enrolled", b"8", "course:c1")])
    with pytest.raises(ConditionFailed) as failed:
        await store.append(
            [ev("s9", "Enrolled", b"9", "course:c1")], condition=AppendCondition(q, head)
        )
    assert failed.value.read is not None and [e.payload for e in failed.value.read.events] == [b"8"]
    store._append_tagged_stream = False
    with pytest.raises(ConditionFailed) as failed:
        await store.append(
            [ev("s9", "Enrolled", b"9", "course:c1")], condition=AppendCondition(q, head)
        )
    assert failed.value.read is None


async def test_a_warm_query_command_appends_without_reading_and_retries_from_the_failure(
    postgres_store: Any,
) -> None:
    """A cached query command on PostgreSQL appends without reading first (one round
    trip). When a competing invoice lands before its append, the failed condition carries
    what it missed: the retry folds it (no read), costs no attempt, and takes the next
    number after the competing one."""
    from eventcore import execute
    from eventcore.examples.dcb import CreateInvoice, InvoiceCreated, registry

    store = postgres_store
    store.registry = registry
    reads: list[int] = []
    appends: list[str] = []
    read_query, append = store.read_query, store.append
    race = [False]

    async def counting_read(query: Any, **kwargs: Any) -> Any:
        found = await read_query(query, **kwargs)
        reads.append(len(found.events))
        return found

    async def racing_append(events: Any, **kwargs: Any) -> Any:
        if race[0]:
            race[0] = False
            name, payload = registry.encode(InvoiceCreated(2, "other"))
            await append([NewEvent("invoice-2", name, payload, None, ("invoice:2",))])
        appends.append(events[0].stream_id)
        return await append(events, **kwargs)

    store.read_query, store.append = counting_read, racing_append
    await execute(store, CreateInvoice(customer="a"))
    assert reads == [0] and appends == ["invoice-1"]  # cold: read, then append
    race[0] = True
    result = await execute(store, CreateInvoice(customer="a"))
    assert result.attempts == 1  # the failure told what a read would have
    assert reads == [0]  # no read: the failure's read was folded
    assert appends == ["invoice-1", "invoice-2", "invoice-3"]
    assert [e.stream_id for e in result.events] == ["invoice-3"]
    await execute(store, CreateInvoice(customer="b"))  # warm: one append, nothing read
    assert reads == [0] and appends[-1] == "invoice-4"
    numbers = [e.data.number for e in await store.read_all()]
    assert numbers == [1, 2, 3, 4]


async def test_a_warm_query_command_in_verify_mode_reads_and_checks(postgres_store: Any) -> None:
    """Verify mode (``StateCache(verify=True)``) keeps reading on PostgreSQL: a cached
    query command reads its tail and the full fold it is checked against, and a command
    that mutates its cached state is caught there rather than appended without a read."""
    from eventcore import execute
    from eventcore.examples.dcb import CreateInvoice, registry
    from eventcore.state_cache import StateCache, StateCacheMismatch

    store = postgres_store
    store.registry = registry
    store.state_cache = StateCache(verify=True)
    reads: list[int] = []
    read_query = store.read_query

    async def counting_read(query: Any, **kwargs: Any) -> Any:
        found = await read_query(query, **kwargs)
        reads.append(len(found.events))
        return found

    store.read_query = counting_read
    await execute(store, CreateInvoice(customer="a"))
    await execute(store, CreateInvoice(customer="a"))
    assert reads == [0, 0, 1]  # cold; then the tail (nothing new) and the full check

    class Renumbering(CreateInvoice):
        """Mutates the cached state (an int box) in handle: the check must catch it."""

        def initial_state(self) -> Any:
            return [0]

        def apply(self, state: Any, event: object, stream_id: str) -> Any:
            state[0] = max(state[0], event.number)  # type: ignore[attr-defined]
            return state

        def handle(self, state: Any) -> list[tuple[str, object]]:
            state[0] += 10
            return super().handle(state[0] - 10)

    await execute(store, Renumbering(customer="b"))
    with pytest.raises(StateCacheMismatch):
        await execute(store, Renumbering(customer="b"))


LOCKS = """SELECT l.classid::text || ':' || l.objid::text, bool_or(l.mode = 'ExclusiveLock')
             FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.objsubid = 2
            GROUP BY 1"""


@pytest.mark.parametrize(
    ("types", "tags", "query"),
    [
        (["Registered"], [("username:ann",)], Query.of(["Registered"], ["username:ann"])),
        (["Enrolled"], [("course:c1", "student:s1")], Query.of(["Enrolled"], ["student:s1"])),
        (["Closed"], [()], Query.of(["Closed", "Opened", "Moved"])),
        (["A", "B"], [("t",), ("t", "u")], Query(QueryItem.of()) | Query.of(tags=["u", "v"])),
        (["A"], [("k",)], Query.of(["A"], ["k"]) | Query.of(["B"]) | Query.of(["A"], ["k"])),
        # More than the expressions take: the one statement.
        (["T"] * 6, [(f"t{i}", "x") for i in range(6)], Query.of(["T", "U"], ["x"])),
    ],
)
@pytest.mark.parametrize("path", ["append_tagged_direct", "append_tagged_stream"])
async def test_it_takes_the_locks_lock_written_takes(
    postgres_store: Any, types: list[str], tags: list[tuple[str, ...]], query: Query, path: str
) -> None:
    """Each advisory key of the write and the condition, in the mode schema 8's
    lock_written takes it (a key both shared and exclusive: exclusive), whichever way
    append_tagged_stream gathers them, and the direct statement with the keys the store
    sends it."""
    from eventcore.postgres.store import _lock_key_args

    store = postgres_store
    s = f'"{store.schema}"'
    pool = await store._get_pool()
    cond = query_arrays(query_arg(query))
    flat = [(t, i + 1) for i, ts in enumerate(tags) for t in ts]
    exclusive = [f"hashtext('{kind}:{value}')::bigint" for kind, value in query.lock_keys()]
    args = (
        "w",
        -1,
        [uuid.uuid4() for _ in types],
        types,
        [b""] * len(types),
        None,
        None,
        None,
        None,
        [t for t, _ in flat],
        [i for _, i in flat],
        *cond,
        0,
        0,
    )
    async with pool.acquire() as conn, conn.transaction():
        if path == "append_tagged_stream":
            await conn.fetch(store._q.append_tagged_stream, *args)
        else:
            batch = [("w", t, b"", None) for t in types]
            keys = _lock_key_args(batch, tags, AppendCondition(query, 0))
            inline = len(cond[1]) == 1 and cond[3] == [1]  # one item, one tag
            await conn.fetch(store._q.append_tagged_direct[False, False, inline], *args, *keys)
        lean = dict(await conn.fetch(LOCKS))
        await conn.execute("ROLLBACK AND CHAIN")
        await conn.execute(
            f"SELECT {s}.lock_written($1::text[], $2::text[],"
            f" ARRAY[{', '.join(exclusive)}]::bigint[])",
            types,
            [t for t, _ in flat],
        )
        reference = dict(await conn.fetch(LOCKS))
    # The lean function also holds the stream lock (a key space of its own).
    assert {k: v for k, v in lean.items() if k in reference} == reference
    assert len(lean) == len(reference) + 1
