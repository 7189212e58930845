"""Fixtures of the synchronous PostgreSQL tests: a migrated SyncPostgresStore per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.sync.adapter import sync_postgres_store


@pytest.fixture
def sync_pg_factory(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``make(**options)``: a migrated SyncPostgresStore on a fresh schema (closed, and its
    schema dropped, after the test)."""
    return lambda **options: sync_postgres_store(request, **options)


@pytest.fixture
def sync_pg(sync_pg_factory: Callable[..., Any]) -> Any:
    """A fresh, migrated SyncPostgresStore."""
    return sync_pg_factory()
