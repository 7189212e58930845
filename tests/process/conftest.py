"""Process manager tests run on every store of the projection tests' ``store`` fixture."""

from __future__ import annotations

from tests.projection.conftest import store

__all__ = ["store"]
