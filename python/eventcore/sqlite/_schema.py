"""The SQLite store's schema and statements, and its driver errors mapped to eventcore's.

One file holds everything: the events, projection checkpoints and dead letters, and
snapshots. The schema comes from versioned migrations (``migrations/*.sql``, as for
PostgreSQL); ``PRAGMA user_version`` is the version a file is at.
"""

from __future__ import annotations

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
"""The columns :func:`eventcore.recorded.recorded_events` builds events from, in order."""

INSERT = f"INSERT INTO events ({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# The type index of an append from position ?1 on (migration 0004): each type's first and
# last position, from the rows just inserted (in one statement, whatever the batch size).
TYPE_RUNS = (
    "INSERT INTO event_type_runs (event_type, last_position, first_position)"
    " SELECT event_type, max(position), min(position) FROM events WHERE position >= ?1"
    " GROUP BY event_type"
)
TYPE_RUN = (
    "INSERT INTO event_type_runs (event_type, last_position, first_position) VALUES (?, ?, ?)"
)
# The highest position ever taken: a purge may erase the last events, and their
# positions are never taken again (migration 0002).
_HEAD = (
    "max(coalesce((SELECT max(position) FROM events), 0),"
    " coalesce((SELECT max(last_position) FROM purges), 0))"
)
# The version of the stream ?1: its last event's, or the version its last truncation took.
_VERSION = (
    "max(coalesce((SELECT max(version) FROM events WHERE stream_id = ?1), 0),"
    " coalesce((SELECT truncated_at FROM stream_lifecycle WHERE stream_id = ?1), 0))"
)
HEAD = f"SELECT {_HEAD}"
STREAM_VERSION = f"SELECT {_VERSION}"
# One stream's version and the head, in one statement (the common single-stream append).
VERSION_AND_HEAD = f"SELECT {_VERSION}, {_HEAD}"
# The hidden versions of the stream ?1 (stream reads and folds skip them).
HIDDEN = "coalesce((SELECT hidden_upto FROM stream_lifecycle WHERE stream_id = ?1), 0)"
# A fold's rows: first one (stream, NULL, truncated_at, -1, 0) row per stream that was
# ever truncated (the version its last truncation took), then the visible events as
# 5-item fold rows (stream, type, payload, version, position).
FOLD_ONE = (
    "SELECT stream_id, NULL, truncated_at, -1, 0 FROM stream_lifecycle WHERE stream_id = ?1"
    " UNION ALL SELECT stream_id, event_type, payload, version, position FROM events"
    f" WHERE stream_id = ?1 AND version > {HIDDEN} ORDER BY 4"
)
FOLD_MANY = (
    "SELECT stream_id, NULL, truncated_at, -1, 0 FROM stream_lifecycle"
    " WHERE stream_id IN (SELECT value FROM json_each(?1))"
    " UNION ALL SELECT e.stream_id, e.event_type, e.payload, e.version, e.position"
    " FROM events e LEFT JOIN stream_lifecycle l ON l.stream_id = e.stream_id"
    " WHERE e.stream_id IN (SELECT value FROM json_each(?1))"
    " AND e.version > coalesce(l.hidden_upto, 0) ORDER BY 5"
)
# A fold tail: a (stream, NULL, truncated_at, -1, 0) row for each stream truncated after
# the version its state was folded at (that state may hold events hidden now: no tail),
# then each stream's events from ``$[2]`` on: for the streams of the last discovery round
# its last event at or before ``$[1]`` (the last one folded, for its position: a
# truncation's version has no event), for earlier rounds' the events after ``$[1]``.
FOLD_TAIL = (
    "SELECT l.stream_id, NULL, l.truncated_at, -1, 0 FROM json_each(?1) AS t"
    " JOIN stream_lifecycle l ON l.stream_id = json_extract(t.value, '$[0]')"
    " AND l.truncated_at > json_extract(t.value, '$[1]')"
    " UNION ALL SELECT e.stream_id, e.event_type, e.payload, e.version, e.position"
    " FROM json_each(?1) AS t JOIN events e ON e.stream_id = json_extract(t.value, '$[0]')"
    " AND e.version >= CASE WHEN json_extract(t.value, '$[2]') THEN coalesce("
    "(SELECT max(f.version) FROM events f WHERE f.stream_id = json_extract(t.value, '$[0]')"
    " AND f.version <= json_extract(t.value, '$[1]')), 1)"
    " ELSE json_extract(t.value, '$[1]') + 1 END ORDER BY 5"
)
# Each stream's version (those with neither events nor a truncation are left out).
VERSIONS = (
    "SELECT stream_id, max(v) FROM (SELECT stream_id, max(version) AS v FROM events"
    " WHERE stream_id IN (SELECT value FROM json_each(?1)) GROUP BY stream_id"
    " UNION ALL SELECT stream_id, truncated_at FROM stream_lifecycle"
    " WHERE stream_id IN (SELECT value FROM json_each(?1))) GROUP BY stream_id"
)
READ_STREAM = (
    f"SELECT {COLS} FROM events WHERE stream_id = ?1 AND version > ?2"
    f" AND version > {HIDDEN} ORDER BY version LIMIT ?3"
)
READ_STREAMS = (
    f"SELECT {', '.join('e.' + c for c in COLS.split(', '))} FROM events e"
    " LEFT JOIN stream_lifecycle l ON l.stream_id = e.stream_id"
    " WHERE e.stream_id IN (SELECT value FROM json_each(?1)) AND e.version > ?2"
    " AND e.version > coalesce(l.hidden_upto, 0) ORDER BY e.position LIMIT ?3"
)
READ_BACKWARDS = (
    f"SELECT {COLS} FROM events WHERE stream_id = ?1 AND version < ?2"
    f" AND version > {HIDDEN} ORDER BY version DESC LIMIT ?3"
)
# -- stream lifecycle (migration 0002) --
# Whether the stream ?1 has a visible event at or below version ?2 not hidden yet.
HIDES_AN_EVENT = (
    f"SELECT 1 FROM events WHERE stream_id = ?1 AND version > {HIDDEN} AND version <= ?2 LIMIT 1"
)
TRUNCATE = (
    "INSERT INTO stream_lifecycle (stream_id, hidden_upto, truncated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (stream_id) DO UPDATE SET hidden_upto = excluded.hidden_upto,"
    " truncated_at = excluded.truncated_at"
)
# (hidden_upto, version, whether a visible event is left) of the stream ?1.
STREAM_BOUNDS = (
    f"SELECT {HIDDEN}, {_VERSION}, EXISTS (SELECT 1 FROM events"
    f" WHERE stream_id = ?1 AND version > {HIDDEN})"
)
# (purged_upto, hidden_upto) of the stream ?1 when it has hidden events not erased yet.
PURGEABLE = (
    "SELECT purged_upto, hidden_upto FROM stream_lifecycle"
    " WHERE stream_id = ?1 AND hidden_upto > purged_upto"
)
PURGE_RANGE = (
    "SELECT count(*), coalesce(min(version), 0), coalesce(max(version), 0),"
    " coalesce(min(position), 0), coalesce(max(position), 0) FROM events"
    " WHERE stream_id = ?1 AND version > ?2 AND version <= ?3"
)
PURGE_DELETE = "DELETE FROM events WHERE stream_id = ?1 AND version > ?2 AND version <= ?3"
# A purge erases the events' tags with them (tags may be personal data too).
PURGE_TAGS = (
    "DELETE FROM event_tags WHERE position IN (SELECT position FROM events"
    " WHERE stream_id = ?1 AND version > ?2 AND version <= ?3)"
)
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
COUNT_BETWEEN = "SELECT count(*) FROM events WHERE position > ? AND position <= ?"
COLUMNS = (
    "SELECT position, event_type, stream_id, recorded_at FROM events"
    " WHERE position > ? ORDER BY position LIMIT ?"
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
