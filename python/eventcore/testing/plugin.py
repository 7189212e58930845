"""pytest plugin: fresh in-memory store fixtures (registered through an entry point)."""

from __future__ import annotations

import pytest

from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.testing import Scenario, verifying_store


@pytest.fixture
def memory_store() -> MemoryStore:
    """A fresh, empty in-memory store for one test (state cache in verify mode)."""
    return verifying_store()


@pytest.fixture
def async_memory_store(memory_store: MemoryStore) -> AsyncMemoryStore:
    """The async view of the test's fresh in-memory store."""
    return memory_store.aio


@pytest.fixture
def scenario(memory_store: MemoryStore) -> Scenario:
    """A given/when/then :class:`~eventcore.testing.Scenario` on the test's fresh store."""
    return Scenario(memory_store)
