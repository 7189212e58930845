"""Core benchmarks of eventcore's in-memory store, each against the ``eventsourcing`` baseline.

Run from the repository root::

    python benches/core.py            # full run (a few minutes on a busy 2-core machine)
    python benches/core.py --quick    # smaller sizes, fewer repetitions (< 60 s)
    python benches/core.py --json     # one JSON object instead of the table
    python benches/core.py --only memory.command  # workloads whose name starts with this

Method: every workload builds its data untimed, runs ``warmup`` repetitions that are thrown
away, then ``reps`` timed repetitions; the value is the median rate, with min and max kept.
eventcore and the baseline (``eventsourcing`` 9.5.x, in-memory POPO infrastructure, no cache,
no snapshots) run the same work in the same process, their repetitions alternating, so the
ratio is measured under the same machine noise. The cyclic GC is collected before and
disabled during every timed repetition for both sides (the ``timeit`` convention; ``--gc``
keeps it enabled).
Memory is measured in fresh subprocesses (RSS from /proc/self/statm; tracemalloc cannot see
Rust allocations).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

import eventcore  # noqa: E402
from benches.domain import DC, MS, Account, Domain, baseline  # noqa: E402
from eventcore import (  # noqa: E402
    ExecutionResult,
    MemoryStore,
    NewEvent,
    StreamId,
    execute_sync,
)
from eventcore._core import uuid7_ints  # noqa: E402
from eventcore.recorded import AppendResult  # noqa: E402
from eventcore.snapshot import SNAPSHOT_EVERY, MemorySnapshotStore, Snapshotter  # noqa: E402

_perf = time.perf_counter
KEEP_GC = False

# ---------------------------------------------------------------------------------------------
# Measurement helpers


def timed(body: Callable[[], float]) -> float:
    """Run ``body`` (which returns the units of work it did) and return units per second."""
    gc.collect()
    if not KEEP_GC:
        gc.disable()
    try:
        started = _perf()
        units = body()
        elapsed = _perf() - started
    finally:
        gc.enable()
    return units / elapsed


def timed_parts(body: Callable[[], tuple[float, float]]) -> float:
    """Like :func:`timed` for bodies that time themselves: ``body() -> (units, seconds)``."""
    gc.collect()
    if not KEEP_GC:
        gc.disable()
    try:
        units, elapsed = body()
    finally:
        gc.enable()
    return units / elapsed


def measure(
    res: Result,
    sz: Sizes,
    ec_once: Callable[[], float],
    es_once: Callable[[], float] | None,
) -> Result:
    """Warm up both sides, then alternate eventcore and baseline repetitions.

    Alternating puts both sides under the same machine noise; each ``*_once`` builds its
    data untimed and returns the rate of one timed repetition. Stops early (after at least
    3 repetitions) once ``sz.workload_seconds`` per side have passed.
    """
    for _ in range(sz.warmup):
        ec_once()
        if es_once is not None:
            es_once()
    deadline = _perf() + sz.workload_seconds * (1 if es_once is None else 2)
    for i in range(sz.reps):
        res.rates.append(ec_once())
        if es_once is not None:
            res.base_rates.append(es_once())
        if i >= 2 and _perf() > deadline:
            break
    return res


@dataclass
class Sizes:
    reps: int
    warmup: int
    cold: int  # commands per repetition (eventcore)
    cold_base: int  # commands per repetition (baseline)
    warm: int  # streams of 100 events per repetition (eventcore)
    warm_base: int
    transfer: int  # transfers per repetition
    transfer_base: int
    batches: int  # batches of 1000 per repetition
    batches_base: int
    mem_events: int  # events stored for the memory measurement (eventcore)
    mem_events_base: int
    read_streams: int  # streams of 1000 events read per repetition
    read_streams_base: int
    fold_streams: int  # streams of 100 events folded per repetition
    fold_streams_base: int
    workload_seconds: float  # soft cap on the time spent measuring one side of a workload


FULL = Sizes(
    reps=9,
    warmup=2,
    cold=40_000,
    cold_base=3_000,
    warm=4_000,
    warm_base=300,
    transfer=20_000,
    transfer_base=1_500,
    batches=200,
    batches_base=10,
    mem_events=1_000_000,
    mem_events_base=200_000,
    read_streams=40,
    read_streams_base=10,
    fold_streams=2_000,
    fold_streams_base=200,
    workload_seconds=25.0,
)
QUICK = Sizes(
    reps=5,
    warmup=1,
    cold=10_000,
    cold_base=1_000,
    warm=1_000,
    warm_base=60,
    transfer=5_000,
    transfer_base=400,
    batches=50,
    batches_base=3,
    mem_events=1_000_000,
    mem_events_base=50_000,
    read_streams=10,
    read_streams_base=3,
    fold_streams=500,
    fold_streams_base=60,
    workload_seconds=4.0,
)


@dataclass
class Result:
    name: str
    unit: str
    target: float | None
    higher_is_better: bool = True
    rates: list[float] = field(default_factory=list)
    base_rates: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.rates)

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.base_rates) if self.base_rates else None

    @property
    def ratio(self) -> float | None:
        b = self.baseline
        return self.value / b if b else None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "min": min(self.rates),
            "max": max(self.rates),
            "baseline_min": min(self.base_rates) if self.base_rates else None,
            "baseline_max": max(self.base_rates) if self.base_rates else None,
            "reps": len(self.rates),
            "target": self.target,
            "target_kind": ">=" if self.higher_is_better else "<=",
            "met": self.met,
            "note": self.note,
        }


# ---------------------------------------------------------------------------------------------
# Data preparation (untimed)

OPENED_OWNER = "owner"
DEPOSIT = 100


def history(domain: Domain, n: int) -> list[tuple[str, bytes]]:
    """The encoded events of an account holding ``n`` events: opened, then deposits."""
    enc = domain.registry.encode
    return [enc(domain.AccountOpened(OPENED_OWNER))] + [
        enc(domain.Deposited(DEPOSIT)) for _ in range(n - 1)
    ]


def filled_store(domain: Domain, streams: Iterable[str], per_stream: int) -> MemoryStore:
    """A store where every stream holds ``per_stream`` events (appended in ~1000-event batches)."""
    store = MemoryStore(registry=domain.registry)
    events = history(domain, per_stream)
    batch: list[NewEvent] = []
    for s in streams:
        batch.extend(NewEvent(s, name, payload) for name, payload in events)
        if len(batch) >= 1000:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)
    return store


def es_accounts(app: Any, b: Any, n: int, events_each: int) -> list[Any]:
    """``n`` baseline accounts holding ``events_each`` events each; returns their ids."""
    ids = []
    for _ in range(n):
        acc = b.EsAccount(OPENED_OWNER)
        for _ in range(events_each - 1):
            acc.deposit(DEPOSIT)
        app.save(acc)
        ids.append(acc.id)
    return ids


def es_deposits(n: int, events_each: int) -> Callable[[], float]:
    """The baseline's deposit workload: one repetition deposits once into each of ``n``
    fresh accounts holding ``events_each`` events (get, deposit, save); returns its rate."""
    b = baseline()

    def run() -> float:
        app = b.EsBank()
        ids = es_accounts(app, b, n, events_each)
        get, save = app.repository.get, app.save

        def body() -> float:
            for i in ids:
                acc = get(i)
                acc.deposit(DEPOSIT)
                save(acc)
            return len(ids)

        rate = timed(body)
        assert get(ids[-1]).version == events_each + 1
        return rate

    return run


# ---------------------------------------------------------------------------------------------
# Workloads: each returns a Result


def w_command_cold(sz: Sizes, domain: Domain, with_baseline: bool) -> Result:
    res = Result(f"memory.command.cold.{_variant(domain)}", "commands/s", 187_711)
    res.note = "OpenAccount on a fresh stream: build command + execute_sync"
    counter = [0]

    def ec_once() -> float:
        store = MemoryStore(registry=domain.registry)
        k = counter[0] = counter[0] + 1
        ids = [f"acc-{k}-{i}" for i in range(sz.cold)]
        open_account = domain.OpenAccount

        def body() -> float:
            for s in ids:
                execute_sync(store, open_account(account=s, owner=OPENED_OWNER))
            return len(ids)

        return timed(body)

    es_once = es_deposits(sz.cold_base, 1) if with_baseline else None
    return measure(res, sz, ec_once, es_once)


def w_command_warm(sz: Sizes, domain: Domain, with_baseline: bool) -> Result:
    res = Result(f"memory.command.warm100.{_variant(domain)}", "commands/s", 50_000)
    res.note = (
        "Deposit on streams of 100 events whose state is cached (one untimed Deposit per "
        "stream first); baseline: its aggregates of 100 events, no snapshots"
    )
    counter = [0]

    def ec_once() -> float:
        k = counter[0] = counter[0] + 1
        ids = [f"acc-{k}-{i}" for i in range(sz.warm)]
        store = filled_store(domain, ids, 100)
        deposit = domain.Deposit
        for s in ids:  # warm the state cache (untimed)
            execute_sync(store, deposit(account=s, amount=DEPOSIT))

        def body() -> float:
            for s in ids:
                execute_sync(store, deposit(account=s, amount=DEPOSIT))
            return len(ids)

        rate = timed(body)
        assert store.stream_version(ids[-1]) == 102
        assert store.state_cache is not None and store.state_cache.hits >= len(ids)
        return rate

    es_once = es_deposits(sz.warm_base, 100) if with_baseline else None
    return measure(res, sz, ec_once, es_once)


def w_command_warm10k(sz: Sizes, domain: Domain) -> Result:
    res = Result(f"memory.command.warm10k.{_variant(domain)}", "commands/s", None)
    res.note = "Deposit on one stream of 10,000 events whose state is cached (no baseline)"
    counter = [0]

    def ec_once() -> float:
        k = counter[0] = counter[0] + 1
        account = f"big-{k}"
        store = filled_store(domain, [account], 10_000)
        deposit = domain.Deposit
        execute_sync(store, deposit(account=account, amount=DEPOSIT))  # warm (untimed)
        n = sz.warm

        def body() -> float:
            for _ in range(n):
                execute_sync(store, deposit(account=account, amount=DEPOSIT))
            return n

        rate = timed(body)
        assert store.stream_version(account) == 10_001 + n
        return rate

    return measure(res, sz, ec_once, None)


def w_cache_bytes(sz: Sizes, domain: Domain) -> Result:
    res = Result("memory.cache.bytes_per_entry", "bytes/entry", None, higher_is_better=False)
    res.note = (
        "Python heap (tracemalloc) held per cached Deposit state (bank example: key, entry, "
        "Account, versions), over sz.warm streams of 100 events"
    )
    import tracemalloc

    def ec_once() -> float:
        ids = [f"acc-{i}" for i in range(sz.warm)]
        store = filled_store(domain, [*ids, "warm-up"], 100)
        deposit = domain.Deposit
        commands = [deposit(account=s, amount=DEPOSIT) for s in ids]
        execute_sync(store, deposit(account="warm-up", amount=DEPOSIT))  # first-call caches
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for c in commands:
                execute_sync(store, c)
            del c
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        cache = store.state_cache
        assert cache is not None and len(cache) == len(ids) + 1
        return (after - before) / len(ids)

    res.rates = [ec_once() for _ in range(3)]
    return res


def w_transfer(sz: Sizes, domain: Domain, with_baseline: bool) -> Result:
    res = Result(f"memory.transfer.{_variant(domain)}", "commands/s", 100_000)
    res.note = "Transfer between two streams of 2 events (opened, deposited); atomic write"
    counter = [0]

    def ec_once() -> float:
        k = counter[0] = counter[0] + 1
        ids = [f"acc-{k}-{i}" for i in range(2 * sz.transfer)]
        store = filled_store(domain, ids, 2)
        pairs = list(zip(ids[0::2], ids[1::2], strict=True))
        transfer = domain.Transfer

        def body() -> float:
            for a, b_ in pairs:
                execute_sync(store, transfer(source=a, target=b_, amount=DEPOSIT // 2))
            return len(pairs)

        return timed(body)

    es_once: Callable[[], float] | None = None
    if with_baseline:
        b = baseline()

        def es_run() -> float:
            app = b.EsBank()
            ids = es_accounts(app, b, 2 * sz.transfer_base, 2)
            pairs = list(zip(ids[0::2], ids[1::2], strict=True))
            get, save = app.repository.get, app.save

            def body() -> float:
                for a_id, b_id in pairs:
                    src, dst = get(a_id), get(b_id)
                    src.withdraw(DEPOSIT // 2)
                    dst.deposit(DEPOSIT // 2)
                    save(src, dst)
                return len(pairs)

            return timed(body)

        es_once = es_run
    return measure(res, sz, ec_once, es_once)


def w_append_batch(sz: Sizes, domain: Domain, streams: int, with_baseline: bool) -> Result:
    label = "1stream" if streams == 1 else f"{streams}streams"
    res = Result(f"memory.append.batch1000.{label}", "events/s", 2_000_000)
    res.note = f"store.append of 1000 pre-encoded NewEvent (id None) into {streams} stream(s)"
    enc = domain.registry.encode
    counter = [0]

    def ec_once() -> float:
        k = counter[0] = counter[0] + 1
        store = MemoryStore(registry=domain.registry)
        batches = []
        for j in range(sz.batches):
            if streams == 1:
                batches.append(
                    [NewEvent(f"b-{k}-{j}", *enc(domain.Deposited(i + 1))) for i in range(1000)]
                )
            else:
                batches.append(
                    [
                        NewEvent(f"s-{k}-{i % streams}", *enc(domain.Deposited(i + 1)))
                        for i in range(1000)
                    ]
                )
        append = store.append

        def body() -> float:
            for batch in batches:
                append(batch)
            return 1000 * len(batches)

        rate = timed(body)
        assert len(store) == 1000 * len(batches)
        return rate

    es_once: Callable[[], float] | None = None
    if with_baseline:
        b = baseline()

        def es_run() -> float:
            app = b.EsBank()
            save = app.save
            if streams == 1:
                # One aggregate holding 1000 pending events (opened + 999 deposits) per save.
                batches = []
                for _ in range(sz.batches_base):
                    acc = b.EsAccount(OPENED_OWNER)
                    for i in range(999):
                        acc.deposit(i + 1)
                    batches.append([acc])

                def body() -> tuple[float, float]:
                    started = _perf()
                    for batch in batches:
                        save(*batch)
                    return 1000 * len(batches), _perf() - started

            else:
                # ``streams`` existing aggregates, each with one pending deposit per save.
                accs = [b.EsAccount(OPENED_OWNER) for _ in range(streams)]
                save(*accs)
                per_save = streams

                def body() -> tuple[float, float]:
                    elapsed = 0.0
                    for _ in range(sz.batches_base):
                        for i, acc in enumerate(accs):
                            acc.deposit(i + 1)  # untimed: build the pending events
                        started = _perf()
                        save(*accs)
                        elapsed += _perf() - started
                    return per_save * sz.batches_base, elapsed

            return timed_parts(body)

        es_once = es_run
    return measure(res, sz, ec_once, es_once)


def w_read(sz: Sizes, domain: Domain, with_baseline: bool) -> Result:
    res = Result(f"memory.read.1000.{_variant(domain)}", "events/s", None)
    res.note = "read_stream of a 1000-event stream + .data on every event"
    ids = [f"r-{i}" for i in range(sz.read_streams)]
    store = filled_store(domain, ids, 1000)
    read = store.read_stream

    def ec_once() -> float:
        def body() -> float:
            n = 0
            for s in ids:
                for e in read(s):
                    e.data  # noqa: B018
                    n += 1
            return n

        return timed(body)

    es_once: Callable[[], float] | None = None
    if with_baseline:
        b = baseline()
        app = b.EsBank()
        es_ids = es_accounts(app, b, sz.read_streams_base, 1000)
        get_events = app.events.get

        def es_run() -> float:
            def body() -> float:
                n = 0
                for i in es_ids:
                    for _ in get_events(i):
                        n += 1
                return n

            return timed(body)

        es_once = es_run
    return measure(res, sz, ec_once, es_once)


def w_fold(sz: Sizes, domain: Domain, with_baseline: bool) -> Result:
    res = Result(f"memory.fold.100.{_variant(domain)}", "events/s", None)
    res.note = "fold_streams of one 100-event stream into Account state (command's apply)"
    ids = [f"f-{i}" for i in range(sz.fold_streams)]
    store = filled_store(domain, ids, 100)
    apply = domain.Deposit(account="x", amount=1).apply
    decoders = domain.registry.decoders
    fold = store.fold_streams

    def ec_once() -> float:
        def body() -> float:
            for s in ids:
                state, _ = fold([s], Account(), apply, decoders)
            assert state.balance == 99 * DEPOSIT
            return 100 * len(ids)

        return timed(body)

    es_once: Callable[[], float] | None = None
    if with_baseline:
        b = baseline()
        app = b.EsBank()
        es_ids = es_accounts(app, b, sz.fold_streams_base, 100)
        get = app.repository.get

        def es_run() -> float:
            def body() -> float:
                for i in es_ids:
                    get(i)
                return 100 * len(es_ids)

            return timed(body)

        es_once = es_run
    return measure(res, sz, ec_once, es_once)


def w_first10k(sz: Sizes, domain: Domain) -> Result:
    """The first Deposit per 10,000-event stream with an empty state cache (a restart),
    with a durable snapshot (rates) and without (base_rates), on the same store and data."""
    res = Result("memory.command.first10k.snapshot", "commands/s", None)
    res.note = (
        "first Deposit per 10,000-event stream, state cache cleared: its snapshot (a"
        " MemorySnapshotStore) + the tail, vs a full fold (base)"
    )
    ids = [f"long-{i}" for i in range(sz.read_streams)]
    store = filled_store(domain, ids, 10_000)
    cache = store.state_cache
    assert cache is not None
    snapshots = Snapshotter(MemorySnapshotStore(), domain.registry.codec, SNAPSHOT_EVERY)
    store.snapshots = snapshots
    deposit = domain.Deposit
    for s in ids:  # a running application: each stream's snapshot is written
        execute_sync(store, deposit(account=s, amount=DEPOSIT))
    assert len(snapshots.store) == len(ids)  # type: ignore[arg-type]

    def once(with_snapshots: bool) -> float:
        cache.clear()
        store.snapshots = snapshots if with_snapshots else None
        found = snapshots.found

        def body() -> float:
            for s in ids:
                execute_sync(store, deposit(account=s, amount=DEPOSIT))
            return len(ids)

        rate = timed(body)
        assert snapshots.found - found == (len(ids) if with_snapshots else 0)
        return rate

    return measure(res, sz, lambda: once(True), lambda: once(False))


# ---------------------------------------------------------------------------------------------
# Where a command's time goes (``python benches/headline.py --breakdown``)


@dataclass
class Part:
    """One row of a breakdown: microseconds per command (``within``: a share of the row
    above it, not added to the sum)."""

    name: str
    us: float
    within: bool = False


@dataclass
class Breakdown:
    """A workload's time per command, piece by piece; ``rest`` is the total minus the pieces."""

    workload: str
    note: str
    parts: list[Part]
    total: float  # us per command of the workload itself (build + execute_sync)

    @property
    def rest(self) -> float:
        return self.total - sum(p.us for p in self.parts if not p.within)

    def as_json(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "us_per_command": {p.name: p.us for p in self.parts},
            "rest_us": self.rest,
            "total_us": self.total,
        }


def _pieces(
    pieces: list[tuple[str, Callable[[], tuple[int, float]]]], reps: int
) -> dict[str, float]:
    """Us per item of each piece, its fastest repetition (the least disturbed: a piece of
    a few microseconds is all noise on a busy machine otherwise); ``piece() -> (items,
    seconds)`` builds its data untimed. The pieces' repetitions alternate."""
    samples: dict[str, list[float]] = {name: [] for name, _ in pieces}
    for _ in range(reps):
        for name, piece in pieces:
            gc.collect()
            gc.disable()
            try:
                items, seconds = piece()
            finally:
                gc.enable()
            samples[name].append(seconds / items * 1e6)
    return {name: min(v) for name, v in samples.items()}


def _loop(items: list[Any], body: Callable[[Any], Any]) -> tuple[int, float]:
    started = _perf()
    for x in items:
        body(x)
    return len(items), _perf() - started


def _result_objects(
    batches: list[tuple[list[Any], list[Any]]], executor: bool = True
) -> tuple[int, float]:
    """Build each ``(events, checks)`` append's AppendResult (as the store does) and, with
    ``executor``, the ExecutionResult around it (as the executor does)."""
    started = _perf()
    if executor:
        for events, checks in batches:
            ExecutionResult(AppendResult(1, checks, events), 1)
    else:
        for events, checks in batches:
            AppendResult(1, checks, events)
    return len(batches), _perf() - started


def breakdown(domain: Domain, n: int, reps: int) -> list[Breakdown]:
    """Time each piece of a cold command (``memory.command.cold``: OpenAccount on a fresh
    stream) and of a transfer (``memory.transfer``: two streams of 2 events), each piece
    on its own in this process, ``n`` commands a repetition, and the workload itself.

    The pieces are what any executor must do, timed through public calls: the user's code
    (``initial_state``, ``handle``, ``apply``), the codec, the store's fold and append, the
    result objects. The rest is the executor's own cost (effects, dispatch, checks, the
    cache lookup). An executor that runs a piece natively (no Python call) spends less on
    it than the piece's row says: then the rest shrinks, and may go below zero.
    """
    registry = domain.registry
    encode, decoders = registry.encode, registry.decoders
    out = []
    counter = [0]

    def fresh(prefix: str, count: int) -> list[str]:
        counter[0] += 1
        return [f"{prefix}-{counter[0]}-{i}" for i in range(count)]

    # -- the cold command
    open_account = domain.OpenAccount
    built = [open_account(account=s, owner=OPENED_OWNER) for s in fresh("b", n)]
    state = built[0].initial_state()
    emitted = built[0].handle(state)
    name, payload = encode(emitted[0][1])

    def batches(per_stream: int, width: int) -> tuple[MemoryStore, list[Any]]:
        """A store of ``n * width`` fresh streams of ``per_stream`` events, and ``n``
        appends of one event to each of ``width`` of them (with expected versions)."""
        ids = fresh("w", n * width)
        store = filled_store(domain, ids, per_stream) if per_stream else MemoryStore()
        out = []
        for k in range(n):
            streams = ids[k * width : (k + 1) * width]
            events = [
                (s, name, payload, i) for s, i in zip(streams, uuid7_ints(width), strict=True)
            ]
            out.append((events, [(s, per_stream) for s in streams]))
        return store, out

    def appended(per_stream: int, width: int) -> tuple[int, float]:
        """``MemoryStore.append``, less the AppendResult it builds (a result-object row)."""
        store, todo = batches(per_stream, width)
        append = store.append
        started = _perf()
        for events, checks in todo:
            append(events, expected=checks)
        elapsed = _perf() - started
        return n, elapsed - _result_objects(todo, executor=False)[1]

    def result_objects(width: int) -> tuple[int, float]:
        return _result_objects(batches(0, width)[1])

    def cold_total() -> tuple[int, float]:
        store = MemoryStore(registry=registry)
        return _loop(
            fresh("c", n),
            lambda s: execute_sync(store, open_account(account=s, owner=OPENED_OWNER)),
        )

    def cold_fold() -> tuple[int, float]:
        store = MemoryStore(registry=registry)
        fold = store.fold_streams
        args = [(c.streams(), c.initial_state(), c.apply) for c in built]
        return _loop(args, lambda a: fold(a[0], a[1], a[2], decoders))

    ids_b = fresh("b", n)
    times = _pieces(
        [
            ("total", cold_total),
            ("build", lambda: _loop(ids_b, lambda s: open_account(account=s, owner=OPENED_OWNER))),
            ("stream id", lambda: _loop(ids_b, StreamId)),
            ("streams", lambda: _loop(built, lambda c: c.streams())),
            ("initial_state", lambda: _loop(built, lambda c: c.initial_state())),
            ("fold", cold_fold),
            ("handle", lambda: _loop(built, lambda c: c.handle(state))),
            ("encode", lambda: _loop([e for _, e in emitted] * n, encode)),
            ("ids", lambda: _loop([1] * n, uuid7_ints)),
            ("append", lambda: appended(0, 1)),
            ("results", lambda: result_objects(1)),
        ],
        reps,
    )
    out.append(
        Breakdown(
            "memory.command.cold",
            "OpenAccount on a fresh stream: build command + execute_sync",
            _rows(times, "an empty stream", "1 event", 1),
            times["total"],
        )
    )

    # -- the transfer
    transfer = domain.Transfer
    half = DEPOSIT // 2
    pairs = list(zip(*[iter(fresh("t", 2 * n))] * 2, strict=True))
    read_store = filled_store(domain, [s for p in pairs for s in p], 2)
    commands = [transfer(source=a, target=b, amount=half) for a, b in pairs]
    folded, _ = read_store.fold_streams(
        commands[0].streams(), commands[0].initial_state(), commands[0].apply, decoders
    )
    emitted = commands[0].handle(folded)
    rows = read_store.read_streams(commands[0].streams())
    decoded = [
        (r.stream_id, r.event_type, r.payload, decoders[r.event_type](r.payload)) for r in rows
    ]

    # Each command's folded state (``handle`` reads its own streams' accounts).
    decided = [(c, dict(zip(c.streams(), folded.values(), strict=True))) for c in commands]

    def transfer_total() -> tuple[int, float]:
        ids = fresh("tt", 2 * n)
        store = filled_store(domain, ids, 2)
        todo = list(zip(ids[0::2], ids[1::2], strict=True))
        return _loop(
            todo, lambda p: execute_sync(store, transfer(source=p[0], target=p[1], amount=half))
        )

    def transfer_fold() -> tuple[int, float]:
        fold = read_store.fold_streams
        args = [(c.streams(), c.initial_state(), c.apply) for c in commands]
        return _loop(args, lambda a: fold(a[0], a[1], a[2], decoders))

    first = commands[0].streams()
    template = [(first.index(s), ev) for s, _, _, ev in decoded]

    def applies() -> tuple[int, float]:
        todo = []
        for c in commands:  # each command folds its own streams' events
            streams = c.streams()
            todo.append((c.apply, c.initial_state(), [(streams[i], ev) for i, ev in template]))
        started = _perf()
        for apply, st, events in todo:
            for s, ev in events:
                st = apply(st, ev, s)
        return n, _perf() - started

    def decodes() -> tuple[int, float]:
        started = _perf()
        for _ in range(n):
            for _, t, p, _ in decoded:
                decoders[t](p)
        return n, _perf() - started

    def encodes() -> tuple[int, float]:
        started = _perf()
        for _ in range(n):
            for _, e in emitted:
                encode(e)
        return n, _perf() - started

    times = _pieces(
        [
            ("total", transfer_total),
            (
                "build",
                lambda: _loop(pairs, lambda p: transfer(source=p[0], target=p[1], amount=half)),
            ),
            ("stream id", lambda: _loop(pairs, lambda p: (StreamId(p[0]), StreamId(p[1])))),
            ("streams", lambda: _loop(commands, lambda c: c.streams())),
            ("initial_state", lambda: _loop(commands, lambda c: c.initial_state())),
            ("fold", transfer_fold),
            ("apply", applies),
            ("decode", decodes),
            ("handle", lambda: _loop(decided, lambda cs: cs[0].handle(cs[1]))),
            ("encode", encodes),
            ("ids", lambda: _loop([2] * n, uuid7_ints)),
            ("append", lambda: appended(2, 2)),
            ("results", lambda: result_objects(2)),
        ],
        reps,
    )
    out.append(
        Breakdown(
            "memory.transfer",
            "Transfer between two streams of 2 events: build command + execute_sync",
            _rows(times, "2 streams of 2 events", "2 events", 2),
            times["total"],
        )
    )
    return out


def _rows(t: dict[str, float], read: str, written: str, ids: int) -> list[Part]:
    rows = [
        Part("build the command (from str stream ids)", t["build"]),
        Part("of which str -> StreamId", t["stream id"], within=True),
        Part("command.streams()", t["streams"]),
        Part("initial_state()", t["initial_state"]),
        Part(f"fold_streams of {read} (store, native)", t["fold"]),
    ]
    if "apply" in t:
        rows.append(Part("of which apply() (user code)", t["apply"], within=True))
        rows.append(Part("of which decoding the payloads", t["decode"], within=True))
    rows += [
        Part("handle()", t["handle"]),
        Part(f"encode {written}", t["encode"]),
        Part(f"{ids} event id{'s' * (ids > 1)} (uuid7_ints)", t["ids"]),
        Part(f"MemoryStore.append of {written} (native write)", t["append"]),
        Part("result objects (AppendResult, ExecutionResult)", t["results"]),
    ]
    return rows


def print_breakdown(results: list[Breakdown], n: int, reps: int) -> None:
    """The breakdowns as a table: us per command and share of the total."""
    print(f"Where a command's time goes: us per command, fastest of {reps} rounds of {n:,}")
    for b in results:
        print(f"\n{b.workload}: {b.note}")
        print(f"  {'piece':<56} {'us':>7} {'share':>6}")
        for p in b.parts:
            label = ("  " + p.name) if p.within else p.name
            share = "" if p.within else f"{p.us / b.total:.0%}"
            print(f"  {label:<56} {p.us:>7.2f} {share:>6}")
        rest = "the rest: the executor (effects, dispatch, checks)"
        print(f"  {rest:<56} {b.rest:>7.2f} {b.rest / b.total:>6.0%}")
        rate = f"({1e6 / b.total:,.0f} commands/s)"
        print(f"  {'total: the workload, per command':<56} {b.total:>7.2f} {'100%':>6} {rate}")


# ---------------------------------------------------------------------------------------------
# Memory (in fresh subprocesses)

PAGE = os.sysconf("SC_PAGE_SIZE")
PAYLOAD_CHARS = 96  # the Blob payload encodes to ~100 bytes


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def memory_child_eventcore(n: int) -> dict[str, float]:
    """Store ``n`` Blob events (~100-byte payloads, 100 events per stream); RSS growth."""
    domain = DC
    enc = domain.registry.encode
    filler = "x" * (PAYLOAD_CHARS - 8)
    # Warm up allocators and the code paths on a throwaway store first.
    scratch = MemoryStore(registry=domain.registry)
    scratch.append(
        [NewEvent(f"w-{i // 100}", *enc(domain.Blob(f"{i:08d}{filler}"))) for i in range(1000)]
    )
    payload_len = len(enc(domain.Blob(f"{0:08d}{filler}"))[1])
    del scratch
    gc.collect()
    before = rss()
    store = MemoryStore(registry=domain.registry)
    append = store.append
    for start in range(0, n, 1000):
        append(
            [
                NewEvent(f"stream-{i // 100}", *enc(domain.Blob(f"{i:08d}{filler}")))
                for i in range(start, min(n, start + 1000))
            ]
        )
    gc.collect()
    after = rss()
    assert len(store) == n
    return {
        "events": n,
        "payload_bytes": payload_len,
        "rss_per_event": (after - before) / n,
        "self_reported_per_event": store.memory_usage() / len(store),
    }


def memory_child_baseline(n: int) -> dict[str, float]:
    """The same with eventsourcing: aggregates of 100 Blob events, saved one by one."""
    b = baseline()
    filler = "x" * (PAYLOAD_CHARS - 8)
    app = b.EsBank()
    warm = b.EsBlobs()
    for i in range(99):
        warm.blob(f"{i:08d}{filler}")
    app.save(warm)
    del app, warm
    gc.collect()
    before = rss()
    app = b.EsBank()
    i = 0
    while i < n:
        agg = b.EsBlobs()  # the Created event counts as one of the aggregate's 100
        i += 1
        for _ in range(99):
            if i >= n:
                break
            agg.blob(f"{i:08d}{filler}")
            i += 1
        app.save(agg)
    del agg
    gc.collect()
    after = rss()
    return {"events": n, "rss_per_event": (after - before) / n}


def w_memory(sz: Sizes, with_baseline: bool) -> list[Result]:
    def child(kind: str, n: int) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", kind, str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    reps = 3 if sz is FULL else 1
    ec = [child("eventcore", sz.mem_events) for _ in range(reps)]
    base = [child("baseline", sz.mem_events_base) for _ in range(reps)] if with_baseline else []
    rss_res = Result("memory.bytes_per_event.rss", "bytes/event", 300, higher_is_better=False)
    rss_res.rates = [c["rss_per_event"] for c in ec]
    rss_res.base_rates = [c["rss_per_event"] for c in base]
    rss_res.note = (
        f"process RSS growth / event, {sz.mem_events:,} events of "
        f"{int(ec[0]['payload_bytes'])}-byte payload (baseline: {sz.mem_events_base:,})"
    )
    own = Result("memory.bytes_per_event.self", "bytes/event", 300, higher_is_better=False)
    own.rates = [c["self_reported_per_event"] for c in ec]
    own.base_rates = list(rss_res.base_rates)
    own.note = "store.memory_usage() / len(store) (baseline column: its RSS growth)"
    return [rss_res, own]


# ---------------------------------------------------------------------------------------------
# Machine and build information


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def build_info() -> str:
    """Which cargo profile the loaded ``eventcore._core`` came from (by comparing hashes)."""
    loaded = _sha(Path(eventcore._core.__file__))
    dirs = [ROOT / "target"]
    extra = os.environ.get("EVENTCORE_BENCH_TARGET_DIR")  # a private CARGO_TARGET_DIR
    if extra:
        dirs.insert(0, Path(extra))
    for target in dirs:
        for profile in ("release", "dev-opt", "debug"):
            if loaded is not None and loaded == _sha(target / profile / "lib_core.so"):
                return profile if target == ROOT / "target" else f"{profile} ({target})"
    return "unknown (not byte-identical to any target/*/lib_core.so)"


def machine_info(quick: bool) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    b = baseline()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "eventcore": eventcore.__version__,
        "eventcore_build": build_info(),
        "eventcore_core_so": eventcore._core.__file__,
        "baseline": f"eventsourcing {b.version} (POPO, no cache, no snapshots)",
        "msgspec": msgspec.__version__,
        "gc_during_timing": "enabled" if KEEP_GC else "disabled (collected before each rep)",
        "mode": "quick" if quick else "full",
        "threads": 1,
    }


# ---------------------------------------------------------------------------------------------
# Driver


def _variant(domain: Domain) -> str:
    return "dataclass" if domain is DC else "msgspec"


def all_workloads(sz: Sizes, with_baseline: bool) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("memory.command.cold.dataclass", lambda: w_command_cold(sz, DC, with_baseline)),
        ("memory.command.cold.msgspec", lambda: w_command_cold(sz, MS, with_baseline)),
        ("memory.command.warm100.dataclass", lambda: w_command_warm(sz, DC, with_baseline)),
        ("memory.command.warm100.msgspec", lambda: w_command_warm(sz, MS, with_baseline)),
        ("memory.command.warm10k.dataclass", lambda: w_command_warm10k(sz, DC)),
        ("memory.cache.bytes_per_entry", lambda: w_cache_bytes(sz, DC)),
        ("memory.transfer.dataclass", lambda: w_transfer(sz, DC, with_baseline)),
        ("memory.append.batch1000.1stream", lambda: w_append_batch(sz, DC, 1, with_baseline)),
        (
            "memory.append.batch1000.1000streams",
            lambda: w_append_batch(sz, DC, 1000, with_baseline),
        ),
        ("memory.bytes_per_event", lambda: w_memory(sz, with_baseline)),
        ("memory.read.1000.dataclass", lambda: w_read(sz, DC, with_baseline)),
        ("memory.fold.100.dataclass", lambda: w_fold(sz, DC, with_baseline)),
    ]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def print_table(machine: dict[str, Any], results: list[Result]) -> None:
    print(
        f"eventcore {machine['eventcore']} ({machine['eventcore_build']} build) vs "
        f"{machine['baseline']}"
    )
    print(
        f"python {machine['python']}, {machine['cpu']} x{machine['cpus']}, "
        f"gc {machine['gc_during_timing']}, {machine['mode']} run, "
        f"load {machine['loadavg_start'][0]:.2f} -> {machine['loadavg_end'][0]:.2f}"
    )
    print("value = median over repetitions [min..max]; ratio = eventcore / baseline")
    head = (
        f"{'workload':<36} {'eventcore':>12} {'[min .. max]':>25} {'unit':<12} "
        f"{'baseline':>10} {'ratio':>8} {'target':>12} {'met?':<4}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        span = f"[{_fmt(min(r.rates))} .. {_fmt(max(r.rates))}]"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        target = (
            "-" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _fmt(r.target)
        )
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        print(
            f"{r.name:<36} {_fmt(r.value):>12} {span:>25} {r.unit:<12} "
            f"{_fmt(r.baseline):>10} {ratio:>8} {target:>12} {met:<4}"
        )


def main(argv: list[str] | None = None) -> None:
    global KEEP_GC
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", default="", help="run workloads whose name starts with this")
    parser.add_argument("--no-baseline", action="store_true", help="skip the eventsourcing runs")
    parser.add_argument("--gc", action="store_true", help="keep the cyclic GC enabled")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        kind, n = args.memory_child
        fn = memory_child_eventcore if kind == "eventcore" else memory_child_baseline
        print(json.dumps(fn(int(n))))
        return

    KEEP_GC = args.gc
    sz = QUICK if args.quick else FULL
    with_baseline = not args.no_baseline
    machine = machine_info(args.quick)
    started = _perf()
    results: list[Result] = []
    for name, run in all_workloads(sz, with_baseline):
        if args.only and not name.startswith(args.only):
            continue
        out = run()
        results.extend(out if isinstance(out, list) else [out])
        if not args.json:
            print(f"  ... {name} done ({_perf() - started:.0f} s)", file=sys.stderr)
    machine["loadavg_end"] = os.getloadavg()
    machine["seconds"] = round(_perf() - started, 1)
    if args.json:
        print(
            json.dumps(
                {"machine": machine, "workloads": {r.name: r.as_json() for r in results}},
                indent=2,
            )
        )
    else:
        print_table(machine, results)
        print(f"({machine['seconds']} s; rerun: python benches/core.py{' --quick' * args.quick})")


if __name__ == "__main__":
    main()
