"""``eventcore demo`` runs as many commands as its help says."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from eventcore.cli import _demo, cli


def test_demo_defaults_to_20000_commands_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty MemoryStore is falsy (len 0): the default used to fall to PostgreSQL's 2,000.
    planned: list[int] = []
    real_plan = _demo.plan

    def plan(accounts: Any, commands: int, seed: int) -> list[Any]:
        planned.append(commands)
        return real_plan(accounts, 50, seed)  # keep the run short; the count is what matters

    monkeypatch.setattr(_demo, "plan", plan)
    result = CliRunner().invoke(cli, ["demo", "--accounts", "3", "--show", "1"])
    assert result.exit_code == 0, result.output
    assert planned == [20_000]
    assert "20000 in memory" in CliRunner().invoke(cli, ["demo", "--help"]).output
