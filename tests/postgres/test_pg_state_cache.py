"""The folded-state cache on PostgreSQL: the same results and log with and without it.

The hypothesis property of ``tests/test_state_cache.py`` on two PostgresStores (one with
the cache in verify mode, one without), an asyncio storm of transfers, and the tail
fold's refusal of a late commit that landed below an already folded event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from tests.bank_domain import Account, AccountOpened, Deposited, Transfer, fold_account, new
from tests.cache_domain import (
    ACCOUNTS,
    AsyncFaulty,
    log_of,
    ops_st,
    run_ops_async,
    same_but_fewer_attempts,
)
from tests.folds import fold_tail
from tests.pgserver import drop_schema, new_schema_name

from eventcore import BusinessRuleViolation, RetryPolicy, execute
from eventcore.postgres import PostgresStore
from eventcore.state_cache import StateCache

pytestmark = pytest.mark.postgres


async def _open(dsn: str, cache: Any) -> PostgresStore:
    store = PostgresStore(dsn, schema=new_schema_name(), state_cache=cache)
    await store.open()
    await store.migrate()
    return store


def test_random_commands_agree_with_and_without_the_cache(postgres_dsn: str) -> None:
    loop = asyncio.new_event_loop()
    cached = loop.run_until_complete(_open(postgres_dsn, StateCache(min_events=0, verify=True)))
    plain = loop.run_until_complete(_open(postgres_dsn, 0))
    runs = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(ops=ops_st)
    def check(ops: list[Any]) -> None:
        prefix = f"r{next(runs)}-"  # each example on streams of its own
        a, b = AsyncFaulty(cached), AsyncFaulty(plain)
        seen_a = loop.run_until_complete(run_ops_async(a, ops, prefix))
        seen_b = loop.run_until_complete(run_ops_async(b, ops, prefix))
        same_but_fewer_attempts(seen_a, seen_b)
        log_a = loop.run_until_complete(cached.read_all(stream_prefix=prefix))
        log_b = loop.run_until_complete(plain.read_all(stream_prefix=prefix))
        assert log_of(log_a) == log_of(log_b)

    try:
        check()
        assert cached.state_cache is not None and cached.state_cache.hits > 0
    finally:
        for store in (cached, plain):
            loop.run_until_complete(store.close())
            loop.run_until_complete(drop_schema(postgres_dsn, store.schema))
        loop.close()


async def test_an_asyncio_storm_on_postgres_conserves_money(postgres_store_factory: Any) -> None:
    store = await postgres_store_factory(state_cache=StateCache(min_events=0, verify=True))
    for a in ACCOUNTS:
        await store.append([new(a, AccountOpened(a)), new(a, Deposited(100))])
    policy = RetryPolicy(max_attempts=100, initial_delay=0.001)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            a, b = rng.sample(ACCOUNTS, 2)
            with contextlib.suppress(BusinessRuleViolation):
                await execute(
                    store, Transfer(source=a, target=b, amount=rng.randint(1, 60)), retry=policy
                )

    await asyncio.gather(*(worker(i) for i in range(6)))
    total = 0
    for a in ACCOUNTS:
        state = Account()
        for e in await store.read_stream(a):
            state = fold_account(state, e.data)
        assert state.balance >= 0
        total += state.balance
    assert total == 300
    cache = store.state_cache
    assert cache is not None and cache.hits > 20
    for key, entry in list(cache._entries.items()):  # every kept state is a full fold
        for s, v in zip(entry.streams, entry.versions, strict=True):
            full = Account()
            for e in (await store.read_stream(s))[:v]:
                full = fold_account(full, e.data)
            assert entry.state[s] == full, key


async def test_a_late_commit_below_a_folded_event_means_a_full_fold() -> None:
    store = PostgresStore("postgresql://localhost/unused")  # never connects: reads are faked
    payload = store.registry.encode(Deposited(1))[1]
    name = store.registry.encode(Deposited(1))[0]
    # a: v1 at position 10 (folded); b: v1 at 30 (folded); a: v2 committed late at 20.
    # The last column: the version the stream was last truncated at (0: never).
    rows = [
        ("a", name, payload, 1, 10, 0),
        ("a", name, payload, 2, 20, 0),
        ("b", name, payload, 1, 30, 0),
    ]

    async def fetch(query: str, *args: Any) -> list[Any]:
        return rows

    store._fetch = fetch  # type: ignore[method-assign]
    decoders = store.registry.decoders

    def apply(state: int, event: Any, stream_id: str) -> int:
        return state + event.amount

    assert await fold_tail(store, ["a", "b"], [1, 1], 0, 0, apply, decoders) is None
    # Without the late one, the tail extends the state.
    rows = [
        ("a", name, payload, 1, 10, 0),
        ("b", name, payload, 1, 30, 0),
        ("a", name, payload, 2, 40, 0),
    ]
    assert await fold_tail(store, ["a", "b"], [1, 1], 0, 5, apply, decoders) == (6, [2, 1])
    # A stream of an earlier discovery round that moved: None.
    assert await fold_tail(store, ["a", "b"], [1, 1], 1, 5, apply, decoders) is None
    # A stream whose last truncation took a version after the folded one: None; one
    # folded at or after the truncation's version: fine.
    rows = [("a", name, payload, 1, 10, 2), ("b", name, payload, 1, 30, 0)]
    assert await fold_tail(store, ["a", "b"], [1, 1], 0, 5, apply, decoders) is None
    rows = [("a", name, payload, 2, 10, 1), ("b", name, payload, 1, 30, 0)]
    assert await fold_tail(store, ["a", "b"], [2, 1], 0, 5, apply, decoders) == (5, [2, 1])
