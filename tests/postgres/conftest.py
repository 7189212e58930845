"""PostgreSQL tests: load the server fixtures (tests/pgserver.py) unless already loaded.

``tests/conftest.py`` may load them for the whole suite with
``pytest_plugins = ["tests.pgserver"]``; this file then does nothing more.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

PLUGIN = "tests.pgserver"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
