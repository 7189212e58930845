"""PostgreSQL reads return tags from the statement that reads the events (migration 0011).

A read used to fetch its events, then their tags with a second query, always on the
primary (also for a read routed to a replica). Now every read of whole events is one
statement: these tests take the primary-only helper away and still get the tags.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from eventcore import ConditionFailed, NewEvent
from eventcore.query import AppendCondition, Query

pytestmark = pytest.mark.postgres


def ev(stream: str, event_type: str, *tags: str) -> NewEvent:
    return NewEvent(stream, event_type, b"{}", None, tags)


async def test_every_read_returns_tags_without_a_second_query(
    postgres_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = postgres_store
    result = await store.append([ev("s-1", "A", "b", "a"), ev("s-1", "B"), ev("s-2", "A", "c")])

    async def no_second_query(*args: Any) -> Any:
        raise AssertionError(f"a read ran a second statement: {args[0]}")

    monkeypatch.setattr(store, "_fetch", no_second_query)
    monkeypatch.setattr(store, "_fetchval", no_second_query)
    assert [e.tags for e in await store.read_stream("s-1")] == [("a", "b"), ()]
    assert [e.tags for e in await store.read_stream_backwards("s-1")] == [(), ("a", "b")]
    assert [e.tags for e in await store.read_streams(["s-1", "s-2"])] == [("a", "b"), (), ("c",)]
    assert [e.tags for e in await store.read_all()] == [("a", "b"), (), ("c",)]
    assert [e.tags for e in await store.read_all(event_types=["A"], limit=1)] == [("a", "b")]
    by_id = await store.read_events_by_id([e.event_id for e in result.events])
    assert [e.tags for e in by_id] == [("a", "b"), (), ("c",)]


async def test_a_types_only_query_reads_each_type_in_position_order(postgres_store: Any) -> None:
    store = postgres_store
    result = await store.append(
        [ev("s", "A"), ev("s", "B", "t"), ev("s", "C"), ev("s", "A"), ev("s", "B")]
    )
    p = result.positions
    found = await store.read_query(Query.of(["A", "B"]))
    assert [e.position for e in found.events] == [p[0], p[1], p[3], p[4]]
    assert [e.tags for e in found.events] == [(), ("t",), (), ()]
    found = await store.read_query(Query.of(["B", "A"]), after=p[0], limit=2)
    assert ([e.position for e in found.events], found.position) == ([p[1], p[3]], p[3])
    found = await store.read_query(Query.of(["nope"]))
    assert (found.events, found.position) == ([], p[4])


async def test_a_query_read_below_xmin_is_consistent_and_a_match_above_reads_to_the_head(
    postgres_store: Any, postgres_dsn: str
) -> None:
    """A transaction held open elsewhere holds the snapshot's xmin back: a read with no
    match above it is consistent with the newest event below it (no lock-table scan),
    and a condition at that position passes; a read with a match above it falls back
    to the safe head and returns that match."""
    store = postgres_store
    first = await store.append([ev("s", "A", "k")])
    blocker = await asyncpg.connect(postgres_dsn)
    held = blocker.transaction()
    await held.start()
    try:
        await blocker.fetchval("SELECT pg_current_xact_id()")  # holds xmin back
        later = await store.append([ev("s", "B", "j")])
        found = await store.read_query(Query.of(tags=["k"]))
        assert ([e.position for e in found.events], found.position) == (
            list(first.positions),
            first.positions[0],
        )
        k = Query.of(tags=["k"])
        again = await store.append(
            [ev("t", "A", "k")], condition=AppendCondition(k, found.position)
        )
        with pytest.raises(ConditionFailed):
            await store.append([ev("t", "A", "k")], condition=AppendCondition(k, found.position))
        found = await store.read_query(Query.of(tags=["j"]))
        assert [e.position for e in found.events] == list(later.positions)
        assert found.position == await store.head() == again.positions[0]
    finally:
        await held.rollback()
        await blocker.close()
