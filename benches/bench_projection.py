"""Projection benchmarks: replay throughput, columnar folds, PostgreSQL replay and live lag.

Run from the repository root::

    python benches/bench_projection.py            # full sizes (1M / 10M / 100k events)
    python benches/bench_projection.py --quick    # smaller sizes (< 30 s)
    python benches/bench_projection.py --json     # machine-readable results
    python benches/bench_projection.py --dsn postgresql://...   # an existing server

Each figure is compared with a baseline measured in the same run: a plain Python loop
that reads the same events from the same store with ``read_all`` pages and counts them.
Without ``--dsn`` (or ``EVENTCORE_TEST_DSN``) a throwaway PostgreSQL server is started
with the test suite's helper; ``--no-postgres`` skips those workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from eventcore import MemoryStore, NewEvent  # noqa: E402
from eventcore.projection import MemoryCheckpointStore, ProjectionRunner  # noqa: E402

TYPES = [f"shop.Event{i}" for i in range(8)]


def fill_memory(n: int, streams: int = 10_000) -> MemoryStore:
    store = MemoryStore()
    payload = b"\x81\xa6amount\x0a"
    batch = 10_000
    for start in range(0, n, batch):
        store.append(
            [
                NewEvent(f"order-{(start + i) % streams}", TYPES[(start + i) % 8], payload)
                for i in range(min(batch, n - start))
            ]
        )
    return store


class BatchCounter:
    """Counts events by type with apply_batch."""

    name = "batch-counter"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def apply_batch(self, events: list[Any]) -> None:
        counts = self.counts
        for e in events:
            t = e.event_type
            counts[t] = counts.get(t, 0) + 1


class EventCounter:
    """Counts events by type with apply (one call per event)."""

    name = "event-counter"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def apply(self, e: Any) -> None:
        t = e.event_type
        self.counts[t] = self.counts.get(t, 0) + 1


class ColumnCounter:
    """Counts events by type with apply_columns (numpy.bincount per batch)."""

    name = "column-counter"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def apply_columns(self, batch: Any) -> None:
        c = np.bincount(batch.type_codes, minlength=len(batch.type_names))
        if len(c) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(c) - len(self.counts)))
        self.counts[: len(c)] += c


async def baseline_loop(store: Any, page: int) -> float:
    """Plain loop: read_all pages from the store and count by type; events/s."""
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    cursor, n = 0, 0
    while True:
        events = await store.read_all(after_position=cursor, limit=page)
        for e in events:
            counts[e.event_type] = counts.get(e.event_type, 0) + 1
        n += len(events)
        if len(events) < page:
            break
        cursor = events[-1].position
    return n / (time.perf_counter() - t0)


async def replay(store: Any, projection: Any, page: int) -> float:
    """Replay the whole log into ``projection`` with a runner; events/s."""
    runner = ProjectionRunner(
        store, projection, checkpoints=MemoryCheckpointStore(), page_size=page
    )
    t0 = time.perf_counter()
    await runner.run_until_caught_up()
    elapsed = time.perf_counter() - t0
    return runner._workers[0].applied / elapsed


def result(
    name: str,
    value: float,
    unit: str,
    baseline: float | None,
    target: float | None,
    lower_is_better: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    met = None
    if target is not None:
        met = value <= target if lower_is_better else value >= target
    return {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3) if baseline else None,
        "ratio": round(value / baseline, 2) if baseline else None,
        "target": target,
        "met": met,
        **extra,
    }


async def memory_workloads(quick: bool) -> list[dict[str, Any]]:
    out = []
    n = 200_000 if quick else 1_000_000
    store = fill_memory(n)
    base = max([await baseline_loop(store.aio, 1000) for _ in range(2)])
    batch = max([await replay(store, BatchCounter(), 1000) for _ in range(3)])
    single = max([await replay(store, EventCounter(), 1000) for _ in range(2)])
    out.append(
        result(f"replay {n:,} events, apply_batch (memory)", batch, "events/s", base, 1_000_000)
    )
    out.append(
        result(f"replay {n:,} events, apply per event (memory)", single, "events/s", base, None)
    )
    m = 1_000_000 if quick else 10_000_000
    store = fill_memory(m) if m != n else store
    rates = []
    for _ in range(3):
        proj = ColumnCounter()
        rates.append(await replay(store, proj, 1_000_000))
        assert int(proj.counts.sum()) == m
    out.append(
        result(
            f"columnar count by type over {m:,} events (memory)",
            max(rates),
            "events/s",
            base,
            20_000_000,
        )
    )
    del store
    return out


async def postgres_workloads(dsn: str, quick: bool) -> list[dict[str, Any]]:
    from eventcore.postgres import PostgresStore

    out = []
    schema = f"bench_proj_{os.getpid()}"
    store = PostgresStore(dsn, schema=schema, max_size=20, poll_interval=0.5)
    await store.migrate()
    try:
        n = 20_000 if quick else 100_000
        payload = b"\x81\xa6amount\x0a"
        for start in range(0, n, 1000):
            await store.append(
                [
                    NewEvent(f"order-{(start + i) % 1000}", TYPES[i % 8], payload)
                    for i in range(1000)
                ]
            )
        base = max([await baseline_loop(store, 5000) for _ in range(2)])
        rate = max([await replay(store, BatchCounter(), 5000) for _ in range(2)])
        out.append(
            result(
                f"replay {n:,} events from PostgreSQL, apply_batch", rate, "events/s", base, 100_000
            )
        )
        out.append(await live_lag(store, quick))
    finally:
        await store.close()
        import asyncpg

        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return out


async def live_lag(store: Any, quick: bool) -> dict[str, Any]:
    """16 writers append one event each in a loop; lag = applied time - append returned."""
    committed: dict[int, float] = {}
    lags: list[float] = []
    pending: dict[int, float] = {}

    class Lag:
        name = "lag"

        def apply_batch(self, events: list[Any]) -> None:
            now = time.perf_counter()
            for e in events:
                t = committed.pop(e.position, None)
                if t is None:
                    pending[e.position] = now
                else:
                    lags.append(max(now - t, 0.0))

    runner = ProjectionRunner(
        store, Lag(), checkpoints=MemoryCheckpointStore(), page_size=1000, poll_interval=0.5
    )
    duration = 3.0 if quick else 10.0
    stop = asyncio.Event()
    appended = 0

    async def writer(k: int) -> None:
        nonlocal appended
        i = 0
        while not stop.is_set():
            r = await store.append([NewEvent(f"live-{k}-{i % 50}", TYPES[0], b"x")])
            now = time.perf_counter()
            p = r.last_position
            applied = pending.pop(p, None)
            if applied is not None:
                lags.append(max(applied - now, 0.0))
            else:
                committed[p] = now
            appended += 1
            i += 1

    async with runner:
        await runner.wait_for(await store.head(), timeout=60)
        lags.clear()
        writers = [asyncio.create_task(writer(k)) for k in range(16)]
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*writers)
        await runner.wait_for(await store.latest_position(), timeout=30)
    lags.sort()
    p50 = lags[len(lags) // 2] * 1000
    p99 = lags[int(len(lags) * 0.99)] * 1000
    return result(
        "live lag p99 on PostgreSQL, 16 writers",
        p99,
        "ms",
        None,
        50.0,
        lower_is_better=True,
        p50_ms=round(p50, 2),
        p99_ms=round(p99, 2),
        mean_ms=round(statistics.fmean(lags) * 1000, 2),
        samples=len(lags),
        appends_per_second=round(appended / duration),
    )


def postgres_dsn(args: argparse.Namespace) -> tuple[str | None, Any]:
    dsn = args.dsn or os.environ.get("EVENTCORE_TEST_DSN")
    if dsn or args.no_postgres:
        return dsn, None
    from tests.pgserver import PostgresServer, find_pg_ctl

    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        return None, None
    server = PostgresServer.launch(pg_ctl)
    return server.dsn, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: start a throwaway server)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    results = asyncio.run(memory_workloads(args.quick))
    dsn, server = postgres_dsn(args)
    try:
        if dsn:
            results += asyncio.run(postgres_workloads(dsn, args.quick))
    finally:
        if server is not None:
            server.shutdown()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        base = f"  baseline {r['baseline']:,.0f} x{r['ratio']}" if r["baseline"] else ""
        target = (
            f"  target {r['target']:,} {'MET' if r['met'] else 'MISSED'}" if r["target"] else ""
        )
        extra = {
            k: v
            for k, v in r.items()
            if k.endswith("_ms") or k in ("samples", "appends_per_second")
        }
        print(f"{r['name']}: {r['value']:,.2f} {r['unit']}{base}{target} {extra or ''}")


if __name__ == "__main__":
    main()
