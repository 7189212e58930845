"""Issue 16 §4: the events table partitioned by position range, against one table.

Two stores on one throwaway server, as the migrations make them; the second is turned
into a partitioned one by the store feature (``eventcore.postgres.partition``:
``partition_events`` while empty, ``--span`` transaction ids per partition, created
ahead to cover the fill; ``add_partitions`` once after it, as a maintenance job would).
The fill appends 1000 events per transaction, so a partition holds ``--span`` thousand
events. Stream reads bound positions only on the partitioned store;
``read_stream_pre0012_per_s`` re-reads the one table with the statement as it was before
migration 0012 (the same text as now there: its gap to ``read_stream_per_s`` is the
run's noise).

Figures: append throughput (batches of 1000: the fill; single events, 16 clients),
``read_all`` pages, ``read_stream`` of random streams, and table and index sizes
(tables: the events partitions and, partitioned, the event_ids side table).

    python benches/partitioning.py --events 10000000       # about 20 minutes
    python benches/partitioning.py --events 200000 --quick  # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from eventcore import NewEvent  # noqa: E402
from eventcore.postgres import PostgresStore  # noqa: E402
from eventcore.postgres.partition import add_partitions, partition_events  # noqa: E402

STREAMS = 10_000  # streams written at a time (one generation)
GENERATION = 1_000_000  # events per generation: each stream of it gets 100
LONG = 100  # long-lived streams: one event of every batch, across the whole log
BATCH = 1000


async def make_store(dsn: str, schema: str, partitioned: bool, span: int, ahead: int) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    store = PostgresStore(dsn, schema=schema, max_size=17, statement_timeout=None)
    await store.migrate()
    if partitioned:
        await partition_events(store, span=span, ahead=ahead)
    return store


def stream_of(position: int) -> str:
    """The stream of the fill's ``position``-th event: a stream of its generation (its
    events lie within GENERATION events of the log), or each batch's last one a long-lived
    stream (its events spread over the whole log)."""
    if position % BATCH == BATCH - 1:
        return f"long-{position // BATCH % LONG}"
    return f"s-{position // GENERATION}-{position % STREAMS}"


async def fill(store: Any, events: int) -> float:
    started = time.perf_counter()
    for start in range(0, events, BATCH):
        await store.append(
            [NewEvent(stream_of(start + i), "Deposited", b"x" * 40) for i in range(BATCH)]
        )
    return events / (time.perf_counter() - started)


async def single_appends(store: Any, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * 16

    async def client(k: int) -> None:
        while time.perf_counter() < stop:
            await store.append([NewEvent(f"single-{k}-{counts[k] % 50}", "Deposited", b"x")])
            counts[k] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(16)))
    return sum(counts) / (time.perf_counter() - started)


async def read_pages(store: Any, events: int) -> float:
    # From the middle of the log: pages of 1000, ``events`` events in all.
    head = await store.head()
    rows = await store._fetch(
        f'SELECT position FROM "{store.schema}".events WHERE position <= $1'
        " ORDER BY position DESC LIMIT 1 OFFSET $2",
        head,
        events,
    )
    cursor = rows[0][0] if rows else 0
    started, n = time.perf_counter(), 0
    while n < events:
        page = await store.read_all(after_position=cursor, limit=1000)
        if not page:
            break
        n += len(page)
        cursor = page[-1].position
    return n / (time.perf_counter() - started)


# The stream read as it was before migration 0012 (no position bounds).
PRE_0012_READ_STREAM = (
    "SELECT {cols} FROM {s}.events WHERE stream_id = $1 AND version > $2"
    " AND version > coalesce((SELECT h.hidden_upto FROM {s}.streams h"
    " WHERE h.stream_id = events.stream_id), 0) ORDER BY version LIMIT $3"
)


async def read_streams(store: Any, count: int, events: int, *, long: bool = False) -> float:
    """Whole reads of random streams: of one generation, or (``long``) long-lived ones."""
    rng = random.Random(7)
    started = time.perf_counter()
    for _ in range(count):
        stream = f"long-{rng.randrange(LONG)}" if long else stream_of(rng.randrange(events - BATCH))
        await store.read_stream(stream, limit=1000)
    return count / (time.perf_counter() - started)


async def sizes(dsn: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT coalesce(sum(pg_table_size(c.oid)) FILTER (WHERE c.relkind = 'r'), 0),
                   coalesce(sum(pg_indexes_size(c.oid)) FILTER (WHERE c.relkind = 'r'), 0),
                   count(*) FILTER (WHERE c.relkind = 'r')
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1
               AND (c.relname = 'events' OR c.relname LIKE 'events\\_%'
                            OR c.relname = 'event_ids')
            """,
            schema,
        )
        return {"table_bytes": int(row[0]), "index_bytes": int(row[1]), "tables": int(row[2])}
    finally:
        await conn.close()


async def one(dsn: str, partitioned: bool, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_part_{'p' if partitioned else 'n'}_{os.getpid()}"
    ahead = args.events // BATCH // args.span + 1
    store = await make_store(dsn, schema, partitioned, args.span, ahead)
    try:
        out: dict[str, Any] = {"partitioned": partitioned}
        out["append_batch1000_events_per_s"] = round(await fill(store, args.events))
        if partitioned:
            await add_partitions(store, ahead=2)
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'VACUUM ANALYZE "{schema}".events')
        await conn.close()
        out["append_single_c16_per_s"] = round(await single_appends(store, args.seconds))
        out["read_all_events_per_s"] = round(await read_pages(store, args.read_events))
        reads, n = args.stream_reads, args.events
        out["read_stream_per_s"] = round(await read_streams(store, reads, n))
        out["read_stream_long_per_s"] = round(await read_streams(store, reads, n, long=True))
        if not partitioned:
            bounded = store._q.read_stream
            cols = bounded[len("SELECT ") : bounded.index(" FROM ")]
            store._q.read_stream = PRE_0012_READ_STREAM.format(cols=cols, s=f'"{schema}"')
            out["read_stream_pre0012_per_s"] = round(await read_streams(store, reads, n))
            store._q.read_stream = bounded
        out.update(await sizes(dsn, schema))
        if partitioned:
            out["partitions"] = len(
                await store._fetch(f'SELECT * FROM "{schema}".event_partitions()')
            )
        return out
    finally:
        await store.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--span", type=int, default=1000, help="transaction ids per partition")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--read-events", type=int, default=500_000)
    parser.add_argument("--stream-reads", type=int, default=2000)
    parser.add_argument("--dsn", help="an existing server (default: a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="short timings (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.read_events, args.stream_reads = 1.0, 20_000, 200
    server = None
    dsn = args.dsn
    if dsn is None:
        from tests.pgserver import PostgresServer, find_pg_ctl

        pg_ctl = find_pg_ctl()
        if pg_ctl is None:
            sys.exit("no PostgreSQL server binaries found; use --dsn")
        server = PostgresServer.launch(pg_ctl)
        dsn = server.dsn
    try:
        results = [asyncio.run(one(dsn, p, args)) for p in (False, True)]
    finally:
        if server is not None:
            server.shutdown()
    print(json.dumps({"events": args.events, "results": results}, indent=2))


if __name__ == "__main__":
    main()
