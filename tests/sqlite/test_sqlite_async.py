"""The SQLite store's async view keeps the event loop free while a write waits: for
another connection's write lock (another process) and for the commit. Writes of one
process take turns on the loop, so a transaction's COMMIT never queues behind a writer
waiting for the lock that transaction holds."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from eventcore import NewEvent, StoreUnavailable, execute, execute_sync
from eventcore.examples import bank
from eventcore.sqlite import SqliteStore


async def _ticks_while(coro: object, *, release_after: float, conn: sqlite3.Connection) -> int:
    """Run ``coro`` while ``conn`` holds the write lock for ``release_after`` seconds
    (released by a callback of this loop); the loop's 10 ms ticks meanwhile."""
    ticks = 0
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    loop.call_later(release_after, conn.execute, "COMMIT")
    tick = asyncio.create_task(ticker())
    try:
        await coro  # type: ignore[misc]
    finally:
        tick.cancel()
    return ticks


def _locker(path: str) -> sqlite3.Connection:
    """Another connection (as another process would) holding the write lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_an_append_waiting_for_the_write_lock_does_not_block_the_loop(
    tmp_path: Path, synchronous: str
) -> None:
    """FULL: every write runs on the store's thread (the commit syncs); NORMAL: tried on
    the loop's thread without waiting, then waited for on the store's thread."""
    store = SqliteStore(
        tmp_path / "e.db", registry=bank.registry, busy_timeout=5, synchronous=synchronous
    )
    locker = _locker(store.path)
    started = time.monotonic()
    append = store.aio.append([NewEvent("s", "T", b"x")])
    ticks = await _ticks_while(append, release_after=0.3, conn=locker)
    # The loop ran on (its callback even released the lock the append waited for).
    assert time.monotonic() - started >= 0.3
    assert ticks >= 5
    assert [e.event_type for e in store.read_stream("s")] == ["T"]
    # A command through the async executor, the same way.
    execute_sync(store, bank.OpenAccount(account="acc", owner="ann"))
    locker.execute("BEGIN IMMEDIATE")
    command = execute(store.aio, bank.Deposit(account="acc", amount=5))
    assert await _ticks_while(command, release_after=0.3, conn=locker) >= 5
    assert store.stream_version("acc") == 2
    locker.close()
    store.close()


async def test_a_transaction_and_lifecycle_writes_wait_off_the_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "e.db", busy_timeout=5)
    store.append([NewEvent("s", "T", b"%d" % i) for i in range(3)])
    checkpoints = store.aio.checkpoint_store()
    locker = _locker(store.path)

    async def in_transaction() -> None:
        async with checkpoints.transaction() as tx:
            await tx.reset("p", 3)

    assert await _ticks_while(in_transaction(), release_after=0.3, conn=locker) >= 5
    assert await checkpoints.load("p") == 3
    locker.execute("BEGIN IMMEDIATE")
    save = checkpoints.save("q", 2)
    assert await _ticks_while(save, release_after=0.3, conn=locker) >= 5
    locker.execute("BEGIN IMMEDIATE")
    truncate = store.aio.truncate_stream("s", 2)
    assert await _ticks_while(truncate, release_after=0.3, conn=locker) >= 5
    assert [e.version for e in store.read_stream("s")] == [2, 3]
    locker.close()
    store.close()


async def test_writes_of_one_process_take_turns_with_an_open_transaction(
    tmp_path: Path,
) -> None:
    """An append started while a transaction's block runs waits for its COMMIT (it does
    not take the store's thread to wait for the lock the transaction holds)."""
    store = SqliteStore(tmp_path / "e.db", busy_timeout=2)
    checkpoints = store.aio.checkpoint_store()
    order: list[str] = []

    async def append() -> None:
        await store.aio.append([NewEvent("s", "T", b"")])
        order.append("appended")

    async with checkpoints.transaction() as tx:
        task = asyncio.create_task(append())
        await asyncio.sleep(0.2)  # the append is waiting, the loop is not
        assert order == []
        await tx.reset("p", 1)
        order.append("committing")
    await task
    assert order == ["committing", "appended"]
    assert await checkpoints.load("p") == 1 and store.head() == 1
    # A write inside the block itself cannot get its turn: StoreUnavailable after
    # busy_timeout, as SQLite's own lock would answer; the transaction still commits.
    store.busy_timeout = 0.2
    async with checkpoints.transaction() as tx:
        with pytest.raises(StoreUnavailable):
            await store.aio.append([NewEvent("s", "T", b"")])
        await tx.reset("p", 2)
    assert await checkpoints.load("p") == 2 and store.head() == 1
    store.close()


async def test_a_cancelled_append_ends_before_the_caller_goes_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "e.db", busy_timeout=5)
    locker = _locker(store.path)
    task = asyncio.create_task(store.aio.append([NewEvent("s", "T", b"")]))
    await asyncio.sleep(0.1)
    task.cancel()
    asyncio.get_running_loop().call_later(0.2, locker.execute, "COMMIT")
    with pytest.raises(asyncio.CancelledError):
        await task
    # The append ran to its end (written) before the cancellation reached its caller.
    assert store.head() == 1
    locker.close()
    store.close()
