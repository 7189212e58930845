"""Projection workloads of the headline harness (``benches/headline.py``): a store full of
order events, counting projections (per event, per batch, columnar), a replay and the live
lag under 16 writers.

Keys: ``memory.projection.replay``, ``memory.projection.columnar``,
``postgres.projection.replay``, ``postgres.projection.lag_p99_ms[.stalled]`` and, with
``--extra``, ``memory.projection.replay.per_event`` against a plain read loop.
"""

from __future__ import annotations

import asyncio
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


async def live_lag(store: Any, quick: bool) -> dict[str, Any]:
    """16 writers append one event each in a loop; lag = applied time - append returned.
    Returns the lag's p50, p99 and mean in ms, the samples and the appends per second."""
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
    return dict(
        p50_ms=round(p50, 2),
        p99_ms=round(p99, 2),
        mean_ms=round(statistics.fmean(lags) * 1000, 2),
        samples=len(lags),
        appends_per_second=round(appended / duration),
    )
