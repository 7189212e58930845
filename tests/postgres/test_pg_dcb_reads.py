"""PostgreSQL reads return tags from the statement that reads the events (migration 0011).

A read used to fetch its events, then their tags with a second query, always on the
primary (also for a read routed to a replica). Now every read of whole events is one
statement: these tests take the primary-only helper away and still get the tags.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import NewEvent
from eventcore.query import Query

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
