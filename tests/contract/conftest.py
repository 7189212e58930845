"""The store contract suite runs against every store through the ``store`` fixture."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An empty async event store: the in-memory or SQLite store's async view, or PostgreSQL."""
    if request.param == "memory":
        return MemoryStore().aio
    if request.param == "sqlite":
        from eventcore.sqlite import SqliteStore

        sqlite = SqliteStore(tmp_path / "events.db")
        request.addfinalizer(sqlite.close)
        return sqlite.aio
    return request.getfixturevalue("postgres_store")
