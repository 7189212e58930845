"""Snapshots in the executor (in memory): a cache miss reads one, folds only the tail, and
every way a snapshot can be wrong or missing ends in a full fold with the same outcome."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    Command,
    MemoryStore,
    StreamId,
    execute,
    execute_sync,
    stream,
)
from eventcore.snapshot import PROBE_EVERY, MemorySnapshotStore, Snapshot
from tests.bank_domain import Account, Deposit, OpenAccount, Withdraw
from tests.test_snapshot import Opaque


class Spy(MemorySnapshotStore):
    """A MemorySnapshotStore that records what it was asked and what it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[Snapshot | None] = []
        self.keys: list[str] = []
        self.saves: list[Snapshot] = []

    def load(self, key: str) -> Snapshot | None:
        found = super().load(key)
        self.loads.append(found)
        self.keys.append(key)
        return found

    def save(self, snapshot: Snapshot) -> None:
        self.saves.append(snapshot)
        super().save(snapshot)


def restart(store: MemoryStore) -> None:
    """What a restarted process sees: the same events and snapshots, an empty cache."""
    assert store.state_cache is not None
    store.state_cache.clear()


def opened(store: MemoryStore, account: str, deposits: int) -> None:
    execute_sync(store, OpenAccount(account=account, owner="o"))
    for _ in range(deposits):
        execute_sync(store, Deposit(account=account, amount=1))


def exact_balance(store: MemoryStore, account: str, balance: int) -> None:
    """The balance is exactly ``balance``: one cent more cannot be withdrawn, that much can."""
    with pytest.raises(BusinessRuleViolation):
        execute_sync(store, Withdraw(account=account, amount=balance + 1))
    execute_sync(store, Withdraw(account=account, amount=balance))
    execute_sync(store, Deposit(account=account, amount=balance))


def test_a_restart_reads_the_snapshot_and_folds_only_the_tail() -> None:
    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=10)
    opened(store, "acc-1", 24)  # 25 events: snapshots at 10 and 20 events
    assert [s.versions for s in spy.saves] == [(10,), (20,)]
    restart(store)
    execute_sync(store, Deposit(account="acc-1", amount=5))
    found = spy.loads[-1]
    assert found is not None and found.versions == (20,)
    counts = store.snapshots
    assert counts is not None
    assert (counts.reads, counts.found, counts.written) == (len(spy.loads), 1, 2)
    exact_balance(store, "acc-1", 29)


def test_a_snapshot_equals_a_full_fold_and_async_reads_it_too() -> None:
    import asyncio

    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=5)
    opened(store, "acc-1", 7)
    restart(store)

    async def go() -> None:
        await execute(store, Deposit(account="acc-1", amount=1))

    asyncio.run(go())
    assert spy.loads and spy.loads[-1] is not None
    plain = MemoryStore(state_cache=0)
    opened(plain, "acc-1", 8)
    exact_balance(plain, "acc-1", 8)
    exact_balance(store, "acc-1", 8)


class V2Deposit(Deposit):
    snapshot_version = 2


def test_another_schema_version_is_ignored_then_replaced(
    caplog: Any, snapshot_failures: Any
) -> None:
    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=3)
    opened(store, "acc-1", 5)
    old = spy.snapshots[next(iter(spy.snapshots))]
    assert old.schema_version == 1
    restart(store)
    # V2Deposit has its own key (another class); a v1 row under its key is what an
    # upgrade finds: plant one, it must be ignored and replaced, never decoded
    for _ in range(3):
        execute_sync(store, V2Deposit(account="acc-1", amount=1))
    key = next(k for k in spy.snapshots if "V2Deposit" in k)
    planted = replace(spy.snapshots[key], schema_version=1)
    spy.snapshots[key] = replace(planted, checksum=_checksum(planted))
    restart(store)
    execute_sync(store, V2Deposit(account="acc-1", amount=1))
    assert spy.loads[-1] is not None and spy.loads[-1].schema_version == 1  # read, ignored
    for _ in range(3):
        execute_sync(store, V2Deposit(account="acc-1", amount=1))
    assert spy.snapshots[key].schema_version == 2  # rebuilt
    exact_balance(store, "acc-1", 5 + 7)
    assert snapshot_failures == [] and not [
        r for r in caplog.records if r.levelno >= logging.WARNING
    ]


def _checksum(s: Snapshot) -> bytes:
    from eventcore.snapshot import checksum

    return checksum(s.key, s.streams, s.versions, s.fold_from, s.rounds, s.schema_version, s.state)


@pytest.mark.parametrize("damage", ["garbage", "undecodable", "truncated_versions"])
def test_a_damaged_snapshot_is_a_warning_then_a_full_fold(
    damage: str, caplog: Any, snapshot_failures: Any
) -> None:
    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=3)
    opened(store, "acc-1", 5)
    (key,) = spy.snapshots
    good = spy.snapshots[key]
    if damage == "garbage":  # bytes changed under the checksum
        bad = replace(good, state=b"\x00" + good.state[1:])
    elif damage == "undecodable":  # intact row, state of another shape
        bad = replace(good, state=b"\x92\x01\x02")
        bad = replace(bad, checksum=_checksum(bad))
    else:  # a forged version vector
        bad = replace(good, versions=(1,))
    spy.snapshots[key] = bad
    restart(store)
    with caplog.at_level(logging.WARNING, logger="eventcore"):
        execute_sync(store, Deposit(account="acc-1", amount=1))
        restart(store)
        execute_sync(store, Deposit(account="acc-1", amount=1))
    what = "decode" if damage == "undecodable" else "read"
    assert snapshot_failures == [("Deposit", what)]  # once per class
    exact_balance(store, "acc-1", 7)


def test_a_failing_snapshot_store_never_fails_a_command(snapshot_failures: Any) -> None:
    class Gone(MemorySnapshotStore):
        def load(self, key: str) -> Snapshot | None:
            raise OSError("gone")

        def save(self, snapshot: Snapshot) -> None:
            raise OSError("gone")

    store = MemoryStore(snapshots=Gone(), snapshot_every=2)
    opened(store, "acc-1", 4)
    restart(store)
    execute_sync(store, Deposit(account="acc-1", amount=1))
    assert sorted(snapshot_failures) == [
        ("Deposit", "read"),
        ("Deposit", "write"),
        ("OpenAccount", "read"),
    ]
    exact_balance(store, "acc-1", 5)


class OpaqueCount(Command[Opaque, Any]):
    account: StreamId = stream()

    def initial_state(self) -> Opaque:
        return Opaque()

    def apply(self, state: Opaque, event: Any, stream_id: str) -> Opaque:
        return Opaque(state.n + 1)

    def handle(self, state: Opaque) -> list[tuple[str, Any]]:
        from tests.bank_domain import Deposited

        return [(self.account, Deposited(state.n + 1))]


def test_a_state_the_codec_cannot_represent_is_never_snapshotted(snapshot_failures: Any) -> None:
    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=2)
    for _ in range(6):
        execute_sync(store, OpaqueCount(account="o-1"))
    assert spy.saves == [] and snapshot_failures == [("OpaqueCount", "encode")]
    before = len(spy.loads)  # the misses before the class was found out
    restart(store)
    execute_sync(store, OpaqueCount(account="o-1"))
    assert len(spy.loads) == before  # off for the class: not even read
    assert store.stream_version("o-1") == 7


def test_classes_that_never_find_a_snapshot_are_only_probed() -> None:
    spy = Spy()
    store = MemoryStore(snapshots=spy)
    n = PROBE_EVERY * 4
    for i in range(n):
        execute_sync(store, OpenAccount(account=f"acc-{i}", owner="o"))
    assert len(spy.loads) == PROBE_EVERY + 3  # the first ones, then one miss in PROBE_EVERY
    assert all(found is None for found in spy.loads)


def test_snapshots_can_be_off_per_class() -> None:
    class NoSnap(Deposit):
        snapshot_every = 0

    spy = Spy()
    store = MemoryStore(snapshots=spy, snapshot_every=2)
    execute_sync(store, OpenAccount(account="acc-1", owner="o"))
    for _ in range(5):
        execute_sync(store, NoSnap(account="acc-1", amount=1))
    restart(store)
    execute_sync(store, NoSnap(account="acc-1", amount=1))
    assert not any("NoSnap" in s.key for s in spy.saves)
    assert not any("NoSnap" in k for k in spy.keys) and spy.keys  # OpenAccount's only
    assert Account  # (the bank's state type is what the other tests snapshot)
