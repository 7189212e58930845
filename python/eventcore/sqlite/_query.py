"""Query reads and append conditions on SQLite (see :mod:`eventcore.query`): the positions
of the events that match a query, found through the tag and type indexes and the segments
(migration 0005)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from eventcore.sqlite import _segments

__all__ = ["TYPE_SPANS", "matching", "tags_of"]

_json = msgspec.json.encode

# The segments in the spans of the types ``?1`` (a JSON array) whose last position lies
# after ``?2`` (migrations 0004, 0005: a type's first and last position in a segment, or
# in 1024 positions before schema 5). A segment that holds events of a span ends inside
# it, or is the one holding its last position.
# CROSS JOIN: the spans drive (found by the index), each span's segments read by rowid.
TYPE_SPANS = (
    "SELECT r.event_type, r.first_position, r.last_position, s.last_position, s.n, s.types"
    " FROM event_type_runs r CROSS JOIN segments s"
    " WHERE r.event_type IN (SELECT value FROM json_each(?1)) AND r.last_position > ?2"
    " AND s.last_position BETWEEN r.first_position AND coalesce((SELECT min(f.last_position)"
    " FROM segments f WHERE f.last_position >= r.last_position), r.last_position)"
)


def _typed(conn: sqlite3.Connection, types: Sequence[str], after: int) -> set[int]:
    """The positions after ``after`` of the events of these types."""
    found: set[int] = set()
    decoded: dict[int, Sequence[str]] = {}
    rows = conn.execute(TYPE_SPANS, (_json(list(types)).decode(), after))
    for etype, first, last, seg_last, n, seg_types in rows:
        seg_first = seg_last - n + 1
        lo, hi = max(first, seg_first, after + 1), min(last, seg_last)
        if lo > hi:
            continue
        if type(seg_types) is str:
            if seg_types == etype:
                found.update(range(lo, hi + 1))
            continue
        each = decoded.get(seg_last)
        if each is None:
            each = decoded[seg_last] = _segments.types_of(seg_types, n)
        found.update(p for p in range(lo, hi + 1) if each[p - seg_first] == etype)
    return found


def _types_at(conn: sqlite3.Connection, positions: Sequence[int]) -> dict[int, str]:
    """The type of the event at each of the sorted ``positions`` (erased ones left out)."""
    wanted = set(positions)
    found: dict[int, str] = {}
    for last, n, types in _segments.segments_covering(conn, positions, "last_position, n, types"):
        first = last - n + 1
        each = _segments.types_of(types, n)
        for p in range(first, last + 1):
            if p in wanted:
                found[p] = each[p - first]
    return found


def matching(
    conn: sqlite3.Connection, items: Sequence[tuple[Sequence[str], Sequence[str]]], after: int
) -> list[int]:
    """The positions after ``after`` of the events that match the query ``items`` (checked
    ``(types, tags)`` pairs), in order; read in the caller's transaction.

    An item with tags walks its first tag's index and checks the others by key (and the
    types in the segments); an item with only types walks the type index (each append's
    span of a type) and the segments of those spans.
    """
    found: set[int] = set()
    for types, tags in items:
        if tags:
            sql = "SELECT t0.position FROM event_tags t0 WHERE t0.tag = ? AND t0.position > ?"
            args: list[Any] = [tags[0], after]
            for tag in tags[1:]:
                sql += (
                    " AND EXISTS (SELECT 1 FROM event_tags tn"
                    " WHERE tn.position = t0.position AND tn.tag = ?)"
                )
                args.append(tag)
            positions = [r[0] for r in conn.execute(sql + " ORDER BY t0.position", args)]
            if types and positions:
                wanted = set(types)
                typed = _types_at(conn, positions)
                positions = [p for p in positions if typed.get(p) in wanted]
            found.update(positions)
        elif types:
            found |= _typed(conn, types, after)
        else:
            for last, n in conn.execute(
                "SELECT last_position, n FROM segments WHERE last_position > ?", (after,)
            ):
                found.update(range(max(last - n + 1, after + 1), last + 1))
    return sorted(found)


def tags_of(positions: Sequence[int]) -> tuple[str, list[Any]]:
    """A SELECT of ``(position, tag)`` for the events at ``positions``, sorted."""
    return (
        "SELECT position, tag FROM event_tags"
        " WHERE position IN (SELECT value FROM json_each(?)) ORDER BY position, tag",
        [_json(list(positions)).decode()],
    )
