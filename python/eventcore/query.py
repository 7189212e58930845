"""Queries over event types and tags: dynamic consistency boundaries.

A :class:`Query` is a list of :class:`QueryItem`; an item matches an event that has one of
its types (any type when it lists none) and carries all of its tags, and a query matches
what any of its items matches (a query without items matches nothing). Stores read by
query (``read_query``) and append under an :class:`AppendCondition`: fail with
:class:`~eventcore.errors.ConditionFailed`, writing nothing, when an event matching the
condition's query lies after its position.

Tags are short strings (``"course:c1"``) given per event (:class:`~eventcore.NewEvent`'s
``tags``); they follow the stream-id rules (trimmed, then 1 to 255 characters without
control characters) and come back on reads as :attr:`RecordedEvent.tags
<eventcore.RecordedEvent.tags>`, sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from eventcore._core import validate_event_type, validate_stream_id
from eventcore.errors import InvalidStreamId, InvalidTag, LimitExceeded
from eventcore.recorded import RecordedEvent

__all__ = [
    "AppendCondition",
    "Query",
    "QueryItem",
    "QueryResult",
    "check_tags",
]

MAX_TAGS = 64
"""The most tags one event may carry (the same cap in every store)."""


def _strs(value: Iterable[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{what} must be a sequence of str, not a str")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must contain only str, got {type(item).__name__}")
    return items


def check_tags(tags: Iterable[str] | str) -> tuple[str, ...]:
    """``tags`` validated and trimmed like stream ids, sorted, each once.

    Raises:
        InvalidTag: a tag breaks the rules.
        LimitExceeded: more than 64 tags.
        TypeError: ``tags`` is a str or holds something else than str.
    """
    items = _strs(tags, "tags")
    if len(items) == 1:  # the common case: nothing to deduplicate or sort
        try:
            return (validate_stream_id(items[0]),)
        except InvalidStreamId as exc:
            raise InvalidTag(items[0], exc.reason) from None
    if len(items) > MAX_TAGS:
        raise LimitExceeded("tags", f"an event carries at most {MAX_TAGS} tags", len(items))
    out = set()
    for tag in items:
        try:
            out.add(validate_stream_id(tag))
        except InvalidStreamId as exc:
            raise InvalidTag(tag, exc.reason) from None
    return tuple(sorted(out))


class QueryItem(NamedTuple):
    """Matches an event that has one of ``types`` (any type when empty) and all ``tags``."""

    types: tuple[str, ...] = ()
    """Event type names; the event must have one of them (empty: any type)."""
    tags: tuple[str, ...] = ()
    """Tags the event must all carry (empty: no tag required)."""

    @classmethod
    def of(cls, types: Iterable[str] = (), tags: Iterable[str] = ()) -> QueryItem:
        """An item with its types and tags checked (tags trimmed and sorted).

        Raises:
            InvalidEventType: a type name breaks the rules.
            InvalidTag: a tag breaks the rules.
        """
        names = _strs(types, "types")
        for name in names:
            validate_event_type(name)
        return cls(tuple(dict.fromkeys(names)), check_tags(tags))


class Query:
    """A list of :class:`QueryItem`: matches what any of them matches.

    ``Query(QueryItem.of(tags=["course:c1"]), QueryItem.of(["Enrolled"], ["student:s7"]))``;
    ``Query.of(types=..., tags=...)`` for one item. A query without items matches nothing.
    """

    __slots__ = ("items",)

    items: tuple[QueryItem, ...]

    def __init__(self, *items: QueryItem) -> None:
        for item in items:
            if not isinstance(item, QueryItem):
                raise TypeError(f"a Query holds QueryItems, not {type(item).__name__}")
        object.__setattr__(
            self, "items", tuple(QueryItem.of(item.types, item.tags) for item in items)
        )

    @classmethod
    def of(cls, types: Iterable[str] = (), tags: Iterable[str] = ()) -> Query:
        """A query of one item."""
        # As cls(QueryItem(tuple(types), tuple(tags))), without checking the item twice.
        query = object.__new__(cls)
        object.__setattr__(query, "items", (QueryItem.of(tuple(types), tuple(tags)),))
        return query

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Query is immutable")

    def __or__(self, other: Query) -> Query:
        """The query matching what either matches."""
        return Query(*self.items, *other.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and self.items == other.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        return f"Query{self.items!r}"

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        """Whether an event of ``event_type`` carrying ``tags`` matches this query."""
        have = set(tags)
        return any(
            (not item.types or event_type in item.types) and have.issuperset(item.tags)
            for item in self.items
        )

    def lock_keys(self) -> list[tuple[str, str]]:
        """What a store locks to check this query race-free: per item its first tag
        (``("tag", tag)``), or each of its types when it has no tag (``("type", name)``);
        an item with neither locks the whole log (``("all", "")``). Sorted, each once."""
        return lock_keys([(item.types, item.tags) for item in self.items])


def lock_keys(items: Iterable[tuple[Sequence[str], Sequence[str]]]) -> list[tuple[str, str]]:
    """:meth:`Query.lock_keys` of a query's ``(types, tags)`` items (see :func:`query_arg`)."""
    keys: set[tuple[str, str]] = set()
    for types, tags in items:
        if tags:
            keys.add(("tag", tags[0]))
        elif types:
            keys.update(("type", t) for t in types)
        else:
            keys.add(("all", ""))
    return sorted(keys)


def query_arg(query: Query | Sequence[QueryItem]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``query`` as the stores take it: ``(types, tags)`` pairs, checked."""
    if not isinstance(query, Query):  # a QueryItem is a tuple too: not its items
        query = Query(query) if isinstance(query, QueryItem) else Query(*query)
    return [(item.types, item.tags) for item in query.items]


class AppendCondition(NamedTuple):
    """Fail the append when an event matching ``query`` lies after position ``after``."""

    query: Query
    """The events that must not have been appended since ``after``."""
    after: int = 0
    """The position the decision was made at (what :meth:`read_query` returned)."""


class QueryResult(NamedTuple):
    """What a query read returns: the matching events and the position it is consistent
    with (every matching event up to it is in ``events``; use it as an
    :class:`AppendCondition`'s ``after``)."""

    events: list[RecordedEvent[Any]]
    """The matching events after the read's ``after``, in position order."""
    position: int
    """The position the read is consistent with."""
