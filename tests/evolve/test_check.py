"""``eventcore check``: every stored (type, version) with its count and whether it decodes;
exit 1 when any does not."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from eventcore.cli import cli


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    monkeypatch.delenv("EVENTCORE_APP", raising=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["check", *args], catch_exceptions=False)


def test_every_stored_version_decodes() -> None:
    result = invoke("--app", "tests.evolve.checkapp:good", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [
        (r["stored_type"], r["event_type"], r["event_version"], r["count"], r["decodes"])
        for r in rows
    ] == [
        ("chk.ItemAdded", "chk.ProductAdded", 1, 3, True),
        ("chk.ProductAdded@v2", "chk.ProductAdded", 2, 2, True),
    ]
    table = invoke("--app", "tests.evolve.checkapp:good")
    assert table.exit_code == 0
    assert "5 events of 2 stored types; all decode" in table.stdout


def test_a_version_that_does_not_decode_fails_the_check() -> None:
    result = invoke("--app", "tests.evolve.checkapp:bad", "--json")
    assert result.exit_code == 1
    rows = {r["stored_type"]: r for r in map(json.loads, result.stdout.splitlines())}
    broken = rows["chk.ProductAdded@v2"]
    assert (broken["count"], broken["checked"], broken["failed"]) == (3, 3, 1)
    assert broken["failing_positions"] == [6]
    assert "stream 'cart-9', version 1, position 6" in broken["error"]
    assert "qty" in broken["error"]
    assert rows["chk.ItemAdded"]["decodes"] is True
    table = invoke("--app", "tests.evolve.checkapp:bad")
    assert table.exit_code == 1
    assert "1 do not decode" in table.stdout
    assert "@upcaster('chk.ProductAdded', from_version=2)" in table.stdout.replace("\n", "")


def test_sample_decodes_only_the_first_events_of_each_key() -> None:
    result = invoke("--app", "tests.evolve.checkapp:bad", "--json", "--sample", "2")
    assert result.exit_code == 0  # the broken event is the third of its key
    rows = {r["stored_type"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert (rows["chk.ProductAdded@v2"]["count"], rows["chk.ProductAdded@v2"]["checked"]) == (3, 2)


def test_an_empty_store_passes() -> None:
    result = invoke("--dsn", "memory://")
    assert result.exit_code == 0
    assert "0 events of 0 stored types; all decode" in result.stdout


def test_read_shows_the_registered_name_the_version_and_the_upcast_data() -> None:
    result = CliRunner().invoke(
        cli, ["read", "cart-1", "--app", "tests.evolve.checkapp:good", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["event_type"], r["event_version"], r["data"]) for r in rows] == [
        ("chk.ProductAdded", 1, {"sku": "s1", "qty": 1}),
        ("chk.ProductAdded", 2, {"sku": "x", "qty": 1}),
    ]
    table = CliRunner().invoke(cli, ["read", "cart-1", "--app", "tests.evolve.checkapp:good"])
    assert "(v2)" in table.stdout  # the table wraps the type column
