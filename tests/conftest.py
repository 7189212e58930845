"""Shared test configuration: the PostgreSQL test server fixtures live in tests/pgserver.py."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["tests.pgserver"]


@pytest.fixture
def snapshot_failures() -> Iterator[list[tuple[str, str]]]:
    """``(command class name, what)`` of each snapshot failure hooks are told about."""
    from eventcore import observe

    seen: list[tuple[str, str]] = []

    class Failures(observe.Hook):
        def on_snapshot_failure(self, command_type: str, what: str, error: BaseException) -> None:
            seen.append((command_type.rsplit(".", 1)[-1], what))

    hook = Failures()
    observe.add_hook(hook)
    yield seen
    observe.remove_hook(hook)


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Any:
    """Run a command through execute_sync or (in a fresh event loop) through execute."""
    from eventcore import execute, execute_sync

    if request.param == "sync":
        return execute_sync

    def run_async(store: Any, command: Any, **kwargs: Any) -> Any:
        return asyncio.run(execute(store, command, **kwargs))

    return run_async
