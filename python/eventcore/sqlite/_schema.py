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
HEAD = "SELECT coalesce(max(position), 0) FROM events"
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
# One stream's version and the head, in one statement (the common single-stream append).
VERSION_AND_HEAD = (
    "SELECT (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?),"
    " (SELECT coalesce(max(position), 0) FROM events)"
)
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
