"""The in-memory store after a purge: positions have holes that readers pass over.

Its positions are dense until a purge erases events; then ``dense_positions`` turns
false, ``count_events`` counts what is stored, and a subscription (event pages and column
pages) whose head points into the purged range reads on and ends without waiting.
"""

from __future__ import annotations

import asyncio

import pytest

from eventcore import MemoryStore, NewEvent, default_registry
from eventcore.projection import Subscription

from ..bank_domain import AccountOpened, Deposited

encode = default_registry.encode


def filled() -> MemoryStore:
    """acc-1: positions 1, 2; acc-2: 3; acc-1: 4, 5 (the last two, the head, get purged)."""
    store = MemoryStore()
    store.append([NewEvent("acc-1", *encode(AccountOpened("ann")))])
    store.append([NewEvent("acc-1", *encode(Deposited(1)))])
    store.append([NewEvent("acc-2", *encode(AccountOpened("bob")))])
    store.append(
        [NewEvent("acc-1", *encode(Deposited(2))), NewEvent("acc-1", *encode(Deposited(3)))]
    )
    return store


async def test_positions_stay_dense_until_a_purge() -> None:
    store = filled()
    assert store.aio.dense_positions
    store.delete_stream("acc-1")
    assert store.aio.dense_positions  # hidden, not erased
    assert await store.aio.count_events(0, 5) == 5
    store.purge_stream("acc-1", actor="t", reason="t")
    assert not store.aio.dense_positions
    assert await store.aio.count_events(0, 5) == 1
    assert await store.aio.count_events(3, 5) == 0
    assert store.head() == 5  # positions are never reused


@pytest.mark.parametrize("columns", [False, True])
async def test_a_subscription_reads_past_a_purged_head(columns: bool) -> None:
    if columns:
        pytest.importorskip("numpy")
    store = filled()
    store.delete_stream("acc-1")
    store.purge_stream("acc-1", actor="t", reason="t")
    sub = Subscription(store, page_size=1, live=False, columns=columns)

    async def drain() -> list[object]:
        pages = [page async for page in sub]
        return pages

    pages = await asyncio.wait_for(drain(), timeout=10)
    assert sub.position == 5
    if columns:
        assert sum(len(p) for p in pages) == 1
    else:
        assert [e.position for p in pages for e in p.events] == [3]
