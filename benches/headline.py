"""Headline benchmarks: eventcore against the eventsourcing library and the PostgreSQL limit.

Run from the repository root::

    python benches/headline.py                 # full run (< 15 minutes), prints the table
    python benches/headline.py --quick         # short run (< 2 minutes), for CI smoke use
    python benches/headline.py --json          # ONE JSON object instead of the table
    python benches/headline.py --out docs/     # also write docs/benchmarks.md + .png
    python benches/headline.py --dsn postgresql://...   # an existing server
    python benches/headline.py --breakdown     # where a command's microseconds go, only
    python benches/headline.py --extra         # also the in-memory workloads not in the table

Without ``--dsn`` (or ``EVENTCORE_TEST_DSN``) a throwaway PostgreSQL server is started the
way the test suite starts it (``tests/pgserver.py``: fsync and synchronous_commit on).

Method: every workload builds its data untimed, runs warm-up repetitions that are thrown
away, then several timed repetitions; the figure is the median, min and max are kept.
eventcore and its baselines run the same work in the same process with their
repetitions alternating (the starting side rotates), so every ratio is measured under the
same machine noise. The figures, the timing and the repeat loop are ``eventcore._bench``'s
(shared with ``eventcore bench`` and the pytest-benchmark suite), as is eventcore's side of
the bank workloads. In memory, throughput is wall time with the cyclic GC collected before
and disabled during each repetition (the peer's sides: ``benches/core.py``); on PostgreSQL
it is wall time (I/O and concurrency), each repetition time-bound
(``benches/pg_workloads.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benches import bench_projection as bp  # noqa: E402
from benches import core  # noqa: E402
from benches import shred as shred_bench  # noqa: E402
from benches.domain import DC, MS, _dist_version  # noqa: E402
from eventcore._bench import (  # noqa: E402
    BankWorkloads,
    Figure,
    Target,
    measure,
    run_now,
    timed,
    timed_parts,
)
from eventcore._bench import fmt as _fmt  # noqa: E402

_perf = time.perf_counter


# ---------------------------------------------------------------------------------------------
# In memory: benches/core.py (the peer, in-memory-only workloads), eventcore._bench's bank
# workloads and benches/bench_projection.py


def upcast_figures(quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """``memory.fold.upcast_*`` (benches/upcast.py): one run, repetitions alternating."""
    from benches import upcast

    streams, reps = (500, 11) if quick else (1000, 21)
    runs = upcast.workloads(streams)
    note = "fold_streams of 100-event streams"
    figs = [
        Figure(
            "memory.fold.upcast_none",
            "events/s",
            baseline="memory.fold.upcast_plain",
            targets=[Target("ratio", ">=", 0.9, vs="memory.fold.upcast_plain")],
            note=f"{note}: a type at version 2 with an upcaster from 1, events stored at 2",
        ),
        Figure(
            "memory.fold.upcast_v1v2",
            "events/s",
            baseline="memory.fold.upcast_plain",
            note=f"{note}: the same registry, events stored at version 1 (upcast on read)",
        ),
        Figure(
            "memory.fold.upcast_plain",
            "events/s",
            note=f"{note}: a type without versions (version 1, no upcaster)",
        ),
    ]
    measure([(f, runs[f.name]) for f in figs], reps, warmup=1)
    log("memory.fold.upcast")
    return figs


def ours(prepare: Callable[..., Any], *args: int) -> Callable[[], float]:
    """A repetition of an in-memory bank workload: prepared untimed, then timed."""
    return lambda: timed(run_now(prepare(*args)))


def _runner(
    sz: core.Sizes, figs: list[Figure], log: Callable[[str], None]
) -> Callable[[list[tuple[Figure, Callable[[], float]]]], None]:
    """Measure sides with ``sz``'s repetitions and time cap, keep their figures, log."""

    def run(sides: list[tuple[Figure, Callable[[], float]]]) -> None:
        measure(sides, sz.reps, sz.warmup, seconds=sz.workload_seconds)
        figs.extend(f for f, _ in sides)
        log(sides[0][0].name)

    return run


def memory_figures(quick: bool, log: Callable[[str], None]) -> list[Figure]:
    sz = dataclasses.replace(core.QUICK, reps=3, workload_seconds=2.0) if quick else core.FULL
    if not quick:
        sz = dataclasses.replace(sz, reps=7, workload_seconds=12.0)
    bank = BankWorkloads(DC)
    figs: list[Figure] = []
    run = _runner(sz, figs, log)

    def vs_peer(
        name: str,
        unit: str,
        note: str,
        once: Callable[[], float],
        peer_note: str,
        theirs: Callable[[], float],
        *targets: Target,
        peer: str = "",
    ) -> None:
        # The ratio column of these is against the peer (eventsourcing, same run).
        peer = peer or f"peer.eventsourcing.{name}"
        run(
            [
                (Figure(name, unit, baseline=peer, targets=list(targets), note=note), once),
                (Figure(peer, unit, note=peer_note), theirs),
            ]
        )

    # The cold command, the two warm ones and their peers alternate in ONE group: the
    # warm targets are ratios against cold, and figures taken in separate groups (minutes
    # apart on a shared machine) saw different load, which no ratio should carry.
    run(
        [
            (
                Figure(
                    "memory.command.cold",
                    "commands/s",
                    baseline="peer.eventsourcing.memory.command",
                    targets=[Target("ratio", ">=", 5.0, vs="peer")],
                    note="OpenAccount on a fresh stream: build command + execute_sync",
                ),
                ours(bank.prepare_cold, sz.cold),
            ),
            (
                Figure(
                    "peer.eventsourcing.memory.command",
                    "commands/s",
                    note="repository.get of a 1-event aggregate, deposit, save (POPO)",
                ),
                lambda: timed(core.es_prepare_deposits(sz.cold_base, 1)),
            ),
            # Ratio against the cold command; the peer column is eventsourcing.
            (
                Figure(
                    "memory.command.warm100",
                    "commands/s",
                    baseline="memory.command.cold",
                    peer="peer.eventsourcing.memory.command.warm100",
                    targets=[
                        Target("value", ">=", 50_000),
                        Target("ratio", ">=", 0.8, vs="memory.command.cold"),
                    ],
                    note="Deposit on streams of 100 events whose state is cached (one untimed"
                    " Deposit per stream first); baseline: its aggregates of 100 events, no"
                    " snapshots",
                ),
                ours(bank.prepare_warm, sz.warm),
            ),
            (
                Figure(
                    "peer.eventsourcing.memory.command.warm100",
                    "commands/s",
                    note="the same on aggregates of 100 events (no snapshots)",
                ),
                lambda: timed(core.es_prepare_deposits(sz.warm_base, 100)),
            ),
            (
                Figure(
                    "memory.command.warm10k",
                    "commands/s",
                    baseline="memory.command.cold",
                    targets=[Target("ratio", ">=", 0.8, vs="memory.command.cold")],
                    note="Deposit on one stream of 10,000 events whose state is cached"
                    " (no baseline)",
                ),
                core.warm10k_once(sz, DC),
            ),
        ]
    )
    per_entry = Figure(
        "memory.cache.bytes_per_entry",
        "bytes/entry",
        note="Python heap (tracemalloc) held per cached Deposit state (bank example: key,"
        " entry, Account, versions), over sz.warm streams of 100 events",
    )
    measure([(per_entry, core.cache_bytes_once(sz, DC))], reps=3, warmup=0)
    figs.append(per_entry)
    log(per_entry.name)
    snap, full = core.first10k_sides(sz, DC)
    run(
        [
            (
                Figure(
                    "memory.command.first10k.snapshot",
                    "commands/s",
                    baseline="memory.command.first10k.nosnapshot",
                    note="first Deposit per 10,000-event stream, state cache cleared: its"
                    " snapshot (a MemorySnapshotStore) + the tail, vs a full fold (base)",
                ),
                snap,
            ),
            (
                Figure(
                    "memory.command.first10k.nosnapshot",
                    "commands/s",
                    note="the same without the snapshot: a full fold of 10,000 events",
                ),
                full,
            ),
        ]
    )
    vs_peer(
        "memory.transfer",
        "commands/s",
        "Transfer between two streams of 2 events (opened, deposited); atomic write",
        ours(bank.prepare_transfer, sz.transfer),
        "get two aggregates, withdraw + deposit, save both in one call",
        lambda: timed(core.es_prepare_transfer(sz.transfer_base)),
        Target("ratio", ">=", 5.0, vs="peer"),
    )
    vs_peer(
        "memory.append.batch1000",
        "events/s",
        "store.append of 1000 pre-encoded NewEvent (id None) into 1 stream(s)",
        ours(bank.prepare_append_batch, sz.batches),
        "save of one aggregate holding 1000 pending events",
        lambda: timed_parts(core.es_prepare_batch(sz.batches_base, 1)),
    )
    read = run_now(bank.prepare_read(sz.read_streams))  # the same streams every repetition
    read_peer = core.es_prepare_read(sz.read_streams_base)
    vs_peer(
        "memory.read.1000",
        "events/s",
        "read_stream of a 1000-event stream + .data on every event",
        lambda: timed(read),
        "app.events.get of a 1000-event aggregate, events decoded (stored order)",
        lambda: timed(read_peer),
        peer="peer.eventsourcing.memory.read",
    )

    # Projections (bench_projection's stores and projections, medians here).
    loop = asyncio.new_event_loop()
    try:
        n, m = (200_000, 1_000_000) if quick else (1_000_000, 4_000_000)
        store = bp.fill_memory(n)
        replay = Figure(
            "memory.projection.replay",
            "events/s",
            targets=[Target("value", ">=", 1_000_000)],
            note=f"ProjectionRunner replay of {n:,} events, apply_batch counting by type",
        )
        measure(
            [(replay, lambda: loop.run_until_complete(bp.replay(store, bp.BatchCounter(), 1000)))],
            reps=3 if quick else 5,
            warmup=1,
        )
        figs.append(replay)
        log(replay.name)
        store = None  # free it before filling the big one
        big = bp.fill_memory(m)

        def columnar() -> float:
            proj = bp.ColumnCounter()
            rate = loop.run_until_complete(bp.replay(big, proj, 1_000_000))
            assert int(proj.counts.sum()) == m
            return rate

        col = Figure(
            "memory.projection.columnar",
            "events/s",
            targets=[Target("value", ">=", 20_000_000)],
            note=f"apply_columns (numpy.bincount by type) over {m:,} events, 1M-event batches",
        )
        measure([(col, columnar)], reps=3 if quick else 5, warmup=1)
        figs.append(col)
        log(col.name)
        big = None
    finally:
        loop.close()
    return figs


def extra_figures(quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """``--extra``: in-memory workloads that are not headline keys (msgspec events,
    1000-stream batches, folds, memory per event, per-event projection replay)."""
    sz = core.QUICK if quick else core.FULL
    figs: list[Figure] = []
    run = _runner(sz, figs, log)

    def peer(name: str, unit: str, note: str) -> Figure:
        return Figure(f"peer.eventsourcing.{name}", unit, note=note)

    def ec(name: str, unit: str, note: str) -> Figure:
        return Figure(name, unit, peer=f"peer.eventsourcing.{name}", note=note)

    cold_peer = lambda: timed(core.es_prepare_deposits(sz.cold_base, 1))  # noqa: E731
    warm_peer = lambda: timed(core.es_prepare_deposits(sz.warm_base, 100))  # noqa: E731
    for domain in (DC, MS):
        bank = BankWorkloads(domain)
        name = f"memory.command.cold.{domain.name}"
        run(
            [
                (
                    ec(name, "commands/s", "OpenAccount on a fresh stream"),
                    ours(bank.prepare_cold, sz.cold),
                ),
                (peer(name, "commands/s", "get, deposit, save of a 1-event aggregate"), cold_peer),
            ]
        )
        name = f"memory.command.warm100.{domain.name}"
        run(
            [
                (
                    ec(name, "commands/s", "Deposit on 100-event streams, state cached"),
                    ours(bank.prepare_warm, sz.warm),
                ),
                (peer(name, "commands/s", "the same on 100-event aggregates"), warm_peer),
            ]
        )
    bank = BankWorkloads(DC)
    name = "memory.append.batch1000.1000streams"
    run(
        [
            (
                ec(name, "events/s", "store.append of 1000 events over 1000 streams"),
                ours(bank.prepare_append_batch, sz.batches, 1000),
            ),
            (
                peer(name, "events/s", "save of 1000 aggregates, one pending event each"),
                lambda: timed_parts(core.es_prepare_batch(sz.batches_base, 1000)),
            ),
        ]
    )
    fold = run_now(bank.prepare_fold(sz.fold_streams))
    fold_peer = core.es_prepare_fold(sz.fold_streams_base)
    name = "memory.fold.100"
    run(
        [
            (
                ec(name, "events/s", "fold_streams of a 100-event stream (command's apply)"),
                lambda: timed(fold),
            ),
            (
                peer(name, "events/s", "repository.get of a 100-event aggregate"),
                lambda: timed(fold_peer),
            ),
        ]
    )
    figs += core.memory_figures(sz)
    log("memory.bytes_per_event")
    loop = asyncio.new_event_loop()
    try:
        n = 200_000 if quick else 1_000_000
        store = bp.fill_memory(n)
        per_event = Figure(
            "memory.projection.replay.per_event",
            "events/s",
            baseline="memory.projection.read_loop",
            note=f"ProjectionRunner replay of {n:,} events, apply per event counting by type",
        )
        read_loop = Figure(
            "memory.projection.read_loop",
            "events/s",
            note="a plain loop over read_all pages of 1000, counting by type",
        )
        measure(
            [
                (
                    per_event,
                    lambda: loop.run_until_complete(bp.replay(store, bp.EventCounter(), 1000)),
                ),
                (read_loop, lambda: loop.run_until_complete(bp.baseline_loop(store.aio, 1000))),
            ],
            reps=3 if quick else 5,
            warmup=1,
        )
        figs += [per_event, read_loop]
        log(per_event.name)
    finally:
        loop.close()
    return figs


# ---------------------------------------------------------------------------------------------
# Crypto-shredding in memory: benches/shred.py, encryption on against off in the same run


def shred_figures(quick: bool, log: Callable[[str], None]) -> list[Figure]:
    reps, warmup = (3, 1) if quick else (7, 2)
    n = 1_000 if quick else 4_000
    workloads = [
        (
            "shred.memory.read.1000",
            "events/s",
            shred_bench.read(4 if quick else 10, 1000),
            "read_stream of 1000-event streams + .data; each event has 3 personal fields",
        ),
        (
            "shred.memory.command.signup",
            "commands/s",
            shred_bench.commands("signup", n),
            "a command writing a 3-personal-field event for a new subject (a key is created)",
        ),
        (
            "shred.memory.command.fold20",
            "commands/s",
            shred_bench.commands("fold", n // 2),
            "a command folding 20 events with personal fields (no state cache), appending one",
        ),
        (
            "shred.memory.command.nonpersonal",
            "commands/s",
            shred_bench.commands("plain", n),
            "a command whose event has no personal field: the ShreddingCodec passes it through",
        ),
    ]
    figs: list[Figure] = []
    for name, unit, (on, off), note in workloads:
        fig = Figure(name, unit, baseline=f"{name}.off", note=f"{note}; encryption on")
        base = Figure(f"{name}.off", unit, note=f"{note}; plain registry (encryption off)")
        measure([(fig, on), (base, off)], reps=reps, warmup=warmup)
        figs += [fig, base]
        log(name)
    return figs


# SQLite: benches/sqlite_workloads.py (peer: eventsourcing's SQLite recorder, same run)


def sqlite_figures(
    quick: bool, log: Callable[[str], None], only: Sequence[str] = ()
) -> list[Figure]:
    """The SQLite figures, each against eventsourcing's SQLite persistence (target 2x).

    ``synchronous=NORMAL`` on both sides, and the command once more with ``FULL`` on both
    (see benches/sqlite_workloads.py).
    """
    from benches import sqlite_workloads as sw

    sz = sw.SQLITE_QUICK if quick else sw.SQLITE_FULL
    normal, full = sw.SqliteBench(sz, "NORMAL"), sw.SqliteBench(sz, "FULL")
    figs: list[Figure] = []
    groups: list[tuple[str, str, str, str, Any, Any, list[Target]]] = [
        (
            "sqlite.command",
            "commands/s",
            "execute_sync(Deposit) on a 1-event stream",
            "repository.get + deposit + save of a 1-event aggregate",
            normal.ec_command,
            normal.peer_command,
            [Target("peer", ">=", 2.0)],
        ),
        (
            "sqlite.transfer",
            "commands/s",
            "execute_sync(Transfer) between two 2-event streams",
            "get both aggregates, withdraw + deposit, save both",
            normal.ec_transfer,
            normal.peer_transfer,
            [Target("peer", ">=", 2.0)],
        ),
        (
            "sqlite.append_batch_1000",
            "events/s",
            "store.append of 1000 pre-encoded events",
            "recorder.insert_events of 1000 pre-mapped stored events",
            normal.ec_batch,
            normal.peer_batch,
            [Target("peer", ">=", 2.0)],
        ),
        (
            "sqlite.read_all",
            "events/s",
            f"read_all of {sz.log:,} events in pages of 1000, not decoded",
            "recorder.select_notifications in pages of 1000, not decoded",
            normal.ec_read_all,
            normal.peer_read_all,
            [Target("peer", ">=", 2.0)],
        ),
        (
            "sqlite.command.full",
            "commands/s",
            "sqlite.command with synchronous=FULL on both sides (one WAL sync per commit)",
            "the peer's command with synchronous=FULL",
            full.ec_command,
            full.peer_command,
            [],
        ),
    ]
    try:
        checked = {b.synchronous: b.check_durability() for b in (normal, full)}
        for name, unit, note, peer_note, ours, theirs, targets in groups:
            if only and not any(name.startswith(o) for o in only):
                continue
            durability = checked["FULL" if name.endswith(".full") else "NORMAL"]
            peer_name = f"peer.eventsourcing.{name}"
            ec = Figure(name, unit, peer=peer_name, targets=targets, note=f"{note} ({durability})")
            peer = Figure(peer_name, unit, note=f"{peer_note} ({durability})")
            sides = [(ec, ours()), (peer, theirs())]
            measure(sides, sz.reps, sz.warmup)
            figs += [ec, peer]
            log(name)
        if not only or any("sqlite.wait_for_append".startswith(o) for o in only):
            wait = Figure(
                "sqlite.wait_for_append.ms",
                "ms",
                note="median ms from an append's return to wait_for_append waking in another"
                " process (polls back off to poll_interval, 20 ms)",
            )
            measure([(wait, sw.wake_latency(normal))], sz.reps, 0)
            figs.append(wait)
            log(wait.name)
    finally:
        normal.close()
        full.close()
    return figs


# ---------------------------------------------------------------------------------------------
# PostgreSQL: benches/pg_workloads.py


def postgres_figures(
    dsn: str, quick: bool, log: Callable[[str], None], only: Sequence[str] = ()
) -> list[Figure]:
    """The PostgreSQL figures; ``only``: run just the groups with a key starting so."""
    from benches import pg_workloads as pw

    def want(*keys: str) -> bool:
        return not only or any(k.startswith(o) for k in keys for o in only)

    commands = [f"postgres.command.{k}.c{c}" for k in ("cold", "warm100") for c in (1, 16)]
    commands.append("postgres.sync.command.c1")
    figs: list[Figure] = []
    if want("dcb.postgres"):
        figs += _dcb_postgres(dsn, quick, log)
        if only and all(o.startswith("dcb") for o in only):
            return figs
    sz = pw.PG_QUICK if quick else pw.PG_FULL
    bench = pw.PgBench(dsn, sz)
    try:
        if want(*commands, "postgres.transfer.c16"):
            bench.start_peer()
        for c in [c for c in (1, 16) if want(*(k for k in commands if k.endswith(f".c{c}")))]:
            ec = Figure(
                f"postgres.command.cold.c{c}",
                "commands/s",
                baseline=f"raw.asyncpg.command.c{c}",
                peer=f"peer.eventsourcing.postgres.command.c{c}",
                targets=[Target("ratio", ">=", 0.7), Target("peer", ">=", 2.0)],
                note="OpenAccount on a fresh stream: fold read + append_events",
            )
            raw = Figure(
                f"raw.asyncpg.command.c{c}",
                "commands/s",
                note="fold read + one conditional upsert/insert statement (2 round trips)",
            )
            one_trip = Figure(
                f"raw.asyncpg.command.onetrip.c{c}",
                "commands/s",
                note="the conditional statement alone, expected version known (1 round trip)",
            )
            peer = Figure(
                f"peer.eventsourcing.postgres.command.c{c}",
                "commands/s",
                note="repository.get + deposit + save",
            )
            warm = Figure(
                f"postgres.command.warm100.c{c}",
                "commands/s",
                baseline=f"raw.asyncpg.command.c{c}",
                peer=f"peer.eventsourcing.postgres.command.c{c}",
                targets=[Target("ratio", ">=", 1.0)]
                + ([Target("peer", ">=", 2.0), Target("value", ">=", 1500)] if c == 1 else []),
                note="Deposit into a 100-event stream, state cached: handle + one append",
            )
            sides = [
                (ec, bench.ec_command(c)),
                (warm, bench.ec_command_warm(c)),
                (raw, bench.raw_command(c)),
                (one_trip, bench.raw_command(c, read=False)),
                (peer, bench.peer_command(c)),
            ]
            if c == 1:
                # Alternated with the others: measured apart, a c1 figure (one WAL flush
                # per command) follows the disk's load at that moment.
                locked = Figure(
                    "raw.asyncpg.command.locked.c1",
                    "commands/s",
                    note="BEGIN; INSERT stream; SELECT .. FOR UPDATE; INSERT event;"
                    " UPDATE version; COMMIT (reference)",
                )
                sides.append((locked, bench.raw_command_locked()))
                sync = Figure(
                    "postgres.sync.command.c1",
                    "commands/s",
                    baseline="postgres.command.cold.c1",
                    targets=[Target("ratio", ">=", 0.85, vs="async")],
                    note="the cold command from sync code: execute_sync(SyncPostgresStore)",
                )
                sides.append((sync, bench.ec_command_sync()))
            measure(sides, sz.reps, sz.warmup)
            figs += [f for f, _ in sides]
            log(ec.name)
        if want("shred.postgres"):
            figs += _shred_postgres(dsn, quick, log)
        if want("postgres.command.first10k"):
            figs += _first10k(bench, quick, log)
        if want("postgres.transfer.c16"):
            figs += _transfer(bench, sz, log)
        if want("postgres.append.batch1000"):
            figs += _batch(bench, sz, log)
        if want("postgres.read", "postgres.projection.replay"):
            figs += _read(bench, sz, dsn, log)
        for name in ("postgres.projection.lag_p99_ms", "postgres.projection.lag_p99_ms.stalled"):
            if want(name):
                figs.append(_lag(bench, sz, dsn, quick, name, log))
        if want("postgres.replica"):
            figs += _replica(bench, sz, dsn, log)
        if want("postgres.pgbouncer"):
            figs += _pgbouncer(bench, sz, dsn, log)
    finally:
        bench.close()
    return figs


def dcb_memory_figures(quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """dcb.memory.*: the conditional append against eventsourcing's InMemoryDCBRecorder,
    and a query read on a large log (benches/dcb_workloads.py)."""
    from benches import dcb_workloads as dw

    sz = dw.DCB_QUICK if quick else dw.DCB_FULL
    ours, theirs = dw.memory_sides(sz)
    fig = Figure(
        "dcb.memory.append_conditional",
        "decisions/s",
        peer="peer.eventsourcing.dcb.memory.append_conditional",
        targets=[Target("peer", ">=", 3.0)],
        note=f"read_query + append under its condition (a fresh user name), {sz.prefill:,}"
        " tagged events before",
    )
    peer = Figure(
        "peer.eventsourcing.dcb.memory.append_conditional",
        "decisions/s",
        note="InMemoryDCBRecorder.read + append(condition), the same log",
    )
    measure([(fig, ours), (peer, theirs)], sz.reps, sz.warmup)
    log(fig.name)
    read, read_type, n = dw.memory_query_read(sz)
    q = Figure(
        f"dcb.memory.query_read.{n // 1000}k",
        "reads/s",
        note=f"read_query of one tag ({n // sz.log_tags} events) on a log of {n:,} events",
    )
    qt = Figure(
        f"dcb.memory.query_read_type.{n // 1000}k",
        "reads/s",
        note=f"read_query of one event type, no tag ({n // sz.log_tags} events), same log",
    )
    measure([(q, read), (qt, read_type)], sz.reps, sz.warmup)
    log(q.name)
    return [fig, peer, q, qt]


def _dcb_postgres(dsn: str, quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """dcb.postgres.*: the conditional append at 1 and 16 clients against
    eventsourcing's PostgresDCBRecorderTT, and a query read on a large log."""
    from benches import dcb_workloads as dw

    sz = dw.DCB_QUICK if quick else dw.DCB_FULL
    bench = dw.PgDcb(dsn, sz)
    figs: list[Figure] = []
    try:
        for c in (1, 16):
            fig = Figure(
                f"dcb.postgres.append_conditional.c{c}",
                "decisions/s",
                baseline=f"raw.asyncpg.dcb.floor.c{c}",
                peer=f"peer.eventsourcing.dcb.postgres.append_conditional.c{c}",
                targets=[Target("peer", ">=", 2.0)],
                note="read_query + append under its condition (a fresh user name per"
                f" decision), {c} client(s)",
            )
            peer = Figure(
                f"peer.eventsourcing.dcb.postgres.append_conditional.c{c}",
                "decisions/s",
                note="PostgresDCBRecorderTT.read + append(condition), threads",
            )
            floor = Figure(
                f"raw.asyncpg.dcb.floor.c{c}",
                "decisions/s",
                note="the floor: one indexed SELECT + one INSERT committed alone per decision",
            )
            sides = [(fig, bench.ours(c)), (peer, bench.theirs(c)), (floor, bench.floor(c))]
            if c == 1:
                invoices = Figure(
                    "dcb.postgres.command.invoice.c1",
                    "commands/s",
                    baseline="raw.asyncpg.dcb.floor.c1",
                    note="execute(CreateInvoice): gapless numbers, a query command whose"
                    " cached state is decided on without a read (one conditional append)",
                )
                sides.append((invoices, bench.invoices()))
            measure(sides, sz.reps, sz.warmup)
            figs += [f for f, _ in sides]
            log(fig.name)
        read, read_type, unindexed, n = bench.query_read()
        q = Figure(
            f"dcb.postgres.query_read.{n // 1000}k",
            "reads/s",
            note=f"read_query of one tag ({n // sz.log_tags} events) on a log of {n:,} events",
        )
        qt = Figure(
            f"dcb.postgres.query_read_type.{n // 1000}k",
            "reads/s",
            baseline=f"dcb.postgres.query_read_type.noindex.{n // 1000}k",
            note=f"read_query of one event type, no tag ({n // sz.log_tags} events), same log",
        )
        qn = Figure(
            f"dcb.postgres.query_read_type.noindex.{n // 1000}k",
            "reads/s",
            note="the same read with the type index dropped (schema 8's read)",
        )
        measure([(q, read), (qt, read_type), (qn, unindexed)], sz.reps, sz.warmup)
        figs += [q, qt, qn]
        log(q.name)
    finally:
        bench.close()
    return figs


def _replica(bench: Any, sz: Any, dsn: str, log: Callable[[str], None]) -> list[Figure]:
    """postgres.replica.*: reads and replay from a streaming replica against the primary,
    and the replica's lag under 16 writers. The replica is made here (pg_basebackup from
    the server, as the test suite does)."""
    from urllib.parse import urlsplit

    from tests.pgserver import Replica, find_pg_ctl

    from benches import pg_workloads as pw
    from eventcore.postgres import PostgresStore

    pg_ctl = find_pg_ctl()
    try:
        assert pg_ctl is not None, "no pg_ctl"
        replica = Replica.launch(pg_ctl, urlsplit(dsn).port or 5432)
    except Exception as exc:  # e.g. --dsn names a server that allows no replication
        log(f"postgres.replica.*: skipped, no replica could be made ({exc})")
        return []
    figs: list[Figure] = []
    read_store, read_schema = bench.fill_read_log()
    on_replica = PostgresStore(
        dsn, schema=read_schema, registry=DC.registry, replicas=[replica.dsn], max_size=4
    )
    try:
        bench.run(replica.wait_replayed(dsn))
        bench.run(on_replica.open())
        [status] = bench.run(on_replica.replica_status())
        assert status.in_rotation, status
        read = Figure(
            "postgres.replica.read",
            "events/s",
            baseline="postgres.replica.read.onprimary",
            note=f"read_all pages of 1000 over {sz.read_events:,} events from a streaming "
            "replica, .data decoded",
        )
        read_primary = Figure(
            "postgres.replica.read.onprimary",
            "events/s",
            note="the same reads from the primary (same run)",
        )
        replay = Figure(
            "postgres.replica.projection.replay",
            "events/s",
            baseline="postgres.replica.projection.replay.onprimary",
            note=f"ProjectionRunner replay of {sz.read_events:,} events from the replica, "
            "page 5000",
        )
        replay_primary = Figure(
            "postgres.replica.projection.replay.onprimary",
            "events/s",
            note="the same replay from the primary (same run)",
        )

        def replay_on(store: Any) -> Callable[[], float]:
            return lambda: bench.run(bp.replay(store, bp.BatchCounter(), 5000))

        measure(
            [
                (read, bench.ec_read(on_replica)),
                (read_primary, bench.ec_read(read_store)),
                (replay, replay_on(on_replica)),
                (replay_primary, replay_on(read_store)),
            ],
            sz.reps,
            sz.warmup,
        )
        figs += [read, read_primary, replay, replay_primary]
        log(read.name)
        lag = Figure(
            "postgres.replica.lag_p99_ms",
            "ms",
            note="16 writers append single events to the primary; p99 of the time from an "
            "append's acknowledgement until the replica has replayed it",
        )
        lag_store = bench.run(pw.fresh_schema(dsn, f"bench_replag_{os.getpid()}", max_size=20))
        try:
            for _ in range(sz.lag_reps):
                lag.samples.append(bench.run(_replica_lag(lag_store, replica.dsn, sz.seconds)))
        finally:
            bench.run(lag_store.close())
            bench.run(pw.drop_schema(dsn, lag_store.schema))
        figs.append(lag)
        log(lag.name)
    finally:
        bench.run(on_replica.close())
        bench.run(read_store.close())
        bench.run(pw.drop_schema(dsn, read_schema))
        replica.shutdown()
    return figs


async def _replica_lag(store: Any, replica_dsn: str, seconds: float) -> float:
    """p99 (ms) of append acknowledged -> replayed on the replica, 16 writers running."""
    import asyncpg

    from eventcore import NewEvent

    standby = await asyncpg.connect(replica_dsn)
    stop = asyncio.Event()
    samples: list[float] = []
    replayed = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint >= $1"

    async def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            await store.append([NewEvent(f"lag-{k}-{i % 50}", "Deposited", b"x")])
            i += 1

    async def sampler() -> None:
        i = 0
        while not stop.is_set():
            await store.append([NewEvent(f"probe-{i % 50}", "Deposited", b"x")])
            acknowledged = _perf()
            token = await store.write_token()  # the primary's WAL position, past it
            while not await standby.fetchval(replayed, token):
                await asyncio.sleep(0.0002)
            samples.append((_perf() - acknowledged) * 1000)
            i += 1

    tasks = [asyncio.create_task(writer(k)) for k in range(16)]
    tasks.append(asyncio.create_task(sampler()))
    await asyncio.sleep(seconds * 2)
    stop.set()
    await asyncio.gather(*tasks)
    await standby.close()
    samples.sort()
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _pgbouncer(bench: Any, sz: Any, dsn: str, log: Callable[[str], None]) -> list[Figure]:
    """postgres.pgbouncer.command.c16: cold commands through PgBouncer (transaction pooling,
    pgbouncer=True) against the same commands on a direct pool, same run."""
    from urllib.parse import urlsplit

    from tests.pgserver import Bouncer, find_pgbouncer

    from benches import pg_workloads as pw
    from eventcore import execute

    binary = find_pgbouncer()
    if binary is None:
        log("postgres.pgbouncer.*: skipped, pgbouncer is not installed")
        return []
    bouncer = Bouncer.launch(binary, urlsplit(dsn).port or 5432)
    store = bench.run(
        pw.fresh_schema(
            bouncer.dsn, f"bench_bouncer_{os.getpid()}", pgbouncer=True, min_size=16, max_size=16
        )
    )
    try:
        through = Figure(
            "postgres.pgbouncer.command.c16",
            "commands/s",
            baseline="postgres.pgbouncer.command.direct.c16",
            note="OpenAccount on a fresh stream, 16 clients, through PgBouncer 1.18 in "
            "transaction mode (statement cache off)",
        )
        direct = Figure(
            "postgres.pgbouncer.command.direct.c16",
            "commands/s",
            note="the same commands on the store's direct pool (same run)",
        )
        reps = iter(range(1_000_000))

        def through_once() -> float:
            r = next(reps)

            async def step(k: int, i: int) -> None:
                await execute(store, DC.OpenAccount(account=f"pb{r}-{k}-{i}", owner="owner"))

            return bench.run(pw.run_clients(16, sz.seconds, step))

        measure([(through, through_once), (direct, bench.ec_command(16))], sz.reps, sz.warmup)
        log(through.name)
        return [through, direct]
    finally:
        bench.run(store.close())
        bench.run(pw.drop_schema(dsn, store.schema))
        bouncer.shutdown()


def _shred_postgres(dsn: str, quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """shred.postgres.*: commands and reads with encryption on against off, same run."""
    events, subjects = (20_000, 200) if quick else (100_000, 1_000)
    pg = shred_bench.PgShred(dsn, events, subjects)
    reps, warmup = (3, 1) if quick else (7, 2)
    n = 300 if quick else 1_000
    figs: list[Figure] = []
    try:
        for name, unit, note, side in [
            (
                "shred.postgres.command.signup.c1",
                "commands/s",
                "a command writing a 3-personal-field event for a new subject, one client"
                " (on: a key inserted and read back first)",
                lambda s: pg.command(s, n),
            ),
            (
                "shred.postgres.read",
                "events/s",
                f"read_all pages of 1000 over {events:,} events of {subjects:,} subjects,"
                " .data on each (on: keys cached by the warm-up, cache_ttl 600 s)",
                pg.read,
            ),
        ]:
            fig = Figure(name, unit, baseline=f"{name}.off", note=f"{note}; encryption on")
            base = Figure(f"{name}.off", unit, note=f"{note}; plain registry")
            measure([(fig, side("on")), (base, side("off"))], reps=reps, warmup=warmup)
            figs += [fig, base]
            log(name)
    finally:
        pg.close()
    return figs


def _first10k(bench: Any, quick: bool, log: Callable[[str], None]) -> list[Figure]:
    """The first command on 10,000-event streams after a restart, with/without snapshots."""
    schema, ids = bench.fill_long_streams(4 if quick else 10)
    try:
        snap = Figure(
            "postgres.command.first10k.snapshot",
            "commands/s",
            baseline="postgres.command.first10k.nosnapshot",
            note="first Deposit per 10,000-event stream on a new store object: its durable"
            " snapshot + the tail",
        )
        full = Figure(
            "postgres.command.first10k.nosnapshot",
            "commands/s",
            note="the same with snapshots=False: a full fold of 10,000 events",
        )
        measure(
            [(snap, bench.ec_first(schema, ids, True)), (full, bench.ec_first(schema, ids, False))],
            reps=3 if quick else 5,
            warmup=1,
        )
    finally:
        bench.drop_schema(schema)
    log(snap.name)
    return [snap, full]


def _transfer(bench: Any, sz: Any, log: Callable[[str], None]) -> list[Figure]:
    figs: list[Figure] = []
    ec = Figure(
        "postgres.transfer.c16",
        "commands/s",
        baseline="raw.asyncpg.transfer.c16",
        peer="peer.eventsourcing.postgres.transfer.c16",
        targets=[Target("ratio", ">=", 0.6)],
        note="Transfer between two existing streams, 16 clients on disjoint pairs",
    )
    raw = Figure(
        "raw.asyncpg.transfer.c16",
        "commands/s",
        note="one read of both streams + one all-or-nothing write statement",
    )
    peer = Figure(
        "peer.eventsourcing.postgres.transfer.c16",
        "commands/s",
        note="get two aggregates, withdraw + deposit, save both (16 threads)",
    )
    measure(
        [(ec, bench.ec_transfer()), (raw, bench.raw_transfer()), (peer, bench.peer_transfer())],
        sz.reps,
        sz.warmup,
    )
    figs += [ec, raw, peer]
    log(ec.name)
    return figs


def _batch(bench: Any, sz: Any, log: Callable[[str], None]) -> list[Figure]:
    figs: list[Figure] = []
    ec = Figure(
        "postgres.append.batch1000",
        "events/s",
        baseline="raw.asyncpg.append.batch1000",
        targets=[Target("value", ">=", 50_000)],
        note="store.append of 1000 events into a new stream, sequential",
    )
    raw = Figure(
        "raw.asyncpg.append.batch1000",
        "events/s",
        note="one INSERT .. SELECT FROM unnest of 1000 rows + the stream row",
    )
    measure([(ec, bench.ec_batch()), (raw, bench.raw_batch())], sz.reps, sz.warmup)
    figs += [ec, raw]
    log(ec.name)
    return figs


def _read(bench: Any, sz: Any, dsn: str, log: Callable[[str], None]) -> list[Figure]:
    from benches import pg_workloads as pw

    figs: list[Figure] = []
    read_store, read_schema = bench.fill_read_log()
    try:
        ec = Figure(
            "postgres.read",
            "events/s",
            baseline="raw.asyncpg.read",
            targets=[Target("value", ">=", 200_000)],
            note=f"read_all pages of 1000 over {sz.read_events:,} events, .data decoded",
        )
        raw = Figure(
            "raw.asyncpg.read",
            "events/s",
            note="the same rows fetched in pages of 1000, payloads decoded",
        )
        replay = Figure(
            "postgres.projection.replay",
            "events/s",
            baseline="raw.asyncpg.read",
            targets=[Target("value", ">=", 100_000)],
            note=f"ProjectionRunner replay of {sz.read_events:,} events, page 5000",
        )
        loop = bench.loop

        def replay_once() -> float:
            return loop.run_until_complete(bp.replay(read_store, bp.BatchCounter(), 5000))

        measure(
            [
                (ec, bench.ec_read(read_store)),
                (raw, bench.raw_read(read_schema)),
                (replay, replay_once),
            ],
            sz.reps,
            sz.warmup,
        )
        figs += [ec, raw, replay]
        log(ec.name)
    finally:
        bench.run(read_store.close())
        bench.run(pw.drop_schema(dsn, read_schema))
    return figs


def _lag(
    bench: Any, sz: Any, dsn: str, quick: bool, name: str, log: Callable[[str], None]
) -> Figure:
    """Live projection lag; ``.stalled``: with idle transactions elsewhere all along."""
    from benches import pg_workloads as pw

    stalled = name.endswith(".stalled")
    lag = Figure(
        name,
        "ms",
        targets=[Target("value", "<=", 100.0 if stalled else 50.0)],
        note=(
            "as lag_p99_ms, while one idle-in-transaction session holding a transaction id"
            " sits in another database and one in this database on an unrelated table"
            if stalled
            else "live runner, 16 writers appending single events; p99 of applied - committed"
        ),
    )
    lag_store = bench.run(
        pw.fresh_schema(dsn, f"bench_lag_{os.getpid()}", max_size=20, poll_interval=0.5)
    )
    try:
        for _ in range(sz.lag_reps):
            if stalled:

                async def stalled_run() -> dict[str, Any]:
                    async with pw.StalledSessions(dsn):
                        return await bp.live_lag(lag_store, quick)

                r = bench.run(stalled_run())
            else:
                r = bench.run(bp.live_lag(lag_store, quick))
            lag.samples.append(r["p99_ms"])
    finally:
        bench.run(lag_store.close())
        bench.run(pw.drop_schema(dsn, lag_store.schema))
    log(lag.name)
    return lag


# ---------------------------------------------------------------------------------------------
# Server, machine


def start_server(dsn: str | None) -> tuple[str | None, Any]:
    """``(dsn, server)``: the given DSN, or a throwaway server like the test suite's."""
    dsn = dsn or os.environ.get("EVENTCORE_TEST_DSN")
    if dsn:
        return dsn, None
    from tests.pgserver import PostgresServer, find_pg_ctl

    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        return None, None
    server = PostgresServer.launch(pg_ctl)
    return server.dsn, server


def server_info(dsn: str) -> dict[str, Any]:
    import asyncpg

    async def get() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            out = {"server_version": await conn.fetchval("SHOW server_version")}
            for name in ("fsync", "synchronous_commit", "shared_buffers", "wal_sync_method"):
                out[name] = await conn.fetchval(f"SHOW {name}")
            return out
        finally:
            await conn.close()

    return asyncio.run(get())


def machine_info(quick: bool, argv: list[str]) -> dict[str, Any]:
    info = core.machine_info(quick)
    info["command"] = "python benches/headline.py" + "".join(f" {a}" for a in argv)
    info["platform"] = platform.platform()
    for lib in ("asyncpg", "psycopg", "numpy"):
        info[lib] = _dist_version(lib)
    return info


# ---------------------------------------------------------------------------------------------
# Output


def rows(figs: dict[str, Figure]) -> list[list[str]]:
    """Table rows: workload, value, [min..max], unit, baseline, ratio, peer ratio, targets."""
    out = []
    for f in figs.values():
        ratio = f.ratio(figs)
        peer_ratio = f.peer_ratio(figs)
        targets = ", ".join(f"{t.label()} {'✓' if t.check(f, figs) else '✗'}" for t in f.targets)
        out.append(
            [
                f.name,
                _fmt(f.value),
                f"{_fmt(min(f.samples))} .. {_fmt(max(f.samples))}",
                f.unit,
                f.baseline or "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{peer_ratio:.1f}x" if peer_ratio is not None else "-",
                targets or "-",
            ]
        )
    return out


HEADERS = ["workload", "median", "min .. max", "unit", "baseline", "ratio", "vs peer", "targets"]


def print_table(machine: dict[str, Any], figs: dict[str, Figure]) -> None:
    print(
        f"{machine['command']}  ({machine['seconds']} s, load {machine['loadavg_start'][0]:.2f}"
        f" -> {machine['loadavg_end'][0]:.2f})"
    )
    print(
        f"eventcore {machine['eventcore']} ({machine['eventcore_build']} build), "
        f"{machine['baseline']}, PostgreSQL {machine.get('postgres', {}).get('server_version')}"
    )
    table = [HEADERS, *rows(figs)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    for i, r in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if j in (0, 3, 4, 7) else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_markdown(path: Path, machine: dict[str, Any], figs: dict[str, Figure]) -> None:
    table = [HEADERS, ["---"] * len(HEADERS), *rows(figs)]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table]
    pg = machine.get("postgres", {})
    missed = [
        f"- `{f.name}`: {t.label()} (got {_fmt(f.value)} {f.unit}"
        + (f", ratio {f.ratio(figs):.2f}" if t.on == "ratio" and f.ratio(figs) else "")
        + (f", {f.peer_ratio(figs):.1f}x peer" if t.on == "peer" and f.peer_ratio(figs) else "")
        + ")"
        for f in figs.values()
        for t in f.targets
        if t.check(f, figs) is False
    ]
    text = MARKDOWN.format(
        command=machine["command"],
        table="\n".join(lines),
        cpu=machine["cpu"],
        cpus=machine["cpus"],
        platform=machine["platform"],
        python=machine["python"],
        eventcore=machine["eventcore"],
        build=machine["eventcore_build"],
        baseline=machine["baseline"],
        pg=pg.get("server_version", "-"),
        pg_settings=", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version"),
        asyncpg=machine.get("asyncpg"),
        psycopg=machine.get("psycopg"),
        seconds=machine["seconds"],
        load=f"{machine['loadavg_start'][0]:.2f} -> {machine['loadavg_end'][0]:.2f}",
        missed="\n".join(missed) or "None: every target was met in this run.",
    )
    path.write_text(text)


def write_chart(path: Path, figs: dict[str, Figure]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        f for f in figs.values() if f.name.startswith(("memory.", "postgres.")) and f.unit != "ms"
    ]

    def against(f: Figure, prefix: str) -> Figure | None:
        """The figure ``f`` is compared with whose key starts with ``prefix``, if any."""
        for name in (f.peer, f.baseline):
            if name and name.startswith(prefix) and name in figs:
                return figs[name]
        return None

    # Only bars that are what the legend says: eventcore's own baselines (a cold command
    # for a warm one, no snapshot for a snapshot) are in the table, not in the chart.
    groups = [f for f in groups if against(f, "peer.") or against(f, "raw.")]
    labels = [f"{f.name}\n({f.unit})" for f in groups]
    series: dict[str, list[float]] = {
        "eventcore": [],
        "eventsourcing 9.5.6": [],
        "raw asyncpg limit": [],
    }
    for f in groups:
        series["eventcore"].append(f.value)
        peer, raw = against(f, "peer."), against(f, "raw.")
        series["eventsourcing 9.5.6"].append(peer.value if peer else float("nan"))
        series["raw asyncpg limit"].append(raw.value if raw else float("nan"))
    fig, ax = plt.subplots(figsize=(13, 5.5))
    width = 0.27
    colors = {
        "eventcore": "#2b6cb0",
        "eventsourcing 9.5.6": "#dd6b20",
        "raw asyncpg limit": "#718096",
    }
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - 1) * width for j in range(len(groups))]
        ax.bar(xs, values, width, label=label, color=colors[label])
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("throughput (log scale; higher is better)")
    ax.set_title(
        "eventcore vs eventsourcing 9.5.6 vs the raw asyncpg limit (same run, same machine)"
    )
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MARKDOWN = """# Benchmarks

eventcore against the leading Python event-sourcing library ([`eventsourcing`][es] 9.5.6)
and against the physical limit of PostgreSQL (raw asyncpg doing the minimal transaction
for the same work), measured side by side in ONE run on ONE machine. Regenerate this page
(table and chart) with:

```sh
{command}
```

![eventcore vs eventsourcing vs the raw asyncpg limit](benchmarks.png)

{table}

*median* is the median of the timed repetitions after warm-up (min and max beside it);
*ratio* = eventcore / its *baseline* (for `memory.*` the matching
`peer.eventsourcing.memory.*` figure, for `postgres.*` the matching `raw.asyncpg.*`
figure); *vs peer* = eventcore / the matching `peer.eventsourcing.postgres.*` figure.

## Machine

- {cpu} x{cpus}, {platform}; Python {python}; run took {seconds} s, load average {load}
  (the machine is shared: other builds and tests ran in parallel).
- eventcore {eventcore} ({build} build); {baseline}; asyncpg {asyncpg}; psycopg {psycopg}.
- PostgreSQL {pg}, started by the harness as the test suite starts it ({pg_settings}).

## Targets missed in this run

{missed}

## Where the time goes on PostgreSQL

### The raw baseline was not the limit (issue 11)

One full run had `raw.asyncpg.command.locked.c1` (five round trips, pessimistic) at
1,139/s and `raw.asyncpg.command.c1` (two round trips, "the limit") at 505/s. Measured
on this machine (`uptime` load 1.1-2.5 on 2 cores, other jobs running):

- **The raw side went through `asyncpg.Pool` for every command.** An acquire and release
  cost more than the statements: `SELECT 1` took 174 us through the pool against 49 us on
  a bare connection, the command's fold read 92 us bare (c1, same script). eventcore's
  store has its own leaner pool, so only the baseline paid it. Each raw client now owns
  one connection for the whole run. Back to back (`--quick --only postgres.command`):
  raw c1 268 -> 1,112/s and c16 1,381 -> 4,938/s; eventcore's ratios against it fell
  from 0.98x to 0.70x (c1) and from 1.05x to 0.44x (c16).
- **The locked reference was measured apart, and committed twice.** It ran in its own
  repetitions after the alternated sides, and its stream row was an autocommit before the
  transaction (two WAL flushes per command, `pg_stat_wal`; the raw command has one). A c1
  figure waits for a WAL flush per commit, so it follows the disk's flush latency at that
  moment, which the shared machine moves by 2-3x within a minute (eventcore's cold c1 was
  263/s and 775/s in two quick runs a minute apart). Now one transaction, alternated with
  the other sides: 709/s against raw's 1,112/s (0.64x), slower, as its extra round trips
  predict, and 0.57x in a script alternating them on one connection each. Not stable at
  load 2-5: in five quick runs the locked median came out above raw's twice, with each
  side's three repetitions spanning 2-5x (see the last bullet of the next section).
- **Not plans, not `synchronous_commit`.** The fold read is a bitmap scan of the
  `(stream_id, version)` index with a custom and with a generic plan (about 20 us to
  execute); every side runs with `fsync` and `synchronous_commit` on and commits once.
- **One statement.** `raw.asyncpg.command.onetrip.*` is the conditional write alone, the
  expected version known beforehand (what a warm eventcore command does): 1,741/s at c1
  and 7,329/s at c16 in that run. A command's floor here is one round trip and one WAL
  flush: about 450 us at c1 (about 130 us of client CPU, 100 us of statement, the rest the
  flush and wake-ups). A cold command cannot be one statement: `handle` decides in Python
  on the folded state, between the read and the write.
- **What the raw command skips** (so it stays an upper bound): the per-stream advisory
  lock and the events-table lock taken before the transaction id (which keep each
  stream's events in version order in the global log and let readers see in-flight
  appends), the event-id probe (idempotent appends), the input re-checks, `NOTIFY`, the
  metadata columns and all Python-side work.

### One round trip when warm (issue 11)

With a cached state a command runs `handle` and appends with the cached versions as its
expected versions, without reading (`PostgresStore.warm_append_first`). On a conflict
`append_events` (migration 0005) returns each checked stream's events from its expected
version on (at most 256 rows): the pipeline folds them, if they continue its fold in log
order, and decides again without a read. That conflict costs no retry attempt (it told
what a read would have). Cold commands still read, then append.

- The conflict answer did not slow the ok path: server time per one-event append
  (`pg_stat_user_functions`, five alternated runs each): c1 median 211 us before, 223 us
  after (runs spread 177-233 and 195-250 us); c16 398 against 407 us.
- A warm command at c1 (2,000 in a row, 100-event stream): about 280 us of client CPU
  (the raw one-trip write: 130 us), 160-240 us inside `append_events` (the raw statement:
  about 100 us), then the commit's WAL flush; 695-1,413 us wall in four runs a minute
  apart, 700-1,440 commands/s. 1,500/s leaves 667 us per command; the flush and the raw
  statement alone take about 450 us here, leaving about 220 us for the client and the
  function together, against about 450 us measured. Turning the coalesced `NOTIFY` off
  changed nothing measurable at this noise.
- At c16 the 2 cores are shared by the server, the 16 clients and the other jobs: the CPU
  per command (client plus server, about 500 us against raw's 230 us) bounds it. Of the
  client's part, most is the driver and the event loop (asyncpg encoding ten array
  parameters and decoding a twelve-column row, the socket calls); eventcore's own Python
  (pipeline, input checks, cache, folding its own event) is about a fifth (cProfile).
- Then (issue 11, schema 13): a plain append to one stream (what a warm command sends)
  goes to `append_stream` instead: scalar stream and version, three event arrays, a
  six-column answer; the version check, stream bump and insert in one statement; no
  event-id probe before the write (a stored id is answered by `append_events` after a
  conflict or the insert's unique violation). And no `NOTIFY` while nobody listens (a
  listener holds a marker lock the notifier looks for in `pg_locks`). Per call, at c1
  with the commit flush, two runs on a loaded machine (per-process CPU from `/proc`, a
  throwaway script): the function's server CPU 415-440 us against `append_events`'
  565-595 us and the raw one-trip statement's 255-285 us; client CPU of the bare call
  191-195 us against 205-235 us (raw: 158-162 us). Warm commands alternated with the
  old path (`append_events`, a listener present) in one process: at c16 1.11x and 1.23x
  in two runs (1,538 against 1,250/s; raw two-trip 1,668, one-trip 2,772: 0.92x and
  0.55x). At c1 the client CPU per command fell from about 464 to 344 us, nearly all of
  it the `NOTIFY`; the c1 rates were flush-bound (200-400/s) and went both ways between
  runs: with the `NOTIFY`s on, both paths ran faster at c1 on this VM, so its wall rate
  is not a measure of either change.
- c1 figures on this shared machine are a poor guide: at load 3-5 on 2 cores every
  wake-up of the client or the server waits for a core, and an 8 KiB `fdatasync` took
  90-133 us at the median but up to 331 us at p90 and 4 ms at worst (three rounds of
  200). In one quick run the raw one-trip write's three repetitions spanned 287-851/s.

### One client without the disk (issues 11 and 19)

At one client a write costs client CPU, round trips, server CPU and its commit's WAL
flush, one after the other. The flush is the same for every side and follows the disk;
the rest is measured apart, in figures the disk does not move, by two diagnostics (blocks
of each side alternated in one process; the backends' CPU from `/proc`):

- `python -m benches.pg_workloads --cpu` (30 blocks of 200 writes per side, load 1.7-2.6
  on 2 cores), per write, client CPU / server CPU / statements / WAL bytes:
  - the warm command (`postgres.command.warm100`'s): 283 us / 342 us / 1.03 / 618;
  - `PostgresStore.append` of the same event: 252 / 358 / 1.02 / 619;
  - the store's direct statement on a bare connection: 172 / 316 / 1 / 639;
  - the raw one-trip write (`raw.asyncpg.command.onetrip`, a new stream each):
    171 / 273 / 1 / 836;
  - the raw write as an `UPDATE` of an existing stream (what a warm command writes,
    without locks): 162 / 263 / 1 / 644.

  One round trip per command; the extra 0.01-0.03 statements are a snapshot write per 100
  events and the notifier's look for listeners every 0.1 s. A warm command writes no more
  WAL than the raw write: 7 records (the raw write into a new stream: 9; `pg_walinspect`).
- **The statement's server time.** Against the raw `UPDATE` the direct statement costs
  about 40 us more of server CPU (one backend, `synchronous_commit` off, variants
  alternated in a throwaway script): the shared DCB locks of the written type and of the
  whole log about 11 us, the stream lock about 4 us, the rest the locks' MATERIALIZED CTE
  joined to the write (which is what orders the locks before the transaction id). The
  answer (`stream_conflict` only on a conflict, the aggregate) costs nothing measurable,
  nor do its ten parameters against five. Every one of these is a guarantee of the
  append (the never-skipping log, DCB conditions race-free against plain appends).
  At 16 clients (16 connections, `synchronous_commit` on, alternated): 213 us of server
  CPU per statement against the raw `UPDATE`'s 171, 211 without the shared DCB locks (so
  no contention on the whole log's key), 2,778 against 3,072 statements/s (0.90x). What
  is left of `postgres.command.warm100.c16`'s gap to the one-trip write is the client's.
- **The client.** The statement on a bare connection costs the client about what the raw
  write costs (0-15 us more in three runs: it reads back a row). With the server's answer
  simulated in-process, everything eventcore runs per
  warm command (executor, command machine, the example's `handle` and `apply`, the store,
  the pool) takes about 26 us of CPU, about half of it in the store's Python; the cyclic
  GC has no measurable share. Between real round trips the same code took 100-115 us more
  than the bare statement in these runs (the split between executor and store moved by
  30 us from run to run): on this shared VM every switch to the server process and back
  leaves caches and branch predictors cold, so each microsecond of work costs 3-4.
  Replacing the store's whole append with a bare `fetchrow` on a pooled connection (a
  throwaway script, alternated) saved 17 us per command: that is all a leaner store path
  could give.
- **The DCB decision** (`python -m benches.dcb_workloads --parts`, 20 blocks of 100),
  client / server CPU per call: the query read 149 / 139 us; the conditional tagged
  append 309 / 529; a plain append of the same event 216 / 335; the whole decision 475 /
  708. What the condition and tag add to the append on the server (statement variants,
  one backend): the inline condition check about 70 us (the tag index lookup after the
  read's position about 35, the check that no unseen transaction committed about 20), the
  advisory keys (hashed, grouped, sorted, taken) about 35, the tag row about 24, the
  carried read's branch about 19 (its plan is initialized even when it does not run). On
  the client its 19 parameters (8 arrays) cost about 20 us more to encode than the plain
  append's 9. Nothing is done twice but what the model requires: the append checks the
  read's query again after the read's position, under its locks.
- **What that means at one client.** With `python -m benches.dcb_workloads` in the same
  session a decision took 1.15 ms of CPU (client and server), the floor 1.18 ms and the
  peer 2.86 ms. Per decision the ratio to the peer is about (2.86 + x) / (1.15 + x), x
  being the flush and the wake-ups: 2x needs x under about 0.55 ms, which this disk gave
  in some runs and not in others. A warm command took 625 us of CPU in the `--cpu` run
  (raw: 444), so 1,500/s (667 us per command) needs a flush and wake-ups of about 40 us;
  the first such run of the session, at a lower load, measured 531 us of CPU and
  1,470/s.
- **A warm query command** (`dcb.postgres.command.invoice.c1`: the example's
  `CreateInvoice` through `execute`, alternated with the floor) decides on its cached
  last number without a read and sends one conditional append: one round trip and one
  flush per command, where the floor makes two round trips. Against the same command
  reading first (the store's `warm_append_first` off, blocks alternated at one client in
  a throwaway script) it made 836 against 572 commands/s (medians of 12 blocks).
- **`wal_sync_method`.** `pg_test_fsync -s 2` on the disk that holds the server's data,
  four runs within half an hour beside other jobs: one 8 kB write took 213 / 144 / 3,509
  / 2,037 us with `fdatasync` (the default), 438 / 172 / 3,624 / 2,770 with
  `open_datasync`, 249 / 597 / 3,527 / 1,322 with `fsync`, 389 / 2,200 / 3,781 / 833
  with `open_sync`. No method was faster in every run: the harness keeps the default.

### Earlier fixes

Measured on the same server with cProfile, per-process CPU from `/proc`,
`track_functions` (`pg_stat_user_functions`), `auto_explain` with nested statements,
pgbench on the append function alone, and `pg_stat_activity` wait sampling.

What was fixed after the first profile (the first run had c1 at 0.41x raw, c16 at 0.24x,
the transfer at 0.41x, the read at 55-80k events/s):

- **Re-planning.** PL/pgSQL planned `append_events`' array statements afresh on every
  call: about 750 us of server time for a one-event append. Generic plans
  (`plan_cache_mode = force_generic_plan`, with `enable_seqscan = off` on the function so
  plans made while the tables are small stay index plans) bring it to about 175 us.
- **One statement on the multi-stream path.** When there are events and every checked
  stream is written, the version check, the stream-row bump or creation and the insert
  are one statement after the per-stream advisory locks.
- **A one-stream path.** That statement still starts about 40 executor nodes. Events for
  one stream (the common command, a batch) take the stream lock, an event-id probe, ONE
  upsert that checks the expected version and bumps the row, and the insert: about half
  the server time (at 16 clients about 190-250 us of server CPU per one-event append
  against 300-500 us; the raw conditional insert costs about 100 us).
- **`NOTIFY` serialized commits.** A transaction that notifies holds a database-wide lock
  through its WAL flush, so at 16 clients commits queued instead of sharing flushes. The
  store notifies after the commit, from one connection, coalesced over 2 ms,
  fire-and-forget, and that notification's own commit does not wait for its WAL flush
  (`synchronous_commit` off for it alone: notifications are not durable anyway).
- **The connection pool.** `asyncpg.Pool` cost more per statement than the statement's
  client side: `SELECT 1` took 146 us through `Pool.fetchval` against 84 us on a bare
  connection at one client (80 against 44 us of CPU at 16 clients: a shielded release
  task per statement, a queue, a holder, a proxy, a reset round trip by default). A
  store made from a DSN now keeps its own pool (idle list, first-come first-served
  waiters, connections whose statement was interrupted are terminated, never reused).
  At 16 clients eventcore's client CPU per command fell from about 290 to about 180 us
  (raw: 165 us).
- **The read sorted the table.** The snapshot bound made the planner sort every row; it
  is now applied per page, so the read walks the index. Metadata is parsed on first
  access instead of in a loop over every page.
- **The read fed Python's cyclic GC.** With the peer's objects in the process (68k), a
  200k-event read spent 250-370 ms of about 1 s in collections (raw: about 50 ms): four
  GC-tracked objects per event (asyncpg's Record and UUID, the RecordedEvent, the decoded
  event) and eight full collections. asyncpg's UUID is tracked, bytes are not: the reads
  select `uuid_send(event_id)` and `RecordedEvent.event_id` converts on access (GC time
  170-196 ms, the read 155-227k -> 250-284k events/s in the same script).

What is left:

- **The append function's server time.** `append_stream` (schema 13) still takes about
  1.6x the raw statement's: the PL/pgSQL call itself (`SECURITY DEFINER` with its
  settings, so the application role needs no INSERT; the OUT columns' row type built per
  call), the shared locks conditional appends need (the event type and the whole log),
  the events-table lock and the stream's advisory lock taken before the transaction gets
  an id (which is what keeps the log gap-free), and the input re-checks. perf on the
  backend shows no single step above a few percent. At 16 clients the server shares the
  2 cores with the client, so this is most of the remaining gap.
- **c1.** Two round trips per command like raw for a cold command; a `NOTIFY` on a
  second connection only while some process listens.
- **Reading the log (about 0.6x raw).** Each row still becomes a `RecordedEvent` (fast
  builder; UUID, timestamp, metadata and payload decoding are lazy): three GC-tracked
  objects per event live for a page (Record, RecordedEvent, decoded event) against the
  raw read's two (Record, UUID), so collections still take about a fifth of the read.
  A RecordedEvent built natively without GC tracking would remove most of that.

## How it is measured

- Every workload builds its data untimed, runs warm-up repetitions that are thrown away,
  then several timed repetitions. eventcore and its baselines run in the same process,
  their repetitions alternating (the side that goes first rotates), so they see the same
  noise. `--json` keeps every sample, min and max.
- In memory (`eventcore._bench`'s bank workloads, the peer's sides in `benches/core.py`):
  wall time with the cyclic GC collected before and disabled during each repetition, for
  both libraries. The peer uses its POPO
  infrastructure with no snapshots and no cache (its defaults).
- On PostgreSQL (`benches/pg_workloads.py`): wall time, each repetition time-bound (every
  client loops until the deadline); `c16` is 16 asyncio tasks over a pool of 16
  connections (eventcore), 16 asyncio tasks owning one connection each (raw: no pool
  between a client and its statements) or 16 threads over a pool of 16 connections (the
  peer, which is synchronous). Same server, same durability for all three: `fsync=on`,
  `synchronous_commit=on`.
- **The raw asyncpg limit** writes into a migrated eventcore schema (same tables, indexes
  and row contents) with the fewest round trips that do the same work: the command's fold
  read (`SELECT stream_id, event_type, payload FROM events WHERE stream_id = ANY($1)`),
  then ONE autocommit statement that bumps the stream's version only if it is still the
  version read and inserts the event from the row that returned (`INSERT INTO streams ..
  ON CONFLICT DO UPDATE SET version = version + 1 WHERE version = $expected RETURNING
  version`, then `INSERT INTO events .. SELECT .. FROM` it): 2 round trips, 1 commit,
  optimistic concurrency like eventcore's. It skips what eventcore adds on top: the
  idempotency check on event ids, locking the streams in a fixed order, `NOTIFY`, the
  metadata columns, and all Python-side work (command object, fold, encoding, result
  objects). The transfer reads both streams in one query and writes both in one
  all-or-nothing statement; the batch inserts 1,000 rows from `unnest` arrays in one
  statement; the read fetches pages of 1,000 rows and decodes each payload with the same
  msgspec codec. `raw.asyncpg.command.onetrip.*` is the conditional write alone, the
  expected version known (one round trip: the floor for a warm command). The pessimistic
  transaction (`BEGIN; INSERT stream; SELECT .. FOR UPDATE; INSERT; UPDATE; COMMIT`, six
  round trips, one commit) is shown as `raw.asyncpg.command.locked.c1`.
- `postgres.command.warm100.*` deposits into each client's own 100-event account with the
  store's state cache warm (after the warm-up repetition): `handle` and one append.
- `postgres.sync.command.c1` is `postgres.command.cold.c1` from synchronous code:
  `execute_sync` on a `SyncPostgresStore` (same schema), one client in the calling
  thread, which runs the command on its own event loop and connection (no thread hop);
  its baseline is the async figure, alternated with it in the same run.
- The peer on PostgreSQL is configured through its environment
  (`PERSISTENCE_MODULE=eventsourcing.postgres`, `POSTGRES_DBNAME`, `POSTGRES_HOST`,
  `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_POOL_SIZE=16`,
  `POSTGRES_SCHEMA`); a command is `repository.get`, one method call, `save`.
- `memory.read.1000` reads 1,000-event streams (decoded), its peer reads 1,000-event
  aggregates' stored events (`app.events.get`, decoded); `postgres.read` reads the global
  log. `postgres.projection.replay` (a `ProjectionRunner` counting events by type) has the
  raw read as its baseline; `postgres.projection.lag_p99_ms` is the p99 of
  (applied - committed) with 16 writers appending single events;
  `postgres.projection.lag_p99_ms.stalled` is the same while one idle-in-transaction
  session holding a transaction id sits in another database of the cluster and one in the
  same database (on an unrelated table) for the whole run. Run one key alone with
  `--only KEY` (a prefix, repeatable), e.g.
  `python benches/headline.py --quick --only postgres.projection.lag_p99_ms.stalled`.

## Comparing a change against a saved baseline (pytest-benchmark)

The pytest-benchmark suite in `benches/` runs a small subset of these workloads:

```sh
pip install -e '.[test,bench]'
python -m pytest benches -q --benchmark-save=before            # on main
git switch my-change && make install                               # rebuild the extension
python -m pytest benches -q --benchmark-compare=0001_before \\
    --benchmark-compare-fail=mean:10%                             # fails on a >10% slowdown
python -m pytest benches -q --benchmark-disable                  # smoke: each body once
```

Saved runs live in `.benchmarks/` (`--benchmark-compare` without a name compares against
the latest). CI runs the suite with `--benchmark-disable` and never fails on timing: the
machines are noisy. Compare on a quiet machine, and rerun before believing a 10% change.

[es]: https://github.com/pyeventsourcing/eventsourcing
"""


# ---------------------------------------------------------------------------------------------
# Driver


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print ONE JSON object")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: start a throwaway server)")
    parser.add_argument("--out", type=Path, help="write benchmarks.md and benchmarks.png here")
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory workloads")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY",
        help="run only the PostgreSQL workloads whose key starts with KEY (repeatable),"
        " e.g. postgres.command or postgres.projection.lag_p99_ms.stalled;"
        " the in-memory ones only if a KEY starts with memory (shred.* if it starts with shred)",
    )
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also run the in-memory workloads that are not headline keys (msgspec events,"
        " 1000-stream batches, folds, memory per event, per-event projection replay)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only time the pieces of memory.command.cold and memory.transfer (us per"
        " command: build, user code, codec, store calls, result objects, the executor)",
    )
    args = parser.parse_args(argv)
    started = _perf()
    if args.breakdown:
        n, reps = (2_000, 5) if args.quick else (5_000, 15)
        parts = core.breakdown(DC, n, reps)
        if args.json:
            out = {b.workload: b.as_json() for b in parts}
            print(json.dumps({"machine": machine_info(args.quick, argv), "breakdown": out}))
        else:
            core.print_breakdown(parts, n, reps)
        return 0

    def log(name: str) -> None:
        print(f"  ... {name} done ({_perf() - started:.0f} s)", file=sys.stderr, flush=True)

    machine = machine_info(args.quick, argv)
    figures: list[Figure] = []
    if not args.no_memory and (not args.only or any(o.startswith("memory") for o in args.only)):
        if not args.only or not all(o.startswith("memory.fold.upcast") for o in args.only):
            figures += memory_figures(args.quick, log)
        figures += upcast_figures(args.quick, log)
    if args.extra:
        figures += extra_figures(args.quick, log)
    mem_shred = ("shred.memory".startswith(o) or o.startswith("shred.memory") for o in args.only)
    if not args.no_memory and (not args.only or any(mem_shred)):
        figures += shred_figures(args.quick, log)
    if not args.no_memory and (not args.only or any(o.startswith("dcb.memory") for o in args.only)):
        figures += dcb_memory_figures(args.quick, log)
    if not args.no_sqlite and (not args.only or any(o.startswith("sqlite") for o in args.only)):
        figures += sqlite_figures(args.quick, log, args.only)
    if not args.no_postgres and (
        not args.only
        or any(
            not o.startswith(("memory", "sqlite", "shred.memory", "dcb.memory")) for o in args.only
        )
    ):
        dsn, server = start_server(args.dsn)
        if dsn is None:
            print("no PostgreSQL server binaries found; use --dsn", file=sys.stderr)
        else:
            try:
                machine["postgres"] = server_info(dsn)
                figures += postgres_figures(dsn, args.quick, log, args.only)
            finally:
                if server is not None:
                    server.shutdown()
    machine["loadavg_end"] = os.getloadavg()
    machine["seconds"] = round(_perf() - started, 1)
    figs = {f.name: f for f in figures}
    if args.json:
        print(
            json.dumps(
                {"machine": machine, "workloads": {n: f.as_json(figs) for n, f in figs.items()}},
                indent=2,
            )
        )
    else:
        print_table(machine, figs)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_markdown(args.out / "benchmarks.md", machine, figs)
        write_chart(args.out / "benchmarks.png", figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
