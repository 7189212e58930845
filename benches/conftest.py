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
