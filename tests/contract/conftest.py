"""The store contract suite runs against every store through the ``store`` fixture."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore
from tests.sync.adapter import Threaded, sync_postgres_store

STORES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    # The synchronous faces, seen through a test-only async adapter (tests/sync/adapter.py):
    "memory-sync",
    pytest.param("postgres-sync", marks=pytest.mark.postgres),
    pytest.param("postgres-pgbouncer", marks=pytest.mark.postgres),
    pytest.param("postgres-partitioned", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An empty async event store: the in-memory or SQLite store's async view, or
    PostgreSQL, or the synchronous face of memory or PostgreSQL, called from worker threads."""
    if request.param == "memory":
        return MemoryStore().aio
    if request.param == "memory-sync":
        return Threaded(MemoryStore())
    if request.param == "postgres-sync":
        return Threaded(sync_postgres_store(request))
    if request.param == "sqlite":
        from eventcore.sqlite import SqliteStore

        sqlite = SqliteStore(tmp_path / "events.db")
        request.addfinalizer(sqlite.close)
        return sqlite.aio
    if request.param == "postgres-partitioned":  # events partitioned by position range
        return request.getfixturevalue("partitioned_postgres_store")
    if request.param == "postgres-pgbouncer":  # every connection through PgBouncer
        return request.getfixturevalue("pgbouncer_store")
    return request.getfixturevalue("postgres_store")
