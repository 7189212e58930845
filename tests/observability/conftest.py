"""Observability tests: hooks registered per test, in-memory exporters, the PG server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventcore import observe

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

PLUGIN = "tests.pgserver"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


@pytest.fixture
def use_hook() -> Iterator[object]:
    """``use_hook(hook)`` registers a hook for this test only."""
    added: list[observe.Hook] = []

    def add(hook: observe.Hook) -> observe.Hook:
        observe.add_hook(hook)
        added.append(hook)
        return hook

    yield add
    for hook in added:
        observe.remove_hook(hook)
