"""16 concurrent workers run random transfers between 50 accounts through the executor."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from tests.postgres.pg_bank import BANK, Transfer, balance_of, open_accounts

from eventcore import BusinessRuleViolation, ConcurrencyConflict, RetryPolicy, execute

pytestmark = pytest.mark.postgres

WORKERS = 16
ACCOUNTS = 50
OPENING = 1_000
SECONDS = 3.0


async def test_random_transfers_conserve_money(postgres_store_factory):
    store = await postgres_store_factory(registry=BANK, max_size=WORKERS + 2)
    accounts = [f"account-{i}" for i in range(ACCOUNTS)]
    await open_accounts(store, accounts, OPENING)
    setup_events = len(await store.read_all())
    retry = RetryPolicy(max_attempts=8, initial_delay=0.001, max_delay=0.02)
    written: list = []  # ids of events the executor reported as written
    stats = {"ok": 0, "retried": 0, "rejected": 0, "conflict_reported": 0}
    deadline = time.monotonic() + SECONDS

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            source, target = rng.sample(accounts, 2)
            command = Transfer(source=source, target=target, amount=rng.randint(1, 300))
            try:
                result = await execute(store, command, retry=retry)
            except BusinessRuleViolation:
                stats["rejected"] += 1
                continue
            except ConcurrencyConflict as exc:
                assert exc.attempts == retry.max_attempts
                stats["conflict_reported"] += 1
                continue
            stats["ok"] += 1
            stats["retried"] += result.attempts > 1
            written.extend(e.event_id for e in result.events)

    await asyncio.gather(*(worker(seed) for seed in range(WORKERS)))
    assert stats["ok"] > 100, stats  # it really ran concurrently for a while
    assert stats["retried"] > 0, stats  # and conflicts happened and were retried

    # Money conserved.
    balances = [await balance_of(store, a) for a in accounts]
    assert sum(balances) == ACCOUNTS * OPENING
    assert min(balances) >= 0
    # No lost or duplicated event: exactly what the executor reported, once each.
    log = [e async for e in store.iter_all(page_size=500)]
    ids = [e.event_id for e in log[setup_events:]]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(written)
    positions = [e.position for e in log]
    assert positions == sorted(set(positions))
    # Contiguous stream versions, matching the streams table.
    for account in accounts:
        versions = [e.version for e in await store.read_stream(account)]
        assert versions == list(range(1, len(versions) + 1))
        assert await store.stream_version(account) == len(versions)
    print(f"\ntransfers: {stats}, {stats['ok'] / SECONDS:.0f} commands/s")
