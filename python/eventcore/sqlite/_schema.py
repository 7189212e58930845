"""The SQLite store's schema and statements, and its driver errors mapped to eventcore's.

One file holds everything: the events, projection checkpoints and dead letters, and
snapshots. ``PRAGMA user_version`` is the schema version.
"""

from __future__ import annotations

import sqlite3

from eventcore.errors import EventCoreError, OutcomeUnknown, StoreError, StoreUnavailable

SCHEMA_VERSION = 1
"""The schema version this eventcore creates and understands (``PRAGMA user_version``)."""

# position is the rowid: appends number it themselves (max + 1, under the write lock).
# event_id: the UUID's 16 bytes; recorded_at: microseconds since the epoch (UTC);
# metadata: Metadata.to_bytes(), NULL when empty.
CREATE = (
    """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        event_id BLOB NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        metadata BLOB,
        UNIQUE (stream_id, version)
    )""",
    """CREATE TABLE IF NOT EXISTS projection_checkpoints (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS projection_dead_letters (
        id INTEGER PRIMARY KEY,
        projection TEXT NOT NULL,
        position INTEGER NOT NULL,
        event_id BLOB,
        stream_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS projection_dead_letters_by_name"
    " ON projection_dead_letters (projection, id)",
    """CREATE TABLE IF NOT EXISTS snapshots (
        key TEXT PRIMARY KEY,
        schema_version INTEGER NOT NULL,
        streams TEXT NOT NULL,
        versions TEXT NOT NULL,
        fold_from INTEGER NOT NULL,
        rounds INTEGER NOT NULL,
        events INTEGER NOT NULL,
        state BLOB NOT NULL,
        taken_at REAL NOT NULL,
        checksum TEXT NOT NULL
    ) WITHOUT ROWID""",
)

COLS = "position, event_id, stream_id, version, event_type, payload, recorded_at, metadata"
"""The columns :func:`eventcore.recorded.recorded_events` builds events from, in order."""

INSERT = f"INSERT INTO events ({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
HEAD = "SELECT coalesce(max(position), 0) FROM events"
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
FOLD_ONE = "SELECT stream_id, event_type, payload FROM events WHERE stream_id = ? ORDER BY version"
READ_STREAM = (
    f"SELECT {COLS} FROM events WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"
)
READ_BACKWARDS = (
    f"SELECT {COLS} FROM events WHERE stream_id = ? AND version < ? ORDER BY version DESC LIMIT ?"
)
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
