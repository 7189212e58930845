"""The one-pass tagged or conditional append into several streams (PostgreSQL migration 0019).

A tagged or conditional append whose events go to several streams (or that checks a stream
it does not write) goes through ``append_tagged_streams``, which takes each lock once, in
one order (the DCB keys sorted, then the stream locks sorted), checks the condition after
them and writes every stream's events and tag rows in one statement. A store whose role may
write the tables sends the same work as one statement (``append_tagged_streams_direct``).
Both must answer as ``append_events_tagged`` did (results, failed conditions, conflicts
with their tails, replays, duplicates) and leave the same log and tags.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from eventcore import (
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    ConditionFailed,
    Metadata,
    NewEvent,
)
from eventcore.postgres import PostgresStore
from eventcore.query import AppendCondition, Query, QueryItem
from tests.dcb.test_pg_lean_tagged_append import answer
from tests.postgres.test_pg_plain_append import (
    APPEND_EVENTS,
    APPEND_EVENTS_TAGGED,
    spy,
    store_as_role,
)

pytestmark = pytest.mark.postgres

APPEND_TAGGED_STREAM = (
    "append_tagged_stream(text, bigint, uuid[], text[], bytea[], uuid, uuid, text, jsonb,"
    " text[], integer[], text[], integer[], text[], integer[], bigint, bigint)"
)
APPEND_TAGGED_STREAMS = (
    "append_tagged_streams(text[], bigint[], uuid[], text[], text[], bytea[], uuid, uuid, text,"
    " jsonb, text[], integer[], text[], integer[], text[], integer[], bigint, bigint)"
)
PATHS = ["append_tagged_streams_direct", "append_tagged_streams"]


def ev(stream: str, event_type: str, payload: bytes, *tags: str, id: Any = None) -> NewEvent:
    return NewEvent(stream, event_type, payload, id, tags)


def use(store: PostgresStore, path: str) -> PostgresStore:
    """``store`` on one of the two paths (``append_tagged_streams``: as a role that may not
    write the tables; ``append_events_tagged``: as before migration 0019)."""
    store._tagged_streams_direct = path == "append_tagged_streams_direct"
    store._append_tagged_streams = path != "append_events_tagged"
    store._append_tagged_stream = path != "append_events_tagged"
    return store


async def scenario(store: PostgresStore) -> list[Any]:
    """Every answer of a tagged append into several streams, as comparable values, and the
    log with its tags."""
    out: list[Any] = []

    async def run(events: list[NewEvent], **kw: Any) -> None:
        out.append(await answer(store, events, **kw))

    ids = [uuid.uuid4() for _ in range(6)]
    meta = Metadata(user_id="u", custom={"k": 1})
    course = Query.of(["Enrolled"], ["course:c1"])
    both = Query.of(["Enrolled"], ["course:c1"]) | Query.of(["Enrolled"], ["student:s1"])
    pair = Query.of(["Enrolled"], ["course:c1", "student:s1"])
    typed = Query.of(["Closed"])
    everything = Query(QueryItem.of())
    enrol = [
        ev("course-c1", "Enrolled", b"1", "course:c1", "student:s1", "course:c1", id=ids[0]),
        ev("student-s1", "Enrolled", b"2", "course:c1", "student:s1", id=ids[1]),
        ev("course-c1", "Noted", b"3", id=ids[2]),
    ]
    await run(enrol, condition=AppendCondition(both, 0), metadata=meta)  # ok
    await run(enrol, condition=AppendCondition(both, 0), metadata=meta)  # a replay
    await run(enrol, metadata=meta)  # a replay without the condition
    # The first two again: a run of the log as stored, so a replay too.
    await run(enrol[:2], condition=AppendCondition(both, 0), metadata=meta)
    await run(enrol[1:] + enrol[:1], metadata=meta)  # another order: a duplicate
    await run(  # other tags: a duplicate
        [enrol[0], ev("student-s1", "Enrolled", b"2", "course:c1", id=ids[1]), enrol[2]],
        metadata=meta,
    )
    await run(  # other content: a duplicate
        [enrol[0], ev("student-s1", "Enrolled", b"x", "course:c1", "student:s1", id=ids[1])],
        metadata=meta,
    )
    # The condition matched, with fresh ids: it fails (the pair, one item of two tags too).
    await run(
        [ev("a", "Enrolled", b"", "course:c1"), ev("b", "X", b"")],
        condition=AppendCondition(course, 0),
    )
    await run(
        [ev("a", "Enrolled", b"", "t"), ev("b", "X", b"")], condition=AppendCondition(pair, 0)
    )
    head = (await store.read_query(everything)).position
    # Versions: written and checked, new streams, a stream only checked; then conflicts.
    await run(
        [ev("n1", "Opened", b"", "n"), ev("n2", "Opened", b"", "n"), ev("n1", "Opened", b"")],
        expected={"n1": NO_STREAM, "n2": NO_STREAM, "course-c1": 2},
        condition=AppendCondition(typed, head),
    )
    await run(
        [ev("n1", "Closed", b"c", "n"), ev("n2", "Closed", b"d")],
        expected={"n1": 2, "n2": STREAM_EXISTS},
    )
    await run(  # two checks fail: both named in the order given, the tails after them
        [ev("n1", "Closed", b"", "n"), ev("n3", "Closed", b"")],
        expected={"n2": 1, "n1": 1, "course-c1": 2, "n3": NO_STREAM},
    )
    await run([ev("n1", "X", b""), ev("n3", "X", b"")], expected={"missing": STREAM_EXISTS})
    # A failed condition and a failed version together: the condition answers.
    await run(
        [ev("n1", "X", b""), ev("n3", "X", b"")],
        expected={"n1": 1},
        condition=AppendCondition(typed, head),
    )
    head = (await store.read_query(everything)).position
    await run(
        [ev("e1", "Any", b"", "t"), ev("e2", "Any", b"", "t")],
        condition=AppendCondition(everything, head),
    )
    await run(
        [ev("e1", "Any", b"", "t"), ev("e2", "Any", b"", "t")],
        condition=AppendCondition(everything, head),
    )
    # One stream written, another checked: this path too.
    await run([ev("e1", "Any", b"z", "t", "u")], expected={"e1": 1, "e2": 1})
    await run([ev("e1", "Any", b"z", "t", "u")], expected={"e1": 2, "e2": 5})
    log = [
        (e.stream_id, e.version, e.event_type, e.payload, e.metadata, e.tags)
        for e in await store.read_all()
    ]
    return [out, log]


async def test_it_answers_as_append_events_tagged(postgres_store_factory: Any) -> None:
    """The same scenario on each path and through append_events_tagged: the same answers,
    the same log and tags; and each path was the one taken."""
    stores = {p: use(await postgres_store_factory(), p) for p in [*PATHS, "append_events_tagged"]}
    called = {p: spy(s) for p, s in stores.items()}
    got = {p: await scenario(s) for p, s in stores.items()}
    want = got.pop("append_events_tagged")
    for path, answers in got.items():
        assert answers[0] == want[0], path
        assert answers[1] == want[1], path
        assert path in called[path]
        assert not {"append_tagged_streams", "append_tagged_streams_direct"} - {path} & set(
            called[path]
        )
    # (append_events: the one append without tags or a condition)
    assert set(called["append_events_tagged"]) == {"append_events_tagged", "append_events"}
    assert [a[0] for a in want[0]] == [
        "ok", "ok", "ok", "ok", "duplicate", "duplicate", "duplicate", "condition", "condition",
        "ok", "ok", "conflict", "conflict", "condition", "ok", "condition", "ok", "conflict",
    ]  # fmt: skip
    conflict = want[0][11]
    assert [c[0] for c in conflict[1]] == ["n2", "n1"]  # course-c1 is at 2
    assert conflict[2] is not None and {r[0] for r in conflict[2]} >= {"n1", "n2"}
    assert want[1][0][5] == ("course:c1", "student:s1")  # its tags, each once
    assert len(want[1]) == 11


@pytest.fixture(params=["partitioned_postgres_store", "pgbouncer_store"])
def other_store(request: pytest.FixtureRequest) -> Any:
    """A store whose events table is partitioned, or one behind PgBouncer."""
    return request.getfixturevalue(request.param)


async def test_a_partitioned_store_and_one_behind_pgbouncer_answer_alike(
    other_store: Any, postgres_store: Any
) -> None:
    """The scenario on a partitioned store (its direct statement) and behind PgBouncer
    (append_tagged_streams: the store keeps the functions there) answers as
    append_events_tagged on a plain store."""
    called = spy(other_store)
    got = await scenario(other_store)
    assert got == await scenario(use(postgres_store, "append_events_tagged"))
    path = "append_tagged_streams" + ("" if other_store.pgbouncer else "_direct")
    assert path in called


@pytest.mark.parametrize("path", PATHS)
async def test_a_failed_condition_carries_the_read_a_retry_would_make(
    postgres_store: Any, path: str
) -> None:
    store = use(postgres_store, path)
    q = Query.of(["Enrolled"], ["course:c1"])
    start = await store.read_query(q)
    await store.append([ev("s1", "Enrolled", b"1", "course:c1"), ev("c", "Seen", b"")])
    with pytest.raises(ConditionFailed) as failed:
        await store.append(
            [ev("s9", "Enrolled", b"9", "course:c1"), ev("c", "Seen", b"")],
            condition=AppendCondition(q, start.position),
        )
    read = failed.value.read
    want = await store.read_query(q, after=start.position)
    assert read is not None and read.position == want.position
    assert [(e.position, e.payload, e.tags) for e in read.events] == [
        (e.position, e.payload, e.tags) for e in want.events
    ]
    assert failed.value.position == read.events[0].position


CLIENTS = 8
ROUNDS = 8


@pytest.mark.parametrize("path", PATHS)
async def test_of_concurrent_appends_into_several_streams_exactly_one_passes(
    postgres_store_factory: Any, path: str
) -> None:
    """CLIENTS appends into two streams each decide on the same read of a course and
    append under its condition at once; without the condition's locks (or with a check
    that reads before a concurrent writer commits) several pass."""
    store = use(await postgres_store_factory(max_size=CLIENTS + 2), path)
    for _ in range(ROUNDS):
        tag = f"course:{uuid.uuid4()}"
        q = Query.of(["Enrolled"], [tag])
        read = await store.read_query(q)

        async def attempt(i: int, tag: str = tag, q: Query = q, after: int = read.position) -> bool:
            events = [
                ev(f"student-{i}-{uuid.uuid4()}", "Enrolled", b"", tag),
                ev(f"course-{tag}", "Enrolled", b"", tag, f"seat:{i}"),
            ]
            try:
                await store.append(events, condition=AppendCondition(q, after))
            except ConditionFailed:
                return False
            return True

        results = await asyncio.gather(*(attempt(i) for i in range(CLIENTS)))
        assert sum(results) == 1, results
        assert len((await store.read_query(q)).events) == 2


@pytest.mark.parametrize("path", PATHS)
async def test_appends_declaring_the_same_keys_in_opposite_orders_never_deadlock(
    postgres_store_factory: Any, path: str
) -> None:
    """Pairs of appends that write the same two streams and tags and check the same two
    tags, each declaring them in the opposite order, run at once: each pair ends with
    exactly one written and no deadlock (both take the keys sorted, whatever the order
    given)."""
    store = use(await postgres_store_factory(max_size=6), path)
    for _ in range(ROUNDS * 2):
        a, b = f"a:{uuid.uuid4()}", f"b:{uuid.uuid4()}"
        x, y = f"x-{uuid.uuid4()}", f"y-{uuid.uuid4()}"

        async def attempt(first: str, second: str, s1: str, s2: str) -> bool:
            q = Query.of(tags=[first]) | Query.of(tags=[second])
            try:
                await store.append(
                    [ev(s1, "T", b"", first), ev(s2, "T", b"", second)],
                    expected={s1: NO_STREAM, s2: NO_STREAM},
                    condition=AppendCondition(q, 0),
                )
            except (ConditionFailed, ConcurrencyConflict):
                return False
            return True

        results = await asyncio.gather(attempt(a, b, x, y), attempt(b, a, y, x))
        assert sorted(results) == [False, True]


DCB = "hashtext('eventcore.dcb.' || $1)"
STREAMS = "hashtext('eventcore.streams.' || $1)"
HELD = """SELECT count(*) FILTER (WHERE l.granted AND l.classid = {space}::oid),
                 count(*) FILTER (WHERE l.granted AND l.classid = {other}::oid),
                 count(*) FILTER (WHERE NOT l.granted)
            FROM pg_locks l WHERE l.locktype = 'advisory' AND l.pid = $2 AND l.objsubid = 2"""


@pytest.mark.parametrize("space", ["dcb", "streams"])
@pytest.mark.parametrize("declared", ["ascending", "descending"])
@pytest.mark.parametrize("path", PATHS)
async def test_it_waits_for_the_least_key_first_holding_none_above_it(
    postgres_store: Any, postgres_dsn: str, path: str, declared: str, space: str
) -> None:
    """Another transaction holds the least key of the append's DCB keys (``dcb``) or of
    its stream locks (``streams``): the append waits for it holding no key of that space
    (it takes them in ascending order, whatever order its streams and tags were given
    in) and, for the stream locks, already holding every DCB key (that space first)."""
    store = use(postgres_store, path)
    quoted = f'"{store.schema}"'
    tags = [f"tag:{i}" for i in range(4)]
    streams = [f"s{i}" for i in range(4)]
    if declared == "descending":
        tags.reverse()
        streams.reverse()
    events = [ev(s, "T", b"", t) for s, t in zip(streams, tags, strict=True)]
    q = Query.of(tags=[tags[0]]) | Query.of(tags=[tags[-1]])
    keys = ["all:", "type:T", *(f"tag:{t}" for t in tags)] if space == "dcb" else streams
    admin = await asyncpg.connect(postgres_dsn)
    try:
        least = await admin.fetchval("SELECT min(hashtext(k)) FROM unnest($1::text[]) k", keys)
        async with admin.transaction():
            await admin.execute(
                f"SELECT pg_advisory_xact_lock({DCB if space == 'dcb' else STREAMS}, $2)",
                quoted,
                least,
            )
            called = spy(store)
            pending = asyncio.ensure_future(store.append(events, condition=AppendCondition(q, 0)))
            await asyncio.sleep(0.5)
            assert not pending.done()
            pid = await admin.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            own, other, waiting = await admin.fetchrow(
                HELD.format(
                    space=DCB if space == "dcb" else STREAMS,
                    other=STREAMS if space == "dcb" else DCB,
                ),
                quoted,
                pid,
            )
            assert (own, waiting) == (0, 1)
            # Waiting for a DCB key: no stream lock yet; for a stream lock: every DCB key
            # (all:, type:T and each tag) held.
            assert other == (0 if space == "dcb" else 2 + len(tags))
        await asyncio.wait_for(pending, 5)
        assert called == [path]
    finally:
        await admin.close()


async def test_a_role_that_may_not_write_the_tables_takes_append_tagged_streams(
    postgres_store: Any, postgres_dsn: str
) -> None:
    """The README's GRANTs: the first append into several streams sends the direct
    statement, refused for privilege with nothing written; it and every later one go
    through append_tagged_streams. A role without it (the GRANTs of before schema 19)
    goes through append_events_tagged."""
    functions = [APPEND_EVENTS, APPEND_EVENTS_TAGGED, APPEND_TAGGED_STREAM, APPEND_TAGGED_STREAMS]
    q = Query.of(["T"], ["k"])
    async with store_as_role(postgres_dsn, postgres_store.schema, functions) as app:
        called = spy(app)
        await app.append(
            [ev("s", "T", b"1", "k"), ev("t", "U", b"")], condition=AppendCondition(q, 0)
        )
        with pytest.raises(ConditionFailed) as failed:
            await app.append(
                [ev("s", "T", b"2", "k"), ev("t", "U", b"")], condition=AppendCondition(q, 0)
            )
        assert failed.value.read is not None
        assert [e.payload for e in failed.value.read.events] == [b"1"]
        assert called == [
            "append_tagged_streams_direct",  # refused (no INSERT on the tables)
            "append_tagged_streams",
            "append_tagged_streams",
        ]
    async with store_as_role(postgres_dsn, postgres_store.schema, functions[:3]) as old:
        called = spy(old)
        old._tagged_streams_direct = False
        with pytest.raises(ConditionFailed):
            await old.append(
                [ev("s", "T", b"3", "k"), ev("t", "U", b"")], condition=AppendCondition(q, 0)
            )
        await old.append([ev("s", "T", b"4"), ev("t", "U", b"")])
        assert called == ["append_tagged_streams", "append_events_tagged", "append_events"]
    found = await postgres_store.read_query(Query.of(tags=["k"]))
    assert [e.payload for e in found.events] == [b"1"]
    assert [e.payload for e in await postgres_store.read_stream("s")] == [b"1", b"4"]


async def test_migration_19_keeps_the_data_and_grants_of_schema_18(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema at version 18 with tagged events and a role granted append_events_tagged:
    after migration 19 the events and tags read as before, the role may call
    append_tagged_streams, and a conditional append into several streams sees the old
    events."""
    from eventcore.postgres import _migrate, _sql
    from eventcore.postgres._sql import Queries
    from tests.pgserver import drop_schema, new_schema_name

    schema = new_schema_name()
    s = f'"{schema}"'
    role = f"pre_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(_migrate, "migrations", lambda: _sql.migrations()[:18])
            assert await _migrate.migrate(admin, Queries(schema), schema) == 18
        await admin.execute(f"CREATE ROLE {role}")
        await admin.execute(f"GRANT EXECUTE ON FUNCTION {s}.{APPEND_EVENTS_TAGGED} TO {role}")
        tags, tag_events = ["course:c1", "student:s1", "course:c1"], [1, 1, 2]
        await admin.fetchrow(
            f"SELECT * FROM {s}.append_events_tagged($1, $2, $3, $4, $5, $6, NULL, NULL,"
            " NULL, NULL, $7, $8, NULL, NULL, NULL, NULL, NULL)",
            [],
            [],
            [uuid.uuid4(), uuid.uuid4()],
            ["course-c1", "student-s1"],
            ["Enrolled", "Enrolled"],
            [b"a", b"b"],
            tags,
            tag_events,
        )
        store = PostgresStore(postgres_dsn, schema=schema)
        try:
            assert await store.migrate() == 19
            allowed = await admin.fetchval(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')",
                role,
                f"{s}.{APPEND_TAGGED_STREAMS}",
            )
            assert allowed is True
            found = await store.read_query(Query.of(["Enrolled"], ["course:c1"]))
            assert [(e.payload, e.tags) for e in found.events] == [
                (b"a", ("course:c1", "student:s1")),
                (b"b", ("course:c1",)),
            ]
            called = spy(store)
            with pytest.raises(ConditionFailed):
                await store.append(
                    [ev("course-c1", "Enrolled", b"c", "course:c1"), ev("s2", "X", b"")],
                    condition=AppendCondition(Query.of(tags=["student:s1"]), 0),
                )
            await store.append(
                [ev("course-c1", "Enrolled", b"c", "course:c1"), ev("s2", "X", b"")],
                expected={"course-c1": 1},
                condition=AppendCondition(Query.of(["Enrolled"], ["course:c1"]), found.position),
            )
            assert called == ["append_tagged_streams_direct"] * 2
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
        await drop_schema(postgres_dsn, schema)
