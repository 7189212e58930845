"""The PostgreSQL snapshot table: reads, writes, and a dropped or corrupted table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from tests.postgres.pg_bank import balance_of, open_accounts

from eventcore import BusinessRuleViolation, NewEvent, execute
from eventcore.examples.bank import Account, Deposit, Deposited, Transfer, Withdraw
from eventcore.examples.bank import registry as BANK
from eventcore.postgres import _snapshot
from eventcore.postgres._snapshot import PostgresSnapshotStore, SnapshotTail
from eventcore.snapshot import Snapshot, Snapshotter, snapshot_key

pytestmark = pytest.mark.postgres


def snap_of(s: Snapshotter, cls: type, state: Any, versions: tuple[int, ...]) -> Snapshot:
    key = snapshot_key(cls, ["a", "b"][: len(versions)])
    assert key is not None
    streams = ["a", "b"][: len(versions)]
    taken = s.take(cls, key, streams, versions, 0, 0, state)
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
    assert await s.read_async(Deposit, five.key) is None
    await s.store.save(five)  # type: ignore[misc]
    assert same(await s.read_async(Deposit, five.key), five)
    three = snap_of(s, Deposit, Account(True, 3), (3,))
    await s.store.save(three)  # type: ignore[misc]
    assert same(await s.read_async(Deposit, five.key), five)  # fewer events: kept the old one
    pair = {"a": Account(True, 1), "b": Account(False, 0)}
    transfer = snap_of(s, Transfer, pair, (2, 1))
    s.write(Transfer, transfer)  # in the background
    await s.close()
    loaded = await s.read_async(Transfer, transfer.key)
    assert loaded is not None and same(loaded, transfer)
    assert s.restore(Transfer, loaded, ["a", "b"]) == (True, pair)


async def test_a_corrupted_row_or_a_dropped_table_is_a_warning_then_nothing(
    postgres_store_factory: Any,
    postgres_dsn: str,
    snapshot_failures: list[tuple[str, str]],
) -> None:
    store = await postgres_store_factory(registry=BANK)
    s: Snapshotter = store.snapshots
    snap = snap_of(s, Deposit, Account(True, 5), (5,))
    await s.store.save(snap)  # type: ignore[misc]
    admin = await asyncpg.connect(postgres_dsn)
    table = f'"{store.schema}".snapshots'
    try:
        await admin.execute(f"UPDATE {table} SET state = '\\xdeadbeef'::bytea")
        assert await s.read_async(Deposit, snap.key) is None  # garbage: checksum fails
        await admin.execute(f"UPDATE {table} SET state = $1", snap.state)  # whole again
        assert await s.read_async(Deposit, snap.key) is not None
        await admin.execute(f"UPDATE {table} SET versions = '{{9}}'")  # fits; checksum does not
        assert await s.read_async(Deposit, snap.key) is None
        await admin.execute(f"DROP TABLE {table}")
        assert await s.read_async(Deposit, snap.key) is None
        assert await s.read_async(Deposit, snap.key) is None
        s.write(Deposit, snap)
        await s.close()
    finally:
        await admin.close()
    assert snapshot_failures == [("Deposit", "read"), ("Deposit", "write")]  # once each
    assert await store.head() == 0  # the event store itself is untouched


async def test_snapshots_can_be_turned_off(postgres_store_factory: Any) -> None:
    store = await postgres_store_factory(registry=BANK, snapshots=False)
    assert store.snapshots is None


# -- in the executor ---------------------------------------------------------------------


async def exact_balance(store: Any, account: str, balance: int) -> None:
    """The executor sees exactly ``balance``: one cent more is refused, that much is not."""
    with pytest.raises(BusinessRuleViolation):
        await execute(store, Withdraw(account=account, amount=balance + 1))
    await execute(store, Withdraw(account=account, amount=balance))
    await execute(store, Deposit(account=account, amount=balance))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Snapshot | None]:
    """Every snapshot PostgresSnapshotStore read for a command (``load_with_tail``, with
    the events after it), in order."""
    seen: list[Snapshot | None] = []
    original = PostgresSnapshotStore.load_with_tail

    async def spy(self: PostgresSnapshotStore, key: str) -> Any:
        found = await original(self, key)
        seen.append(found[0])
        return found

    monkeypatch.setattr(PostgresSnapshotStore, "load_with_tail", spy)
    return seen


async def test_a_new_store_object_folds_from_the_snapshot(
    postgres_store_factory: Any, loads: list[Snapshot | None]
) -> None:
    store = await postgres_store_factory(registry=BANK, snapshot_every=5)
    await open_accounts(store, ["a"], 10)  # 2 events, appended directly
    for _ in range(8):
        await execute(store, Deposit(account="a", amount=1))
    await store.close()  # the background writes end here
    assert set(loads) == {None}  # the first store's misses found none
    before = len(loads)
    again = await postgres_store_factory(registry=BANK, schema=store.schema)
    await execute(again, Deposit(account="a", amount=1))
    (found,) = loads[before:]
    assert found is not None and 5 <= found.versions[0] <= 10
    await exact_balance(again, "a", 19)


def statements(store: Any) -> list[str]:
    """The statements ``store`` runs from now on: its reads' SQL, ``"append"`` for each
    append."""
    ran: list[str] = []
    fetch, append = store._fetch, store.append

    async def spy_fetch(query: str, *args: Any) -> list[Any]:
        ran.append(query)
        return await fetch(query, *args)  # type: ignore[no-any-return]

    async def spy_append(*args: Any, **kwargs: Any) -> Any:
        ran.append("append")
        return await append(*args, **kwargs)

    store._fetch, store.append = spy_fetch, spy_append
    return ran


@pytest.mark.parametrize("tail_rows", [1000, 2])
async def test_a_snapshot_and_its_tail_are_one_read(
    tail_rows: int, postgres_store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting from a snapshot, the events after it come with it and are folded before
    the append: two round trips. A tail longer than TAIL_ROWS is not kept: the append
    conflicts, returns it, and the command appends again."""
    monkeypatch.setattr(_snapshot, "TAIL_ROWS", tail_rows)
    store = await postgres_store_factory(registry=BANK, snapshot_every=5)
    await open_accounts(store, ["a"], 10)
    for _ in range(5):
        await execute(store, Deposit(account="a", amount=1))
    await store.close()  # the background writes end here
    again = await postgres_store_factory(registry=BANK, schema=store.schema)
    await again.append([NewEvent("a", *BANK.encode(Deposited(100))) for _ in range(3)])
    ran = statements(again)
    result = await execute(again, Deposit(account="a", amount=1))
    assert again.snapshots.found == 1
    load = again._q.load_snapshot_tail
    if tail_rows == 1000:
        assert ran == [load, "append"]
    else:  # 3 events and the last folded one: more than 2
        assert ran == [load, "append", "append"]
    assert result.attempts == 1  # a conflict that returned its tail is no failed attempt
    await exact_balance(again, "a", 10 + 5 + 300 + 1)


async def test_a_snapshot_tail_stands_in_for_a_read_only_of_its_versions(
    postgres_store_factory: Any,
) -> None:
    store = await postgres_store_factory(registry=BANK)
    await open_accounts(store, ["a"], 10)
    snap, tail = await store.snapshots.store.load_with_tail("nothing")
    assert (snap, tail) == (None, None)
    rows = await store._fetch(store._q.fold_tail, ["a"], [1])
    assert [r[3] for r in rows] == [1, 2]
    tail = SnapshotTail(("a",), (1,), rows)
    await store.append([NewEvent("a", *BANK.encode(Deposited(5)))])  # after the snapshot read
    ran = statements(store)
    read = await store.read_tail(["a"], [1], 0, tail)
    assert read is not None and [r[3] for r in read[0]] == [2]  # the hint's rows
    assert read[1] == [2] and ran == []  # (stale: the append's expected version checks)
    read = await store.read_tail(["a"], [2], 0, tail)  # other versions: a read
    assert read is not None and [r[3] for r in read[0]] == [3]
    read = await store.read_tail(["b"], [1], 0, tail)  # other streams: a read
    assert read is None and ran == [store._q.fold_tail] * 2  # (b has no events: refused)


@pytest.mark.parametrize("damage", ["drop", "garbage"])
async def test_a_dropped_or_corrupted_table_mid_run_changes_nothing_but_speed(
    damage: str,
    postgres_store_factory: Any,
    postgres_dsn: str,
    snapshot_failures: list[tuple[str, str]],
) -> None:
    store = await postgres_store_factory(registry=BANK, snapshot_every=2)
    await open_accounts(store, ["a", "b"], 10)
    for _ in range(5):
        await execute(store, Transfer(source="a", target="b", amount=1))
    await store.close()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        table = f'"{store.schema}".snapshots'
        assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 1
        if damage == "drop":
            await admin.execute(f"DROP TABLE {table}")
        else:
            await admin.execute(f"UPDATE {table} SET state = '\\x0102deadbeef'::bytea")
    finally:
        await admin.close()
    again = await postgres_store_factory(registry=BANK, schema=store.schema, snapshot_every=2)
    for _ in range(3):
        await execute(again, Transfer(source="a", target="b", amount=1))
    await again.close()
    expected = [("Transfer", "read")] + ([("Transfer", "write")] if damage == "drop" else [])
    assert snapshot_failures == expected
    assert await balance_of(again, "a") == 2 and await balance_of(again, "b") == 18
    await exact_balance(again, "a", 2)


async def test_a_new_state_schema_version_ignores_old_snapshots_and_replaces_them(
    postgres_store_factory: Any,
    postgres_dsn: str,
    loads: list[Snapshot | None],
    snapshot_failures: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await postgres_store_factory(registry=BANK, snapshot_every=3)
    await open_accounts(store, ["a"], 10)
    for _ in range(6):
        await execute(store, Deposit(account="a", amount=1))
    await store.close()
    admin = await asyncpg.connect(postgres_dsn)
    table = f'"{store.schema}".snapshots'
    try:
        assert await admin.fetchval(f"SELECT schema_version FROM {table}") == 1
        # the application upgrades: Account changed, Deposit says so
        monkeypatch.setattr(Deposit, "snapshot_version", 2)
        before = len(loads)
        again = await postgres_store_factory(registry=BANK, schema=store.schema, snapshot_every=3)
        for _ in range(4):
            await execute(again, Deposit(account="a", amount=1))
        await again.close()
        first = loads[before]
        assert first is not None and first.schema_version == 1  # read, then ignored
        assert await admin.fetchval(f"SELECT schema_version FROM {table}") == 2  # replaced
    finally:
        await admin.close()
    assert snapshot_failures == []  # another version is no failure
    await exact_balance(again, "a", 20)
