"""Fixtures of the pytest-benchmark suite (``python -m pytest benches``).

The suite is not collected by a plain ``pytest`` run (``testpaths = ["tests"]``). Use
``--benchmark-disable`` for a fast smoke run that executes every benchmark body once.
Ratios against the baseline and the targets are printed by ``python benches/headline.py``;
here each eventcore benchmark shares a ``group`` with its ``eventsourcing`` baseline so the
pytest-benchmark table puts them side by side. Every round does a batch of work; its size
is in ``extra_info["units_per_round"]`` (commands or events).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

from eventcore._bench import DOMAINS, Domain


@pytest.fixture(params=sorted(DOMAINS), ids=sorted(DOMAINS))
def domain(request: pytest.FixtureRequest) -> Domain:
    """Each eventcore workload runs with dataclass events and with msgspec.Struct events."""
    return DOMAINS[request.param]


@pytest.fixture(scope="session")
def es() -> Any:
    """The eventsourcing baseline (skipped when the library is not installed)."""
    pytest.importorskip("eventsourcing")
    from benches.domain import baseline

    return baseline()


@pytest.fixture(scope="session")
def unique() -> itertools.count[int]:
    """A session-wide counter for fresh stream ids."""
    return itertools.count()


@pytest.fixture(scope="session")
def bench_dsn() -> Iterator[str]:
    """The PostgreSQL server the test suite would use: ``EVENTCORE_TEST_DSN``, else a
    throwaway server started for the session (skipped when no server binaries exist)."""
    dsn = os.environ.get("EVENTCORE_TEST_DSN")
    if dsn:
        yield dsn
        return
    from tests.pgserver import PostgresServer, find_pg_ctl

    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (set EVENTCORE_TEST_DSN)")
    server = PostgresServer.launch(pg_ctl)
    try:
        yield server.dsn
    finally:
        server.shutdown()
