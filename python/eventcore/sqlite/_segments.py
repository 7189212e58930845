"""The SQLite store's segments (migration 0005): how events are packed into them, read
back out of them, and found by position or by id.

A segment is one row for a run of consecutive events of one stream within one append
(see ``migrations/0005_segments.sql``): ``(last_position, n, stream_id, last_version,
types, payloads, ids, recorded_at, metadata)``. Its events have consecutive positions and
versions ending at ``last_position`` and ``last_version``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from itertools import repeat
from typing import Any

import msgspec

from eventcore.sqlite import _schema as q

__all__ = [
    "encode",
    "events_at",
    "expand",
    "fold_rows",
    "id_runs",
    "ids_of",
    "may_clash",
    "run_rows",
    "segments_covering",
    "stored_ids",
    "types_of",
]

_pack = msgspec.msgpack.encode
_unpack = msgspec.msgpack.Decoder(list[bytes]).decode
_json = msgspec.json.encode
_unjson = msgspec.json.Decoder(list[str]).decode

Segment = tuple[int, int, str, int, Any, bytes, bytes, int, Any]
"""A segment row: ``(last_position, n, stream_id, last_version, types, payloads, ids,
recorded_at, metadata)``."""


def encode(types: list[str], payloads: list[bytes]) -> tuple[str | bytes, bytes]:
    """A segment's ``types`` (the type when all events have it, else a JSON array) and
    ``payloads`` (the payload of a single event, else a msgpack array)."""
    t0 = types[0]
    if len(payloads) == 1:
        return t0, payloads[0]
    return (t0 if all(t == t0 for t in types) else _json(types)), _pack(payloads)


def types_of(types: str | bytes, n: int) -> Sequence[str]:
    """The type of each event of a segment."""
    return [types] * n if type(types) is str else _unjson(types)


def ids_of(ids: bytes) -> list[bytes]:
    """The ids of a segment's events (16 bytes each)."""
    return [ids[i : i + 16] for i in range(0, len(ids), 16)]


def expand(seg: Segment, skip: int = 0) -> list[tuple[Any, ...]]:
    """The events of a segment but its first ``skip`` as rows ``(position, id, stream,
    version, type, payload, recorded_at, metadata)`` (:data:`eventcore.sqlite._schema.COLS`)."""
    last, n, sid, version, types, payloads, ids, at, meta = seg
    if n == 1:
        return [] if skip > 0 else [(last, ids, sid, version, types, payloads, at, meta)]
    skip = max(skip, 0)
    k = n - skip  # the events returned
    if k <= 0:
        return []
    return list(
        zip(
            range(last - k + 1, last + 1),
            [ids[i : i + 16] for i in range(16 * skip, 16 * n, 16)],
            repeat(sid, k),
            range(version - k + 1, version + 1),
            repeat(types, k) if type(types) is str else _unjson(types)[skip:],
            _unpack(payloads)[skip:],
            repeat(at, k),
            repeat(meta, k),
            strict=True,
        )
    )


def fold_rows(seg: Segment, above: int) -> list[tuple[Any, ...]]:
    """The events of a segment with a version above ``above`` as fold rows ``(stream,
    type, payload, version, position)``."""
    last, n, sid, version, types, payloads = seg[:6]
    if n == 1:
        return [(sid, types, payloads, version, last)] if version > above else []
    first_version = version - n + 1
    rows = zip(
        repeat(sid, n),
        repeat(types, n) if type(types) is str else _unjson(types),
        _unpack(payloads),
        range(first_version, version + 1),
        range(last - n + 1, last + 1),
        strict=True,
    )
    skip = above - first_version + 1
    if skip <= 0:
        return list(rows)
    return list(rows)[skip:]


def id_runs(ids: Collection[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    """``(bucket, lo, hi)`` runs covering ``ids``: sorted, grouped by their first 6 bytes
    (a UUIDv7's millisecond), each group one run from its lowest to its highest id."""
    if len(ids) == 1:  # Sequence or set
        [i] = ids
        return [(i[:6], i, i)]
    runs: list[list[bytes]] = []
    for i in sorted(ids):
        bucket = i[:6]
        if runs and runs[-1][0] == bucket:
            runs[-1][2] = i
        else:
            runs.append([bucket, i, i])
    return [(r[0], r[1], r[2]) for r in runs]


def run_rows(seg_ids: bytes, last_position: int) -> list[tuple[bytes, bytes, bytes, int]]:
    """The ``event_id_runs`` rows ``(bucket, hi, lo, last_position)`` of a segment with
    these ids that ends at ``last_position``."""
    if len(seg_ids) == 16:
        return [(seg_ids[:6], seg_ids, seg_ids, last_position)]
    return [(b, hi, lo, last_position) for b, lo, hi in id_runs(ids_of(seg_ids))]


def stored_ids(conn: sqlite3.Connection, ids: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """The stored events with these ids, as expanded rows in position order.

    The runs that may hold them name the candidate segments; those are decoded and
    their ids compared."""
    wanted = set(ids)
    if not wanted:
        return []
    ends = _ends_holding(conn, id_runs(wanted))
    if not ends:
        return []
    rows: list[tuple[Any, ...]] = []
    segs = conn.execute(q.SEGMENTS_AT, (_json(sorted(ends)).decode(),)).fetchall()
    for seg in segs:
        if seg[1] == 1:
            if seg[6] in wanted:
                rows.append(expand(seg)[0])
        elif not wanted.isdisjoint(ids_of(seg[6])):
            rows += [r for r in expand(seg) if r[1] in wanted]
    return rows


RUNS_PER_STATEMENT = q.MAX_VARIABLES // 3
"""Id runs checked in one statement at most (3 parameters each)."""


@functools.cache
def _overlapping(runs: int) -> str:
    """``FROM`` the id runs that overlap ``runs`` runs given as parameters (3 each), on."""
    return (
        " FROM (VALUES "
        + ", ".join(["(?, ?, ?)"] * runs)
        + ") AS v CROSS JOIN event_id_runs r ON r.bucket = v.column1"
        " AND r.hi >= v.column2 AND r.lo <= v.column3"
    )


def _ends_holding(
    conn: sqlite3.Connection, runs: Sequence[tuple[bytes, bytes, bytes]], first: bool = False
) -> set[int]:
    """The last positions of the segments whose id runs overlap these ``(bucket, lo, hi)``
    runs (with ``first``: one of them at most), in one statement per few hundred runs."""
    if len(runs) == 1:
        found = conn.execute(q.RUNS_HOLDING + (" LIMIT 1" if first else ""), runs[0])
        return {r[0] for r in found}
    ends: set[int] = set()
    for start in range(0, len(runs), RUNS_PER_STATEMENT):
        chunk = runs[start : start + RUNS_PER_STATEMENT]
        sql = "SELECT DISTINCT r.last_position" + _overlapping(len(chunk))
        if first:
            sql += " LIMIT 1"
        ends.update(r[0] for r in conn.execute(sql, [x for run in chunk for x in run]))
        if first and ends:
            break
    return ends


def may_clash(conn: sqlite3.Connection, runs: Sequence[tuple[bytes, bytes, bytes]]) -> bool:
    """Whether a stored id may lie in one of these runs (then :func:`stored_ids` decides)."""
    return bool(_ends_holding(conn, runs, first=True))


STREAMS_PER_CHECK = 16
"""Streams whose versions :func:`versions_head_clash` reads in one statement at most."""


@functools.lru_cache(maxsize=256)
def versions_head_clash(streams: int, runs: int) -> str:
    """A statement of one row: the versions of the ``streams`` streams given as
    parameters ``?1..?streams`` (each as :func:`eventcore.sqlite._schema.version_of`),
    the head, and whether a stored id may lie in the ``runs`` runs given after them (3
    parameters each). Every value is an index lookup: nothing is grouped or parsed."""
    versions = ", ".join(q.version_of(i) for i in range(1, streams + 1))
    return f"SELECT {versions}, {q.HEAD_ONLY}, EXISTS (SELECT 1{_overlapping(runs)})"


def head_and_clash(
    conn: sqlite3.Connection, runs: Sequence[tuple[bytes, bytes, bytes]]
) -> tuple[int, bool]:
    """The log's head and :func:`may_clash` of these runs, in one statement when they are
    a few hundred at most (an append of several streams)."""
    if not 0 < len(runs) <= RUNS_PER_STATEMENT:
        return conn.execute(q.HEAD).fetchone()[0], may_clash(conn, runs)
    sql = f"SELECT {q.HEAD_ONLY}, EXISTS (SELECT 1{_overlapping(len(runs))})"
    head, clash = conn.execute(sql, [x for run in runs for x in run]).fetchone()
    return head, bool(clash)


def segments_covering(
    conn: sqlite3.Connection, positions: Sequence[int], cols: str = q.SEG
) -> list[tuple[Any, ...]]:
    """The segments (their ``cols``) that may hold events at ``positions``, each once, in
    order, in one statement: for each position the first segment ending at or after it
    (a position erased by a purge may find the next one: callers filter)."""
    if not positions:
        return []
    sql = (
        f"SELECT {cols} FROM segments WHERE last_position IN (SELECT (SELECT"
        " min(f.last_position) FROM segments f WHERE f.last_position >= j.value)"
        " FROM json_each(?1) AS j) ORDER BY last_position"
    )
    return conn.execute(sql, (_json(list(positions)).decode(),)).fetchall()


def events_at(conn: sqlite3.Connection, positions: Sequence[int]) -> list[tuple[Any, ...]]:
    """The events at the sorted ``positions`` as expanded rows (erased ones left out)."""
    wanted = set(positions)
    rows: list[tuple[Any, ...]] = []
    for seg in segments_covering(conn, positions):
        rows += [r for r in expand(seg) if r[0] in wanted]
    return rows
