"""Every headline key survives with its meaning: a quick run makes every key saved in
``benches/headline_keys.json``, in the same order, with the same unit, baseline and peer
(dumped from ``python benches/headline.py --quick --json`` before the harness became one).
The workloads' data is built as in a real run; only the timed repetitions are skipped (each
figure gets one made-up sample), so this checks which figures the harness makes, not their
speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benches import headline

SAVED = Path(__file__).with_name("headline_keys.json")


@pytest.mark.timeout(900)  # it builds every workload's data and starts PostgreSQL servers
def test_a_quick_run_makes_every_headline_key_with_its_meaning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_timing(sides: Any, reps: int, warmup: int, **_: Any) -> None:
        for fig, _once in sides:
            fig.samples.append(1.0)

    monkeypatch.setattr(headline, "measure", no_timing)
    assert headline.main(["--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["workloads"]
    saved = json.loads(SAVED.read_text())
    # Every saved key, in the same order (new keys may join, namespaced by area).
    assert [k for k in figures if k in saved] == list(saved)
    for key, meaning in saved.items():
        fig = figures[key]
        got = {"unit": fig["unit"], "baseline": fig["baseline_name"], "peer": fig.get("peer_name")}
        assert got == meaning, key
