"""The SQLite store: durable events in one file, for one machine (stdlib ``sqlite3``).

>>> from eventcore.sqlite import SqliteStore
>>> store = SqliteStore("events.db")  # doctest: +SKIP

What lives where: :mod:`eventcore.sqlite.store` the store (appends, reads, folds, waiting,
snapshots) and its async view, :mod:`eventcore.sqlite.checkpoint` projection checkpoints,
dead letters and leader leases, ``_schema`` the tables and statements, ``_segments`` how
events are packed into segments (one row per run of a stream's events in an append) and
found again, ``_query`` query matching.
"""

from __future__ import annotations

from eventcore.sqlite.checkpoint import SqliteCheckpointStore
from eventcore.sqlite.store import AsyncSqliteStore, SqliteSnapshotStore, SqliteStore

__all__ = ["AsyncSqliteStore", "SqliteCheckpointStore", "SqliteSnapshotStore", "SqliteStore"]
