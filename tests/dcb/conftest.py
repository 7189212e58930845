"""Stores for the DCB tests: memory, SQLite and PostgreSQL, all with the examples' registry."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore
from eventcore.examples import dcb

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def dcb_store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An empty async store over the DCB examples' registry."""
    if request.param == "memory":
        return MemoryStore(registry=dcb.registry).aio
    if request.param == "sqlite":
        from eventcore.sqlite import SqliteStore

        sqlite = SqliteStore(tmp_path / "events.db", registry=dcb.registry)
        request.addfinalizer(sqlite.close)
        return sqlite.aio
    pg = request.getfixturevalue("postgres_store")
    pg.registry = dcb.registry  # read before first use: the store decodes with it
    return pg
