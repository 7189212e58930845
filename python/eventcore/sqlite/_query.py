"""SQL for query reads and append conditions on SQLite (see :mod:`eventcore.query`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["matching_positions", "tags_of"]

_json = msgspec.json.encode


def matching_positions(
    items: Sequence[tuple[Sequence[str], Sequence[str]]], after: int
) -> tuple[str, list[Any]] | None:
    """A SELECT of the positions after ``after`` that match the query ``items`` (checked
    ``(types, tags)`` pairs), and its arguments; None when the query matches nothing.

    An item with tags walks its first tag's index and checks the others by key; an item
    with only types walks the type index (migration 0004: each append's span of a type)
    and reads the events of that type in the spans that end after ``after``.
    """
    parts: list[str] = []
    args: list[Any] = []
    for types, tags in items:
        if tags:
            sql = "SELECT t0.position FROM event_tags t0 WHERE t0.tag = ? AND t0.position > ?"
            args += [tags[0], after]
            for tag in tags[1:]:
                sql += (
                    " AND EXISTS (SELECT 1 FROM event_tags tn"
                    " WHERE tn.position = t0.position AND tn.tag = ?)"
                )
                args.append(tag)
            if types:
                sql += (
                    " AND (SELECT e.event_type FROM events e WHERE e.position = t0.position)"
                    " IN (SELECT value FROM json_each(?))"
                )
                args.append(_json(list(types)).decode())
        elif types:
            # CROSS JOIN: the runs drive (found by the index), each span read by rowid.
            sql = (
                "SELECT e.position FROM event_type_runs r CROSS JOIN events e"
                " WHERE r.event_type IN (SELECT value FROM json_each(?))"
                " AND r.last_position > ? AND e.position BETWEEN r.first_position"
                " AND r.last_position AND e.position > ? AND e.event_type = r.event_type"
            )
            args += [_json(list(types)).decode(), after, after]
        else:
            sql = "SELECT position FROM events WHERE position > ?"
            args.append(after)
        parts.append(sql)
    if not parts:
        return None
    return " UNION ".join(parts), args


def tags_of(positions: Sequence[int]) -> tuple[str, list[Any]]:
    """A SELECT of ``(position, tag)`` for the events at ``positions``, sorted."""
    return (
        "SELECT position, tag FROM event_tags"
        " WHERE position IN (SELECT value FROM json_each(?)) ORDER BY position, tag",
        [_json(list(positions)).decode()],
    )
