"""With snapshots on, random command sequences with restarts give what a plain store gives.

The state cache's property (tests/test_state_cache.py) with durable snapshots written every
two events and "restarts" (the cache emptied) between commands, so later commands start
from a snapshot plus its tail: every outcome and the log must equal a run on a store with
neither cache nor snapshots. The cache runs in verify mode, so every state taken from a
snapshot is also checked against a full fold, and a difference fails at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventcore import MemoryStore
from eventcore.snapshot import MemorySnapshotStore, Snapshot
from eventcore.state_cache import StateCache
from eventcore.testing import FaultyStore

from .bank_domain import Deposit, Deposited, OpenAccount, PlaceOrder, Transfer, Withdraw
from .cache_domain import (
    AsyncFaulty,
    Scaled,
    append_faults,
    log_of,
    outside_st,
    run_ops,
    run_ops_async,
)

# The cache test's operations on fewer keys (two accounts), so that keys repeat across
# restarts and commands start from snapshots often.
two = st.sampled_from(["acc-0", "acc-1"])
amounts = st.integers(1, 40)
command_st = st.one_of(
    st.builds(lambda a: OpenAccount(account=a, owner="o"), two),
    st.builds(lambda a, n: Deposit(account=a, amount=n), two, amounts),
    st.builds(lambda a, n: Withdraw(account=a, amount=n), two, amounts),
    st.builds(lambda a, b, n: Transfer(source=a, target=b, amount=n), two, two, amounts),
    st.builds(lambda a, f: Scaled(account=a, factor=f), two, st.integers(1, 2)),
    st.builds(lambda o: PlaceOrder(order=o), st.just("order-0")),
)
op_st = st.one_of(
    st.tuples(st.just("command"), command_st, append_faults),
    st.tuples(st.just("command"), command_st, st.just([])),
    st.tuples(st.just("outside"), outside_st, st.just([])),
)
OPENED: list[Any] = [  # every example starts with both accounts open and funded
    ("command", OpenAccount(account="acc-0", owner="o"), []),
    ("command", OpenAccount(account="acc-1", owner="o"), []),
    ("outside", ("acc-0", Deposited(50)), []),
    ("outside", ("acc-1", Deposited(50)), []),
]
ops_st = st.lists(op_st, min_size=5, max_size=36).map(lambda ops: OPENED + ops)
restarts_st = st.lists(st.integers(0, 9).map(lambda n: n < 3), min_size=40, max_size=40)


class Counting(MemorySnapshotStore):
    """Counts the snapshots it handed out."""

    found = 0

    def load(self, key: str) -> Snapshot | None:
        snap = super().load(key)
        self.found += snap is not None
        return snap


def snapped(snapshots: MemorySnapshotStore) -> MemoryStore:
    cache = StateCache(min_events=0, verify=True)
    return MemoryStore(state_cache=cache, snapshots=snapshots, snapshot_every=1)


@settings(max_examples=150, deadline=None)
@given(ops=ops_st, restarts=restarts_st)
def test_random_commands_with_snapshots_and_restarts_match_a_plain_store(
    ops: list[Any], restarts: list[bool]
) -> None:
    with_snapshots = FaultyStore(snapped(MemorySnapshotStore()))
    plain = FaultyStore(MemoryStore(state_cache=0))
    assert run_ops(with_snapshots, ops, restarts) == run_ops(plain, ops, restarts)
    assert log_of(with_snapshots.store.read_all()) == log_of(plain.store.read_all())


def test_the_property_run_does_start_from_snapshots() -> None:
    # Guard against a vacuous property: the same kind of run reads snapshots.
    snapshots = Counting()
    faulty = FaultyStore(snapped(snapshots))
    ops: list[Any] = [("command", OpenAccount(account="acc-0", owner="o"), [])]
    ops += [("command", OpenAccount(account="acc-1", owner="o"), [])]
    ops += [("command", Deposit(account="acc-0", amount=5), [None])] * 4
    ops += [("command", Transfer(source="acc-0", target="acc-1", amount=1), [])] * 4
    run_ops(faulty, ops, [True] * len(ops))
    kinds = sorted(k.split(":")[0].rsplit(".", 1)[-1] for k in snapshots.snapshots)
    assert kinds == ["Deposit", "Transfer"]  # (an OpenAccount folds nothing: none)
    assert snapshots.found >= 4


@settings(max_examples=60, deadline=None)
@given(ops=ops_st, restarts=restarts_st)
def test_the_same_through_the_async_executor(ops: list[Any], restarts: list[bool]) -> None:
    async def both() -> None:
        a = AsyncFaulty(snapped(MemorySnapshotStore()).aio)
        b = AsyncFaulty(MemoryStore(state_cache=0).aio)
        assert await run_ops_async(a, ops, "", restarts) == await run_ops_async(
            b, ops, "", restarts
        )
        assert log_of(await a.store.read_all()) == log_of(await b.store.read_all())

    asyncio.run(both())
