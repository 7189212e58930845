"""The PostgreSQL snapshot table: reads, writes, and a dropped or corrupted table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from tests.test_snapshot import Failures, failures  # noqa: F401  (fixture)

from eventcore import observe
from eventcore.examples.bank import Account, Deposit, Transfer
from eventcore.examples.bank import registry as BANK
from eventcore.snapshot import Snapshot, Snapshotter, snapshot_key

pytestmark = pytest.mark.postgres


def snap_of(s: Snapshotter, cls: type, state: Any, versions: tuple[int, ...]) -> Snapshot:
    key = snapshot_key(cls, ["a", "b"][: len(versions)])
    assert key is not None
    streams = ["a", "b"][: len(versions)]
    taken = s.take(cls, key, streams, versions, 0, state)
    assert taken is not None
    return taken


def same(a: Snapshot | None, b: Snapshot) -> bool:
    """Equal, but for taken_at's last digits (PostgreSQL keeps microseconds)."""
    return (
        a is not None
        and replace(a, taken_at=0.0) == replace(b, taken_at=0.0)
        and abs(a.taken_at - b.taken_at) < 1e-5
    )


async def test_snapshots_round_trip_and_keep_the_one_of_more_events(
    postgres_store_factory: Any,
) -> None:
    store = await postgres_store_factory(registry=BANK)
    s: Snapshotter = store.snapshots
    five = snap_of(s, Deposit, Account(True, 5), (5,))
    assert await s.load_async(Deposit, five.key) is None
    await s.store.save(five)  # type: ignore[misc]
    assert same(await s.load_async(Deposit, five.key), five)
    three = snap_of(s, Deposit, Account(True, 3), (3,))
    await s.store.save(three)  # type: ignore[misc]
    assert same(await s.load_async(Deposit, five.key), five)  # fewer events: kept the old one
    pair = {"a": Account(True, 1), "b": Account(False, 0)}
    transfer = snap_of(s, Transfer, pair, (2, 1))
    s.save(Transfer, transfer)  # in the background
    await s.close()
    loaded = await s.load_async(Transfer, transfer.key)
    assert loaded is not None and same(loaded, transfer)
    assert s.restore(Transfer, loaded, ["a", "b"]) == (True, pair)


async def test_a_corrupted_row_or_a_dropped_table_is_a_warning_then_nothing(
    postgres_store_factory: Any,
    postgres_dsn: str,
    failures: list[tuple[str, str]],  # noqa: F811
) -> None:
    store = await postgres_store_factory(registry=BANK)
    s: Snapshotter = store.snapshots
    snap = snap_of(s, Deposit, Account(True, 5), (5,))
    await s.store.save(snap)  # type: ignore[misc]
    admin = await asyncpg.connect(postgres_dsn)
    table = f'"{store.schema}".snapshots'
    try:
        await admin.execute(f"UPDATE {table} SET state = '\\xdeadbeef'::bytea")
        assert await s.load_async(Deposit, snap.key) is None  # garbage: checksum fails
        await admin.execute(f"UPDATE {table} SET state = $1", snap.state)  # whole again
        assert await s.load_async(Deposit, snap.key) is not None
        await admin.execute(f"UPDATE {table} SET versions = '{{9}}'")  # fits; checksum does not
        assert await s.load_async(Deposit, snap.key) is None
        await admin.execute(f"DROP TABLE {table}")
        assert await s.load_async(Deposit, snap.key) is None
        assert await s.load_async(Deposit, snap.key) is None
        s.save(Deposit, snap)
        await s.close()
    finally:
        await admin.close()
    assert failures == [("Deposit", "read"), ("Deposit", "write")]  # once each
    assert await store.head() == 0  # the event store itself is untouched


async def test_snapshots_can_be_turned_off(postgres_store_factory: Any) -> None:
    store = await postgres_store_factory(registry=BANK, snapshots=False)
    assert store.snapshots is None
    observe.remove_hook(Failures([]))  # harmless: nothing was registered
