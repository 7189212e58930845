"""The eventcore command line, driven with click's CliRunner against the in-memory store."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventcore import MemoryStore, execute_sync
from eventcore.cli import cli

from . import cliapp
from .domain import Deposit

APP = "tests.observability.cliapp:app"
COMMANDS = [
    ["migrate"],
    ["streams"],
    ["read"],
    ["tail"],
    ["projections"],
    ["projections", "status"],
    ["projections", "rebuild"],
    ["projections", "dead-letters"],
    ["bench"],
    ["demo"],
]


@pytest.fixture(autouse=True)
def fresh_app(monkeypatch: pytest.MonkeyPatch) -> cliapp.App:
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    monkeypatch.delenv("EVENTCORE_APP", raising=False)
    app = cliapp.App()
    monkeypatch.setattr(cliapp, "app", app)
    return app


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    if command[0] != "projections" or len(command) > 1:
        assert "--dsn" in result.output and "EVENTCORE_DSN" in result.output


def test_top_level_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("migrate", "streams", "read", "tail", "projections", "bench", "demo"):
        assert name in result.output
    assert invoke("--version").output.startswith("eventcore, version")


def test_demo_runs_the_bank_in_memory() -> None:
    result = invoke("demo", "--accounts", "5", "--commands", "300", "--show", "3")
    assert result.exit_code == 0, result.output
    assert "bank demo on memory" in result.stdout
    assert "commands: 300" in result.stdout
    assert "balances consistent: yes" in result.stdout
    assert "… 2 more" in result.stdout


def test_bench_json_and_table() -> None:
    result = invoke("bench", "--quick", "--json", "--only", "command.cold")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (name,) = doc["workloads"]
    assert name == "memory.command.cold"
    work = doc["workloads"][name]
    assert work["unit"] == "commands/s" and work["value"] > 0 and work["reps"] == 3
    table = invoke("bench", "--quick", "--only", "transfer")
    assert table.exit_code == 0 and "memory.transfer" in table.stdout
    assert invoke("bench", "--only", "nothing-matches").exit_code == 2


def test_streams_table_json_prefix_and_limit() -> None:
    result = invoke("streams", "--app", APP)
    assert result.exit_code == 0, result.output
    for i in (1, 2, 3):
        assert f"acc-{i}" in result.stdout
    assert "3 streams" in result.stdout
    rows = json_lines(invoke("streams", "--app", APP, "--json", "--limit", "2").stdout)
    assert rows == [{"stream_id": "acc-1", "version": 3}, {"stream_id": "acc-2", "version": 3}]
    rows = json_lines(invoke("streams", "--app", APP, "--json", "--prefix", "acc-3").stdout)
    assert rows == [{"stream_id": "acc-3", "version": 3}]


def test_read_a_stream_as_table_and_json_lines() -> None:
    result = invoke("read", "acc-2", "--app", APP)
    assert result.exit_code == 0, result.output
    assert "acc-2 (version 3)" in result.stdout and "obs.Deposited" in result.stdout
    events = json_lines(invoke("read", "acc-2", "--app", APP, "--json").stdout)
    assert [(e["version"], e["event_type"], e["data"]) for e in events] == [
        (1, "obs.Opened", {"owner": "owner 2"}),
        (2, "obs.Deposited", {"amount": 20}),
        (3, "obs.Deposited", {"amount": 0}),
    ]
    assert {"position", "event_id", "recorded_at", "metadata", "stream_id"} <= set(events[0])
    later = json_lines(
        invoke("read", "acc-2", "--app", APP, "--json", "--after-version", "2").stdout
    )
    assert [e["version"] for e in later] == [3]


def test_read_errors() -> None:
    missing = invoke("read", "acc-404", "--app", APP)
    assert missing.exit_code == 1
    assert "stream 'acc-404' not found" in missing.stderr
    invalid = invoke("read", "   ", "--app", APP)
    assert invalid.exit_code == 2 and "STREAM" in invalid.stderr


def test_no_store_bad_dsn_and_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    none = invoke("streams")
    assert none.exit_code == 2 and "no store given" in none.stderr
    bad = invoke("streams", "--dsn", "mysql://app@db/app")
    assert bad.exit_code == 2 and "not a DSN eventcore knows" in bad.stderr
    port = invoke("streams", "--dsn", "postgresql://app:secret@db:notaport/app")
    assert port.exit_code == 2 and "not a valid DSN" in port.stderr
    assert "secret" not in port.stderr  # passwords never printed
    env = invoke("streams", env={"EVENTCORE_DSN": "redis://x"})
    assert env.exit_code == 2 and "redis://x" in env.stderr
    down = invoke("streams", "--dsn", "postgresql://app:secret@127.0.0.1:1/app")
    assert down.exit_code == 1
    assert "cannot reach the PostgreSQL server at postgresql://app:***@127.0.0.1:1/app" in (
        down.stderr
    )
    bad_app = invoke("streams", "--app", "tests.observability.nope:app")
    assert bad_app.exit_code == 2 and "cannot import" in bad_app.stderr


def test_memory_dsn_and_migrate() -> None:
    result = invoke("migrate", "--dsn", "memory://")
    assert result.exit_code == 0 and "needs no migrations" in result.stdout
    empty = invoke("streams", "--dsn", "memory://", "--json")
    assert empty.exit_code == 0 and empty.stdout == ""


def test_tail_shows_the_last_events() -> None:
    events = json_lines(invoke("tail", "--app", APP, "-n", "2", "--json").stdout)
    assert [e["position"] for e in events] == [8, 9]
    after = json_lines(invoke("tail", "--app", APP, "--after", "6", "--json").stdout)
    assert [e["position"] for e in after] == [7, 8, 9]
    typed = json_lines(
        invoke("tail", "--app", APP, "-n", "9", "--json", "--type", "obs.Opened").stdout
    )
    assert [e["stream_id"] for e in typed] == ["acc-1", "acc-2", "acc-3"]
    table = invoke("tail", "--app", APP)
    assert table.exit_code == 0 and "obs.Opened" in table.stdout


def test_tail_follow_prints_new_events_live(fresh_app: cliapp.App) -> None:
    store: MemoryStore = fresh_app.store

    def write_later() -> None:
        time.sleep(0.3)
        execute_sync(store, Deposit(account="acc-7", amount=70))

    writer = threading.Thread(target=write_later)
    writer.start()
    started = time.monotonic()
    result = invoke("tail", "--app", APP, "-n", "0", "--json", "-f", "--stop-after", "1.5")
    writer.join()
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    assert [(e["stream_id"], e["data"]) for e in events] == [
        ("acc-7", {"amount": 70}),
        ("acc-7", {"amount": 0}),
    ]
    assert 1.4 < time.monotonic() - started < 5


def test_projections_status_rebuild_and_dead_letters(fresh_app: cliapp.App) -> None:
    status = json_lines(invoke("projections", "status", "--app", APP, "--json").stdout)
    assert [(s["name"], s["position"], s["head"], s["lag_events"]) for s in status] == [
        ("counts", 0, 9, 9),
        ("audit", 0, 9, 9),
    ]
    execute_sync(fresh_app.store, Deposit(account="acc-1", amount=13))  # counts will skip it
    result = invoke("projections", "rebuild", "counts", "--app", APP, "--yes")
    assert result.exit_code == 0, result.output
    assert "rebuilt counts: 11 events" in result.stdout
    assert fresh_app.counts.seen == {"obs.Opened": 3, "obs.Deposited": 7}
    lines = json_lines(invoke("projections", "status", "--app", APP, "--json").stdout)
    status = {s["name"]: s for s in lines}
    assert (status["counts"]["position"], status["counts"]["lag_events"]) == (11, 0)
    assert status["counts"]["dead_letters"] == 1
    assert status["audit"]["lag_events"] == 11
    table = invoke("projections", "status", "--app", APP)
    assert "counts" in table.stdout and "audit" in table.stdout
    letters = json_lines(
        invoke("projections", "dead-letters", "counts", "--app", APP, "--json").stdout
    )
    assert [(d["position"], d["event_type"]) for d in letters] == [(10, "obs.Deposited")]
    assert "unlucky deposit" in letters[0]["error"]
    assert "1 dead letter" in invoke("projections", "dead-letters", "counts", "--app", APP).stdout


def test_projections_errors() -> None:
    unknown = invoke("projections", "rebuild", "nope", "--app", APP, "--yes")
    assert unknown.exit_code == 1 and "no projection named 'nope'" in unknown.stderr
    assert "counts" in unknown.stderr
    no_app = invoke("projections", "status", "--dsn", "memory://")
    assert no_app.exit_code == 2 and "--app" in no_app.stderr
    declined = invoke("projections", "rebuild", "counts", "--app", APP, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.stderr
    no_projections = invoke("projections", "status", "--app", "tests.observability.domain:FAST")
    assert no_projections.exit_code == 2 and "has no `projections`" in no_projections.stderr
