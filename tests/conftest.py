"""Shared test configuration: the PostgreSQL test server fixtures live in tests/pgserver.py."""

from collections.abc import Iterator

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
