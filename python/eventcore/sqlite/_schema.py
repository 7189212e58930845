"""The SQLite store's schema and statements, and its driver errors mapped to eventcore's.

One file holds everything: the events, projection checkpoints and dead letters, and
snapshots. The schema comes from versioned migrations (``migrations/*.sql``, as for
PostgreSQL); ``PRAGMA user_version`` is the version a file is at.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from importlib import resources

from eventcore.errors import EventCoreError, OutcomeUnknown, StoreError, StoreUnavailable


def _migrations() -> tuple[tuple[int, str, list[str]], ...]:
    """Every shipped migration ``(version, name, statements)``, in version order (1..N)."""
    folder = resources.files("eventcore.sqlite") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            body = "\n".join(x for x in text.splitlines() if not x.startswith("--"))
            statements = [x.strip() for x in re.split(r";\s*$", body, flags=re.M) if x.strip()]
            found.append((int(match[1]), match[2], statements))
    found.sort()
    if [m[0] for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"eventcore SQLite migrations are not numbered 1..N: {found!r}")
    return tuple(found)


MIGRATIONS = _migrations()
"""The versioned schema (``migrations/NNNN_name.sql``); ``PRAGMA user_version`` is the
version a file is at."""
SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this eventcore creates and understands."""

COLS = "position, event_id, stream_id, version, event_type, payload, recorded_at, metadata"
"""The columns :func:`eventcore.recorded.recorded_events` builds events from, in order
(the rows :func:`eventcore.sqlite.store` expands segments into)."""

SEG = "last_position, n, stream_id, last_version, types, payloads, ids, recorded_at, metadata"
"""A segment's columns (migration 0005), in the order the store expands them."""

INSERT_SEGMENT = f"INSERT INTO segments ({SEG}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_RUN = "INSERT INTO event_id_runs (bucket, hi, lo, last_position) VALUES (?, ?, ?, ?)"
TYPE_RUN = (
    "INSERT INTO event_type_runs (event_type, last_position, first_position) VALUES (?, ?, ?)"
)
# The highest position ever taken: a purge may erase the last events, and their
# positions are never taken again (migration 0002).
_HEAD = (
    "max(coalesce((SELECT max(last_position) FROM segments), 0),"
    " coalesce((SELECT max(last_position) FROM purges), 0))"
)
# The version of the stream ?1: its last event's, or the version its last truncation took.


def version_of(param: int) -> str:
    """The version of the stream ``?param`` as an expression: its last event's, or the
    version its last truncation took (two index lookups)."""
    return (
        f"max(coalesce((SELECT max(last_version) FROM segments WHERE stream_id = ?{param}), 0),"
        f" coalesce((SELECT truncated_at FROM stream_lifecycle WHERE stream_id = ?{param}), 0))"
    )


_VERSION = version_of(1)
HEAD_ONLY = _HEAD
"""The head as an expression, to select with other things."""
HEAD = f"SELECT {_HEAD}"
STREAM_VERSION = f"SELECT {_VERSION}"
# Whether a run of event ids holds ids in (bucket ?2, from ?3 to ?4): only then may an id
# of the range be stored (the segments named decide).
_RUN_CLASH = "EXISTS (SELECT 1 FROM event_id_runs WHERE bucket = ?2 AND hi >= ?3 AND lo <= ?4)"
# One stream's version, the head and whether the append's one id run may clash, in one
# statement (the common single-stream append).
VERSION_HEAD_CLASH = f"SELECT {_VERSION}, {_HEAD}, {_RUN_CLASH}"
# The hidden versions of the stream ?1 (stream reads and folds skip them).
HIDDEN = "coalesce((SELECT hidden_upto FROM stream_lifecycle WHERE stream_id = ?1), 0)"
# A fold's segments: a (stream, NULL, truncated_at, hidden_upto, ...) row for each stream
# that was ever truncated (the version its last truncation took, the versions hidden),
# and the segments holding visible events (in no order), each as its first six columns.
_FOLD_SEG = "last_position, n, stream_id, last_version, types, payloads"
"""A segment's first columns: all a fold reads (no ids, time or metadata to build)."""
FOLD_ONE = (
    "SELECT stream_id, NULL, truncated_at, hidden_upto, 0, 0 FROM stream_lifecycle"
    f" WHERE stream_id = ?1 UNION ALL SELECT {_FOLD_SEG} FROM segments"
    f" WHERE stream_id = ?1 AND last_version > {HIDDEN}"
)


@functools.lru_cache(maxsize=64)
def fold_many(streams: int) -> str:
    """:data:`FOLD_ONE` for the ``streams`` streams given as parameters ``?1..?streams``
    (a list of parameters: SQLite plans ``IN`` over them as index lookups, with no JSON
    to parse)."""
    listed = "(" + ", ".join(f"?{i}" for i in range(1, streams + 1)) + ")"
    return (
        "SELECT stream_id, NULL, truncated_at, hidden_upto, 0, 0 FROM stream_lifecycle"
        f" WHERE stream_id IN {listed}"
        f" UNION ALL SELECT {', '.join('s.' + c for c in _FOLD_SEG.split(', '))} FROM segments s"
        " LEFT JOIN stream_lifecycle l ON l.stream_id = s.stream_id"
        f" WHERE s.stream_id IN {listed}"
        " AND s.last_version > coalesce(l.hidden_upto, 0)"
    )


# A fold tail: a (stream, NULL, truncated_at, ...) row for each stream truncated after
# the version its state was folded at (that state may hold events hidden now: no tail),
# and each stream's segments (in no order), by ``$[2]``: for the streams of the last discovery
# round from the one that holds its last event at or before ``$[1]`` (the last one
# folded, for its position: a truncation's version has no event), for earlier rounds'
# those holding events after ``$[1]``.
FOLD_TAIL = (
    "SELECT l.stream_id, NULL, l.truncated_at, -1, 0, 0, 0, 0, 0 FROM json_each(?1) AS t"
    " JOIN stream_lifecycle l ON l.stream_id = json_extract(t.value, '$[0]')"
    " AND l.truncated_at > json_extract(t.value, '$[1]')"
    f" UNION ALL SELECT {', '.join('s.' + c for c in SEG.split(', '))}"
    " FROM json_each(?1) AS t JOIN segments s ON s.stream_id = json_extract(t.value, '$[0]')"
    " AND s.last_version >= CASE WHEN json_extract(t.value, '$[2]') THEN coalesce("
    "(SELECT max(f.last_version) FROM segments f"
    " WHERE f.stream_id = json_extract(t.value, '$[0]')"
    " AND f.last_version <= json_extract(t.value, '$[1]')), 1)"
    " ELSE json_extract(t.value, '$[1]') + 1 END"
)
# Each stream's version (those with neither events nor a truncation are left out).
VERSIONS = (
    "SELECT stream_id, max(v) FROM (SELECT stream_id, max(last_version) AS v FROM segments"
    " WHERE stream_id IN (SELECT value FROM json_each(?1)) GROUP BY stream_id"
    " UNION ALL SELECT stream_id, truncated_at FROM stream_lifecycle"
    " WHERE stream_id IN (SELECT value FROM json_each(?1))) GROUP BY stream_id"
)
# Segments holding the events of the stream ?1 with versions above ?2 and visible, at most
# ?3 of them (each holds at least one event).
READ_STREAM = (
    f"SELECT {SEG}, {HIDDEN} FROM segments WHERE stream_id = ?1 AND last_version > ?2"
    f" AND last_version > {HIDDEN} ORDER BY last_version LIMIT ?3"
)
READ_STREAMS = (
    f"SELECT {', '.join('s.' + c for c in SEG.split(', '))}, coalesce(l.hidden_upto, 0)"
    " FROM segments s LEFT JOIN stream_lifecycle l ON l.stream_id = s.stream_id"
    " WHERE s.stream_id IN (SELECT value FROM json_each(?1)) AND s.last_version > ?2"
    " AND s.last_version > coalesce(l.hidden_upto, 0) ORDER BY s.last_position LIMIT ?3"
)
READ_BACKWARDS = (
    f"SELECT {SEG}, {HIDDEN} FROM segments WHERE stream_id = ?1"
    f" AND last_version - n < ?2 - 1 AND last_version > {HIDDEN}"
    " ORDER BY last_version DESC LIMIT ?3"
)
# The segments at these positions (a JSON array of last positions).
SEGMENTS_AT = (
    f"SELECT {SEG} FROM segments"
    " WHERE last_position IN (SELECT value FROM json_each(?1)) ORDER BY last_position"
)
# The segments that end where a run of ids in bucket ?1 may hold an id between ?2 and ?3.
RUNS_HOLDING = "SELECT last_position FROM event_id_runs WHERE bucket = ?1 AND hi >= ?2 AND lo <= ?3"
# A stream's segments from those ending above version ?2 on (conflict tails).
STREAM_FROM = (
    f"SELECT {SEG} FROM segments WHERE stream_id = ?1 AND last_version >= ?2"
    " ORDER BY last_version LIMIT ?3"
)
# -- stream lifecycle (migration 0002) --
# Whether the stream ?1 has a visible event at or below version ?2 not hidden yet.
HIDES_AN_EVENT = (
    f"SELECT 1 FROM segments WHERE stream_id = ?1 AND last_version > {HIDDEN}"
    f" AND last_version - n < ?2 AND {HIDDEN} < ?2 LIMIT 1"
)
TRUNCATE = (
    "INSERT INTO stream_lifecycle (stream_id, hidden_upto, truncated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (stream_id) DO UPDATE SET hidden_upto = excluded.hidden_upto,"
    " truncated_at = excluded.truncated_at"
)
# (hidden_upto, version, whether a visible event is left) of the stream ?1.
STREAM_BOUNDS = (
    f"SELECT {HIDDEN}, {_VERSION}, EXISTS (SELECT 1 FROM segments"
    f" WHERE stream_id = ?1 AND last_version > {HIDDEN})"
)
# (purged_upto, hidden_upto) of the stream ?1 when it has hidden events not erased yet.
PURGEABLE = (
    "SELECT purged_upto, hidden_upto FROM stream_lifecycle"
    " WHERE stream_id = ?1 AND hidden_upto > purged_upto"
)
# The segments of the stream ?1 holding versions in (?2, ?3].
PURGE_SEGMENTS = (
    f"SELECT {SEG} FROM segments WHERE stream_id = ?1 AND last_version > ?2"
    " AND last_version - n < ?3 ORDER BY last_version"
)
PURGE_SEGMENT = "DELETE FROM segments WHERE last_position = ?"
PURGE_TRIM = "UPDATE segments SET n = ?, types = ?, payloads = ?, ids = ? WHERE last_position = ?"
PURGE_RUN = "DELETE FROM event_id_runs WHERE bucket = ? AND hi = ? AND last_position = ?"
# A purge erases the events' tags with them (tags may be personal data too).
PURGE_TAGS = "DELETE FROM event_tags WHERE position BETWEEN ? AND ?"
PURGE_MARK = "UPDATE stream_lifecycle SET purged_upto = hidden_upto WHERE stream_id = ?1"
PURGE_RECORD = (
    "INSERT INTO purges (stream_id, events, from_version, to_version, first_position,"
    " last_position, actor, reason, purged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
PURGE_LOG = (
    "SELECT stream_id, events, from_version, to_version, first_position, last_position,"
    " actor, reason, purged_at FROM purges WHERE ?1 IS NULL OR stream_id = ?1 ORDER BY id"
)
# Whether a purge ever erased an event: the log's positions then have holes.
PURGED = "SELECT EXISTS (SELECT 1 FROM purges WHERE events > 0)"
COUNT_BETWEEN = (
    "SELECT coalesce(sum(min(last_position, ?2) - max(last_position - n, ?1)), 0)"
    " FROM segments WHERE last_position > ?1 AND last_position - n < ?2"
)

CHECKPOINT_LOAD = "SELECT position FROM projection_checkpoints WHERE name = ?"
CHECKPOINT_SAVE = (
    "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
    " updated_at = excluded.updated_at"
)
CHECKPOINT_CREATE = (
    "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO NOTHING"
)
CHECKPOINT_MOVE = (
    "UPDATE projection_checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?"
)
DEAD_LETTER_ADD = (
    "INSERT INTO projection_dead_letters"
    " (projection, position, event_id, stream_id, event_type, error, failed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
DEAD_LETTERS = (
    "SELECT projection, position, event_id, stream_id, event_type, error, failed_at"
    " FROM projection_dead_letters WHERE projection = ? ORDER BY id"
)
SNAPSHOT_LOAD = (
    "SELECT schema_version, streams, versions, fold_from, rounds, state, taken_at, checksum"
    " FROM snapshots WHERE key = ?"
)
# Kept unless the new one folds more events or has another schema version (as PostgreSQL).
SNAPSHOT_SAVE = (
    "INSERT INTO snapshots (key, schema_version, streams, versions, fold_from, rounds,"
    " events, state, taken_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET schema_version = excluded.schema_version,"
    " streams = excluded.streams, versions = excluded.versions,"
    " fold_from = excluded.fold_from, rounds = excluded.rounds, events = excluded.events,"
    " state = excluded.state, taken_at = excluded.taken_at, checksum = excluded.checksum"
    " WHERE snapshots.schema_version <> excluded.schema_version"
    " OR snapshots.events < excluded.events"
)

MAX_VARIABLES = 900
"""Bound parameters per statement at most (SQLite's limit is 32766 since 3.32; old builds
had 999): longer id lists are looked up in chunks."""

# Failures that pass: another connection holds a lock longer than the busy timeout, a full
# disk, an I/O error. Anything else (a corrupt file, a missing table) is a StoreError.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an sqlite3 error that a retry may get past (busy, I/O)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    if any(name.startswith(t) for t in _TRANSIENT):
        return True
    # Without an error name (an error raised by the module itself): "database is locked".
    return not name and isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def translate(exc: BaseException, action: str, sent: list[object] | None = None) -> EventCoreError:
    """An sqlite3 error as eventcore's: ``StoreUnavailable`` when transient (or
    :class:`OutcomeUnknown` with ``sent`` when a COMMIT failed), else ``StoreError``."""
    if isinstance(exc, EventCoreError):
        return exc
    if sent is not None:
        return OutcomeUnknown(f"SQLite failed to commit {action}; it may be written: {exc!r}", sent)
    if is_transient(exc):
        return StoreUnavailable(f"SQLite unavailable during {action}: {exc!r}")
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
        return StoreError(f"SQLite store tables are missing during {action}: {exc}")
    return StoreError(f"SQLite error during {action}: {exc!r}")
