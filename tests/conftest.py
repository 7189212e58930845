"""Shared test configuration: the PostgreSQL test server fixtures live in tests/pgserver.py."""

pytest_plugins = ["tests.pgserver"]
