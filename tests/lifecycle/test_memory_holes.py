"""The in-memory and SQLite stores after a purge: positions have holes that readers pass
over.

Their positions are dense until a purge erases events; then ``dense_positions`` turns
false, ``count_events`` counts what is stored, a subscription (event pages and column
pages) whose head points into the purged range reads on and ends without waiting, and
no append takes an erased position again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from eventcore import MemoryStore, NewEvent, default_registry
from eventcore.projection import Subscription

from ..bank_domain import AccountOpened, Deposited

encode = default_registry.encode


@pytest.fixture(params=["memory", "sqlite"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An empty synchronous store: MemoryStore or SqliteStore."""
    if request.param == "memory":
        return MemoryStore()
    from eventcore.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "events.db")
    request.addfinalizer(store.close)
    return store


@pytest.fixture
def filled(empty: Any) -> Any:
    """acc-1: positions 1, 2; acc-2: 3; acc-1: 4, 5 (the last two, the head, get purged)."""
    store = empty
    store.append([NewEvent("acc-1", *encode(AccountOpened("ann")))])
    store.append([NewEvent("acc-1", *encode(Deposited(1)))])
    store.append([NewEvent("acc-2", *encode(AccountOpened("bob")))])
    store.append(
        [NewEvent("acc-1", *encode(Deposited(2))), NewEvent("acc-1", *encode(Deposited(3)))]
    )
    return store


async def test_positions_stay_dense_until_a_purge(filled: Any) -> None:
    store = filled
    assert store.aio.dense_positions
    store.delete_stream("acc-1")
    assert store.aio.dense_positions  # hidden, not erased
    assert await store.aio.count_events(0, 5) == 5
    store.purge_stream("acc-1", actor="t", reason="t")
    assert not store.aio.dense_positions
    assert await store.aio.count_events(0, 5) == 1
    assert await store.aio.count_events(3, 5) == 0
    assert store.head() == 5  # positions are never reused
    result = store.append([NewEvent("acc-3", *encode(AccountOpened("cy")))])
    assert list(result.positions) == [6]
    assert await store.aio.count_events(0, 6) == 2
    assert [e.position for e in store.read_all()] == [3, 6]


async def test_sqlite_keeps_the_head_of_a_purged_log_across_a_reopen(tmp_path: Path) -> None:
    from eventcore.sqlite import SqliteStore

    with SqliteStore(tmp_path / "events.db") as store:
        store.append([NewEvent("acc-1", *encode(AccountOpened("ann")))])
        store.delete_stream("acc-1")
        store.purge_stream("acc-1", actor="t", reason="t")
        assert (store.head(), len(store), store.aio.dense_positions) == (1, 0, False)
    with SqliteStore(tmp_path / "events.db") as again:
        appended = again.append([NewEvent("acc-2", *encode(AccountOpened("bob")))])
        assert list(appended.positions) == [2]
        assert again.list_streams() == [("acc-1", 2), ("acc-2", 1)]
        [record] = again.purge_log()
        assert (record.stream_id, record.events, record.first_position) == ("acc-1", 1, 1)


@pytest.mark.parametrize("columns", [False, True])
async def test_a_subscription_reads_past_a_purged_head(filled: Any, columns: bool) -> None:
    if columns:
        pytest.importorskip("numpy")
    store = filled
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
