"""The query read of one item with tags as one statement (``Queries.read_query_direct``).

A store reads such a query (a DCB decision's) with one statement instead of the
``read_query`` function; both must give the same events and the same position, also while
an append is in flight (then the statement hands over to the function in itself).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventcore import NewEvent
from eventcore.postgres import PostgresStore
from eventcore.postgres._sql import query_arrays
from eventcore.query import Query, QueryItem, query_arg

pytestmark = pytest.mark.postgres


def ev(stream: str, event_type: str, *tags: str) -> NewEvent:
    return NewEvent(stream, event_type, b"{}", None, tags)


def spy_reads(store: PostgresStore) -> list[str]:
    """Which statement each read_query of ``store`` sends: "direct" or "function"."""
    sent: list[str] = []
    fetch = store._fetch
    direct = set(store._q.read_query_direct.values())

    async def spying(query: str, *args: Any) -> list[Any]:
        if query in direct:
            sent.append("direct")
        elif query == store._q.read_query:
            sent.append("function")
        return await fetch(query, *args)

    store._fetch = spying  # type: ignore[method-assign]
    return sent


async def fill(store: PostgresStore) -> None:
    await store.append(
        [
            ev("c", "Enrolled", "course:c1", "student:s1"),
            ev("c", "Dropped", "course:c1", "student:s1"),
            ev("c", "Enrolled", "course:c1", "student:s2", "term:t1"),
            ev("d", "Enrolled", "course:c2", "student:s1", "term:t1"),
        ]
    )
    await store.append([ev("u", "Registered", "username:ann")])
    await store.append([ev("e", "Noted")])
    await store.append([ev("c", "Enrolled", "course:c1", "student:s1", "term:t1", "x")])


QUERIES = [
    Query.of(["Enrolled"], ["course:c1"]),
    Query.of(tags=["course:c1"]),
    Query.of(["Enrolled", "Dropped"], ["course:c1", "student:s1"]),
    Query.of(tags=["course:c1", "student:s1", "term:t1"]),
    Query.of(["Enrolled"], ["course:c1", "student:s1", "term:t1", "x"]),
    Query.of(["Registered"], ["username:bob"]),
    Query.of(["Missing"], ["course:c1"]),
    # Not a one-item tagged query: the function on both sides.
    Query.of(["Enrolled"]),
    Query.of(["Enrolled"], ["course:c1"]) | Query.of(tags=["username:ann"]),
    Query(QueryItem.of()),
    Query.of(tags=["course:c1", "student:s1", "term:t1", "x", "y"]),
]


async def answers(store: PostgresStore, query: Query) -> list[Any]:
    out = []
    for after in (0, 1):
        first = await store.read_query(query, after=after)
        pos = first.events[0].position if first.events else first.position
        for a, limit in ((after, None), (after, 1), (after, 2), (after, 0), (pos, None)):
            found = await store.read_query(query, after=a, limit=limit)
            out.append(
                (
                    found.position,
                    [(e.position, e.event_id, e.stream_id, e.version, e.event_type, e.tags)
                     for e in found.events],
                )
            )  # fmt: skip
    return out


async def test_the_statement_reads_what_the_function_reads(postgres_store: Any) -> None:
    store = postgres_store
    await fill(store)
    sent = spy_reads(store)
    for query in QUERIES:
        store._read_direct = True
        got = await answers(store, query)
        store._read_direct = False
        want = await answers(store, query)
        assert got == want, query
    assert "direct" in sent and "function" in sent
    # Each one-item tagged query of at most four tags took the statement.
    store._read_direct = True
    sent.clear()
    for query in QUERIES:
        await store.read_query(query)
    assert sent == ["direct"] * 7 + ["function"] * 4


async def test_while_an_append_is_in_flight_it_reads_what_the_function_reads(
    postgres_store: Any,
) -> None:
    """An append holding its transaction open (its id taken, not committed) and a later
    one committed: the newest event lies above the snapshot's xmin, so the statement hands
    over to read_query, whose head stops below the append in flight (the later event is
    not read yet); once it commits, both are read."""
    store = postgres_store
    s = f'"{store.schema}"'
    q = Query.of(["Enrolled"], ["course:c1"])
    await store.append([ev("a", "Enrolled", "course:c1")])
    pool = await store._get_pool()
    direct = store._q.read_query_direct[1, True]
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.fetch(
            f"SELECT * FROM {s}.append_stream('b', -1, $1::uuid[], ARRAY['Enrolled'],"
            " ARRAY['{}'::bytea], NULL, NULL, NULL, NULL)",
            [uuid.uuid4()],
        )
        await store.append([ev("c", "Enrolled", "course:c1")])
        raw = await store._fetch(direct, *query_arrays(query_arg(q)), 0, None)
        assert raw[0][0] is None  # handed over: read_query's rows follow
        store._read_direct = True
        got = await store.read_query(q)
        store._read_direct = False
        want = await store.read_query(q)
        assert [e.stream_id for e in got.events] == ["a"]
        assert (got.position, got.events) == (want.position, want.events)
        await tx.commit()
    store._read_direct = True
    raw = await store._fetch(direct, *query_arrays(query_arg(q)), 0, None)
    assert raw[0][0] is not None  # nothing in flight: the statement answers itself
    got = await store.read_query(q)
    assert [e.stream_id for e in got.events] == ["a", "c"]
    assert got.position == got.events[-1].position


async def test_a_pgbouncer_store_reads_through_the_function(postgres_dsn: str) -> None:
    """Behind PgBouncer the statement would be planned on every call: the store keeps the
    function (planned once per server session)."""
    store = PostgresStore(postgres_dsn, pgbouncer=True)
    assert store._read_direct is False
    assert PostgresStore(postgres_dsn)._read_direct is True
