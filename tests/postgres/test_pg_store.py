"""The PostgreSQL store's own behaviour: appends, reads, locks, notifications, bad input."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from tests.folds import fold_streams

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    ConfigurationError,
    DuplicateEventId,
    EventRegistry,
    InvalidStreamId,
    Metadata,
    NewEvent,
    SerializationError,
    StoreError,
    StoreUnavailable,
    ValidationError,
    event,
)
from eventcore.postgres import MAX_PAYLOAD_BYTES, PostgresStore
from eventcore.postgres._sql import LISTENING

pytestmark = pytest.mark.postgres

APPEND = (
    "SELECT status FROM {s}.append_events($1::text[], $2::bigint[], $3::uuid[], $4::text[],"
    " $5::text[], $6::bytea[], NULL, NULL, NULL, NULL)"
)


async def test_append_and_read_back_with_metadata(postgres_store):
    store = postgres_store
    meta = Metadata(
        causation_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        user_id="ann",
        custom={"tenant": "t1", "tags": [1, 2]},
    )
    result = await store.append(
        [NewEvent("a", "t1", b"1"), NewEvent("b", "t2", b"2"), NewEvent("a", "t1", b"3")],
        expected={"a": NO_STREAM, "b": NO_STREAM},
        metadata=meta,
    )
    assert dict(result.stream_versions) == {"a": 2, "b": 1}
    assert list(result.positions) == sorted(result.positions)
    assert [(w.stream_id, w.version) for w in result.events] == [("a", 1), ("b", 1), ("a", 2)]
    events = await store.read_all()
    assert [e.position for e in events] == list(result.positions)
    assert [e.event_id for e in events] == result.event_ids
    assert all(e.metadata == meta for e in events)
    assert events[0].recorded_at.tzinfo is not None
    assert [e.payload for e in await store.read_stream("a")] == [b"1", b"3"]
    assert [e.version for e in await store.read_stream("a", after_version=1)] == [2]
    assert [e.payload for e in await store.read_streams(["b", "a"])] == [b"1", b"2", b"3"]
    assert [e.version for e in await store.read_stream_backwards("a")] == [2, 1]
    assert [e.version for e in await store.read_stream_backwards("a", before_version=2)] == [1]
    assert await store.stream_version("a") == 2
    assert await store.stream_version("nope") == 0
    assert await store.head() == result.last_position
    plain = await store.append([NewEvent("c", "t", b"")])
    assert (await store.read_stream("c"))[0].metadata == Metadata()
    assert plain.last_position > result.last_position


async def test_expected_versions_and_conflicts_as_data(postgres_store):
    store = postgres_store
    await store.append([NewEvent("a", "t", b"")], expected={"a": NO_STREAM})
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append(
            [NewEvent("a", "t", b"x")],
            expected=[("a", 0), ("b", STREAM_EXISTS), ("c", ANY), ("d", 0)],
        )
    assert [tuple(c) for c in info.value.conflicts] == [("a", 0, 1), ("b", STREAM_EXISTS, 0)]
    assert await store.stream_version("a") == 1  # nothing written
    assert [s for s, _ in await store.list_streams()] == ["a"]  # checked streams not listed
    ok = await store.append(
        [NewEvent("a", "t", b"y")], expected=[("a", 1), ("b", NO_STREAM), ("c", ANY)]
    )
    assert dict(ok.stream_versions) == {"a": 2, "b": 0, "c": 0}
    # Only checks, no events: versions are checked and returned.
    checked = await store.append([], expected={"a": STREAM_EXISTS})
    assert list(checked.positions) == [] and dict(checked.stream_versions) == {"a": 2}


async def test_idempotent_append_and_duplicate_ids(postgres_store):
    store = postgres_store
    batch = [NewEvent("a", "t", b"1", uuid.uuid4()), NewEvent("b", "t", b"2", uuid.uuid4())]
    first = await store.append(batch, expected={"a": NO_STREAM})
    await store.append([NewEvent("a", "t", b"3")])
    again = await store.append(batch, expected={"a": NO_STREAM})  # a retry after a lost reply
    assert list(again.positions) == list(first.positions)
    assert dict(again.stream_versions) == dict(first.stream_versions)
    assert len(await store.read_all()) == 3
    with pytest.raises(DuplicateEventId, match="different content"):
        await store.append([NewEvent("a", "t", b"other", batch[0].event_id)])
    with pytest.raises(DuplicateEventId, match="part of this batch"):
        await store.append([batch[0], NewEvent("a", "t", b"4", uuid.uuid4())])
    with pytest.raises(DuplicateEventId, match="more than once"):
        same = uuid.uuid4()
        await store.append([NewEvent("x", "t", b"", same), NewEvent("x", "t", b"", same)])
    assert len(await store.read_all()) == 3


async def test_concurrent_same_ids_write_once(postgres_store_factory):
    store = await postgres_store_factory(max_size=8)
    batch = [NewEvent(f"s{i}", "t", b"", uuid.uuid4()) for i in range(4)]
    results = await asyncio.gather(*(store.append(batch) for _ in range(6)))
    assert {tuple(r.positions) for r in results} == {tuple(results[0].positions)}
    assert len(await store.read_all()) == 4


async def test_read_only_stream_check_holds_until_commit(postgres_store, postgres_dsn):
    """A stream only checked (not written) is locked FOR SHARE: writers of it wait."""
    store = postgres_store
    await store.append([NewEvent("checked", "t", b"")])
    conn = await asyncpg.connect(postgres_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        row = await conn.fetchrow(
            APPEND.format(s=f'"{store.schema}"'),
            ["checked"],
            [1],
            [uuid.uuid4()],
            ["written"],
            ["t"],
            [b""],
        )
        assert row["status"] == "ok"
        # A writer of another stream is not held up by the open transaction...
        await asyncio.wait_for(store.append([NewEvent("other", "t", b"")]), 5)
        # ...but a writer of the checked stream waits until it commits.
        blocked = asyncio.create_task(
            store.append([NewEvent("checked", "t", b"")], expected={"checked": 1})
        )
        await asyncio.sleep(0.3)
        assert not blocked.done()
        await tx.commit()
        await asyncio.wait_for(blocked, 5)
    finally:
        await conn.close()
    assert await store.stream_version("checked") == 2


async def test_read_all_filters_paging_and_list_streams(postgres_store):
    store = postgres_store
    for i in range(5):
        await store.append(
            [NewEvent(f"order-{i}", "placed", b""), NewEvent(f"user-{i}", "joined", b"")]
        )
    log = await store.read_all()
    assert len(log) == 10
    assert [e.stream_id for e in await store.read_all(stream_prefix="order-")] == [
        f"order-{i}" for i in range(5)
    ]
    assert len(await store.read_all(event_types=["joined"])) == 5
    assert len(await store.read_all(event_types=["joined"], stream_prefix="order-")) == 0
    assert await store.read_all(after_position=log[3].position, limit=2) == log[4:6]
    assert [e async for e in store.iter_all(page_size=3)] == log
    assert [e async for e in store.iter_all(after_position=log[7].position)] == log[8:]
    streams = await store.list_streams()
    assert streams == sorted(streams) and len(streams) == 10
    assert await store.list_streams(prefix="user-", after="user-1", limit=2) == [
        ("user-2", 1),
        ("user-3", 1),
    ]


async def test_read_fold_one_query(postgres_store):
    store = postgres_store
    await store.append(
        [NewEvent("a", "n", b"1"), NewEvent("b", "n", b"2"), NewEvent("a", "n", b"3")]
    )
    seen = []

    def apply(state, value, stream_id):
        seen.append(stream_id)
        return state + int(value)

    state, versions = await fold_streams(store, ["a", "b", "c"], 0, apply, {"n": bytes.decode})
    assert (state, versions, seen) == (6, [2, 1, 0], ["a", "b", "a"])


async def test_wait_for_append_wakes_on_notify(postgres_store_factory):
    store = await postgres_store_factory(poll_interval=30)  # polling would be far too slow
    head = await store.head()
    assert await store.wait_for_append(head, 0.05) == head  # times out
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(store.wait_for_append(head, 10))
    await asyncio.sleep(0.1)
    written = await store.append([NewEvent("s", "t", b"")])
    assert await waiter == written.last_position
    assert loop.time() - started < 2
    assert await store.subscribe_notifications()


async def test_wait_for_append_polls_without_notifications(postgres_store_factory):
    store = await postgres_store_factory(poll_interval=0.05)
    store._listener.channel = "nothing_is_sent_here"  # simulate lost notifications
    head = await store.head()
    waiter = asyncio.create_task(store.wait_for_append(head, 5))
    await asyncio.sleep(0.1)
    written = await store.append([NewEvent("s", "t", b"")])
    assert await waiter == written.last_position


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "tab\there", "x" * 256])
async def test_invalid_stream_ids_are_refused(postgres_store, bad):
    store = postgres_store
    with pytest.raises(InvalidStreamId):
        await store.append([NewEvent(bad, "t", b"")])
    with pytest.raises(InvalidStreamId):
        await store.append([NewEvent("ok", "t", b"")], expected={bad: 0})
    with pytest.raises(InvalidStreamId):
        await store.read_stream(bad)
    with pytest.raises(InvalidStreamId):
        await store.read_fold([bad])
    with pytest.raises(InvalidStreamId):
        await store.read_tail([bad], [0], 0)
    assert await store.read_all() == []


async def test_stream_ids_and_types_are_data_not_sql(postgres_store):
    store = postgres_store
    nasty = "x'); DROP TABLE events; --"
    await store.append([NewEvent(nasty, "t'; --", b"\x00\x01")])
    [recorded] = await store.read_stream(nasty)
    assert (recorded.stream_id, recorded.event_type, recorded.payload) == (
        nasty,
        "t'; --",
        b"\x00\x01",
    )


async def test_payload_size_limit(postgres_store):
    store = postgres_store
    with pytest.raises(ValidationError, match="16 MiB"):
        await store.append([NewEvent("big", "t", bytes(MAX_PAYLOAD_BYTES + 1))])
    assert await store.stream_version("big") == 0
    await store.append([NewEvent("big", "t", bytes(MAX_PAYLOAD_BYTES))])
    [recorded] = await store.read_stream("big")
    assert len(recorded.payload) == MAX_PAYLOAD_BYTES


async def test_malformed_events_are_refused(postgres_store):
    store = postgres_store
    with pytest.raises(TypeError):
        await store.append([NewEvent("s", "t", "not bytes")])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await store.append([NewEvent("s", "t\x00", b"")])
    with pytest.raises(ValueError):
        await store.append([], expected={"s": -3})
    with pytest.raises(ValidationError):
        await store.append([NewEvent("s", "t", b"")], metadata=Metadata(user_id="a\x00"))
    assert await store.read_all() == []


async def test_unknown_event_type_fails_on_data_only(postgres_store_factory):
    registry = EventRegistry()

    @event("known", registry=registry)
    @dataclass(frozen=True)
    class Known:
        n: int

    store = await postgres_store_factory(registry=registry)
    await store.append([NewEvent("s", *registry.encode(Known(1))), NewEvent("s", "gone", b"")])
    known, unknown = await store.read_stream("s")
    assert known.data == Known(1)
    assert unknown.event_type == "gone"
    with pytest.raises(SerializationError, match="gone"):
        _ = unknown.data


async def test_invalid_schema_names_are_refused(postgres_dsn):
    for bad in ["", "1abc", "a-b", 'x"; DROP SCHEMA public; --', "a" * 49]:
        with pytest.raises(ConfigurationError, match="identifier"):
            PostgresStore(postgres_dsn, schema=bad)
    with pytest.raises(ValidationError):
        PostgresStore()


@pytest.mark.parametrize(
    "system", ["information_schema", "pg_catalog", "pg_toast", "pg_temp_1", "PG_Catalog", "pg_x"]
)
def test_system_schemas_are_refused(postgres_dsn, system):
    with pytest.raises(ConfigurationError, match="system schema"):
        PostgresStore(postgres_dsn, schema=system)


@pytest.mark.parametrize(
    "dsn",
    [
        "not a dsn",
        "host=localhost port=5432",
        "mysql://u@h/db",
        "postgresql://u@h:notaport/db",
        "postgresql://u@h:99999/db",
        "postgresql://[::1/db",
    ],
)
async def test_a_malformed_dsn_is_a_configuration_error(dsn):
    """Not StoreUnavailable (which the executor retries): the DSN will never work."""
    with pytest.raises(ConfigurationError, match="DSN"):
        PostgresStore(dsn)


async def test_a_dsn_refused_on_connect_is_a_configuration_error(postgres_dsn):
    store = PostgresStore(f"{postgres_dsn}?sslmode=bogus")
    with pytest.raises(ConfigurationError, match="sslmode") as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)
    await store.close()


# -- the fast path (every checked stream is written) and post-commit notifications ---


async def test_fast_path_conflicts_report_every_stream_and_write_nothing(postgres_store):
    store = postgres_store
    await store.append([NewEvent("a", "t", b""), NewEvent("b", "t", b"")])
    cases = [
        ({"a": 0, "b": 0}, [("a", 0, 1), ("b", 0, 1)]),
        ({"a": 1, "b": 2, "new": NO_STREAM}, [("b", 2, 1)]),
        ({"a": STREAM_EXISTS, "new": STREAM_EXISTS}, [("new", STREAM_EXISTS, 0)]),
        ({"new": 3, "a": 5}, [("new", 3, 0), ("a", 5, 1)]),
    ]
    for expected, conflicts in cases:
        events = [NewEvent(s, "t", b"x") for s in expected]
        with pytest.raises(ConcurrencyConflict) as info:
            await store.append(events, expected=expected)
        assert [tuple(c) for c in info.value.conflicts] == conflicts
    assert await store.stream_version("a") == 1
    assert await store.stream_version("b") == 1
    assert [s for s, _ in await store.list_streams()] == ["a", "b"]
    assert len(await store.read_all()) == 2
    ok = await store.append(
        [NewEvent("a", "t", b"1"), NewEvent("new", "t", b"2"), NewEvent("a", "t", b"3")],
        expected={"a": STREAM_EXISTS, "new": NO_STREAM},
    )
    assert dict(ok.stream_versions) == {"a": 3, "new": 1}
    assert [(w.stream_id, w.version) for w in ok.events] == [("a", 2), ("new", 1), ("a", 3)]


async def test_fast_path_replay_wins_over_a_stale_expected_version(postgres_store):
    store = postgres_store
    batch = [NewEvent("a", "t", b"1", uuid.uuid4()), NewEvent("a", "t", b"2", uuid.uuid4())]
    first = await store.append(batch, expected={"a": NO_STREAM})
    await store.append([NewEvent("a", "t", b"3")], expected={"a": 2})
    again = await store.append(batch, expected={"a": NO_STREAM})
    assert list(again.positions) == list(first.positions)
    assert dict(again.stream_versions) == {"a": 2}
    with pytest.raises(DuplicateEventId, match="part of this batch"):
        await store.append([batch[1], NewEvent("a", "t", b"4")], expected={"a": 3})
    with pytest.raises(DuplicateEventId, match="different content"):
        await store.append([NewEvent("a", "t", b"9", batch[0].event_id)], expected={"a": 3})
    assert await store.stream_version("a") == 3


async def test_append_in_a_transaction_that_holds_an_id_is_refused(postgres_store, postgres_dsn):
    """A caller's transaction that already took an id may not append (issue 10, section 4).

    Its positions would come from that early id while its stream locks came later: a
    stream's version 2 could be positioned, and delivered by the log, before version 1.
    Earlier schema versions accepted it (a second append in the same transaction, too).
    """
    store = postgres_store
    conn = await asyncpg.connect(postgres_dsn)
    sql = (
        f'SELECT status, positions FROM "{store.schema}".append_events($1::text[],'
        " $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::bytea[], NULL, NULL, NULL, NULL)"
    )
    try:
        # A transaction that wrote something else first.
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE mine (x int)")
            await conn.execute("INSERT INTO mine VALUES (1)")
            with pytest.raises(asyncpg.PostgresError, match="already holds") as info:
                await conn.fetchrow(sql, [], [], [uuid.uuid4()], ["a"], ["t"], [b"1"])
            assert info.value.sqlstate == "EC001"
        # A second append in one transaction: the first took the id.
        with pytest.raises(asyncpg.PostgresError, match="already holds"):
            async with conn.transaction():
                one = await conn.fetchrow(sql, ["a"], [0], [uuid.uuid4()], ["a"], ["t"], [b"1"])
                assert one["status"] == "ok"
                await conn.fetchrow(sql, ["a"], [1], [uuid.uuid4()], ["a"], ["t"], [b"2"])
        # Read-only work before the append is fine (no id yet).
        async with conn.transaction():
            await conn.fetchval(f'SELECT count(*) FROM "{store.schema}".events')
            ok = await conn.fetchrow(sql, [], [], [uuid.uuid4()], ["b"], ["t"], [b"1"])
            assert ok["status"] == "ok"
    finally:
        await conn.close()
    assert [e.stream_id for e in await store.read_all()] == ["b"]
    assert await store.stream_version("a") == 0


async def test_an_append_in_a_callers_transaction_is_a_configuration_error(
    postgres_store, postgres_dsn
):
    """Through the API: a borrowed pool hands out connections inside a write transaction."""

    async def begin_with_an_id(conn: asyncpg.Connection) -> None:
        await conn.execute("BEGIN; SELECT pg_current_xact_id()")

    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1, setup=begin_with_an_id)
    store = PostgresStore(pool=pool, schema=postgres_store.schema)
    try:
        with pytest.raises(ConfigurationError, match="transaction of its own") as info:
            await store.append([NewEvent("a", "t", b"1")])
        assert not isinstance(info.value, StoreError)  # never retried
    finally:
        await store.close()
        await pool.close()
    assert await postgres_store.read_all() == []


async def test_notifications_are_sent_after_commit_and_coalesced(
    postgres_store_factory, postgres_dsn
):
    store = await postgres_store_factory(max_size=8)
    listener = await asyncpg.connect(postgres_dsn)  # another "process" listening
    received: list[int] = []
    await listener.add_listener(store._notifier.channel, lambda *a: received.append(int(a[3])))
    await listener.execute(LISTENING, store._notifier.channel)  # marked as a listener
    try:
        results = await asyncio.gather(
            *(store.append([NewEvent(f"s{i}", "t", b"")]) for i in range(20))
        )
        newest = max(r.last_position for r in results)
        for _ in range(200):
            if received and received[-1] == newest:
                break
            await asyncio.sleep(0.01)
        # Every append is announced, in bursts: never more notifications than appends,
        # each carrying a committed position, the last one the newest.
        assert received and received[-1] == newest
        assert len(received) <= len(results)
        assert received == sorted(received)
        assert set(received) <= {r.last_position for r in results}
        # The notifying connection is not the append's: no NOTIFY inside the function.
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.fetchrow(
                f'SELECT status FROM "{store.schema}".append_events($1::text[], $2::bigint[],'
                " $3::uuid[], $4::text[], $5::text[], $6::bytea[], NULL, NULL, NULL, NULL)",
                [],
                [],
                [uuid.uuid4()],
                ["raw"],
                ["t"],
                [b""],
            )
        finally:
            await conn.close()
        count = len(received)
        await asyncio.sleep(0.2)
        assert len(received) == count
    finally:
        await listener.close()


async def test_a_failing_notification_never_fails_the_append(postgres_store_factory):
    store = await postgres_store_factory(poll_interval=0.05)
    failed: list[int] = []

    async def unreachable(position: int) -> None:  # the notifier cannot connect
        failed.append(position)
        raise ConnectionRefusedError(111, "Connect call failed")

    store._notifier.notify = unreachable
    head = await store.head()
    waiter = asyncio.create_task(store.wait_for_append(head, 5))
    await asyncio.sleep(0.1)
    written = await store.append([NewEvent("s", "t", b"")])
    assert await waiter == written.last_position  # found by polling
    for _ in range(100):
        if store._notifier.task is None:
            break
        await asyncio.sleep(0.01)
    assert failed == [written.last_position]
    assert store._notifier.task is None and store._notifier.conn is None
    await store.append([NewEvent("s", "t", b"")])  # and appends keep working


async def test_notifications_coalesce_while_one_is_in_flight(postgres_store):
    store = postgres_store
    sent: list[int] = []
    release = asyncio.Event()

    async def slow_notify(position: int) -> None:
        sent.append(position)
        await release.wait()

    store._notifier.notify = slow_notify
    store._notifier.announce(10)
    for _ in range(100):  # the first notification is sent after a short delay
        if sent:
            break
        await asyncio.sleep(0.001)
    assert sent == [10]  # in flight
    for position in (11, 13, 12):
        store._notifier.announce(position)
    release.set()
    for _ in range(100):
        if store._notifier.task is None:
            break
        await asyncio.sleep(0.01)
    assert sent == [10, 13]  # one in flight, then ONE more with the newest position


async def test_a_burst_larger_than_the_pool_completes(postgres_store_factory):
    # More concurrent appends than pool connections all complete, and migrate() (which
    # takes a pool connection) still works afterwards.
    store = await postgres_store_factory(max_size=2)
    results = await asyncio.wait_for(
        asyncio.gather(*(store.append([NewEvent(f"k{i}", "t", b"")]) for i in range(30))), 10
    )
    assert len(results) == 30
    await asyncio.wait_for(store.migrate(), 10)
    assert len(await store.read_all()) == 30
