"""The command line on a SQLite file: ``--dsn sqlite:///path`` for every command."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.observability import cliapp
from tests.observability.domain import Deposit, Open

from eventcore import execute_sync
from eventcore.cli import cli
from eventcore.sqlite import SqliteStore

PG_APP = "tests.observability.cliapp:pg_app"  # projections only: the store comes from --dsn


@pytest.fixture(autouse=True)
def fresh_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    monkeypatch.delenv("EVENTCORE_APP", raising=False)
    monkeypatch.setattr(cliapp, "pg_app", cliapp.PgApp())


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    path = tmp_path / "events.db"
    with SqliteStore(path) as store:
        for i in range(1, 4):
            execute_sync(store, Open(account=f"acc-{i}", owner=f"owner {i}"))
            execute_sync(store, Deposit(account=f"acc-{i}", amount=10 * i))
    return f"sqlite:///{path}"  # an absolute path: four slashes


def test_streams_read_and_tail(seeded: str) -> None:
    streams = json_lines(invoke("streams", "--dsn", seeded, "--json").stdout)
    assert [(s["stream_id"], s["version"]) for s in streams] == [
        ("acc-1", 3),
        ("acc-2", 3),
        ("acc-3", 3),
    ]
    read = json_lines(invoke("read", "acc-2", "--dsn", seeded, "--json").stdout)
    assert [(e["version"], e["data"]) for e in read] == [
        (1, {"owner": "owner 2"}),
        (2, {"amount": 20}),
        (3, {"amount": 0}),
    ]
    tail = json_lines(invoke("tail", "--dsn", seeded, "-n", "2", "--json").stdout)
    assert [e["position"] for e in tail] == [8, 9]


def test_tail_follow_sees_appends_of_another_store_on_the_file(seeded: str) -> None:
    path = seeded.removeprefix("sqlite:///")

    def write_later() -> None:
        time.sleep(0.3)
        with SqliteStore(path) as other:
            execute_sync(other, Deposit(account="acc-7", amount=70))

    writer = threading.Thread(target=write_later)
    writer.start()
    result = invoke("tail", "--dsn", seeded, "-n", "0", "--json", "-f", "--stop-after", "1.5")
    writer.join()
    assert result.exit_code == 0, result.output
    assert [(e["stream_id"], e["position"]) for e in json_lines(result.stdout)] == [
        ("acc-7", 10),
        ("acc-7", 11),
    ]


def test_projections_status_and_rebuild_keep_checkpoints_in_the_file(seeded: str) -> None:
    status = json_lines(
        invoke("projections", "status", "--app", PG_APP, "--dsn", seeded, "--json").stdout
    )
    assert [(s["name"], s["position"], s["head"], s["lag_events"]) for s in status] == [
        ("counts", 0, 9, 9)
    ]
    result = invoke("projections", "rebuild", "counts", "--app", PG_APP, "--dsn", seeded, "--yes")
    assert result.exit_code == 0, result.output
    assert "rebuilt counts: 9 events" in result.stdout
    # A new process (here: a new invocation and store) finds the checkpoint in the file.
    status = json_lines(
        invoke("projections", "status", "--app", PG_APP, "--dsn", seeded, "--json").stdout
    )
    assert [(s["position"], s["lag_events"]) for s in status] == [(9, 0)]


def test_migrate_creates_the_file_and_reads_refuse_a_missing_one(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/new.db"
    missing = invoke("streams", "--dsn", dsn)
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    assert not (tmp_path / "new.db").exists()
    made = invoke("migrate", "--dsn", dsn)
    assert made.exit_code == 0 and "tables created" in made.stdout
    empty = invoke("streams", "--dsn", dsn, "--json")
    assert empty.exit_code == 0 and empty.stdout == ""


@pytest.mark.parametrize("dsn", ["sqlite:///:memory:", "sqlite:///", "sqlite://host/x.db"])
def test_bad_sqlite_dsns_are_usage_errors(dsn: str) -> None:
    result = invoke("streams", "--dsn", dsn)
    assert result.exit_code == 2, result.output
    assert "--dsn" in result.stderr


def test_demo_and_bench_run_on_a_file(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/demo.db"
    demo = invoke("demo", "--dsn", dsn, "--accounts", "5", "--commands", "50")
    assert demo.exit_code == 0, demo.output
    with SqliteStore(tmp_path / "demo.db") as store:
        assert store.head() > 50
    bench = invoke("bench", "--dsn", dsn, "--quick", "--json", "--only", "sqlite.command.cold")
    assert bench.exit_code == 0, bench.output
    assert "sqlite.command.cold" in bench.stdout
