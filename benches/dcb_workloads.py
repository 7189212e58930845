"""The ``dcb.*`` workloads: query reads and conditional appends against eventsourcing's DCB
recorders (``eventsourcing.dcb``: ``InMemoryDCBRecorder``, ``PostgresDCBRecorderTT``).

The decision on both sides is the DCB specification's unique user name, at the store
level: read the events of type ``Registered`` tagged ``username:<name>`` (none: each
operation picks a fresh name), decide, append one tagged event under the condition "no
such event after the position read". Both logs hold ``prefill`` tagged events first.
Clients on PostgreSQL: eventcore as asyncio tasks on one pool; the peer as threads on
its psycopg pool (its fastest honest way, as in benches/pg_workloads.py).

The query read: a log of ``log_events`` events over ``log_tags`` tags and as many event
types; one read returns the events of one tag, or of one type (a query item with types
only), ``log_events / log_tags`` of them; reads/s. On PostgreSQL the type read is also
measured with the type index dropped (the read of schema 8: the log after the position).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from eventcore import MemoryStore, NewEvent
from eventcore.postgres import PostgresStore
from eventcore.query import AppendCondition, Query

_perf = time.perf_counter
Once = Callable[[], float]
PAYLOAD = b'{"user":"u","name":"n"}'


@dataclass(frozen=True)
class DcbSizes:
    """How long and how big."""

    seconds: float
    reps: int
    warmup: int
    prefill: int
    log_events: int
    log_tags: int


DCB_QUICK = DcbSizes(
    seconds=1.0, reps=3, warmup=1, prefill=2_000, log_events=100_000, log_tags=1_000
)
DCB_FULL = DcbSizes(
    seconds=3.0, reps=5, warmup=1, prefill=10_000, log_events=1_000_000, log_tags=10_000
)


def _prefill_events(n: int) -> list[NewEvent]:
    return [
        NewEvent(f"user-p{i}", "Registered", PAYLOAD, None, (f"username:p{i}",)) for i in range(n)
    ]


def timed(seconds: float, op: Callable[[int], None]) -> float:
    """Call ``op(i)`` until ``seconds`` pass; ops/s."""
    started = _perf()
    deadline = started + seconds
    i = 0
    while _perf() < deadline:
        op(i)
        i += 1
    return i / (_perf() - started)


# -- in memory --------------------------------------------------------------------------


def memory_sides(sz: DcbSizes) -> tuple[Once, Once]:
    """(eventcore, peer) one repetition each of the conditional append in memory."""
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
    from eventsourcing.dcb.popo import InMemoryDCBRecorder

    store = MemoryStore()
    for start in range(0, sz.prefill, 1000):
        store.append(_prefill_events(sz.prefill)[start : start + 1000])
    peer = InMemoryDCBRecorder()
    peer.append([DCBEvent("Registered", PAYLOAD, [f"username:p{i}"]) for i in range(sz.prefill)])
    rep = [0]

    def ours() -> float:
        rep[0] += 1
        r = rep[0]

        def op(i: int) -> None:
            name = f"username:{r}-{i}"
            query = Query.of(["Registered"], [name])
            found = store.read_query(query)
            if not found.events:
                store.append(
                    [NewEvent("users", "Registered", PAYLOAD, None, (name,))],
                    condition=AppendCondition(query, found.position),
                )

        return timed(sz.seconds, op)

    def theirs() -> float:
        rep[0] += 1
        r = rep[0]

        def op(i: int) -> None:
            name = f"username:{r}-{i}"
            query = DCBQuery([DCBQueryItem(["Registered"], [name])])
            found = peer.read(query)
            events = list(found)
            if not events:
                peer.append(
                    [DCBEvent("Registered", PAYLOAD, [name])],
                    DCBAppendCondition(query, found.head),
                )

        return timed(sz.seconds, op)

    return ours, theirs


def _log_events(sz: DcbSizes, start: int, stop: int) -> list[NewEvent]:
    """Events ``start..stop`` of the query-read log: tag and type cycle over ``log_tags``."""
    return [
        NewEvent(f"s-{i % 1000}", f"T{i % sz.log_tags}", b"x", None, (f"key:{i % sz.log_tags}",))
        for i in range(start, stop)
    ]


def memory_query_read(sz: DcbSizes) -> tuple[Once, Once, int]:
    """One repetition of the query read by tag, and by type, on a log of ``log_events`` in
    memory; the log size."""
    store = MemoryStore()
    batch = 10_000
    for start in range(0, sz.log_events, batch):
        store.append(_log_events(sz, start, min(start + batch, sz.log_events)))

    def by_tag() -> float:
        return timed(
            sz.seconds, lambda i: store.read_query(Query.of(tags=[f"key:{i % sz.log_tags}"]))
        )

    def by_type() -> float:
        return timed(sz.seconds, lambda i: store.read_query(Query.of([f"T{i % sz.log_tags}"])))

    return by_tag, by_type, len(store)


# -- PostgreSQL -------------------------------------------------------------------------


class PgDcb:
    """eventcore and the peer's DCB recorder on one server, each on a schema of its own."""

    def __init__(self, dsn: str, sz: DcbSizes, clients: int = 16) -> None:
        self.dsn, self.sz, self.clients = dsn, sz, clients
        self.loop = asyncio.new_event_loop()
        self.run = self.loop.run_until_complete
        tag = uuid.uuid4().hex[:8]
        self.schema, self.peer_schema, self.log_schema = (
            f"bench_dcb_{tag}",
            f"bench_dcb_peer_{tag}",
            f"bench_dcb_log_{tag}",
        )
        self.store: PostgresStore = self.run(self._fresh(self.schema, clients))
        for start in range(0, sz.prefill, 1000):
            self.run(self.store.append(_prefill_events(sz.prefill)[start : start + 1000]))
        self.threads = ThreadPoolExecutor(clients, thread_name_prefix="dcb-peer")
        self.peer, self.datastore = self._peer()
        self._rep = 0
        self._log_store: PostgresStore | None = None
        self._invoice_store: PostgresStore | None = None
        self._floor_pool: asyncpg.Pool | None = None

    async def _fresh(self, schema: str, size: int) -> PostgresStore:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
        store = PostgresStore(self.dsn, schema=schema, min_size=size, max_size=size)
        await store.open()
        await store.migrate()
        return store

    def _peer(self) -> tuple[Any, Any]:
        from eventsourcing.dcb.api import DCBEvent
        from eventsourcing.dcb.postgres_tt import PostgresDCBRecorderTT
        from eventsourcing.postgres import PostgresDatastore

        url = urlsplit(self.dsn)

        # Its tags table REFERENCES the events table unqualified: it must live on the
        # search path, so in "public", under table names of this run's own.
        datastore = PostgresDatastore(
            dbname=url.path.lstrip("/"),
            host=url.hostname or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or "",
            pool_size=self.clients,
        )
        recorder = PostgresDCBRecorderTT(datastore, events_table_name=self.peer_schema)
        recorder.create_table()
        events = [
            DCBEvent("Registered", PAYLOAD, [f"username:p{i}"]) for i in range(self.sz.prefill)
        ]
        for start in range(0, len(events), 1000):
            recorder.append(events[start : start + 1000])
        return recorder, datastore

    def close(self) -> None:
        self.threads.shutdown()
        self.datastore.close()
        self.run(self.store.close())
        if self._floor_pool is not None:
            self.run(self._floor_pool.close())
        if self._log_store is not None:
            self.run(self._log_store.close())
        if self._invoice_store is not None:
            self.run(self._invoice_store.close())

        async def drop() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                for s in (self.schema, self.log_schema):
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
                for t in ("tt_tag", "tt_main"):
                    await conn.execute(f'DROP TABLE IF EXISTS public."{self.peer_schema}_{t}"')
            finally:
                await conn.close()

        self.run(drop())
        self.loop.close()

    def ours(self, clients: int, *, streams: int = 1, items: int = 1, tags: int = 1) -> Once:
        """eventcore's decision at ``clients``; ``streams`` > 1: the append writes one
        event into each of that many streams, all tagged with the name (a tagged append
        into several streams); ``items`` > 1: the query has that many items (the name,
        then ``<name>:<j>``); ``tags`` > 1: its first item that many tags (the name, then
        ``<name>/<j>``, which the event carries too). Diagnostics, not headline keys."""
        store = self.store

        def once() -> float:
            self._rep += 1
            r = self._rep
            counts = [0] * clients

            async def client(k: int, deadline: float) -> None:
                i = 0
                while _perf() < deadline:
                    name = f"username:{r}-{k}-{i}"
                    kinds = tuple(f"{name}/{j}" for j in range(1, tags))
                    query = Query.of(["Registered"], [name, *kinds])
                    for j in range(1, items):
                        query = query | Query.of(["Registered"], [f"{name}:{j}"])
                    found = await store.read_query(query)
                    if not found.events:
                        await store.append(
                            [
                                NewEvent(
                                    f"user-{r}-{k}-{i}", "Registered", PAYLOAD, None, (name, *kinds)
                                )
                            ]
                            + [
                                NewEvent(f"name{j}-{r}-{k}-{i}", "Claimed", PAYLOAD, None, (name,))
                                for j in range(1, streams)
                            ],
                            condition=AppendCondition(query, found.position),
                        )
                    i += 1
                counts[k] = i

            async def main() -> float:
                started = _perf()
                await asyncio.gather(
                    *(client(k, started + self.sz.seconds) for k in range(clients))
                )
                return sum(counts) / (_perf() - started)

            return self.run(main())

        return once

    def invoices(self) -> Once:
        """Gapless invoice numbers at one client: ``execute`` of the example's
        ``CreateInvoice`` (a query command whose cached state, the last number, is decided
        on without a read: one conditional append per command once warm)."""
        from eventcore import execute
        from eventcore.examples.dcb import CreateInvoice, registry

        if self._invoice_store is None:
            self._invoice_store = self.run(self._fresh(self.schema, 1))
            self._invoice_store.registry = registry
        store = self._invoice_store

        async def main() -> float:
            n, started = 0, _perf()
            deadline = started + self.sz.seconds
            while _perf() < deadline:
                await execute(store, CreateInvoice(customer="c"))
                n += 1
            return n / (_perf() - started)

        return lambda: self.run(main())

    def floor(self, clients: int) -> Once:
        """The floor of any durable read-decide-append: per decision one indexed SELECT
        and one single-row INSERT committed on its own (one WAL flush), raw asyncpg on
        the same pool size; no locks, no condition."""
        table = f'"{self.schema}".floor_decisions'

        async def main() -> float:
            # The pool outlives a repetition (its backends' CPU can be read: cpu_per_decision).
            pool = self._floor_pool
            if pool is None or pool.get_max_size() != clients:
                if pool is not None:
                    await pool.close()
                pool = await asyncpg.create_pool(self.dsn, min_size=clients, max_size=clients)
                assert pool is not None
                self._floor_pool = pool
            await pool.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, name text)"
            )
            counts = [0] * clients

            async def client(k: int, deadline: float) -> None:
                i = 0
                while _perf() < deadline:
                    name = f"{k}-{i}"
                    if not await pool.fetchval(
                        f"SELECT count(*) FROM {table} WHERE id = $1", -1 - i
                    ):
                        await pool.execute(f"INSERT INTO {table} (name) VALUES ($1)", name)
                    i += 1
                counts[k] = i

            started = _perf()
            await asyncio.gather(*(client(k, started + self.sz.seconds) for k in range(clients)))
            return sum(counts) / (_perf() - started)

        return lambda: self.run(main())

    def theirs(self, clients: int) -> Once:
        from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem

        peer = self.peer

        def once() -> float:
            self._rep += 1
            r = self._rep
            counts = [0] * clients

            def client(k: int, deadline: float) -> None:
                i = 0
                while _perf() < deadline:
                    name = f"username:{r}-{k}-{i}"
                    query = DCBQuery([DCBQueryItem(["Registered"], [name])])
                    found = peer.read(query)
                    if not list(found):
                        peer.append(
                            [DCBEvent("Registered", PAYLOAD, [name])],
                            DCBAppendCondition(query, found.head),
                        )
                    i += 1
                counts[k] = i

            started = _perf()
            futures = [
                self.threads.submit(client, k, started + self.sz.seconds) for k in range(clients)
            ]
            for f in futures:
                f.result()
            return sum(counts) / (_perf() - started)

        return once

    def query_read(self) -> tuple[Once, Once, Once, int]:
        """The query read by tag, by type, and by type with the type index dropped (each
        call drops it, measures, makes it again), on a log of ``log_events`` (built once,
        untimed); the log size."""
        sz = self.sz
        store: PostgresStore = self.run(self._fresh(self.log_schema, 2))
        batch = 10_000
        for start in range(0, sz.log_events, batch):
            self.run(store.append(_log_events(sz, start, min(start + batch, sz.log_events))))
        schema = f'"{self.log_schema}"'

        async def sql(statement: str) -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        self.run(sql(f"ANALYZE {schema}.events, {schema}.event_tags"))

        def reads(query: Callable[[int], Query]) -> Once:
            def once() -> float:
                async def main() -> float:
                    started = _perf()
                    deadline = started + sz.seconds
                    i = 0
                    while _perf() < deadline:
                        await store.read_query(query(i))
                        i += 1
                    return i / (_perf() - started)

                return self.run(main())

            return once

        by_type = reads(lambda i: Query.of([f"T{i % sz.log_tags}"]))

        def unindexed() -> float:
            self.run(sql(f"DROP INDEX {schema}.events_type_position_idx"))
            try:
                return by_type()
            finally:
                self.run(
                    sql(
                        f"CREATE INDEX events_type_position_idx ON {schema}.events"
                        " (event_type, position)"
                    )
                )

        self._log_store = store
        return (
            reads(lambda i: Query.of(tags=[f"key:{i % sz.log_tags}"])),
            by_type,
            unindexed,
            sz.log_events,
        )


# -- where a decision's time goes (a diagnostic, not a headline key) ---------------------


# The server's client backends other than the asking one (whose CPU the diagnostics sum).
CLIENT_BACKENDS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def backends_cpu(pids: list[int]) -> float:
    """Seconds of CPU the server processes ``pids`` have used (Linux schedstat)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            pass  # gone (or another machine's)
    return total


def cpu_per_decision(dsn: str, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """Per decision at one client, each side in alternating rounds on one server, with
    ``synchronous_commit`` on and off: decisions/s, and the milliseconds of client CPU
    (this process) and of server CPU (every client backend's, from /proc: the server
    must run on this machine; ``ALTER SYSTEM``: the DSN's role must be a superuser).
    The sides: eventcore (a decision's read and append as direct statements, migration
    0018), eventcore through the read_query and append_tagged_stream functions (a role
    that may not write the tables), eventcore through append_events_tagged (the path
    before migration 0017), the peer, the floor; then the same decision appending into two
    streams (``streams2``): as one statement (migration 0019), through the
    append_tagged_streams function, and through append_events_tagged (before 0019); then
    the one-stream decision with a query of two items (``items2``) and of one item with
    two tags (``tags2``)."""
    sz = DcbSizes(seconds=seconds, reps=1, warmup=0, prefill=2_000, log_events=0, log_tags=1)
    bench = PgDcb(dsn, sz, clients=1)
    ours, floor, peer = bench.ours(1), bench.floor(1), bench.theirs(1)

    def general() -> float:
        bench.store._append_tagged_stream = False
        try:
            return ours()
        finally:
            bench.store._append_tagged_stream = True

    def functions() -> float:
        # The paths of a role that may not write the tables: the read_query and
        # append_tagged_stream functions instead of the direct statements (migration 0018).
        bench.store._read_direct = bench.store._tagged_direct = False
        try:
            return ours()
        finally:
            bench.store._read_direct = bench.store._tagged_direct = True

    two = bench.ours(1, streams=2)

    def two_on(direct: bool, function: bool) -> Once:
        def once() -> float:
            store = bench.store
            store._tagged_streams_direct, store._append_tagged_streams = direct, function
            try:
                return two()
            finally:
                store._tagged_streams_direct = store._append_tagged_streams = True

        return once

    sides: list[tuple[str, Once]] = [
        ("eventcore", ours),
        ("eventcore, functions", functions),
        ("eventcore, append_events_tagged", general),
        ("peer", peer),
        ("floor", floor),
        ("streams2, eventcore", two),
        ("streams2, append_tagged_streams", two_on(False, True)),
        ("streams2, append_events_tagged", two_on(False, False)),
        ("items2, eventcore", bench.ours(1, items=2)),
        ("tags2, eventcore", bench.ours(1, tags=2)),
    ]

    async def sql(statement: str) -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(statement))
        finally:
            await conn.close()

    out: list[dict[str, Any]] = []
    try:
        for _, once in sides:
            once()  # warm: plans, pools, caches
        for sync in ("on", "off"):
            bench.run(sql(f"ALTER SYSTEM SET synchronous_commit = {sync}"))
            bench.run(sql("SELECT pg_reload_conf()"))
            sums = {name: [0.0, 0.0, 0.0, 0.0] for name, _ in sides}
            for _ in range(rounds):
                for name, once in sides:
                    pids = [r[0] for r in bench.run(sql(CLIENT_BACKENDS))]
                    c0, s0, w0 = time.process_time(), backends_cpu(pids), _perf()
                    rate = once()
                    c1, s1, w1 = time.process_time(), backends_cpu(pids), _perf()
                    acc = sums[name]
                    acc[0] += rate * (w1 - w0)
                    acc[1] += w1 - w0
                    acc[2] += c1 - c0
                    acc[3] += s1 - s0
            for name, (n, wall, client, server) in sums.items():
                out.append(
                    {
                        "synchronous_commit": sync,
                        "side": name,
                        "decisions_per_s": round(n / wall, 1),
                        "client_cpu_ms": round(1e3 * client / n, 3),
                        "server_cpu_ms": round(1e3 * server / n, 3),
                    }
                )
    finally:
        bench.run(sql("ALTER SYSTEM RESET synchronous_commit"))
        bench.run(sql("SELECT pg_reload_conf()"))
        bench.close()
    return out


def cpu_per_part(dsn: str, blocks: int, block: int) -> list[dict[str, Any]]:
    """What each part of eventcore's PostgreSQL decision costs at one client: per call,
    client CPU (this process) and server CPU (every client backend's, from /proc) of
    the query read alone, the conditional tagged append alone (a fresh name, nothing
    matches), a plain one-event append of the same event without tag or condition (what
    the condition and the tag add), and the whole decision (read, then append). The
    sides run ``blocks`` times ``block`` calls each, their blocks alternating."""
    sz = DcbSizes(seconds=1.0, reps=1, warmup=0, prefill=2_000, log_events=0, log_tags=1)
    bench = PgDcb(dsn, sz, clients=1)
    store, run = bench.store, bench.run
    made = [0]

    def name() -> str:
        made[0] += 1
        return f"parts:{made[0]}"

    async def read() -> None:
        for _ in range(block):
            await store.read_query(Query.of(["Registered"], [name()]))

    async def conditional() -> None:
        for _ in range(block):
            n = name()
            query = Query.of(["Registered"], [n])
            event = NewEvent(f"user-{n}", "Registered", PAYLOAD, None, (n,))
            await store.append([event], condition=AppendCondition(query, 0))

    async def plain() -> None:
        for _ in range(block):
            await store.append([NewEvent(f"user-{name()}", "Registered", PAYLOAD)])

    async def decision() -> None:
        for _ in range(block):
            n = name()
            query = Query.of(["Registered"], [n])
            found = await store.read_query(query)
            event = NewEvent(f"user-{n}", "Registered", PAYLOAD, None, (n,))
            await store.append([event], condition=AppendCondition(query, found.position))

    sides = {
        "read": read,
        "conditional append": conditional,
        "plain append": plain,
        "decision": decision,
    }

    async def pids() -> list[int]:
        conn = await asyncpg.connect(dsn)
        try:
            return [r[0] for r in await conn.fetch(CLIENT_BACKENDS)]
        finally:
            await conn.close()

    sums = {side: [0.0, 0.0, 0.0] for side in sides}
    try:
        for side in sides.values():
            run(side())  # warm: plans, the pool
        backends = run(pids())
        for _ in range(blocks):
            for label, side in sides.items():
                c0, s0, t0 = time.process_time(), backends_cpu(backends), _perf()
                run(side())
                acc = sums[label]
                acc[0] += _perf() - t0
                acc[1] += time.process_time() - c0
                acc[2] += backends_cpu(backends) - s0
    finally:
        bench.close()
    n = blocks * block
    return [
        {
            "part": label,
            "per_s": round(n / wall, 1),
            "client_cpu_us": round(1e6 * client / n, 1),
            "server_cpu_us": round(1e6 * server / n, 1),
        }
        for label, (wall, client, server) in sums.items()
    ]


if __name__ == "__main__":
    import argparse
    import json

    from benches.headline import start_server

    parser = argparse.ArgumentParser(
        description="Where a PostgreSQL DCB decision's time goes: CPU per side at one client."
    )
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: start a throwaway server)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--parts", action="store_true", help="cpu_per_part: the read and the append apart"
    )
    parser.add_argument("--blocks", type=int, default=20, help="with --parts: blocks per part")
    parser.add_argument("--block", type=int, default=100, help="with --parts: calls per block")
    args = parser.parse_args()
    found, server = start_server(args.dsn)
    assert found is not None, "no PostgreSQL server binaries found; use --dsn"
    try:
        rows = (
            cpu_per_part(found, args.blocks, args.block)
            if args.parts
            else cpu_per_decision(found, args.seconds, args.rounds)
        )
        for row in rows:
            print(json.dumps(row))
    finally:
        if server is not None:
            server.shutdown()
