"""SQLite workloads for ``benches/headline.py`` (keys ``sqlite.*``) and their peer.

The peer is the ``eventsourcing`` library's SQLite persistence (``PERSISTENCE_MODULE =
eventsourcing.sqlite``: its ``SQLiteApplicationRecorder``), in the same run, on files in
the same directory, with the same durability on both sides (WAL and the same
``synchronous``, read back from both by :meth:`SqliteBench.check_durability`). The
``sqlite.*`` keys use ``synchronous=NORMAL`` on both sides (the peer's pools get the
PRAGMA: the library has no setting for it): an acknowledged append survives a crash of
the process, and the figures show what each library does per command rather than the
disk. ``sqlite.command.full`` repeats the command with ``FULL`` on both sides (eventcore's
default: one WAL sync per commit, which then dominates both). Every repetition uses
fresh files. Each side does its own natural work:

- command: eventcore ``execute_sync(store, Deposit)`` on an account holding one event;
  peer ``repository.get`` + ``deposit`` + ``save`` on an aggregate holding one event.
- transfer: eventcore ``execute_sync(store, Transfer)`` between two accounts of two
  events; peer gets both aggregates, withdraws and deposits, saves both in one call.
- append_batch_1000: eventcore ``store.append`` of 1000 pre-encoded events into a new
  stream; peer ``recorder.insert_events`` of 1000 events of a new aggregate, turned into
  stored events (``mapper.to_stored_event``) before the clock starts: the fastest way
  its recorder takes a batch.
- read_all: the whole log in pages of 1000, events not decoded on either side (eventcore
  ``read_all``; peer ``recorder.select_notifications``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benches.core import (
    DEPOSIT,
    OPENED_OWNER,
    es_prepare_deposits,
    es_prepare_transfer,
    history,
    timed,
    timed_parts,
)
from benches.domain import DC, baseline
from eventcore import NewEvent, execute_sync
from eventcore.sqlite import SqliteStore

_perf = time.perf_counter


@dataclass(frozen=True)
class SqliteSizes:
    commands: int  # commands per repetition (each side)
    transfers: int
    batches: int  # batches of 1000 per repetition
    log: int  # events in the log read by read_all
    reps: int
    warmup: int


SQLITE_QUICK = SqliteSizes(commands=300, transfers=200, batches=5, log=20_000, reps=3, warmup=1)
SQLITE_FULL = SqliteSizes(
    commands=2_000, transfers=1_000, batches=20, log=100_000, reps=5, warmup=1
)


_PEER_SYNCHRONOUS: list[str] = ["FULL"]
"""The ``synchronous`` setting of the peer's pools made now (see :func:`_patch_peer`)."""


def _patch_peer() -> None:
    """Give every connection of eventsourcing's SQLite pools the ``synchronous`` setting
    that :data:`_PEER_SYNCHRONOUS` held when the pool was made (the library has no setting
    of its own: SQLite's default, FULL, unless told otherwise)."""
    from eventsourcing.sqlite import SQLiteConnectionPool

    if getattr(SQLiteConnectionPool, "_eventcore_patched", False):
        return
    init, create = SQLiteConnectionPool.__init__, SQLiteConnectionPool._create_connection

    def __init__(self: Any, **kwargs: Any) -> None:
        self._eventcore_synchronous = _PEER_SYNCHRONOUS[0]
        init(self, **kwargs)

    def _create_connection(self: Any) -> Any:
        conn = create(self)
        conn._sqlite_conn.execute(f"PRAGMA synchronous = {self._eventcore_synchronous}")
        return conn

    SQLiteConnectionPool.__init__ = __init__  # type: ignore[method-assign]
    SQLiteConnectionPool._create_connection = _create_connection  # type: ignore[method-assign]
    SQLiteConnectionPool._eventcore_patched = True  # type: ignore[attr-defined]


def _peer_app(path: str, synchronous: str = "FULL") -> Any:
    """The peer's application on ``path`` with this ``synchronous`` setting."""
    b = baseline()
    _patch_peer()
    _PEER_SYNCHRONOUS[0] = synchronous
    return b.EsBank(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path})


def _seed(store: SqliteStore, streams: list[str], per_stream: int) -> None:
    """Give each stream ``per_stream`` events (opened, deposits) in batches (untimed)."""
    events = history(DC, per_stream)
    batch: list[NewEvent] = []
    for s in streams:
        batch.extend(NewEvent(s, name, payload) for name, payload in events)
        if len(batch) >= 1000:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)


class SqliteBench:
    """Fresh files in one temporary directory (removed by :meth:`close`)."""

    def __init__(self, sz: SqliteSizes, synchronous: str) -> None:
        self.sz = sz
        self.synchronous = synchronous
        self.dir = tempfile.mkdtemp(prefix="eventcore-sqlite-bench-")
        self.n = 0
        self.keep: Any = None

    def path(self, side: str) -> str:
        self.n += 1
        return os.path.join(self.dir, f"{side}-{self.n}.db")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _drop(self, path: str) -> None:
        for suffix in ("", "-wal", "-shm", "-leases"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)

    def check_durability(self) -> str:
        """Both sides' ``journal_mode`` and ``synchronous``, read from their connections."""
        path = self.path("check-ec")
        store = SqliteStore(path, synchronous=self.synchronous)
        ours = store._conn().execute("PRAGMA synchronous").fetchone()[0]
        store.close()
        peer_path = self.path("check-peer")
        app = _peer_app(peer_path, self.synchronous)
        with app.recorder.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA synchronous")
            theirs = c.fetchone()[0]
        modes = [
            sqlite3.connect(p).execute("PRAGMA journal_mode").fetchone()[0]
            for p in (path, peer_path)
        ]
        if ours != theirs or modes != ["wal", "wal"]:
            raise RuntimeError(f"durability differs: synchronous {ours}/{theirs}, {modes}")
        return "synchronous=" + {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[ours] + ", WAL"

    # -- command -----------------------------------------------------------------------

    def ec_command(self) -> Callable[[], float]:
        def once() -> float:
            path = self.path("ec-command")
            store = SqliteStore(path, registry=DC.registry, synchronous=self.synchronous)
            ids = [f"acc-{i}" for i in range(self.sz.commands)]
            _seed(store, ids, 1)
            deposit = DC.Deposit

            def body() -> float:
                for s in ids:
                    execute_sync(store, deposit(account=s, amount=DEPOSIT))
                return len(ids)

            rate = timed(body)
            assert store.stream_version(ids[-1]) == 2
            store.close()
            self._drop(path)
            return rate

        return once

    def peer_command(self) -> Callable[[], float]:
        def once() -> float:
            path = self.path("peer-command")
            app = _peer_app(path, self.synchronous)
            # The in-memory peer's body on this recorder (it checks the last version).
            rate = timed(es_prepare_deposits(self.sz.commands, 1, app))
            app.close()
            self._drop(path)
            return rate

        return once

    # -- transfer ----------------------------------------------------------------------

    def ec_transfer(self) -> Callable[[], float]:
        def once() -> float:
            path = self.path("ec-transfer")
            store = SqliteStore(path, registry=DC.registry, synchronous=self.synchronous)
            ids = [f"acc-{i}" for i in range(2 * self.sz.transfers)]
            _seed(store, ids, 2)
            pairs = list(zip(ids[0::2], ids[1::2], strict=True))
            transfer = DC.Transfer

            def body() -> float:
                for a, b in pairs:
                    execute_sync(store, transfer(source=a, target=b, amount=DEPOSIT // 2))
                return len(pairs)

            rate = timed(body)
            assert store.stream_version(ids[-1]) == 3
            store.close()
            self._drop(path)
            return rate

        return once

    def peer_transfer(self) -> Callable[[], float]:
        def once() -> float:
            path = self.path("peer-transfer")
            app = _peer_app(path, self.synchronous)
            # The in-memory peer's body on this recorder (it checks the last version).
            rate = timed(es_prepare_transfer(self.sz.transfers, app))
            app.close()
            self._drop(path)
            return rate

        return once

    # -- batch of 1000 -----------------------------------------------------------------

    def ec_batch(self) -> Callable[[], float]:
        enc = DC.registry.encode

        def once() -> float:
            path = self.path("ec-batch")
            store = SqliteStore(path, registry=DC.registry, synchronous=self.synchronous)
            batches = [
                [NewEvent(f"b-{j}", *enc(DC.Deposited(i + 1))) for i in range(1000)]
                for j in range(self.sz.batches)
            ]
            append = store.append

            def body() -> float:
                for batch in batches:
                    append(batch)
                return 1000 * len(batches)

            rate = timed(body)
            assert store.head() == 1000 * len(batches)
            store.close()
            self._drop(path)
            return rate

        return once

    def peer_batch(self) -> Callable[[], float]:
        def once() -> float:
            path = self.path("peer-batch")
            app = _peer_app(path, self.synchronous)
            b = baseline()
            batches = []
            for _ in range(self.sz.batches):
                acc = b.EsAccount(OPENED_OWNER)
                for i in range(999):
                    acc.deposit(i + 1)
                batches.append([app.mapper.to_stored_event(e) for e in acc.collect_events()])
            insert = app.recorder.insert_events

            def body() -> tuple[float, float]:
                started = _perf()
                for stored in batches:
                    insert(stored)
                return 1000 * len(batches), _perf() - started

            rate = timed_parts(body)
            assert app.recorder.max_notification_id() == 1000 * len(batches)
            app.close()
            self._drop(path)
            return rate

        return once

    # -- the global log ----------------------------------------------------------------

    def ec_read_all(self) -> Callable[[], float]:
        path = self.path("ec-read")
        store = SqliteStore(path, registry=DC.registry, synchronous=self.synchronous)
        _seed(store, [f"r-{i}" for i in range(self.sz.log // 1000)], 1000)
        read_all = store.read_all

        def once() -> float:
            def body() -> float:
                n, cursor = 0, 0
                while True:
                    page = read_all(after_position=cursor, limit=1000)
                    n += len(page)
                    if len(page) < 1000:
                        return n
                    cursor = page[-1].position

            rate = timed(body)
            return rate

        return once

    def peer_read_all(self) -> Callable[[], float]:
        path = self.path("peer-read")
        app = _peer_app(path, self.synchronous)
        b = baseline()
        for _ in range(self.sz.log // 1000):
            acc = b.EsAccount(OPENED_OWNER)
            for i in range(999):
                acc.deposit(i + 1)
            app.save(acc)
        select = app.recorder.select_notifications
        self.keep = app  # its finalizer would close the connections the reads use

        def once() -> float:
            def body() -> float:
                n, cursor = 0, 1
                while True:
                    page = select(start=cursor, limit=1000)
                    n += len(page)
                    if len(page) < 1000:
                        return n
                    cursor = page[-1].id + 1

            return timed(body)

        return once


_WAITER = """
import sys, time
from eventcore.sqlite import SqliteStore

store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
after, last = 0, int(sys.argv[3])
print("ready", flush=True)
while after < last:
    after = store.wait_for_append(after, 30.0)
    print(after, time.time(), flush=True)
"""


def wake_latency(bench: SqliteBench, appends: int = 20) -> Callable[[], float]:
    """Milliseconds from an append's return to the wake-up of ``wait_for_append`` in
    another process (the median of ``appends`` appends after random idle pauses of up to
    0.2 s, so the waiter has backed off to its longest pause)."""
    import random
    import statistics
    import subprocess
    import sys

    rng = random.Random(7)

    def once() -> float:
        path = bench.path("wait")
        store = SqliteStore(path, synchronous=bench.synchronous)
        child = subprocess.Popen(
            [sys.executable, "-c", _WAITER, path, bench.synchronous, str(appends)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        waits = []
        for _ in range(appends):
            time.sleep(rng.uniform(0.0, 0.2))
            store.append([NewEvent("s", "T", b"")])
            done = time.time()
            waits.append((float(child.stdout.readline().split()[1]) - done) * 1000)
        child.wait(30)
        store.close()
        bench._drop(path)
        return statistics.median(waits)

    return once


# -- what a layout costs SQLite itself (issue 15: the batch append) ----------------------

_EVENTS = (
    "CREATE TABLE events (position INTEGER PRIMARY KEY, event_id BLOB NOT NULL{id_unique},"
    " stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL,"
    " payload BLOB NOT NULL, recorded_at INTEGER NOT NULL, metadata BLOB{sv_unique})"
)
_BATCHES = "CREATE TABLE batches (position INTEGER PRIMARY KEY, n INTEGER, data BLOB)"
_ID_INDEX = "CREATE TABLE ids (event_id BLOB PRIMARY KEY, position INTEGER) WITHOUT ROWID"
_RUNS = (
    "CREATE TABLE runs (kind INTEGER, key ANY, hi BLOB, first INTEGER, last INTEGER,"
    " PRIMARY KEY (kind, key, last)) WITHOUT ROWID"
)


def layout_costs(batches: int = 20, reps: int = 7) -> dict[str, float]:
    """Events/s of SQLite alone (rows built before the clock starts; ``synchronous=NORMAL``,
    WAL) appending batches of 1000 events of one stream, by layout, median of ``reps``
    interleaved runs:

    - ``rows``: this store's layout before schema 5: a row per event, unique indexes on
      the event id and on (stream, version), and migration 0004's type run;
    - ``no_id_index``: the same without the per-event id index (ids found through one
      range row per append instead, as the last row of the append);
    - ``no_indexes``: a row per event and no per-event index at all (stream and id runs);
    - ``blob_id_index``: one row per append holding its events, and a per-event id index;
    - ``blob_runs``: one row per append, ids and streams as runs (no per-event B-tree:
      what schema 5's segments do);
    - ``peer``: the peer's table (AUTOINCREMENT rowid, unique (originator, version)).
    """
    import statistics
    import uuid

    from eventcore import _core

    payload = b'{"amount":12345}'
    now = time.time_ns() // 1000
    folder = tempfile.mkdtemp(prefix="eventcore-sqlite-layouts-")

    def row_events(j: int, ids: list[bytes]) -> list[tuple[Any, ...]]:
        return [
            (j * 1000 + i + 1, ids[i], f"b-{j}", i + 1, "Deposited", payload, now, None)
            for i in range(1000)
        ]

    def runs(j: int, ids: list[bytes], kinds: int) -> list[tuple[Any, ...]]:
        first, last = j * 1000 + 1, j * 1000 + 1000
        return [(k, (ids[0], "Deposited", f"b-{j}")[k], ids[-1], first, last) for k in range(kinds)]

    insert_event = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    insert_runs = "INSERT INTO runs VALUES (?, ?, ?, ?, ?)"
    layouts: dict[str, tuple[list[str], Callable[[int, list[bytes]], list[tuple[str, Any]]]]] = {
        "rows": (
            [_EVENTS.format(id_unique=" UNIQUE", sv_unique=", UNIQUE (stream_id, version)"), _RUNS],
            lambda j, ids: [(insert_event, row_events(j, ids)), (insert_runs, runs(j, ids, 2)[1:])],
        ),
        "no_id_index": (
            [_EVENTS.format(id_unique="", sv_unique=", UNIQUE (stream_id, version)"), _RUNS],
            lambda j, ids: [(insert_event, row_events(j, ids)), (insert_runs, runs(j, ids, 2))],
        ),
        "no_indexes": (
            [_EVENTS.format(id_unique="", sv_unique=""), _RUNS],
            lambda j, ids: [(insert_event, row_events(j, ids)), (insert_runs, runs(j, ids, 3))],
        ),
        "blob_id_index": (
            [_BATCHES, _ID_INDEX, _RUNS],
            lambda j, ids: [
                (
                    "INSERT INTO batches VALUES (?, ?, ?)",
                    [(j * 1000 + 1, 1000, b"".join(ids) + payload * 1000)],
                ),
                (
                    "INSERT INTO ids VALUES (?, ?)",
                    [(ids[i], j * 1000 + i + 1) for i in range(1000)],
                ),
                (insert_runs, runs(j, ids, 3)[1:]),
            ],
        ),
        "blob_runs": (
            [_BATCHES, _RUNS],
            lambda j, ids: [
                (
                    "INSERT INTO batches VALUES (?, ?, ?)",
                    [(j * 1000 + 1, 1000, b"".join(ids) + payload * 1000)],
                ),
                (insert_runs, runs(j, ids, 3)),
            ],
        ),
        "peer": (
            [
                "CREATE TABLE stored_events (notification_id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB,"
                " UNIQUE (originator_id, originator_version))"
            ],
            lambda j, ids: [
                (
                    "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (str(uuid.UUID(bytes=ids[0])), i + 1, "bank:Account.Deposited", payload)
                        for i in range(1000)
                    ],
                )
            ],
        ),
    }
    found: dict[str, list[float]] = {name: [] for name in layouts}
    try:
        for rep in range(reps):
            for name, (ddl, statements) in layouts.items():
                conn = sqlite3.connect(
                    os.path.join(folder, f"{name}-{rep}.db"), isolation_level=None
                )
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                for sql in ddl:
                    conn.execute(sql)
                work = [
                    statements(j, [i.to_bytes(16, "big") for i in _core.uuid7_ints(1000)])
                    for j in range(batches)
                ]
                started = _perf()
                for batch in work:
                    conn.execute("BEGIN IMMEDIATE")
                    for sql, rows in batch:
                        conn.executemany(sql, rows)
                    conn.execute("COMMIT")
                found[name].append(1000 * batches / (_perf() - started))
                conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {name: statistics.median(rates) for name, rates in found.items()}


if __name__ == "__main__":
    costs = layout_costs()
    for name, rate in costs.items():
        print(f"{name:14s} {rate:12,.0f} events/s  {rate / costs['peer']:.2f}x the peer's table")
