"""The SQLite store in one process: opening, durability across reopen, both executors,
snapshots, waiting, and projections with checkpoints in the same file (exactly once).

The store's contract is ``tests/contract`` and ``tests/test_store_model.py`` (both run on
SQLite); several processes are ``test_sqlite_processes.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eventcore import (
    ConcurrencyConflict,
    ConfigurationError,
    DuplicateEventId,
    MemoryStore,
    Metadata,
    NewEvent,
    StoreError,
    ValidationError,
    execute,
    execute_sync,
)
from eventcore.examples import bank
from eventcore.projection import ProjectionRunner
from eventcore.sqlite import SqliteCheckpointStore, SqliteStore
from eventcore.store import (
    ProjectionStore,
    StreamLifecycle,
    SyncEventStore,
    SyncStreamLifecycle,
)


@pytest.mark.parametrize("path", [":memory:", "", "file:x.db?mode=memory"])
def test_no_store_in_memory(path: str) -> None:
    with pytest.raises(ConfigurationError, match="MemoryStore"):
        SqliteStore(path)


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="synchronous"):
        SqliteStore(tmp_path / "a.db", synchronous="SOMETIMES")
    with pytest.raises(ValidationError):
        SqliteStore(tmp_path / "a.db", busy_timeout=-1)
    with pytest.raises(ConfigurationError):
        SqliteStore(42)  # type: ignore[arg-type]


def test_a_file_that_is_no_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the events you are looking for" * 100)
    with pytest.raises(StoreError, match="SQLite"):
        SqliteStore(path)


def test_a_file_of_a_newer_eventcore_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def test_events_survive_a_reopen_and_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SqliteStore(path, registry=bank.registry) as store:
        assert isinstance(store, SyncEventStore)
        assert isinstance(store.aio, ProjectionStore)
        assert isinstance(store, SyncStreamLifecycle)
        assert isinstance(store.aio, StreamLifecycle)
        execute_sync(store, bank.OpenAccount(account="acc", owner="ann"))
        execute_sync(store, bank.Deposit(account="acc", amount=5))
    with SqliteStore(path, registry=bank.registry) as again:
        assert [e.event_type for e in again.read_stream("acc")] == [
            "demo.bank.AccountOpened",
            "demo.bank.Deposited",
        ]
        assert again.read_stream("acc")[1].data == bank.Deposited(5)
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    with pytest.raises(Exception, match="closed"):
        again.head()


async def test_both_executors_and_the_state_cache(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db", registry=bank.registry)
    execute_sync(store, bank.OpenAccount(account="a", owner="ann"))
    await execute(store.aio, bank.OpenAccount(account="b", owner="bob"))
    await execute(store, bank.Deposit(account="a", amount=100))  # the sync store, awaited
    for _ in range(10):  # states of 8 events on are cached
        execute_sync(store, bank.Deposit(account="a", amount=1))
    result = execute_sync(store, bank.Transfer(source="a", target="b", amount=50))
    assert result.stream_versions == {"a": 13, "b": 2}
    execute_sync(store, bank.Deposit(account="a", amount=10))
    assert store.state_cache is not None and store.state_cache.hits > 0
    # A write the cached state has not seen (another store object: another process).
    other = SqliteStore(store.path, registry=bank.registry, state_cache=0)
    execute_sync(other, bank.Withdraw(account="a", amount=60))
    with pytest.raises(Exception, match="insufficient funds"):
        execute_sync(store, bank.Withdraw(account="a", amount=11))
    assert store.stream_version("a") == 15  # the refused command wrote nothing
    other.close()
    store.close()


def test_snapshots_are_written_to_the_file_and_read_by_a_fresh_store(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteStore(path, registry=bank.registry, state_cache=0, snapshot_every=10)
    execute_sync(store, bank.OpenAccount(account="acc", owner="ann"))
    for _ in range(25):
        execute_sync(store, bank.Deposit(account="acc", amount=1))
    assert store.snapshots is not None and store.snapshots.written >= 1
    [[events]] = sqlite3.connect(path).execute("SELECT events FROM snapshots").fetchall()
    assert events >= 10
    store.close()
    fresh = SqliteStore(path, registry=bank.registry, state_cache=0, snapshot_every=10)
    execute_sync(fresh, bank.Deposit(account="acc", amount=1))  # from the Deposit snapshot
    assert fresh.snapshots is not None and fresh.snapshots.found == 1
    execute_sync(fresh, bank.Withdraw(account="acc", amount=26))
    with pytest.raises(Exception, match="insufficient funds"):
        execute_sync(fresh, bank.Withdraw(account="acc", amount=1))
    fresh.close()


def test_wait_for_append_wakes_at_once_on_an_append_of_this_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db", poll_interval=5.0)
    started = time.monotonic()
    assert store.wait_for_append(0, 0.05) == 0
    assert time.monotonic() - started >= 0.04
    threading.Timer(0.05, store.append, ([NewEvent("s", "T", b"")],)).start()
    started = time.monotonic()
    assert store.wait_for_append(0, 10.0) == 1
    # Woken by the append, not by a poll (the longest pause is 5 s here).
    assert time.monotonic() - started < 2.0
    store.close()


async def test_async_wait_for_append_wakes_on_an_append_and_times_out(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db", poll_interval=5.0)
    waiting = asyncio.create_task(store.aio.wait_for_append(0, 10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await store.aio.append([NewEvent("s", "T", b"")])
    assert await waiting == 1
    assert time.monotonic() - started < 2.0
    assert await store.aio.wait_for_append(1, 0.02) == 1
    assert not store._async_waiters  # nothing left registered
    store.close()


class Counts:
    """A read model in the store's own file, applied in the runner's transaction.

    ``applied`` has the position as primary key: applying an event twice raises.
    """

    name = "counts"

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    async def apply_in_transaction(self, events: list[Any], conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS applied (position INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n INT)")
        conn.executemany("INSERT INTO applied VALUES (?)", [(e.position,) for e in events])
        for stream_id, n in Counter(e.stream_id for e in events).items():
            conn.execute(
                "INSERT INTO counts VALUES (?, ?) ON CONFLICT (stream_id) DO UPDATE SET n = n + ?",
                (stream_id, n, n),
            )
        if self.fail_at is not None and any(e.position == self.fail_at for e in events):
            raise RuntimeError("the read model fails here")


def read_model(path: str) -> tuple[list[int], dict[str, int]]:
    conn = sqlite3.connect(path)
    applied = [r[0] for r in conn.execute("SELECT position FROM applied ORDER BY position")]
    counts = dict(conn.execute("SELECT stream_id, n FROM counts").fetchall())
    conn.close()
    return applied, counts


async def test_a_batch_and_its_checkpoint_commit_together(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "events.db")
    for i in range(30):
        store.append([NewEvent(f"s-{i % 3}", "T", b"%d" % i)])
    checkpoints = store.aio.checkpoint_store()
    assert isinstance(checkpoints, SqliteCheckpointStore)
    # A batch that fails is rolled back with its checkpoint: nothing of it is kept.
    failing = ProjectionRunner(store, Counts(fail_at=25), page_size=10)
    with pytest.raises(Exception, match="fails here"):
        await failing.run_until_caught_up()
    assert await checkpoints.load("counts") == 20
    assert read_model(store.path)[0] == list(range(1, 21))
    # The next runner (the one the OS-level lease lets in) goes on from there, once each.
    runner = ProjectionRunner(store, Counts(), page_size=10)
    assert runner.exclusive
    await runner.run_until_caught_up()
    applied, counts = read_model(store.path)
    assert applied == list(range(1, 31))
    assert counts == {"s-0": 10, "s-1": 10, "s-2": 10}
    assert await checkpoints.load("counts") == 30
    store.close()


async def test_checkpoints_and_dead_letters_round_trip(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from eventcore.projection import DeadLetter

    store = SqliteStore(tmp_path / "events.db")
    checkpoints = store.aio.checkpoint_store()
    await checkpoints.check()
    assert await checkpoints.load("p") == 0
    await checkpoints.save("p", 7)
    await checkpoints.reset("q", 3)
    assert (await checkpoints.load("p"), await checkpoints.load("q")) == (7, 3)
    [written] = store.append([NewEvent("s", "T", b"")]).events
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    letter = DeadLetter("p", 1, written.event_id, "s", "T", "ValueError()", when)
    await checkpoints.add_dead_letter(letter)
    await checkpoints.add_dead_letter(DeadLetter("p", 2, None, "", "", "E()", when))
    assert await checkpoints.dead_letters("p") == [
        letter,
        DeadLetter("p", 2, None, "", "", "E()", when),
    ]
    assert await checkpoints.dead_letters("q") == []
    # In a transaction: a savepoint's block is rolled back alone.
    async with checkpoints.transaction() as tx:
        assert await tx.move("p", 7, 8)
        assert not await tx.move("p", 7, 9)  # not at 7 any more: changes nothing
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await tx.reset("p", 100)
                raise RuntimeError
        assert tx.failure(RuntimeError()) is None
    assert await checkpoints.load("p") == 8
    store.close()


def test_threads_share_one_store_object(tmp_path: Path) -> None:
    """Each thread gets its own connection; writers take turns on the write lock."""
    from eventcore import RetryPolicy

    store = SqliteStore(tmp_path / "events.db", registry=bank.registry)
    execute_sync(store, bank.OpenAccount(account="shared", owner="all"))
    policy = RetryPolicy(max_attempts=1000, max_delay=0.005)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                execute_sync(store, bank.Deposit(account="shared", amount=1), retry=policy)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = store.read_all()
    assert [e.position for e in log] == list(range(1, 202))
    assert [e.version for e in log] == list(range(1, 202))
    assert sum(e.data.amount for e in log[1:]) == 200
    store.close()


def test_a_replay_is_judged_event_by_event_in_order_as_in_memory(tmp_path: Path) -> None:
    """A run across two appends with other metadata, plus a new event: the first event
    that is not a replay decides (here the second, stored with other metadata), as the
    in-memory store and the stateful model say."""

    def answer(store: Any) -> tuple[Any, str]:
        a, b = uuid.uuid4(), uuid.uuid4()
        store.append([NewEvent("acc-1", "m.A", b"1", a)])
        store.append([NewEvent("acc-1", "m.A", b"2", b)], metadata=Metadata(custom={"t": 1}))
        replay = [NewEvent("acc-1", "m.A", b"1", a), NewEvent("acc-1", "m.A", b"2", b)]
        with pytest.raises(DuplicateEventId) as err:
            store.append([*replay, NewEvent("acc-1", "m.A", b"3", uuid.uuid4())])
        return (err.value.event_id == b, err.value.reason)

    with SqliteStore(tmp_path / "events.db") as sqlite:
        assert (
            answer(sqlite)
            == answer(MemoryStore())
            == (True, "already stored with different content")
        )


@pytest.mark.parametrize("streams", [2, 16, 17])
def test_an_append_checks_every_streams_version_as_in_memory(tmp_path: Path, streams: int) -> None:
    # Up to 16 streams are checked in one statement, more by the general path: both
    # must give the in-memory store's versions and conflicts.
    from eventcore.sqlite import _segments

    assert _segments.STREAMS_PER_CHECK == 16
    ids = [f"s-{i}" for i in range(streams)]
    sqlite, memory = SqliteStore(tmp_path / "v.db"), MemoryStore()
    seed = [NewEvent(s, "Seeded", b"%d" % k) for k, s in enumerate(ids) for _ in range(k % 3)]
    for store in (sqlite, memory):
        store.append(seed)
        store.truncate_stream(ids[1], 2, expected=1)  # its version is now 2, with no event
    right = list(zip(ids, memory.read_fold(ids)[1], strict=True))
    assert right[1] == (ids[1], 2)
    events = [NewEvent(s, "Moved", b"x") for s in ids]
    wrong = [(s, v + (1 if s == ids[-1] else 0)) for s, v in right]
    outcomes = []
    for store in (sqlite, memory):
        with pytest.raises(ConcurrencyConflict) as caught:
            store.append(events, expected=wrong)
        ok = store.append(events, expected=right)
        outcomes.append((str(caught.value), ok.stream_versions, store.read_fold(ids)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2][1] == [v + 1 for _, v in right]
    sqlite.close()


def test_a_fold_read_of_more_streams_than_one_statement_binds_reads_them_all(
    tmp_path: Path,
) -> None:
    # A fold read lists its streams as parameters, at most MAX_VARIABLES a statement.
    from eventcore.sqlite import _schema

    ids = [f"f-{i}" for i in range(_schema.MAX_VARIABLES + 50)]
    sqlite, memory = SqliteStore(tmp_path / "f.db"), MemoryStore()
    events = [NewEvent(s, "E", b"%d" % k) for k, s in enumerate(ids) for _ in range(2)]
    for store in (sqlite, memory):
        store.append(events[::2])
        store.append(events[1::2])
        store.truncate_stream(ids[-1], 2, expected=2)  # a lifecycle row in the last chunk
    rows, versions = sqlite.read_fold(ids)
    assert (rows, versions) == memory.read_fold(ids)
    assert len(rows) == 2 * len(ids) - 1
    assert versions == [2] * (len(ids) - 1) + [3]  # a truncation takes a version
    sqlite.close()
