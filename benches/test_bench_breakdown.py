"""The per-command time breakdown (``python benches/headline.py --breakdown``) puts the time
where it is spent: a command whose ``handle`` (or ``apply``) is made slow shows it there."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from benches import core, headline
from benches.domain import DC

SLOW = 300e-6  # seconds: far above any other piece, even on a loaded machine


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class SlowOpen(DC.OpenAccount):  # type: ignore[misc, name-defined]
    def handle(self, state: Any) -> Any:
        spin(SLOW)
        return super().handle(state)


class SlowTransfer(DC.Transfer):  # type: ignore[misc, name-defined]
    def apply(self, state: Any, ev: Any, stream_id: str) -> Any:
        spin(SLOW / 4)  # four events folded per transfer: SLOW in all
        return super().apply(state, ev, stream_id)


def rows(b: core.Breakdown) -> dict[str, float]:
    return {p.name: p.us for p in b.parts}


def test_a_slow_handle_shows_in_its_row_and_a_slow_apply_in_the_fold() -> None:
    # Lower bounds only where the spin is (wall time: a busy machine only adds to it), and
    # upper bounds where it is not (microseconds of work each, even on a loaded machine).
    slow = dataclasses.replace(DC, OpenAccount=SlowOpen, Transfer=SlowTransfer)
    cold, transfer = core.breakdown(slow, 40, 3)
    us = SLOW * 1e6

    assert cold.workload == "memory.command.cold"
    assert rows(cold)["handle()"] >= us
    others = [v for name, v in rows(cold).items() if name != "handle()"]
    assert max(others) < us / 2  # nothing else is charged for it
    assert cold.total >= us

    assert transfer.workload == "memory.transfer"
    t = rows(transfer)
    assert t["of which apply() (user code)"] >= us
    assert t["fold_streams of 2 streams of 2 events (store, native)"] >= us  # it calls apply
    slow_rows = (
        "of which apply() (user code)",
        "fold_streams of 2 streams of 2 events (store, native)",
    )
    others = [v for name, v in t.items() if name not in slow_rows]
    assert max(others) < us / 2
    assert transfer.total >= us


def test_the_rest_is_the_total_minus_the_pieces_not_within_another() -> None:
    b = core.Breakdown("w", "", [core.Part("a", 2.0), core.Part("b", 1.0, within=True)], 5.0)
    assert b.rest == 3.0
    assert b.as_json()["rest_us"] == 3.0


def test_headline_breakdown_prints_both_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    assert headline.main(["--breakdown", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["breakdown"]
    assert set(out) == {"memory.command.cold", "memory.transfer"}
    for b in out.values():
        pieces = sum(v for k, v in b["us_per_command"].items() if not k.startswith("of which"))
        assert b["total_us"] > 0
        assert b["rest_us"] == pytest.approx(b["total_us"] - pieces)
        assert all(v > 0 for v in b["us_per_command"].values())
