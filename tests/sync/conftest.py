"""Fixtures of the synchronous PostgreSQL tests: a migrated SyncPostgresStore per test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pgserver import drop_schema, new_schema_name


@pytest.fixture
def sync_pg_factory(postgres_dsn: str) -> Iterator[Callable[..., Any]]:
    """``make(**options)``: a migrated SyncPostgresStore on a fresh schema (closed, and its
    schema dropped, after the test)."""
    from eventcore.postgres import SyncPostgresStore

    made: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("schema", new_schema_name())
        store = SyncPostgresStore(postgres_dsn, **options)
        made.append(store)
        store.migrate()
        return store

    yield make
    for store in made:
        try:
            store.close()
        finally:
            asyncio.run(drop_schema(postgres_dsn, store.schema))


@pytest.fixture
def sync_pg(sync_pg_factory: Callable[..., Any]) -> Any:
    """A fresh, migrated SyncPostgresStore."""
    return sync_pg_factory()
