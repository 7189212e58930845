"""Every store against the reference model (``tests/store_model.py``): one stateful test,
the same rules and checks for the in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis.stateful import run_state_machine_as_test

from tests.store_model import (
    SETTINGS,
    MemoryUnderTest,
    PostgresUnderTest,
    SqliteUnderTest,
    StoreMachine,
    StoreUnderTest,
)

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("kind", STORES)
def test_store_matches_the_model(kind: str, request: pytest.FixtureRequest) -> None:
    def under_test() -> StoreUnderTest:
        if kind == "memory":
            return MemoryUnderTest()
        if kind == "sqlite":
            return SqliteUnderTest()
        return PostgresUnderTest(request.getfixturevalue("postgres_dsn"))

    examples: dict[str, Any] = {"memory": 150}  # memory is cheap: more examples
    settings = SETTINGS
    if kind in examples:
        settings = type(SETTINGS)(SETTINGS, max_examples=examples[kind])
    run_state_machine_as_test(lambda: StoreMachine(under_test()), settings=settings)
