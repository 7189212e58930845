"""The eventcore command line against the real PostgreSQL test server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventcore.cli import cli
from eventcore.postgres import PostgresStore
from tests.pgserver import drop_schema, new_schema_name

pytestmark = pytest.mark.postgres

PG_APP = "tests.observability.cliapp:pg_app"


@pytest.fixture
def target(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``--dsn DSN --schema <fresh>``; the schema is dropped afterwards."""
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    monkeypatch.delenv("EVENTCORE_APP", raising=False)
    schema = new_schema_name()
    yield ["--dsn", postgres_dsn, "--schema", schema]
    asyncio.run(drop_schema(postgres_dsn, schema))


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_migrate_demo_streams_read_tail(target: list[str]) -> None:
    migrated = invoke("migrate", *target)
    assert migrated.exit_code == 0, migrated.output
    assert f"schema version {PostgresStore.latest_schema_version()}" in migrated.stdout
    assert invoke("migrate", *target).exit_code == 0  # idempotent

    demo = invoke("demo", *target, "--accounts", "3", "--commands", "30", "--show", "3")
    assert demo.exit_code == 0, demo.output
    assert "balances consistent: yes" in demo.stdout

    rows = json_lines(invoke("streams", *target, "--json").stdout)
    assert len(rows) == 3 and all(r["stream_id"].startswith("demo-") for r in rows)
    assert all(r["version"] >= 2 for r in rows)
    table = invoke("streams", *target, "--prefix", rows[0]["stream_id"])
    assert table.exit_code == 0 and "1 stream" in table.stdout

    stream = rows[0]["stream_id"]
    events = json_lines(invoke("read", stream, *target, "--json").stdout)
    assert len(events) == rows[0]["version"]
    # the demo's types are not in the default registry: decoded generically
    assert events[0]["event_type"] == "demo.bank.AccountOpened"
    assert events[0]["data"] == {"owner": "owner 0"}
    assert invoke("read", stream, *target).exit_code == 0
    missing = invoke("read", "no-such-stream", *target)
    assert missing.exit_code == 1 and "not found" in missing.stderr

    last = json_lines(invoke("tail", *target, "-n", "4", "--json").stdout)
    assert len(last) == 4
    positions = [e["position"] for e in last]
    assert positions == sorted(positions)
    everything = json_lines(invoke("tail", *target, "--after", "0", "-n", "0", "--json").stdout)
    assert everything[-4:] == last
    follow = invoke("tail", *target, "-n", "1", "--json", "-f", "--stop-after", "0.5")
    assert follow.exit_code == 0 and len(json_lines(follow.stdout)) == 1


def test_env_dsn_and_unmigrated_schema(target: list[str]) -> None:
    dsn, schema = target[1], target[3]
    result = invoke("streams", "--schema", schema, env={"EVENTCORE_DSN": dsn})
    assert result.exit_code == 1  # reachable, but the schema has no tables yet
    assert "migrate" in result.stderr
    assert invoke("migrate", env={"EVENTCORE_DSN": dsn, "EVENTCORE_SCHEMA": schema}).exit_code == 0
    result = invoke("streams", "--schema", schema, "--json", env={"EVENTCORE_DSN": dsn})
    assert result.exit_code == 0 and result.stdout == ""


def test_projections_on_postgres(target: list[str]) -> None:
    assert invoke("migrate", *target).exit_code == 0
    assert invoke("demo", *target, "--accounts", "2", "--commands", "10").exit_code == 0
    status = json_lines(invoke("projections", "status", *target, "--app", PG_APP, "--json").stdout)
    (counts,) = status
    assert counts["name"] == "counts" and counts["position"] == 0
    assert counts["lag_events"] > 0
    rebuilt = invoke("projections", "rebuild", "counts", *target, "--app", PG_APP, "--yes")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"rebuilt counts: {counts['lag_events']} events" in rebuilt.stdout
    (after,) = json_lines(
        invoke("projections", "status", *target, "--app", PG_APP, "--json").stdout
    )
    assert after["lag_events"] == 0 and after["position"] == after["head"]


def test_bench_quick_on_postgres(target: list[str]) -> None:
    result = invoke("bench", *target, "--quick", "--json", "--only", "command.cold")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc["workloads"]) == ["postgres.command.cold"]
    assert doc["workloads"]["postgres.command.cold"]["value"] > 0
