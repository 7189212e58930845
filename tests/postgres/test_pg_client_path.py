"""The client side of a PostgreSQL append (issue 11, the warm command's CPU): what the lean
argument building must keep.

Event ids travel to asyncpg as 32 hex digits when they are ints (parsed in C) and as
they are when they are UUIDs; the ids stored, replays, a lost reply's OutcomeUnknown and
an id out of range must not change with that. The input checks take shortcuts for the
executor's own shapes (a list of pairs, no tags); every other shape is checked as before.
A statement's client-side time limit is kept by the pool's watchdog, not by a timer per
statement, with the same outcome.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions import ConnectionDoesNotExistError

from eventcore import NewEvent, OutcomeUnknown, StoreError, ValidationError
from eventcore.errors import InvalidStreamId, InvalidTag
from eventcore.postgres._input import prepare_expected, prepare_tags
from eventcore.postgres._pool import ConnectionPool

pytestmark = pytest.mark.postgres

EDGE_IDS = [0, 1, 2**64, 2**127 + 5, 2**128 - 1]

# Each append shape and the statement that serves it (see test_pg_plain_append.py).
SHAPES = ["direct-one", "direct-many", "function", "append_events", "tagged"]


def _events(shape: str, ids: list[Any]) -> tuple[list[NewEvent], dict[str, int]]:
    if shape == "direct-one":
        return [NewEvent("s", "t", b"0", ids[0])], {}
    if shape in ("direct-many", "function"):
        return [NewEvent("s", "t", bytes([i]), e) for i, e in enumerate(ids)], {}
    if shape == "append_events":  # two streams
        return [NewEvent(f"s{i % 2}", "t", bytes([i]), e) for i, e in enumerate(ids)], {}
    return [NewEvent("s", "t", bytes([i]), e, ("k:1",)) for i, e in enumerate(ids)], {}


@pytest.mark.parametrize("shape", SHAPES)
async def test_int_and_uuid_event_ids_are_stored_as_given_and_replay(postgres_store, shape):
    store = postgres_store
    if shape == "function":
        store._plain = "function"
    ids: list[Any] = [*EDGE_IDS, uuid.UUID(int=7), uuid.uuid4()]
    if shape == "direct-one":
        ids = [2**128 - 2]
    events, expected = _events(shape, ids)
    first = await store.append(events, expected=expected)
    stored = await store.read_events_by_id([uuid.UUID(int=i) if type(i) is int else i for i in ids])
    want = {uuid.UUID(int=i) if type(i) is int else i for i in ids}
    assert {e.event_id for e in stored} == want
    assert [e.event_id for e in first.events] == [
        uuid.UUID(int=i) if type(i) is int else i for i in ids
    ]
    # The same ids again: the first outcome, nothing written.
    again = await store.append(events, expected=expected)
    assert list(again.positions) == list(first.positions)
    assert len(await store.read_all()) == len(ids)


@pytest.mark.parametrize("bad", [-1, 2**128, 2**130])
@pytest.mark.parametrize("shape", ["direct-one", "direct-many", "append_events"])
async def test_an_event_id_out_of_range_is_refused_and_writes_nothing(postgres_store, bad, shape):
    store = postgres_store
    ids = [bad] if shape == "direct-one" else [5, bad]
    events, _ = _events(shape, ids)
    with pytest.raises(StoreError):  # asyncpg refuses to encode it, as it always did
        await store.append(events)
    assert await store.read_all() == []
    # Nothing was left half done: the store still appends.
    await store.append([NewEvent("s", "t", b"")])


async def test_a_lost_reply_names_the_event_ids_as_uuids(postgres_store, monkeypatch):
    store = postgres_store
    await store.append([NewEvent("s", "t", b"")])  # the pool is open, its path chosen
    pool = store._pool
    assert pool is not None

    async def lost(self: Any, *args: Any, **kw: Any) -> Any:
        raise ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(type(pool._idle[0]), "fetchrow", lost)
    given = [2**100 + 3, uuid.uuid4()]
    with pytest.raises(OutcomeUnknown) as caught:
        await store.append([NewEvent("s", "t", b"1", given[0]), NewEvent("s", "t", b"2", given[1])])
    assert caught.value.event_ids == [uuid.UUID(int=given[0]), given[1]]
    with pytest.raises(OutcomeUnknown) as one:
        await store.append([NewEvent("s", "t", b"1", given[0])])
    assert one.value.event_ids == [uuid.UUID(int=given[0])]


def test_expected_versions_are_checked_alike_in_every_shape():
    pairs = [("a", 1), ("b", 0)]
    assert prepare_expected(pairs) == pairs
    assert prepare_expected(tuple(pairs)) == pairs
    assert prepare_expected(dict(pairs)) == pairs
    assert prepare_expected(iter(pairs)) == pairs
    for shape in (list, tuple, dict):
        with pytest.raises(ValidationError):
            prepare_expected(shape([("a", 1), ("a", 2)]) if shape is not dict else {"a": -3})
        with pytest.raises(InvalidStreamId):
            prepare_expected(shape([("", 1)]))
    with pytest.raises(TypeError):
        prepare_expected("ab")  # type: ignore[arg-type]


def test_tags_are_read_from_every_event_once_any_carries_one():
    plain = [NewEvent("s", "t", b""), ("s", "t", b"", None)]
    assert prepare_tags(plain) is None
    assert prepare_tags([NewEvent("s", "t", b"", None, ())]) is None
    later = [*plain, NewEvent("s", "t", b"", None, ("k:1", "k:2"))]
    assert prepare_tags(later) == [(), (), ("k:1", "k:2")]
    with pytest.raises(InvalidTag):
        prepare_tags([*plain, NewEvent("s", "t", b"", None, ("",))])


async def test_a_lease_takes_the_newest_live_idle_connection(postgres_store_factory):
    # `async with pool.acquire()` (every append's checkout) takes an idle connection
    # without a second coroutine; it must still skip a closed one and keep the counts.
    store = await postgres_store_factory(min_size=0, max_size=3)
    pool = await store._get_pool()
    first, second = await pool.acquire(), await pool.acquire()
    await pool.release(first)
    await pool.release(second)
    size = pool.get_size()
    async with pool.acquire() as conn:
        assert conn is second  # the last given back
        assert pool.get_idle_size() == 1
    assert pool.get_idle_size() == 2
    second.terminate()  # closed while idle: dropped, never handed out
    async with pool.acquire() as conn:
        assert conn is first
        assert await conn.fetchval("SELECT 1") == 1
    assert (pool.get_size(), pool.get_idle_size()) == (size - 1, 1)
    await pool.close()
    with pytest.raises(Exception, match="closed"):
        async with pool.acquire():
            pass


# -- the client-side time limit without a timer per statement ------------------------


async def test_a_statement_past_its_connections_limit_times_out_and_its_connection_goes(
    postgres_dsn,
):
    # The pool's watchdog keeps each connection's command_timeout: the caller gets the
    # TimeoutError asyncpg's own timer gave, near the limit; the connection is dropped;
    # a statement that finishes in time, on another connection, is not touched.
    opened: list[Any] = []

    async def connect() -> Any:
        conn = await asyncpg.connect(postgres_dsn, command_timeout=0.5)
        opened.append(conn)
        return conn

    pool = ConnectionPool(connect, min_size=0, max_size=2)
    try:
        started = time.monotonic()
        slow = asyncio.create_task(pool.fetchval("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.1)
        assert await pool.fetchval("SELECT pg_sleep(0.2)::text") == ""  # in time
        with pytest.raises(TimeoutError):
            await slow
        took = time.monotonic() - started
        assert 0.5 <= took < 3
        assert opened[0].is_closed()
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
        assert await pool.fetchval("SELECT 1") == 1
        # The same through a lease (how an append runs its statement).
        async with pool.acquire() as conn:
            with pytest.raises(TimeoutError):
                await pool.statement(conn, conn.fetchval, "SELECT pg_sleep(10)", ())
        assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
        # Nothing is left watched, and the watchdog stops once nothing is in flight.
        assert await pool.fetchval("SELECT 2") == 2
        assert pool._watched == {}
        await asyncio.sleep(0.7)
        assert pool._watchdog is None
        assert all(c._config.command_timeout == 0.5 for c in opened)  # given back as found
    finally:
        await pool.close()


async def test_a_hung_append_is_cut_at_the_client_limit_and_writes_nothing(
    postgres_store_factory, postgres_dsn
):
    # No server-side statement_timeout (as through PgBouncer): the client's limit
    # (statement_timeout + 5 s) ends an append stuck behind a lock: OutcomeUnknown (it
    # was sent), nothing written, and the store appends again once the lock is gone.
    store = await postgres_store_factory(pgbouncer=True, statement_timeout=0.2, snapshots=False)
    await store.append([NewEvent("s", "t", b"0")])
    admin = await asyncpg.connect(postgres_dsn)
    try:
        tx = admin.transaction()
        await tx.start()
        await admin.execute(f'LOCK TABLE "{store.schema}".events IN ACCESS EXCLUSIVE MODE')
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            await store.append([NewEvent("s", "t", b"1")], expected={"s": 1})
        assert 5.2 <= time.monotonic() - started < 9
        await tx.rollback()
    finally:
        await admin.close()
    assert [e.payload for e in await store.read_stream("s")] == [b"0"]
    await store.append([NewEvent("s", "t", b"1")], expected={"s": 1})
    assert len(await store.read_stream("s")) == 2


async def test_settings_of_another_shape_keep_asyncpgs_own_timer(postgres_dsn):
    # The watchdog swaps asyncpg's settings namedtuple for the statement; a connection
    # whose settings are shaped otherwise (another asyncpg release) keeps them untouched
    # and its limit is kept by asyncpg's timer per statement, as before the watchdog.
    class Settings:
        def __init__(self, real: Any) -> None:
            self._real = real
            self.command_timeout = real.command_timeout

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    opened: list[Any] = []

    async def connect() -> Any:
        conn = await asyncpg.connect(postgres_dsn, command_timeout=0.5)
        conn._config = Settings(conn._config)
        opened.append(conn)
        return conn

    pool = ConnectionPool(connect, min_size=0, max_size=1)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        settings = opened[0]._config
        assert isinstance(settings, Settings)
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await pool.fetchval("SELECT pg_sleep(10)")
        assert opened[0]._config is settings
        assert pool._watched == {} and pool._watchdog is None
    finally:
        await pool.close()
