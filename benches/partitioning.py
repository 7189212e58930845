"""A design measurement for issue 16 §4: the events table partitioned by position range.

NOT a store feature yet: this script builds, on a throwaway server, one store schema as
the migrations make it and one whose ``events`` table it replaces (while empty) by a
declaratively partitioned one, then runs the store's own ``append_events`` and reads
against both:

- Partitions by ``position`` range. Positions are ``transaction id * 2**20 + index``, so a
  range of positions is a range of transaction ids; each partition here covers
  ``--xids-per-partition`` transactions (the fill appends 1000 events per transaction).
- Event-id uniqueness across partitions (a unique index must contain the partition key):
  a side table ``event_ids (event_id PRIMARY KEY)`` filled by a row trigger, whose key
  constraint keeps the name ``events_event_id_key`` (the store recognises a duplicate by
  it). Each partition also indexes ``event_id`` (not unique) for the idempotency lookups
  of ``append_events``, which read the events table.
- ``(stream_id, version)`` uniqueness: per partition only; across partitions the streams
  table guards it (every append bumps the stream's row under its lock).

Figures: append throughput (batches of 1000: the fill; single events, 16 clients),
``read_all`` pages, ``read_stream`` of random streams, and table and index sizes.

    python benches/partitioning.py --events 10000000       # about 10-20 minutes
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

STREAMS = 10_000
BATCH = 1000

PARTITION = """
CREATE TABLE {s}.events_p (LIKE {s}.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (position);
DROP TABLE {s}.events;
ALTER TABLE {s}.events_p RENAME TO events;
ALTER TABLE {s}.events ADD CONSTRAINT events_pkey PRIMARY KEY (position);
CREATE INDEX events_stream_version_idx ON {s}.events (stream_id, version);
CREATE INDEX events_event_id_idx ON {s}.events (event_id);
CREATE INDEX events_correlation_id_idx ON {s}.events (correlation_id)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE {s}.event_ids (
    event_id uuid NOT NULL,
    CONSTRAINT events_event_id_key PRIMARY KEY (event_id)
);
CREATE FUNCTION {s}.claim_event_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.event_ids (event_id) VALUES (NEW.event_id);
    RETURN NEW;
END
$$;
CREATE TRIGGER events_claim_id BEFORE INSERT ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.claim_event_id();
CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.forbid_event_change();
CREATE TABLE {s}.events_default PARTITION OF {s}.events DEFAULT;
"""


async def make_store(dsn: str, schema: str, partitioned: bool, xids: int, parts: int) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    store = PostgresStore(dsn, schema=schema, max_size=17, statement_timeout=None)
    await store.migrate()
    if partitioned:
        s = f'"{schema}"'
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(PARTITION.format(s=s))
            xid = int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))
            for k in range(parts):
                lo = 0 if k == 0 else (xid + k * xids) << 20
                hi = (xid + (k + 1) * xids) << 20
                await conn.execute(
                    f"CREATE TABLE {s}.events_{k:04d} PARTITION OF {s}.events"
                    f" FOR VALUES FROM ({lo}) TO ({hi})"
                )
        finally:
            await conn.close()
    return store


async def fill(store: Any, events: int) -> float:
    started = time.perf_counter()
    for start in range(0, events, BATCH):
        await store.append(
            [NewEvent(f"s-{(start + i) % STREAMS}", "Deposited", b"x" * 40) for i in range(BATCH)]
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


async def read_streams(store: Any, count: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    for _ in range(count):
        await store.read_stream(f"s-{rng.randrange(STREAMS)}", limit=100)
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
    parts = args.events // BATCH // args.xids_per_partition + 10  # room for the singles
    store = await make_store(dsn, schema, partitioned, args.xids_per_partition, parts)
    try:
        out: dict[str, Any] = {
            "partitioned": partitioned,
            "partitions": parts if partitioned else 0,
        }
        out["append_batch1000_events_per_s"] = round(await fill(store, args.events))
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'VACUUM ANALYZE "{schema}".events')
        await conn.close()
        out["append_single_c16_per_s"] = round(await single_appends(store, args.seconds))
        out["read_all_events_per_s"] = round(await read_pages(store, args.read_events))
        out["read_stream_per_s"] = round(await read_streams(store, args.stream_reads))
        out.update(await sizes(dsn, schema))
        return out
    finally:
        await store.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--xids-per-partition", type=int, default=1000)
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
