"""The global log never skips: writers commit in a shuffled order while readers tail it.

Writers are raw asyncpg connections that call the store's own ``append_events`` function
inside transactions they hold open and commit (or roll back) in a shuffled order. A
reader tails the log with ``read_all(after_position=cursor, limit=small)``; a naive
reader tails the same table with ``WHERE position > $1 ORDER BY position``. The store's
reader must see every committed event exactly once with a strictly increasing cursor;
the naive reader must skip some under the same schedule (so this test can fail).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import pytest

from eventcore import NewEvent
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner

pytestmark = pytest.mark.postgres

APPEND = (
    "SELECT status, positions FROM {s}.append_events($1::text[], $2::bigint[], $3::uuid[],"
    " $4::text[], $5::text[], $6::bytea[], NULL, NULL, NULL, NULL)"
)


class Writer:
    """One raw connection that appends inside a transaction it holds open."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.sql = APPEND.format(s=f'"{schema}"')
        self.tx: Any = None
        self.pending: list[uuid.UUID] = []

    async def begin_and_append(self, stream: str, count: int) -> None:
        self.tx = self.conn.transaction()
        await self.tx.start()
        ids = [uuid.uuid4() for _ in range(count)]
        row = await self.conn.fetchrow(
            self.sql, [], [], ids, [stream] * count, ["t"] * count, [b"p"] * count
        )
        assert row["status"] == "ok"
        self.pending = ids

    async def finish(self, commit: bool) -> list[uuid.UUID]:
        if commit:
            await self.tx.commit()
            return self.pending
        await self.tx.rollback()
        return []


class TailingReader:
    """Tails the log through the store, checking order and uniqueness on every page."""

    def __init__(self, store: Any, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.cursor = 0
        self.seen: list[uuid.UUID] = []
        self.positions: list[int] = []
        self.pages = 0
        self._lock = asyncio.Lock()  # one poll at a time: a reader owns one cursor

    async def poll(self) -> None:
        async with self._lock:
            while True:
                page = await self.store.read_all(after_position=self.cursor, limit=self.limit)
                self.pages += 1
                for event in page:
                    assert event.position > self.cursor, "cursor must strictly increase"
                    self.cursor = event.position
                    self.positions.append(event.position)
                    self.seen.append(event.event_id)
                if len(page) < self.limit:
                    return


class NaiveReader:
    """Pages by position alone, as most peers do: skips events that commit late."""

    SQL = (
        'SELECT position, event_id FROM "{schema}".events WHERE position > $1'
        " ORDER BY position LIMIT $2"
    )

    def __init__(self, conn: asyncpg.Connection, schema: str, limit: int) -> None:
        self.conn = conn
        self.sql = self.SQL.format(schema=schema)
        self.limit = limit
        self.cursor = 0
        self.seen: list[uuid.UUID] = []

    async def poll(self) -> None:
        while True:
            rows = await self.conn.fetch(self.sql, self.cursor, self.limit)
            for position, event_id in rows:
                self.cursor = position
                self.seen.append(event_id)
            if len(rows) < self.limit:
                return


class SnapshotOnlyReader(NaiveReader):
    """Reads below its snapshot's xmax without asking which appends are in flight (the
    horizon without the lock scan): skips an append that took its id earlier and
    commits later."""

    SQL = (
        'SELECT position, event_id FROM "{schema}".events WHERE position > $1'
        " AND position < pg_snapshot_xmax(pg_current_snapshot())::text::bigint * 1048576"
        " ORDER BY position LIMIT $2"
    )


async def test_shuffled_commits_are_never_skipped(postgres_store, postgres_dsn):
    store = postgres_store
    rng = random.Random(20240611)
    writers = [Writer(await asyncpg.connect(postgres_dsn), store.schema) for _ in range(6)]
    naive_conn = await asyncpg.connect(postgres_dsn)
    reader = TailingReader(store, limit=2)
    naive = NaiveReader(naive_conn, store.schema, limit=2)
    snapshot_only = SnapshotOnlyReader(naive_conn, store.schema, limit=2)
    committed: list[uuid.UUID] = []
    stop = asyncio.Event()

    async def tail_continuously() -> None:
        while not stop.is_set():
            await reader.poll()
            await asyncio.sleep(rng.uniform(0, 0.003))

    tailer = asyncio.create_task(tail_continuously())
    try:
        for round_no in range(8):
            # Transactions take their ids (and so their positions) in writer order...
            for i, writer in enumerate(writers):
                await writer.begin_and_append(f"s-{round_no}-{i}", rng.randint(1, 3))
            # ...and finish in a shuffled order, some rolled back, with readers polling
            # between every two commits and tailing concurrently all along.
            order = list(range(len(writers)))
            rng.shuffle(order)
            for i in order:
                committed += await writers[i].finish(commit=rng.random() > 0.15)
                await asyncio.sleep(rng.uniform(0, 0.01))
                await reader.poll()
                await naive.poll()
                await snapshot_only.poll()
        # A plain store append too (its own transaction), then drain both readers.
        result = await store.append([NewEvent("after", "t", b"p")])
        committed += result.event_ids
    finally:
        stop.set()
        await tailer
        for writer in writers:
            await writer.conn.close()
    await reader.poll()
    await naive.poll()
    await snapshot_only.poll()
    await naive_conn.close()

    assert len(reader.seen) == len(set(reader.seen)), "an event was delivered twice"
    assert sorted(reader.seen) == sorted(committed), "the reader missed committed events"
    assert reader.positions == sorted(reader.positions)
    assert len(set(reader.positions)) == len(reader.positions)
    # The same schedule defeats a reader that pages by position alone.
    missed = set(committed) - set(naive.seen)
    assert missed, "the schedule should make the naive reader skip events"
    # ...and one that trusts its snapshot but not the lock table's in-flight appends.
    missed = set(committed) - set(snapshot_only.seen)
    assert missed, "the schedule should make the snapshot-only reader skip events"
    assert await store.head() == reader.cursor


async def test_an_open_append_holds_readers_back_without_losing_events(
    postgres_store, postgres_dsn
):
    store = postgres_store
    first = await store.append([NewEvent("a", "t", b"1")])
    writer = Writer(await asyncpg.connect(postgres_dsn), store.schema)
    try:
        await writer.begin_and_append("open", 2)  # an append of THIS store, in flight
        later = await store.append([NewEvent("b", "t", b"2")])
        assert await store.head() == first.last_position
        assert await store.latest_position() == later.last_position
        page = await store.read_all(after_position=0)
        assert [e.position for e in page] == [first.last_position]
        held = await store.log_holdback()
        assert held is not None
        assert held.pid == await writer.conn.fetchval("SELECT pg_backend_pid()")
        assert held.seconds is not None and held.seconds >= 0
        assert held.transaction_id == await writer.conn.fetchval(
            "SELECT pg_current_xact_id()::text::bigint"
        )
        # Stream reads are not held back.
        assert [e.version for e in await store.read_stream("b")] == [1]
        committed = await writer.finish(commit=True)
    finally:
        await writer.conn.close()
    page = await store.read_all(after_position=first.last_position)
    assert [e.event_id for e in page[:2]] == committed
    assert page[-1].position == later.last_position
    assert await store.head() == later.last_position
    assert await store.log_holdback() is None


async def _hold_xid_in_this_database(dsn: str, admin_dsn: str, schema: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute("CREATE TEMP TABLE unrelated (x int)")
    await conn.execute("INSERT INTO unrelated VALUES (1)")
    return conn


async def _hold_xid_in_another_database(
    dsn: str, admin_dsn: str, schema: str
) -> asyncpg.Connection:
    conn = await asyncpg.connect(admin_dsn)  # the "postgres" maintenance database
    await conn.execute("BEGIN")
    await conn.execute("SELECT pg_current_xact_id()")
    return conn


async def _hold_xid_reading_the_events(dsn: str, admin_dsn: str, schema: str) -> asyncpg.Connection:
    # A write transaction (a projection's own tables, say) that also reads the events.
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute("SELECT pg_current_xact_id()")
    await conn.execute(f'SELECT count(*) FROM "{schema}".events')
    return conn


@pytest.mark.parametrize(
    "hold",
    [_hold_xid_in_this_database, _hold_xid_in_another_database, _hold_xid_reading_the_events],
    ids=["same-database", "other-database", "reads-events"],
)
async def test_unrelated_open_transactions_do_not_hold_readers_back(
    postgres_store, postgres_dsn, postgres_server, hold
):
    """Transactions holding an id elsewhere (idle in transaction) do not delay the log.

    Before the horizon was narrowed to this store's own appends, each of them held
    ``head`` and ``read_all`` at the first event until it ended.
    """
    store = postgres_store
    first = await store.append([NewEvent("a", "t", b"1")])
    holder = await hold(postgres_dsn, postgres_server.admin_dsn, store.schema)
    try:
        assert await holder.fetchval("SELECT pg_current_xact_id_if_assigned()") is not None
        later = await store.append([NewEvent("b", "t", b"2")])
        assert await store.head() == later.last_position
        page = await store.read_all(after_position=first.last_position)
        assert [e.position for e in page] == [later.last_position]
        assert await store.log_holdback() is None
    finally:
        await holder.close()


async def test_an_unrelated_prepared_transaction_does_not_hold_readers_back(
    postgres_store, postgres_dsn
):
    store = postgres_store
    other = await asyncpg.connect(postgres_dsn)
    gid = f"unrelated-{uuid.uuid4()}"
    try:
        await other.execute("BEGIN")
        await other.execute("SELECT pg_current_xact_id()")
        await other.execute(f"PREPARE TRANSACTION '{gid}'")
        later = await store.append([NewEvent("b", "t", b"2")])
        assert await store.head() == later.last_position
    finally:
        if await other.fetchval("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", gid):
            await other.execute(f"ROLLBACK PREPARED '{gid}'")
        await other.close()


async def test_a_prepared_append_holds_readers_back_until_it_commits(postgres_store, postgres_dsn):
    """A prepared transaction keeps its locks: the reader waits for it, never skips it."""
    store = postgres_store
    first = await store.append([NewEvent("a", "t", b"1")])
    writer = await asyncpg.connect(postgres_dsn)
    gid = f"append-{uuid.uuid4()}"
    ids = [uuid.uuid4()]
    try:
        await writer.execute("BEGIN")
        row = await writer.fetchrow(
            APPEND.format(s=f'"{store.schema}"'), [], [], ids, ["p"], ["t"], [b"p"]
        )
        assert row["status"] == "ok"
        await writer.execute(f"PREPARE TRANSACTION '{gid}'")
        later = await store.append([NewEvent("b", "t", b"2")])
        assert await store.head() == first.last_position
        held = await store.log_holdback()
        assert held is not None and held.pid is None
        await writer.execute(f"COMMIT PREPARED '{gid}'")
    finally:
        # A prepared transaction outlives its session: never leave it (it would hold
        # the events table's lock, and the schema's drop, for good).
        await writer.execute("ROLLBACK")  # a transaction not prepared yet, if any
        if await writer.fetchval("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", gid):
            await writer.execute(f"ROLLBACK PREPARED '{gid}'")
        await writer.close()
    page = await store.read_all(after_position=first.last_position)
    assert [e.event_id for e in page] == [ids[0], later.event_ids[0]]


async def test_a_repeatable_read_reader_never_skips(postgres_store, postgres_dsn):
    """Inside a REPEATABLE READ transaction the read reuses an old snapshot: the horizon
    falls back to that snapshot's xmin, so an append in flight when it was taken (and
    committed since) is not passed over by a newer event the snapshot does see."""
    store = postgres_store
    first = await store.append([NewEvent("a", "t", b"1")])
    writer = Writer(await asyncpg.connect(postgres_dsn), store.schema)
    reader = await asyncpg.connect(postgres_dsn)
    sql = f'SELECT o_position FROM "{store.schema}".read_all_page($1, NULL, NULL, NULL)'
    try:
        await writer.begin_and_append("w", 1)  # older id, in flight
        newer = await store.append([NewEvent("v", "t", b"2")])  # newer id, committed
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await reader.fetchval("SELECT 1")  # the snapshot: w running, v visible
        await writer.finish(commit=True)
        assert await reader.fetch(sql, first.last_position) == []
        await reader.execute("COMMIT")
    finally:
        await writer.conn.close()
        await reader.close()
    page = await store.read_all(after_position=first.last_position)
    assert [e.stream_id for e in page] == ["w", "v"]
    assert page[-1].position == newer.last_position


async def test_one_streams_events_are_delivered_in_version_order(postgres_store, postgres_dsn):
    """A writer that waits for a stream lock must not keep an older transaction id.

    Positions come from the writing transaction's id. If a transaction took its id, then
    waited for a stream that a younger transaction wrote and committed first, its event
    would get the higher version but the lower position: the global log would deliver
    that stream's version 2 before its version 1. Schedule: ``blocker`` holds stream
    ``z`` open; ``late`` appends to ``a-new``, ``s`` and ``z`` (new stream first, so a
    writer that inserts stream rows before locking takes its id early) and blocks on
    ``z``; ``early`` appends to ``s``; then ``blocker`` commits. (Before writers were
    serialized ahead of taking an id, this delivered versions 1, 3, 2.)
    """
    store = postgres_store
    await store.append([NewEvent("s", "t", b"first"), NewEvent("z", "t", b"first")])
    blocker = Writer(await asyncpg.connect(postgres_dsn), store.schema)
    late_conn = await asyncpg.connect(postgres_dsn)
    try:
        await blocker.begin_and_append("z", 1)
        late_sql = APPEND.format(s=f'"{store.schema}"')
        streams = ["a-new", "s", "z"]
        late = asyncio.create_task(  # noqa: RUF006 (awaited below)
            late_conn.fetchrow(
                late_sql, [], [], [uuid.uuid4() for _ in streams], streams, ["t"] * 3, [b"p"] * 3
            )
        )
        await asyncio.sleep(0.3)  # late is now waiting for z
        assert not late.done()
        # early commits at once unless late already holds s (then it waits for late).
        early = asyncio.create_task(store.append([NewEvent("s", "t", b"early")]))
        await asyncio.sleep(0.3)
        await blocker.finish(commit=True)
        row = await asyncio.wait_for(late, 10)
        assert row["status"] == "ok"
        await asyncio.wait_for(early, 10)
    finally:
        await blocker.conn.close()
        await late_conn.close()

    s_events = await store.read_stream("s")
    assert sorted(e.payload for e in s_events) == [b"early", b"first", b"p"]
    log = [e for e in await store.read_all() if e.stream_id == "s"]
    assert [e.version for e in log] == [1, 2, 3], "the log must deliver s in version order"
    assert [e.position for e in log] == sorted(e.position for e in log)


async def test_concurrent_appends_and_idle_sessions_tail_exactly_once(
    postgres_store_factory, postgres_dsn, postgres_server
):
    """Many writers through the store (real races between a reader's snapshot, its lock
    scan and commits), appends held open for a while, idle sessions holding ids in this
    database and another all along: a tailing reader sees every event exactly once, in
    position order."""
    writer_store = await postgres_store_factory(max_size=10)
    reader_store = PostgresStore(postgres_dsn, schema=writer_store.schema, max_size=2)
    rng = random.Random(7)
    idle = [
        await _hold_xid_in_this_database(postgres_dsn, "", ""),
        await _hold_xid_in_another_database("", postgres_server.admin_dsn, ""),
    ]
    reader = TailingReader(reader_store, limit=7)
    committed: list[uuid.UUID] = []
    stop = asyncio.Event()

    async def tail() -> None:
        while not stop.is_set():
            await reader.poll()
            await asyncio.sleep(0)

    async def plain_writer(k: int) -> None:
        for i in range(40):
            result = await writer_store.append(
                [NewEvent(f"p{k}-{i % 3}", "t", b"x") for _ in range(rng.randint(1, 3))]
            )
            committed.extend(result.event_ids)

    async def slow_writer(k: int) -> None:
        writer = Writer(await asyncpg.connect(postgres_dsn), writer_store.schema)
        try:
            for i in range(6):
                await writer.begin_and_append(f"slow{k}-{i}", rng.randint(1, 2))
                await asyncio.sleep(rng.uniform(0, 0.05))
                committed.extend(await writer.finish(commit=rng.random() > 0.2))
        finally:
            await writer.conn.close()

    tailer = asyncio.create_task(tail())
    try:
        await asyncio.gather(
            *(plain_writer(k) for k in range(6)), *(slow_writer(k) for k in range(3))
        )
        await asyncio.sleep(0.05)
        assert await reader_store.head() == max(
            e.position for e in await writer_store.read_all()
        ), "idle sessions elsewhere must not hold the head back"
        await reader.poll()
    finally:
        stop.set()
        await tailer
        for conn in idle:
            await conn.close()
        await reader_store.close()
    assert len(reader.seen) == len(set(reader.seen)), "an event was delivered twice"
    assert sorted(reader.seen) == sorted(committed), "the reader missed committed events"
    assert reader.positions == sorted(reader.positions)


class _Counting:
    """A projection that only counts what it is given."""

    name = "counting"

    def __init__(self) -> None:
        self.applied = 0

    def apply(self, event: Any) -> None:
        self.applied += 1


async def test_projection_status_names_an_append_that_holds_the_log_back(
    postgres_store, postgres_dsn
):

    store = postgres_store
    first = await store.append([NewEvent("a", "t", b"1")])
    projection = _Counting()
    async with ProjectionRunner(store, [projection], poll_interval=0.05) as runner:
        await runner.wait_for(first.last_position, timeout=10)
        quiet = (await runner.status())["counting"]
        assert quiet.held_back_by is None
        writer = Writer(await asyncpg.connect(postgres_dsn), store.schema)
        try:
            await writer.begin_and_append("open", 1)  # this store's append, left open
            pid = await writer.conn.fetchval("SELECT pg_backend_pid()")
            await store.append([NewEvent("b", "t", b"2")])
            await asyncio.sleep(1.1)
            status = (await runner.status())["counting"]
            # The later append is withheld (never skipped) and the status says why.
            assert projection.applied == 1
            assert status.held_back_by is not None
            assert f"pid {pid}" in status.held_back_by
            assert status.lag_seconds >= 1.0
            await writer.finish(commit=True)
        finally:
            await writer.conn.close()
        await runner.wait_for(await store.head(), timeout=10)
        assert projection.applied == 3
        assert (await runner.status())["counting"].held_back_by is None
