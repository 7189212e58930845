"""PostgreSQL workloads of the headline harness: eventcore, the raw asyncpg limit and the peer.

Three sides do the same work on the same server, their repetitions alternating so that
machine noise hits them alike:

- ``postgres.*``: eventcore's :class:`~eventcore.postgres.PostgresStore` and ``execute``
  (the bank domain of ``benches/domain.py``, dataclass events);
- ``raw.asyncpg.*``: the physical limit, the fewest round trips that do the same reads and
  writes with the same durability (``fsync``/``synchronous_commit`` on, the server's
  settings), written straight into a migrated eventcore schema (same tables, same indexes,
  same row contents):

  - command: the fold read eventcore does (``SELECT stream_id, event_type, payload FROM
    events WHERE stream_id = ANY($1) ORDER BY position``), then ONE autocommit statement
    that bumps the stream version only if it is still the version read (``INSERT .. ON
    CONFLICT DO UPDATE .. WHERE version = $expected``) and inserts the event from the
    row it returned: 2 round trips, one commit, optimistic concurrency like eventcore.
    No idempotency check, no ``NOTIFY``, no decoding or folding in Python. What it skips of
    the store's guarantees: the per-stream advisory lock and the events-table lock taken
    before the transaction id (so a stream's events may be positioned out of version
    order and a reader's horizon does not see it in flight), the event-id probe and the
    input re-checks: it is an upper bound. ``raw.asyncpg.command.onetrip.*`` is that
    statement alone with the expected version known beforehand (one round trip: what a
    warm eventcore command does);
  - transfer: the same with both streams in one read and one write statement (the write
    fails whole, by a division by zero, when a version moved);
  - batch: ONE statement inserting 1,000 rows from ``unnest`` arrays and the stream row;
  - read: pages of 1,000 rows of the same columns, payloads decoded with the same codec.

  A pessimistic transaction (``BEGIN; INSERT stream; SELECT .. FOR UPDATE; INSERT; UPDATE;
  COMMIT``, six round trips, one commit) is measured too, as
  ``raw.asyncpg.command.locked.c1``, for reference, alternated with the others.
  Each raw client owns one connection for the whole run (no pool in between).
- ``postgres.sync.command.c1``: the cold command from synchronous code
  (``execute_sync`` on a :class:`~eventcore.postgres.SyncPostgresStore`: its lane in the
  calling thread, its own connection), against
  ``postgres.command.cold.c1`` as its baseline;
- ``peer.eventsourcing.postgres.*``: the ``eventsourcing`` library (9.5.x) with its
  ``eventsourcing.postgres`` persistence module (psycopg 3, sync) on the same server:
  ``repository.get``, one method call, ``save``; concurrency = threads.

``c16`` = 16 asyncio tasks over a pool of 16 connections (eventcore; raw: one connection
each), 16 threads over
a pool of 16 connections (the peer). Every repetition is time-bound (each client loops
until the repetition's deadline) and the figure is completions / wall seconds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from benches.dcb_workloads import CLIENT_BACKENDS, backends_cpu
from benches.domain import DC, baseline
from eventcore import NewEvent, execute, execute_sync
from eventcore.postgres import PostgresStore, SyncPostgresStore
from eventcore.postgres._sql import POSITION_SHIFT

_perf = time.perf_counter
OWNER = "owner"
DEPOSIT = 100
CLIENTS = 16


@dataclass
class PgSizes:
    reps: int
    warmup: int
    seconds: float  # wall seconds of one time-bound repetition
    pairs_per_client: int  # transfer pairs made per client and side (reused cyclically)
    peer_accounts: int  # accounts made for the peer's command workloads
    batches: int  # batches of 1000 per repetition
    read_events: int  # events in the log read by the read and replay workloads
    lag_reps: int


PG_FULL = PgSizes(
    reps=5,
    warmup=1,
    seconds=3.0,
    pairs_per_client=400,
    peer_accounts=4000,
    batches=30,
    read_events=200_000,
    lag_reps=3,
)
PG_QUICK = PgSizes(
    reps=3,
    warmup=1,
    seconds=0.6,
    pairs_per_client=100,
    peer_accounts=1000,
    batches=8,
    read_events=40_000,
    lag_reps=3,
)

Once = Callable[[], float]
"""One timed repetition of one side; returns its rate."""


# ---------------------------------------------------------------------------------------------
# Time-bound drivers


async def run_clients(
    clients: int, seconds: float, step: Callable[[int, int], Awaitable[Any]]
) -> float:
    """``clients`` tasks call ``await step(client, i)`` until ``seconds`` pass; rate/s."""
    loop = asyncio.get_running_loop()
    counts = [0] * clients

    async def client(k: int) -> None:
        i = 0
        while loop.time() < deadline:
            await step(k, i)
            i += 1
        counts[k] = i

    started = _perf()
    deadline = loop.time() + seconds
    await asyncio.gather(*(client(k) for k in range(clients)))
    return sum(counts) / (_perf() - started)


def run_threads(
    pool: ThreadPoolExecutor, clients: int, seconds: float, step: Callable[[int, int], Any]
) -> float:
    """``clients`` threads call ``step(client, i)`` until ``seconds`` pass; rate/s."""
    counts = [0] * clients
    go = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        go.wait()
        i = 0
        while _perf() < deadline:
            step(k, i)
            i += 1
        counts[k] = i

    futures = [pool.submit(client, k) for k in range(clients)]
    started = _perf()
    deadline = started + seconds  # read by the threads only after the barrier
    go.wait()
    for f in futures:
        f.result()
    return sum(counts) / (_perf() - started)


# ---------------------------------------------------------------------------------------------
# The raw asyncpg limit: statements


class RawSql:
    """The raw baseline's statements against one migrated eventcore schema."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        pos = f"pg_current_xact_id()::text::bigint * {POSITION_SHIFT}"
        self.fold = (
            f"SELECT stream_id, event_type, payload FROM {s}.events"
            " WHERE stream_id = ANY($1::text[]) ORDER BY position"
        )
        # One stream: bump the version if it is still $2 (or create it at 1), insert the event.
        self.write1 = (
            f"WITH b AS (INSERT INTO {s}.streams AS t (stream_id, version) VALUES ($1, $2 + 1)"
            " ON CONFLICT (stream_id) DO UPDATE SET version = t.version + 1"
            " WHERE t.version = $2 RETURNING t.version)"
            f" INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
            f" SELECT {pos}, $3, $1, b.version, $4, $5 FROM b"
        )
        # Several existing streams, one event each, all or nothing.
        self.write_n = (
            f"WITH w AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[],"
            " $5::bytea[]) WITH ORDINALITY AS w(stream_id, expected, id, type, payload, i)),"
            f" b AS (UPDATE {s}.streams t SET version = t.version + 1 FROM w"
            " WHERE t.stream_id = w.stream_id AND t.version = w.expected"
            " RETURNING t.stream_id, t.version)"
            f" INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
            f" SELECT {pos} + w.i - 1, w.id, w.stream_id, b.version, w.type, w.payload"
            " FROM w JOIN b USING (stream_id)"
            " WHERE 1 / ((SELECT count(*) FROM b) = cardinality($1::text[]))::int = 1"
        )
        # A batch into one new stream.
        self.batch = (
            f"WITH b AS (INSERT INTO {s}.streams (stream_id, version)"
            " VALUES ($1, cardinality($2::uuid[])) RETURNING version)"
            f" INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
            f" SELECT {pos} + x.i - 1, x.id, $1, x.i, x.type, x.payload"
            " FROM b, unnest($2::uuid[], $3::text[], $4::bytea[])"
            " WITH ORDINALITY AS x(id, type, payload, i)"
        )
        self.read = (
            "SELECT position, event_id, stream_id, version, event_type, payload, recorded_at"
            f" FROM {s}.events WHERE position > $1 ORDER BY position LIMIT $2"
        )
        # Untimed set-up of the transfer streams.
        self.setup_streams = (
            f"INSERT INTO {s}.streams (stream_id, version) SELECT unnest($1::text[]), $2"
        )
        self.setup_events = (
            f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
            f" SELECT {pos} + x.i - 1, x.id, x.s, x.v, x.t, x.p FROM unnest($1::text[],"
            " $2::bigint[], $3::uuid[], $4::text[], $5::bytea[])"
            " WITH ORDINALITY AS x(s, v, id, t, p, i)"
        )
        self.lock = f"SELECT version FROM {s}.streams WHERE stream_id = $1 FOR UPDATE"
        self.insert_stream = f"INSERT INTO {s}.streams (stream_id, version) VALUES ($1, 0)"
        self.insert_event = (
            f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
            f" VALUES ({pos}, $2, $1, $3, $4, $5)"
        )
        self.bump = f"UPDATE {s}.streams SET version = $2 WHERE stream_id = $1"


async def fresh_schema(dsn: str, schema: str, **options: Any) -> PostgresStore:
    """A migrated eventcore store on a schema emptied first."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    store = PostgresStore(dsn, schema=schema, registry=DC.registry, **options)
    await store.open()
    await store.migrate()
    return store


# ---------------------------------------------------------------------------------------------
# The peer: eventsourcing on PostgreSQL


def peer_env(dsn: str, schema: str) -> dict[str, str]:
    """The eventsourcing environment for ``dsn`` (its ``POSTGRES_*`` settings)."""
    url = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(CLIENTS),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_SCHEMA": schema,
        "CREATE_TABLE": "yes",
    }


class Peer:
    """An eventsourcing application on PostgreSQL with pre-made accounts."""

    def __init__(self, dsn: str, schema: str, sz: PgSizes, run: Callable[[Any], Any]) -> None:
        b = baseline()
        run(_recreate_schema(dsn, schema))
        self.b = b
        self.app = b.EsBank(env=peer_env(dsn, schema))
        self.threads = ThreadPoolExecutor(CLIENTS, thread_name_prefix="peer")
        n = sz.peer_accounts
        accounts = [b.EsAccount(OWNER) for _ in range(n)]
        for start in range(0, n, 500):
            self.app.save(*accounts[start : start + 500])
        self.accounts = [a.id for a in accounts]
        pairs = []
        for _ in range(CLIENTS * sz.pairs_per_client):
            x, y = b.EsAccount(OWNER), b.EsAccount(OWNER)
            x.deposit(DEPOSIT * 1000)
            y.deposit(DEPOSIT * 1000)
            pairs.append((x, y))
        flat = [a for p in pairs for a in p]
        for start in range(0, len(flat), 500):
            self.app.save(*flat[start : start + 500])
        self.pairs = [(x.id, y.id) for x, y in pairs]
        self.per_client = sz.pairs_per_client

    def command(self, k: int, i: int, clients: int) -> None:
        """Get an account, deposit, save (the account of client ``k``'s ``i``-th command)."""
        ids = self.accounts
        per = len(ids) // clients
        acc = self.app.repository.get(ids[k * per + i % per])
        acc.deposit(DEPOSIT)
        self.app.save(acc)

    def transfer(self, k: int, i: int) -> None:
        """Get two accounts, withdraw from one, deposit to the other, save both atomically."""
        a, b_ = self.pairs[k * self.per_client + i % self.per_client]
        get = self.app.repository.get
        src, dst = get(a), get(b_)
        src.withdraw(DEPOSIT // 2)
        dst.deposit(DEPOSIT // 2)
        self.app.save(src, dst)

    def close(self) -> None:
        self.threads.shutdown()
        self.app.close()


class StalledSessions:
    """Idle-in-transaction sessions holding a transaction id for a whole workload.

    One in ANOTHER database of the cluster (the ``postgres`` maintenance database) and
    one in the SAME database that wrote an unrelated (temporary) table: the
    ``postgres.projection.lag_p99_ms.stalled`` workload runs the live-lag workload while
    both are open. Neither ever touches the events table.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[asyncpg.Connection] = []

    async def __aenter__(self) -> StalledSessions:
        other_db = urlsplit(self.dsn)._replace(path="/postgres").geturl()
        other = await asyncpg.connect(other_db)
        self.conns.append(other)
        await other.execute("BEGIN; SELECT pg_current_xact_id()")
        same = await asyncpg.connect(self.dsn)
        self.conns.append(same)
        await same.execute(
            "BEGIN; CREATE TEMP TABLE stalled (x int); INSERT INTO stalled VALUES (1)"
        )
        for conn in self.conns:
            assert await conn.fetchval("SELECT pg_current_xact_id_if_assigned()") is not None
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.conns:
            await conn.close()  # rolls the idle transactions back
        self.conns.clear()


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _recreate_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# The workloads


class PgBench:
    """Every PostgreSQL workload; ``once`` functions are sync (they drive one event loop)."""

    def __init__(self, dsn: str, sz: PgSizes) -> None:
        self.dsn = dsn
        self.sz = sz
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.run = self.loop.run_until_complete
        tag = os.getpid()
        self.ec: PostgresStore = self.run(
            fresh_schema(dsn, f"bench_ec_{tag}", min_size=CLIENTS, max_size=CLIENTS)
        )
        raw_store = self.run(fresh_schema(dsn, f"bench_raw_{tag}"))
        self.raw_schema = raw_store.schema
        self.run(raw_store.close())
        self.sql = RawSql(self.raw_schema)
        # One connection per raw client, owned for the whole run: no pool between the
        # client and its statements (asyncpg.Pool costs more per statement than a cheap
        # statement itself; eventcore's store keeps a leaner pool of its own).
        self.conns: list[asyncpg.Connection] = [
            self.run(asyncpg.connect(dsn)) for _ in range(CLIENTS)
        ]
        self.peer: Peer | None = None
        self.sync: SyncPostgresStore | None = None  # made by ec_command_sync
        self.peer_schema = f"bench_peer_{tag}"
        self._rep = 0
        opened = DC.registry.encode(DC.AccountOpened(OWNER))
        self.opened_type, self.opened_payload = opened
        self.withdrawn = DC.registry.encode(DC.Withdrawn(DEPOSIT // 2))
        self.deposited = DC.registry.encode(DC.Deposited(DEPOSIT // 2))

    def start_peer(self) -> None:
        """Create the peer application and its accounts (untimed)."""
        self.peer = Peer(self.dsn, self.peer_schema, self.sz, self.run)

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        if self.sync is not None:
            self.sync.close()
        self.run(self.ec.close())
        for c in self.conns:
            self.run(c.close())
        conn = self.run(asyncpg.connect(self.dsn))
        for schema in (self.ec.schema, self.raw_schema, self.peer_schema):
            self.run(conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.run(conn.close())
        self.loop.close()

    def _tag(self) -> int:
        self._rep += 1
        return self._rep

    # -- single-stream command (cold: a fresh stream, one event) ------------------------

    def ec_command(self, clients: int) -> Once:
        store, open_account = self.ec, DC.OpenAccount

        def once() -> float:
            r = self._tag()

            async def step(k: int, i: int) -> None:
                await execute(store, open_account(account=f"c{r}-{k}-{i}", owner=OWNER))

            return self.run(run_clients(clients, self.sz.seconds, step))

        return once

    def ec_command_sync(self) -> Once:
        """The cold command from synchronous code: ``execute_sync`` on a
        :class:`SyncPostgresStore` over the same schema, one client in the calling thread
        (its lane: the thread's own event loop and connection, no thread hop)."""
        if self.sync is None:
            self.sync = SyncPostgresStore.connect(
                self.dsn, schema=self.ec.schema, registry=DC.registry, min_size=1, max_size=2
            )
        store, open_account = self.sync, DC.OpenAccount

        def once() -> float:
            r = self._tag()
            started = _perf()
            deadline = started + self.sz.seconds
            i = 0
            while _perf() < deadline:
                execute_sync(store, open_account(account=f"s{r}-{i}", owner=OWNER))
                i += 1
            return i / (_perf() - started)

        return once

    def ec_command_warm(self, clients: int, events: int = 100) -> Once:
        """Deposit into the client's own account, whose stream holds ``events`` events
        before the run; the store's state cache is warm after the first command (the
        warm-up repetition), so each command is ``handle`` plus one append."""
        store, deposit = self.ec, DC.Deposit
        accounts = [f"warm{events}-c{clients}-{k}" for k in range(clients)]
        enc = DC.registry.encode
        for a in accounts:
            history = [NewEvent(a, *enc(DC.AccountOpened(OWNER)))]
            history += [NewEvent(a, *enc(DC.Deposited(1))) for _ in range(events - 1)]
            self.run(store.append(history))

        def once() -> float:
            async def step(k: int, i: int) -> None:
                await execute(store, deposit(account=accounts[k], amount=1))

            return self.run(run_clients(clients, self.sz.seconds, step))

        return once

    def raw_command(self, clients: int, *, read: bool = True) -> Once:
        """The fold read then the conditional write; ``read=False``: the write alone.

        Without the read it is one round trip with the expected version known beforehand,
        which is what a warm eventcore command does (its state is cached).
        """
        conns, sql = self.conns, self.sql
        etype, payload = self.opened_type, self.opened_payload

        def once() -> float:
            r = self._tag()

            async def step(k: int, i: int) -> None:
                sid = f"c{r}-{k}-{i}" if read else f"w{r}-{k}-{i}"
                conn = conns[k]
                version = len(await conn.fetch(sql.fold, [sid])) if read else 0
                done = await conn.execute(sql.write1, sid, version, uuid.uuid4(), etype, payload)
                if done != "INSERT 0 1":
                    raise RuntimeError(f"raw command conflict on {sid}")

            return self.run(run_clients(clients, self.sz.seconds, step))

        return once

    def raw_command_locked(self) -> Once:
        conns, sql = self.conns, self.sql
        etype, payload = self.opened_type, self.opened_payload

        def once() -> float:
            r = self._tag()

            async def step(k: int, i: int) -> None:
                sid = f"l{r}-{k}-{i}"
                conn = conns[k]
                # Six round trips, ONE commit (one WAL flush) like the optimistic form.
                async with conn.transaction():
                    await conn.execute(sql.insert_stream, sid)  # the stream row to lock
                    version = await conn.fetchval(sql.lock, sid)
                    await conn.execute(
                        sql.insert_event, sid, uuid.uuid4(), version + 1, etype, payload
                    )
                    await conn.execute(sql.bump, sid, version + 1)

            return self.run(run_clients(1, self.sz.seconds, step))

        return once

    def peer_command(self, clients: int) -> Once:
        assert self.peer is not None
        peer = self.peer

        def once() -> float:
            return run_threads(
                peer.threads, clients, self.sz.seconds, lambda k, i: peer.command(k, i, clients)
            )

        return once

    # -- two-stream transfer ----------------------------------------------------------

    def _pairs(self, prefix: str) -> list[tuple[str, str]]:
        n = CLIENTS * self.sz.pairs_per_client
        return [(f"{prefix}-{j}-a", f"{prefix}-{j}-b") for j in range(n)]

    def ec_transfer(self) -> Once:
        store, transfer = self.ec, DC.Transfer
        pairs = self._pairs("t")
        opened, deposited = self.opened_type, DC.registry.encode(DC.Deposited(DEPOSIT * 1000))
        events = [
            NewEvent(s, *e)
            for p in pairs
            for s in p
            for e in ((opened, self.opened_payload), deposited)
        ]
        for start in range(0, len(events), 2000):
            self.run(store.append(events[start : start + 2000]))
        per = self.sz.pairs_per_client

        def once() -> float:
            async def step(k: int, i: int) -> None:
                a, b = pairs[k * per + i % per]
                await execute(store, transfer(source=a, target=b, amount=DEPOSIT // 2))

            return self.run(run_clients(CLIENTS, self.sz.seconds, step))

        return once

    def raw_transfer(self) -> Once:
        conns, sql = self.conns, self.sql
        pairs = self._pairs("t")
        dep_type, dep_payload = DC.registry.encode(DC.Deposited(DEPOSIT * 1000))

        streams = [s for p in pairs for s in p]
        self.run(conns[0].execute(sql.setup_streams, streams, 2))
        self.run(
            conns[0].execute(
                sql.setup_events,
                [s for s in streams for _ in (1, 2)],
                [v for _ in streams for v in (1, 2)],
                [uuid.uuid4() for _ in range(2 * len(streams))],
                [t for _ in streams for t in (self.opened_type, dep_type)],
                [p for _ in streams for p in (self.opened_payload, dep_payload)],
            )
        )
        per = self.sz.pairs_per_client
        wt, wp = self.withdrawn
        dt, dp = self.deposited

        def once() -> float:
            async def step(k: int, i: int) -> None:
                a, b = pairs[k * per + i % per]
                conn = conns[k]
                rows = await conn.fetch(sql.fold, [a, b])
                va = sum(1 for r in rows if r[0] == a)
                done = await conn.execute(
                    sql.write_n,
                    [a, b],
                    [va, len(rows) - va],
                    [uuid.uuid4(), uuid.uuid4()],
                    [wt, dt],
                    [wp, dp],
                )
                if done != "INSERT 0 2":
                    raise RuntimeError(f"raw transfer failed on {a}, {b}: {done}")

            return self.run(run_clients(CLIENTS, self.sz.seconds, step))

        return once

    def peer_transfer(self) -> Once:
        assert self.peer is not None
        peer = self.peer

        def once() -> float:
            return run_threads(peer.threads, CLIENTS, self.sz.seconds, peer.transfer)

        return once

    # -- batch append of 1000 events into one stream ----------------------------------

    def _batch_events(self) -> list[tuple[str, bytes]]:
        enc = DC.registry.encode
        return [enc(DC.Deposited(i + 1)) for i in range(1000)]

    def ec_batch(self) -> Once:
        store, events = self.ec, self._batch_events()

        def once() -> float:
            r = self._tag()
            batches = [
                [NewEvent(f"b{r}-{j}", t, p) for t, p in events] for j in range(self.sz.batches)
            ]

            async def body() -> float:
                started = _perf()
                for batch in batches:
                    await store.append(batch)
                return 1000 * len(batches) / (_perf() - started)

            return self.run(body())

        return once

    def raw_batch(self) -> Once:
        conn, sql = self.conns[0], self.sql
        types = [t for t, _ in self._batch_events()]
        payloads = [p for _, p in self._batch_events()]

        def once() -> float:
            r = self._tag()

            async def body() -> float:
                started = _perf()
                for j in range(self.sz.batches):
                    ids = [uuid.uuid4() for _ in range(1000)]
                    await conn.execute(sql.batch, f"b{r}-{j}", ids, types, payloads)
                return 1000 * self.sz.batches / (_perf() - started)

            return self.run(body())

        return once

    # -- the first command on a 10,000-event stream after a restart ---------------------

    def fill_long_streams(self, streams: int, events: int = 10_000) -> tuple[str, list[str]]:
        """A fresh schema of ``streams`` streams of ``events`` events, each with a durable
        snapshot (written by one Deposit per stream, as a running application would)."""
        store = self.run(fresh_schema(self.dsn, f"bench_first_{os.getpid()}", max_size=2))
        ids = [f"long-{i}" for i in range(streams)]
        enc = DC.registry.encode
        history = [enc(DC.AccountOpened(OWNER))] + [enc(DC.Deposited(DEPOSIT))] * (events - 1)

        async def fill() -> None:
            for sid in ids:
                await store.append([NewEvent(sid, name, payload) for name, payload in history])
            for sid in ids:
                await execute(store, DC.Deposit(account=sid, amount=DEPOSIT))
            await store.close()  # the background snapshot writes end here

        self.run(fill())
        return store.schema, ids

    def ec_first(self, schema: str, ids: list[str], snapshots: bool) -> Once:
        """One Deposit per long stream on a NEW store object (an empty state cache, as
        after a restart), with or without reading durable snapshots; opening is untimed."""

        async def body() -> float:
            store = PostgresStore(
                self.dsn, schema=schema, registry=DC.registry, snapshots=snapshots, max_size=1
            )
            await store.open()
            try:
                started = _perf()
                for sid in ids:
                    await execute(store, DC.Deposit(account=sid, amount=DEPOSIT))
                elapsed = _perf() - started
                if snapshots:  # each first command started from its snapshot
                    assert store.snapshots is not None and store.snapshots.found == len(ids)
            finally:
                await store.close()
            return len(ids) / elapsed

        return lambda: self.run(body())

    def drop_schema(self, schema: str) -> None:
        """Drop a schema a workload filled (untimed)."""
        conn = self.run(asyncpg.connect(self.dsn))
        self.run(conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.run(conn.close())

    # -- reading the global log ---------------------------------------------------------

    def fill_read_log(self) -> tuple[PostgresStore, str]:
        """A fresh eventcore schema holding ``read_events`` events (1000 streams, mixed types)."""
        store = self.run(fresh_schema(self.dsn, f"bench_read_{os.getpid()}", max_size=4))
        enc = DC.registry.encode
        kinds = [enc(DC.Deposited(7)), enc(DC.Withdrawn(3)), enc(DC.AccountOpened(OWNER))]

        async def fill() -> None:
            n = self.sz.read_events
            for start in range(0, n, 5000):
                await store.append(
                    [
                        NewEvent(f"r-{(start + i) % 1000}", *kinds[i % 3])
                        for i in range(min(5000, n - start))
                    ]
                )

        self.run(fill())
        return store, store.schema

    def ec_read(self, store: PostgresStore) -> Once:
        async def body() -> float:
            started = _perf()
            n, cursor = 0, 0
            while True:
                page = await store.read_all(after_position=cursor, limit=1000)
                for e in page:
                    e.data  # noqa: B018
                n += len(page)
                if len(page) < 1000:
                    break
                cursor = page[-1].position
            assert n == self.sz.read_events, n
            return n / (_perf() - started)

        return lambda: self.run(body())

    def raw_read(self, schema: str) -> Once:
        conn, read = self.conns[0], RawSql(schema).read
        decoders = DC.registry.decoders

        async def body() -> float:
            started = _perf()
            n, cursor = 0, 0
            while True:
                rows = await conn.fetch(read, cursor, 1000)
                for r in rows:
                    decoders[r[4]](r[5])
                n += len(rows)
                if len(rows) < 1000:
                    break
                cursor = rows[-1][0]
            assert n == self.sz.read_events, n
            return n / (_perf() - started)

        return lambda: self.run(body())


# ---------------------------------------------------------------------------------------------
# What finding the horizon costs (migration 0003): run as
#   python -m benches.pg_workloads [--dsn DSN] [--seconds S]

# The reads before migration 0003, bounded by the cluster-wide xmin (for comparison only).
_XMIN_BOUND = f"(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {POSITION_SHIFT})"
_XMIN_HEAD = "SELECT coalesce(max(position), 0) FROM {s}.events WHERE position < " + _XMIN_BOUND
_XMIN_PAGE = (
    "SELECT * FROM (SELECT position, uuid_send(event_id), stream_id, version, event_type,"
    " payload, recorded_at, NULL::text FROM {s}.events WHERE position > $1"
    " ORDER BY position LIMIT $2) page WHERE position < " + _XMIN_BOUND + " ORDER BY position"
)


async def horizon_cost(dsn: str, seconds: float = 3.0, writers: int = CLIENTS) -> dict[str, float]:
    """Head calls/s and read_all pages/s (a tailing reader) with ``writers`` appending.

    Each phase runs ``seconds``: the store's horizon-bounded reads (``head``, ``read_all``)
    and, for reference, the same reads bounded by ``pg_snapshot_xmin`` as before migration
    0003; phases alternate twice. Appends/s during each phase too (the lock-table scan
    shares the lock manager with the writers' transaction-id locks).
    """
    store = await fresh_schema(dsn, f"bench_horizon_{os.getpid()}", max_size=writers + 2)
    s = f'"{store.schema}"'
    conn = await asyncpg.connect(dsn)
    out: dict[str, list[float]] = {}
    try:
        await store.append([NewEvent(f"seed-{i}", "t", b"x") for i in range(1000)])
        stop = asyncio.Event()
        appended = 0

        async def writer(k: int) -> None:
            nonlocal appended
            i = 0
            while not stop.is_set():
                await store.append([NewEvent(f"w-{k}-{i % 50}", "t", b"x")])
                appended += 1
                i += 1

        async def phase(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            nonlocal appended
            appended, calls = 0, 0
            started = _perf()
            while _perf() - started < seconds:
                await call()
                calls += 1
            elapsed = _perf() - started
            out.setdefault(f"{name}/s", []).append(calls / elapsed)
            out.setdefault(f"appends/s during {name}", []).append(appended / elapsed)

        def tail(read: Callable[[int], Awaitable[list[Any]]]) -> Callable[[], Awaitable[None]]:
            """A reader tailing the log: pages of up to 1000 from its own cursor."""
            cursor = 0

            async def step() -> None:
                nonlocal cursor
                if cursor == 0:
                    cursor = max(0, int(await store.latest_position()) - 100 * POSITION_SHIFT)
                page = await read(cursor)
                if page:
                    cursor = page[-1][0]

            return step

        tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
        try:
            await asyncio.sleep(0.5)
            for _ in range(2):
                await phase("head (horizon)", store.head)
                await phase("head (xmin, before)", lambda: conn.fetchval(_XMIN_HEAD.format(s=s)))
                await phase(
                    "read_all tail (horizon)",
                    tail(lambda a: store._fetch(store._q.read_all, a, 1000, None, None)),
                )
                await phase(
                    "read_all tail (xmin, before)",
                    tail(lambda a: conn.fetch(_XMIN_PAGE.format(s=s), a, 1000)),
                )
                await phase("no reader", lambda: asyncio.sleep(0.05))
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await conn.close()
        await store.close()
        await drop_schema(dsn, store.schema)
    return {k: round(statistics.fmean(v), 1) for k, v in out.items()}


def cpu_per_command(dsn: str, blocks: int, block: int) -> list[dict[str, Any]]:
    """Per one-event write at one client, figures that do not depend on the disk: client
    CPU (this process), server CPU (every client backend's, from /proc: the server must
    run on this machine), statements sent (asyncpg executions, this process) and WAL
    bytes written (the server's insert position). The sides run ``blocks`` times
    ``block`` writes each, their blocks alternating so that machine noise hits them
    alike:

    - ``eventcore warm``: ``postgres.command.warm100``'s command (a deposit into a
      100-event account, the state cache warm);
    - ``eventcore append``: ``PostgresStore.append`` of one event at an expected version
      (the store alone, without the executor);
    - ``eventcore statement``: the store's one-event direct statement on a bare
      connection (the server's share of the append, and the driver's);
    - ``raw onetrip``: ``raw.asyncpg.command.onetrip``'s statement (a new stream each);
    - ``raw onetrip, existing stream``: the same write as an ``UPDATE`` of an existing
      stream's version (what a warm command writes), no locks.
    """
    from asyncpg.connection import Connection

    bench = PgBench(dsn, PG_QUICK)
    store, run, enc = bench.ec, bench.run, DC.registry.encode
    conn, sql = bench.conns[0], bench.sql
    account = "cpu-warm"
    history = [NewEvent(account, *enc(DC.AccountOpened(OWNER)))]
    run(store.append(history + [NewEvent(account, *enc(DC.Deposited(1))) for _ in range(99)]))
    deposit_type, deposit_payload = enc(DC.Deposited(1))
    s = f'"{bench.raw_schema}"'
    update = (
        f"WITH b AS (UPDATE {s}.streams t SET version = t.version + 1"
        " WHERE t.stream_id = $1 AND t.version = $2 RETURNING t.version)"
        f" INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload)"
        f" SELECT pg_current_xact_id()::text::bigint * {POSITION_SHIFT}, $3, $1, b.version,"
        " $4, $5 FROM b"
    )
    direct = store._q.append_direct[True, True]
    at = {"store": 0, "direct": 0, "raw": 0, "update": 0}

    async def warm() -> None:
        for _ in range(block):
            await execute(store, DC.Deposit(account=account, amount=1))

    async def append() -> None:
        version = (await store.read_fold([account]))[1][0]
        for _ in range(block):
            await store.append(
                [NewEvent(account, deposit_type, deposit_payload)], expected={account: version}
            )
            version += 1

    async def statement() -> None:
        version = at["direct"]
        first = direct if version else store._q.append_direct[True, False]
        for i in range(block):
            row = await conn.fetchrow(
                first if i == 0 else direct,
                "cpu-direct",
                version,
                uuid.uuid4(),
                deposit_type,
                deposit_payload,
                None,
                None,
                None,
                None,
            )
            version = row[1]
        at["direct"] = version

    async def onetrip() -> None:
        at["raw"] += 1
        for i in range(block):
            sid = f"cpu-w{at['raw']}-{i}"
            await conn.execute(sql.write1, sid, 0, uuid.uuid4(), *enc(DC.AccountOpened(OWNER)))

    async def existing() -> None:
        if not at["update"]:
            await conn.execute(f"INSERT INTO {s}.streams VALUES ('cpu-update', 0)")
        for _ in range(block):
            await conn.execute(
                update, "cpu-update", at["update"], uuid.uuid4(), deposit_type, deposit_payload
            )
            at["update"] += 1

    sides = {
        "eventcore warm": warm,
        "eventcore append": append,
        "eventcore statement": statement,
        "raw onetrip": onetrip,
        "raw onetrip, existing stream": existing,
    }
    admin = run(asyncpg.connect(dsn))
    sent = [0]
    counted = Connection._do_execute

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return await counted(self, *args, **kwargs)

    try:
        for side in sides.values():
            run(side())  # warm: plans, caches, the account's cached state
        pids = [r[0] for r in run(admin.fetch(CLIENT_BACKENDS))]
        lsn = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
        sums = {name: [0.0] * 5 for name in sides}
        Connection._do_execute = counting  # type: ignore[method-assign]
        for _ in range(blocks):
            for name, side in sides.items():
                w0 = run(admin.fetchval(lsn))
                sent[0] = 0
                c0, s0, t0 = time.process_time(), backends_cpu(pids), _perf()
                run(side())
                c1, s1, t1 = time.process_time(), backends_cpu(pids), _perf()
                acc = sums[name]
                acc[0] += t1 - t0
                acc[1] += c1 - c0
                acc[2] += s1 - s0
                acc[3] += sent[0]
                acc[4] += float(run(admin.fetchval(lsn)) - w0)
    finally:
        Connection._do_execute = counted  # type: ignore[method-assign]
        run(admin.close())
        bench.close()
    n = blocks * block
    return [
        {
            "side": name,
            "per_s": round(n / wall, 1),
            "client_cpu_us": round(1e6 * client / n, 1),
            "server_cpu_us": round(1e6 * server / n, 1),
            "statements": round(statements / n, 3),
            "wal_bytes": round(wal / n, 1),
        }
        for name, (wall, client, server, statements, wal) in sums.items()
    ]


if __name__ == "__main__":
    import argparse
    import json

    from benches.headline import start_server

    parser = argparse.ArgumentParser(
        description="What finding the log's horizon costs (default), or (--cpu) what one"
        " write costs per side at one client in CPU, statements and WAL."
    )
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: start a throwaway server)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu", action="store_true", help="cpu_per_command instead")
    parser.add_argument("--blocks", type=int, default=30, help="with --cpu: blocks per side")
    parser.add_argument("--block", type=int, default=200, help="with --cpu: writes per block")
    args = parser.parse_args()
    found, server = start_server(args.dsn)
    assert found is not None, "no PostgreSQL server binaries found; use --dsn"
    try:
        if args.cpu:
            for row in cpu_per_command(found, args.blocks, args.block):
                print(json.dumps(row))
        else:
            print(json.dumps(asyncio.run(horizon_cost(found, args.seconds)), indent=2))
    finally:
        if server is not None:
            server.shutdown()
