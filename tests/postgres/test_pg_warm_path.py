"""The warm path on PostgreSQL: a cached state appends without reading (one round trip),
and a conflict's returned tail is folded without a read (migration 0005)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest
from tests.postgres.pg_bank import BANK, Deposit, Transfer, balance_of, open_accounts

from eventcore import ConcurrencyConflict, NewEvent, RetryPolicy, execute
from eventcore.errors import BusinessRuleViolation
from eventcore.examples.bank import Withdrawn
from eventcore.state_cache import StateCache

pytestmark = pytest.mark.postgres


class Calls:
    """Counts the store's reads and appends (round trips of a command)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.appends = 0
        fetch, append = store._fetch, store.append

        async def counted_fetch(*args: Any) -> Any:
            self.reads += 1
            return await fetch(*args)

        async def counted_append(*args: Any, **kw: Any) -> Any:
            self.appends += 1
            return await append(*args, **kw)

        monkeypatch.setattr(store, "_fetch", counted_fetch)
        monkeypatch.setattr(store, "append", counted_append)

    def take(self) -> tuple[int, int]:
        got = (self.reads, self.appends)
        self.reads = self.appends = 0
        return got


async def test_a_warm_command_is_one_append_and_no_read(
    postgres_store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep even short streams warm (verify mode would read: round trips are counted).
    store = await postgres_store_factory(registry=BANK, state_cache=StateCache(min_events=0))
    await open_accounts(store, ["a"], 100)
    calls = Calls(store, monkeypatch)
    await execute(store, Deposit(account="a", amount=1))
    # cold: the snapshot read (none yet), the fold read, then the append
    assert calls.take() == (2, 1)
    for _ in range(3):
        await execute(store, Deposit(account="a", amount=1))
        assert calls.take() == (0, 1)  # warm: the append alone
    assert await balance_of(store, "a") == 104


async def test_a_conflict_folds_the_returned_tail_without_reading(
    postgres_store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep even short streams warm (verify mode would read: round trips are counted).
    store = await postgres_store_factory(registry=BANK, state_cache=StateCache(min_events=0))
    await open_accounts(store, ["a", "b"], 100)
    await execute(store, Transfer(source="a", target="b", amount=10))
    # Another writer (not through this cache) moves both streams.
    await store.append([NewEvent("a", *BANK.encode(Withdrawn(5)))])
    await store.append([NewEvent("b", *BANK.encode(Withdrawn(5)))])
    calls = Calls(store, monkeypatch)
    # Decided on the cached state, conflicts; the returned tail is folded, decided again.
    await execute(store, Transfer(source="a", target="b", amount=10))
    assert calls.take() == (0, 2)
    await store.append([NewEvent("a", *BANK.encode(Withdrawn(70)))])
    calls.take()
    # The cached state says a has 75: the transfer conflicts, the tail (a: -70) is folded
    # from the conflict, a has 5 left: refused without a read.
    with pytest.raises(BusinessRuleViolation, match="insufficient"):
        await execute(store, Transfer(source="a", target="b", amount=10))
    assert calls.take() == (0, 1)
    # A refusal leaves nothing cached: the next command reads (its snapshot, none, then
    # its streams).
    await execute(store, Transfer(source="a", target="b", amount=5))
    assert calls.take() == (2, 1)
    assert (await balance_of(store, "a"), await balance_of(store, "b")) == (0, 120)


async def test_a_tail_over_the_bound_is_read(
    postgres_store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep even short streams warm (verify mode would read: round trips are counted).
    store = await postgres_store_factory(registry=BANK, state_cache=StateCache(min_events=0))
    await open_accounts(store, ["a"], 0)
    await execute(store, Deposit(account="a", amount=1))
    deposit = NewEvent("a", *BANK.encode(Withdrawn(0)))
    await store.append([NewEvent("a", deposit.event_type, deposit.payload) for _ in range(300)])
    calls = Calls(store, monkeypatch)
    await execute(store, Deposit(account="a", amount=1))
    assert calls.take() == (1, 2)  # the conflict carried no tail: one read, then the append
    assert await balance_of(store, "a") == 2


async def test_warm_storm_conserves_money_and_matches_full_folds(
    postgres_store_factory: Any,
) -> None:
    """Two stores (two processes' caches) on one schema: transfers race (many refused);
    every hint-folded state is checked against a full fold (verify mode); money is
    conserved and no account goes below zero."""
    first = await postgres_store_factory(
        registry=BANK, state_cache=StateCache(min_events=0, verify=True)
    )
    second = await postgres_store_factory(
        registry=BANK, schema=first.schema, state_cache=StateCache(min_events=0, verify=True)
    )
    names = [f"acc-{i}" for i in range(4)]
    await open_accounts(first, names, 50)
    rng = random.Random(11)

    async def client(store: Any, seed: int) -> None:
        r = random.Random(seed)
        for _ in range(25):
            a, b = r.sample(names, 2)
            # Refused, or out of retries under this much contention: both write nothing.
            with contextlib.suppress(BusinessRuleViolation, ConcurrencyConflict):
                await execute(store, Transfer(source=a, target=b, amount=r.randint(1, 30)))

    hinted = 0
    for store in (first, second):
        read_tail = store.read_tail

        async def counted(*args: Any, _read: Any = read_tail) -> Any:
            nonlocal hinted
            hinted += args[-1] is not None
            return await _read(*args)

        store.read_tail = counted
    await asyncio.gather(
        *(client(store, rng.randrange(1 << 30)) for store in (first, second) for _ in range(3))
    )
    assert hinted >= 5, hinted  # conflicts were answered with their tails
    transfers = (len(await first.read_all()) - 2 * len(names)) // 2  # two events each
    assert transfers >= 20, transfers  # of 150 tried
    balances = [await balance_of(first, n) for n in names]
    assert sum(balances) == 200
    assert min(balances) >= 0


async def test_a_stale_cached_state_costs_no_attempt(postgres_store_factory: Any) -> None:
    """With no retries allowed, a command whose cached state went stale still succeeds, as
    a cold command would: its unread conflict stands in for the read."""
    store = await postgres_store_factory(registry=BANK, state_cache=StateCache(min_events=0))
    await open_accounts(store, ["a"], 100)
    once = RetryPolicy(max_attempts=1)
    await execute(store, Deposit(account="a", amount=1), retry=once)
    await store.append([NewEvent("a", *BANK.encode(Withdrawn(1)))])  # not through the cache
    result = await execute(store, Deposit(account="a", amount=2), retry=once)
    assert result.attempts == 1
    assert await balance_of(store, "a") == 102
