"""Tags, query reads and conditional appends: the contract every store keeps (issue 19)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventcore import (
    ConcurrencyConflict,
    ConditionFailed,
    DuplicateEventId,
    InvalidTag,
    NewEvent,
)
from eventcore.query import AppendCondition, Query, QueryItem


def ev(stream: str, event_type: str, *tags: str, event_id: Any = None) -> NewEvent:
    return NewEvent(stream, event_type, b"{}", event_id, tags)


def positions(events: list[Any]) -> list[int]:
    return [e.position for e in events]


async def test_tags_are_kept_trimmed_sorted_once_and_returned_on_every_read(store: Any) -> None:
    result = await store.append(
        [ev("s-1", "A", " b ", "a", "b"), ev("s-1", "B"), ev("s-2", "A", "c")]
    )
    first = result.positions[0]
    assert [e.tags for e in await store.read_stream("s-1")] == [("a", "b"), ()]
    assert [e.tags for e in await store.read_all()] == [("a", "b"), (), ("c",)]
    assert [e.tags for e in await store.read_streams(["s-2", "s-1"])] == [("a", "b"), (), ("c",)]
    [by_id] = await store.read_events_by_id([result.events[2].event_id])
    assert by_id.tags == ("c",)
    found = await store.read_query(Query.of(tags=["b"]))
    assert positions(found.events) == [first]
    assert found.events[0].tags == ("a", "b")


@pytest.mark.parametrize("tag", ["", "   ", "a\x00b", "x" * 256])
async def test_a_bad_tag_is_refused_and_nothing_is_written(store: Any, tag: str) -> None:
    with pytest.raises(InvalidTag) as caught:
        await store.append([ev("s-1", "A", "ok"), ev("s-1", "A", tag)])
    assert caught.value.field == "tag"
    assert await store.head() == 0
    with pytest.raises(InvalidTag):
        await store.read_query(Query.of(tags=[tag]))


async def test_tags_given_as_one_str_are_a_type_error(store: Any) -> None:
    with pytest.raises(TypeError):
        await store.append([NewEvent("s-1", "A", b"{}", None, "abc")])  # type: ignore[arg-type]
    assert await store.head() == 0


async def test_a_query_item_matches_one_of_its_types_and_all_of_its_tags(store: Any) -> None:
    written = await store.append(
        [
            ev("c-1", "Enrolled", "course:c1", "student:s1"),  # 1
            ev("c-1", "Left", "course:c1", "student:s1"),  # 2
            ev("c-2", "Enrolled", "course:c2", "student:s1"),  # 3
            ev("c-1", "Enrolled", "course:c1", "student:s2"),  # 4
            ev("x-1", "Other"),  # 5
        ]
    )

    # Events by their number in the batch (positions need not be dense).
    at = [0, *written.positions]

    async def read(query: Query, after: int = 0, limit: int | None = None) -> tuple[list[int], int]:
        found = await store.read_query(query, after=at[after], limit=limit)
        return [at.index(p) for p in positions(found.events)], at.index(found.position)

    assert await read(Query.of(tags=["course:c1"])) == ([1, 2, 4], 5)
    assert await read(Query.of(["Enrolled"], ["course:c1"])) == ([1, 4], 5)
    assert await read(Query.of(["Enrolled", "Left"], ["student:s1"])) == ([1, 2, 3], 5)
    assert await read(Query.of(tags=["course:c1", "student:s2"])) == ([4], 5)
    assert await read(Query.of(["Other"])) == ([5], 5)
    assert await read(Query.of(["Nope"])) == ([], 5)
    assert await read(Query.of(tags=["nope"])) == ([], 5)
    assert await read(Query()) == ([], 5)
    assert await read(Query(QueryItem())) == ([1, 2, 3, 4, 5], 5)
    union = Query.of(tags=["course:c2"]) | Query.of(["Left"])
    assert await read(union) == ([2, 3], 5)
    assert await read(Query.of(tags=["course:c1"]), after=1) == ([2, 4], 5)
    # A limit that cuts the read short: consistent only up to the last event returned.
    assert await read(Query.of(tags=["course:c1"]), limit=2) == ([1, 2], 2)
    assert await read(Query.of(tags=["course:c1"]), limit=3) == ([1, 2, 4], 4)
    assert await read(Query.of(tags=["course:c1"]), limit=0) == ([], 5)


async def test_a_condition_fails_when_a_match_lies_after_its_position(store: Any) -> None:
    course = Query.of(tags=["course:c1"])
    read = await store.read_query(course)
    assert read.position == 0
    first = await store.append(
        [ev("c-1", "Enrolled", "course:c1")], condition=AppendCondition(course, 0)
    )
    p1 = first.positions[0]
    with pytest.raises(ConditionFailed) as caught:
        await store.append(
            [ev("c-1", "Enrolled", "course:c1")], condition=AppendCondition(course, read.position)
        )
    assert caught.value.after == 0
    assert caught.value.position == p1
    assert await store.stream_version("c-1") == 1
    # An event that does not match the query does not fail it.
    other = await store.append(
        [ev("c-2", "Enrolled", "course:c2")], condition=AppendCondition(course, p1)
    )
    again = await store.read_query(course)
    assert (positions(again.events), again.position) == ([p1], other.positions[0])
    await store.append(
        [ev("c-1", "Enrolled", "course:c1")], condition=AppendCondition(course, again.position)
    )
    assert await store.stream_version("c-1") == 2


async def test_a_condition_combines_with_expected_versions(store: Any) -> None:
    course = Query.of(tags=["course:c1"])
    p1 = (await store.append([ev("c-1", "Enrolled", "course:c1")])).positions[0]
    with pytest.raises(ConcurrencyConflict):
        await store.append(
            [ev("c-1", "Enrolled", "course:c1")],
            expected={"c-1": 0},
            condition=AppendCondition(course, p1),
        )
    with pytest.raises(ConditionFailed):
        await store.append(
            [ev("c-1", "Enrolled", "course:c1")],
            expected={"c-1": 1},
            condition=AppendCondition(course, 0),
        )
    assert await store.stream_version("c-1") == 1
    result = await store.append(
        [ev("c-1", "Enrolled", "course:c1")],
        expected={"c-1": 1},
        condition=AppendCondition(course, p1),
    )
    assert result.stream_versions == {"c-1": 2}


async def test_a_conditional_append_is_idempotent_by_event_id(store: Any) -> None:
    course = Query.of(tags=["course:c1"])
    event = ev("c-1", "Enrolled", "course:c1", event_id=uuid.uuid4())
    first = await store.append([event], condition=AppendCondition(course, 0))
    # The retry of an append whose reply was lost: its own event now matches the query,
    # and the replay answers with the original result instead of failing.
    again = await store.append([event], condition=AppendCondition(course, 0))
    assert list(again.positions) == list(first.positions)
    assert await store.stream_version("c-1") == 1
    with pytest.raises(DuplicateEventId):
        await store.append([event._replace(tags=("course:c2",))])
    assert await store.stream_version("c-1") == 1


_TAGS = st.sampled_from(["a", "b", "c", "d"])
_TYPES = st.sampled_from(["X", "Y", "Z"])
_ITEMS = st.builds(
    QueryItem,
    st.lists(_TYPES, max_size=2).map(tuple),
    st.lists(_TAGS, max_size=2).map(tuple),
)
_EVENTS = st.lists(st.tuples(_TYPES, st.frozensets(_TAGS, max_size=3)), max_size=25)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(
        st.tuples(_EVENTS, st.lists(_ITEMS, max_size=3), st.integers(0, 30)), max_size=4
    ),
    probe=st.lists(_ITEMS, max_size=3),
    after=st.integers(0, 60),
    limit=st.none() | st.integers(0, 10),
)
async def test_queries_and_conditions_agree_with_a_reference_model(
    store: Any,
    batches: list[tuple[list[tuple[str, frozenset[str]]], list[QueryItem], int]],
    probe: list[QueryItem],
    after: int,
    limit: int | None,
) -> None:
    """Random tagged appends under random conditions, then a random query read; the store
    agrees with a list of ``(position, type, tags)`` filtered in plain Python. Positions a
    condition or the read starts after are picked among those written so far."""
    stream = f"m-{uuid.uuid4()}"
    base = await store.head()
    model: list[tuple[int, str, frozenset[str]]] = []  # what this example wrote, in order

    def position(k: int) -> int:
        """The position after the k-th event written so far (``base`` for 0)."""
        return base if k == 0 or not model else model[min(k, len(model)) - 1][0]

    def matches(items: list[QueryItem], after: int) -> list[int]:
        query = Query(*items)
        return [p for p, t, tags in model if p > after and query.matches(t, tags)]

    for events, items, k in batches:
        cond_after = position(k)
        fail = bool(matches(items, cond_after))  # checked for an empty batch too
        batch = [ev(stream, t, *sorted(tags)) for t, tags in events]
        try:
            result = await store.append(batch, condition=AppendCondition(Query(*items), cond_after))
        except ConditionFailed as exc:
            assert fail, exc
            assert exc.position == matches(items, cond_after)[0]
            continue
        assert not fail
        model += [(p, t, tags) for p, (t, tags) in zip(result.positions, events, strict=True)]
    found = await store.read_query(Query(*probe), after=position(after), limit=limit)
    expected = matches(probe, position(after))
    if limit is not None:
        expected = expected[:limit]
    assert positions(found.events) == expected
    by_position = {p: (t, tuple(sorted(tags))) for p, t, tags in model}
    for e in found.events:
        assert (e.event_type, e.tags) == by_position[e.position]
    cut = limit is not None and limit > 0 and len(expected) == limit
    assert found.position == (expected[-1] if cut else await store.head())
