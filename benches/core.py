"""The in-memory area of the headline harness: the eventsourcing peer's sides, the
in-memory-only workloads, the per-command breakdown and memory per event.

``benches/headline.py`` runs all of it (``memory.*`` and ``peer.eventsourcing.memory.*``
keys; ``--extra`` adds the workloads that are not headline keys). eventcore's side of the
bank workloads is :class:`eventcore._bench.BankWorkloads` (shared with ``eventcore
bench`` and the pytest-benchmark suite); timing is :mod:`eventcore._bench`'s: the cyclic GC
collected before and disabled during every timed repetition, for both libraries.

The peer is the ``eventsourcing`` library (9.5.x, in-memory POPO infrastructure, no cache,
no snapshots; :func:`benches.domain.baseline`). Memory is measured in fresh subprocesses
(RSS from /proc/self/statm; tracemalloc cannot see Rust allocations).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

import eventcore  # noqa: E402
from benches.domain import baseline  # noqa: E402
from eventcore import (  # noqa: E402
    EventRegistry,
    ExecutionResult,
    MemoryStore,
    NewEvent,
    StreamId,
    event,
    execute_sync,
)
from eventcore._bench import (  # noqa: E402, F401  (history, timed_parts: for the area modules)
    DC,
    DEPOSIT,
    OPENED_OWNER,
    Domain,
    Figure,
    Target,
    history,
    measure,
    timed,
    timed_parts,
)
from eventcore._bench import filled_store as filled_store  # noqa: E402
from eventcore._core import uuid7_ints  # noqa: E402
from eventcore.recorded import AppendResult  # noqa: E402
from eventcore.snapshot import SNAPSHOT_EVERY, MemorySnapshotStore, Snapshotter  # noqa: E402

_perf = time.perf_counter


@dataclass
class Sizes:
    """How much work a repetition does, per side, and how many repetitions."""

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

# ---------------------------------------------------------------------------------------------
# The peer's sides (eventsourcing): each ``prepare_*`` builds its data untimed and returns
# the timed body (which returns its units); ``timed(prepare_*(...))`` is one repetition.


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


def es_prepare_deposits(n: int, events_each: int, app: Any = None) -> Callable[[], float]:
    """One deposit into each of ``n`` fresh accounts holding ``events_each`` events
    (repository.get, deposit, save); ``app``: the peer's application to use (another
    recorder, e.g. SQLite), a fresh in-memory one by default."""
    b = baseline()
    app = app if app is not None else b.EsBank()
    ids = es_accounts(app, b, n, events_each)
    get, save = app.repository.get, app.save

    def body() -> float:
        for i in ids:
            acc = get(i)
            acc.deposit(DEPOSIT)
            save(acc)
        assert get(ids[-1]).version == events_each + 1
        return len(ids)

    return body


def es_prepare_transfer(n: int, app: Any = None) -> Callable[[], float]:
    """``n`` transfers: get two 2-event aggregates, withdraw + deposit, save both (the
    last account ends at version 3); ``app`` as for :func:`es_prepare_deposits`."""
    b = baseline()
    app = app if app is not None else b.EsBank()
    ids = es_accounts(app, b, 2 * n, 2)
    pairs = list(zip(ids[0::2], ids[1::2], strict=True))
    get, save = app.repository.get, app.save

    def body() -> float:
        for a_id, b_id in pairs:
            src, dst = get(a_id), get(b_id)
            src.withdraw(DEPOSIT // 2)
            dst.deposit(DEPOSIT // 2)
            save(src, dst)
        assert get(ids[-1]).version == 3
        return len(pairs)

    return body


def es_prepare_batch(batches: int, streams: int) -> Callable[[], tuple[float, float]]:
    """``batches`` saves of 1000 events: of one aggregate holding 1000 pending events
    (``streams == 1``), else of ``streams`` aggregates with one pending deposit each (the
    deposits made untimed). The body times its saves: ``() -> (events, seconds)``."""
    b = baseline()
    app = b.EsBank()
    save = app.save
    if streams == 1:
        todo = []
        for _ in range(batches):
            acc = b.EsAccount(OPENED_OWNER)
            for i in range(999):
                acc.deposit(i + 1)
            todo.append(acc)

        def one() -> tuple[float, float]:
            started = _perf()
            for acc in todo:
                save(acc)
            return 1000 * len(todo), _perf() - started

        return one
    accs = [b.EsAccount(OPENED_OWNER) for _ in range(streams)]
    save(*accs)

    def many() -> tuple[float, float]:
        elapsed = 0.0
        for _ in range(batches):
            for i, acc in enumerate(accs):
                acc.deposit(i + 1)  # untimed: build the pending events
            started = _perf()
            save(*accs)
            elapsed += _perf() - started
        return streams * batches, elapsed

    return many


def es_prepare_read(n: int) -> Callable[[], float]:
    """``app.events.get`` of ``n`` 1000-event aggregates (decoded, stored order)."""
    b = baseline()
    app = b.EsBank()
    ids = es_accounts(app, b, n, 1000)
    get_events = app.events.get

    def body() -> float:
        count = 0
        for i in ids:
            for _ in get_events(i):
                count += 1
        return count

    return body


def es_prepare_fold(n: int) -> Callable[[], float]:
    """``repository.get`` of ``n`` 100-event aggregates. Units: events."""
    b = baseline()
    app = b.EsBank()
    ids = es_accounts(app, b, n, 100)
    get = app.repository.get

    def body() -> float:
        for i in ids:
            get(i)
        return 100 * len(ids)

    return body


# ---------------------------------------------------------------------------------------------
# In-memory-only workloads of eventcore (no peer, no other store): each returns one
# repetition's sample.


def warm10k_once(sz: Sizes, domain: Domain) -> Callable[[], float]:
    """``sz.warm`` Deposits on ONE stream of 10,000 events whose state is cached."""
    counter = [0]

    def once() -> float:
        counter[0] += 1
        account = f"big-{counter[0]}"
        store = filled_store(domain, [account], 10_000)
        deposit, n = domain.Deposit, sz.warm
        execute_sync(store, deposit(account=account, amount=DEPOSIT))  # warm (untimed)

        def body() -> float:
            for _ in range(n):
                execute_sync(store, deposit(account=account, amount=DEPOSIT))
            return n

        rate = timed(body)
        assert store.stream_version(account) == 10_001 + n
        return rate

    return once


def cache_bytes_once(sz: Sizes, domain: Domain) -> Callable[[], float]:
    """Python heap (tracemalloc) held per cached Deposit state, over ``sz.warm`` streams."""
    import tracemalloc

    def once() -> float:
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

    return once


def first10k_sides(sz: Sizes, domain: Domain) -> tuple[Callable[[], float], Callable[[], float]]:
    """The first Deposit per 10,000-event stream with an empty state cache (a restart):
    ``(with its durable snapshot, with a full fold)``, on the same store and data."""
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

    return lambda: once(True), lambda: once(False)


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
    sides = [(Figure(name, "us"), _us_per_item(piece)) for name, piece in pieces]
    measure(sides, reps, warmup=0)
    return {fig.name: min(fig.samples) for fig, _ in sides}


def _us_per_item(piece: Callable[[], tuple[int, float]]) -> Callable[[], float]:
    return lambda: 1e6 / timed_parts(piece)


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
        """``MemoryStore.append``, with the AppendResult it builds (taken off after)."""
        store, todo = batches(per_stream, width)
        append = store.append
        started = _perf()
        for events, checks in todo:
            append(events, expected=checks)
        return n, _perf() - started

    def store_results(width: int) -> tuple[int, float]:
        """The AppendResults ``append`` builds, alone: its row is the append's less these
        (fastest against fastest: a difference taken within one noisy repetition can go
        below zero)."""
        return _result_objects(batches(0, width)[1], executor=False)

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
        fold = store._core.fold_streams  # the native read and fold the machine runs
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
            ("append results", lambda: store_results(1)),
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
    folded, _ = read_store._core.fold_streams(
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
        fold = read_store._core.fold_streams
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
            ("append results", lambda: store_results(2)),
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
    append = t["append"] - t["append results"]
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
        Part(f"MemoryStore.append of {written} (native write)", append),
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
BLOBS = EventRegistry()


@event("bench.Blob", registry=BLOBS)
@dataclass(frozen=True)
class Blob:
    """An opaque-string event (memory per event), in a registry of its own."""

    data: str


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def memory_child_eventcore(n: int) -> dict[str, float]:
    """Store ``n`` Blob events (~100-byte payloads, 100 events per stream); RSS growth."""
    enc = BLOBS.encode
    filler = "x" * (PAYLOAD_CHARS - 8)
    # Warm up allocators and the code paths on a throwaway store first.
    scratch = MemoryStore(registry=BLOBS)
    scratch.append([NewEvent(f"w-{i // 100}", *enc(Blob(f"{i:08d}{filler}"))) for i in range(1000)])
    payload_len = len(enc(Blob(f"{0:08d}{filler}"))[1])
    del scratch
    gc.collect()
    before = rss()
    store = MemoryStore(registry=BLOBS)
    append = store.append
    for start in range(0, n, 1000):
        append(
            [
                NewEvent(f"stream-{i // 100}", *enc(Blob(f"{i:08d}{filler}")))
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


def memory_figures(sz: Sizes) -> list[Figure]:
    """``memory.bytes_per_event.{rss,self}`` and the peer's RSS growth per event, each
    sample a fresh subprocess (3 in a full run, 1 in a quick one)."""

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
    base = [child("baseline", sz.mem_events_base) for _ in range(reps)]
    peer = "peer.eventsourcing.memory.bytes_per_event.rss"
    target = Target("value", "<=", 300)
    return [
        Figure(
            "memory.bytes_per_event.rss",
            "bytes/event",
            [c["rss_per_event"] for c in ec],
            peer=peer,
            targets=[target],
            note=f"process RSS growth / event, {sz.mem_events:,} events of "
            f"{int(ec[0]['payload_bytes'])}-byte payload",
        ),
        Figure(
            "memory.bytes_per_event.self",
            "bytes/event",
            [c["self_reported_per_event"] for c in ec],
            peer=peer,
            targets=[target],
            note="store.memory_usage() / len(store)",
        ),
        Figure(
            peer,
            "bytes/event",
            [c["rss_per_event"] for c in base],
            note=f"eventsourcing's process RSS growth / event, {sz.mem_events_base:,} events"
            " in aggregates of 100",
        ),
    ]


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
        "gc_during_timing": "disabled (collected before each rep)",
        "mode": "quick" if quick else "full",
        "threads": 1,
    }


if __name__ == "__main__":
    # Only the memory-per-event children run this file (see memory_figures).
    if sys.argv[1:2] != ["--memory-child"] or len(sys.argv) != 4:
        sys.exit("run the in-memory workloads with: python benches/headline.py --only memory")
    kind, n = sys.argv[2:]
    fn = memory_child_eventcore if kind == "eventcore" else memory_child_baseline
    print(json.dumps(fn(int(n))))
