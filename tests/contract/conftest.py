"""The store contract suite runs against every store through the ``store`` fixture."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore

STORES = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Any:
    """An empty async event store: the in-memory store's async view, or PostgreSQL."""
    if request.param == "memory":
        return MemoryStore().aio
    return request.getfixturevalue("postgres_store")
