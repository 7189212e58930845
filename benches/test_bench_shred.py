"""pytest-benchmark versions of the ``shred.memory.*`` workloads (``benches/shred.py``).

Each workload runs with encryption on and off in the same ``group``, so the table shows
them side by side. Nothing here asserts a speed: ``benches/headline.py --only shred``
gives the figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from benches import shred

ROUNDS = 5


@pytest.mark.parametrize("side", ["on", "off"])
def test_shred_read(benchmark: Any, side: str) -> None:
    on, off = shred.read(2, 500)
    benchmark.group = "shred.memory.read"
    benchmark.extra_info["units_per_round"] = 1_000
    benchmark.pedantic(on if side == "on" else off, rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["signup", "fold", "plain"])
@pytest.mark.parametrize("side", ["on", "off"])
def test_shred_commands(benchmark: Any, side: str, kind: str) -> None:
    on, off = shred.commands(kind, 200)
    benchmark.group = f"shred.memory.command.{kind}"
    benchmark.extra_info["units_per_round"] = 200
    benchmark.pedantic(on if side == "on" else off, rounds=ROUNDS, warmup_rounds=1)
