"""Forgetting on the in-memory store: reads, command folds, projections and the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from eventcore import MemoryStore, execute_sync
from eventcore.cli import cli
from eventcore.projection import ProjectionRunner
from eventcore.shredding import MemoryKeyStore, SubjectForgotten
from tests.shred import cli_app
from tests.shred.domain import (
    Moved,
    Ordered,
    PlaceOrder,
    Register,
    Registered,
    Relocate,
    make_registry,
)


def registered_store() -> tuple[MemoryStore, MemoryKeyStore]:
    keys = MemoryKeyStore()
    store = MemoryStore(registry=make_registry(keys))
    execute_sync(store, Register(customer="c-1", name="Ann", email="ann@example.com", age=41))
    execute_sync(store, Register(customer="c-2", name="Bob", email="bob@example.com", age=30))
    execute_sync(store, PlaceOrder(customer="c-1", amount=5))
    return store, keys


class Names:
    """A read model of customers' names."""

    name = "names"
    event_types = ("crm.Registered",)

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def apply(self, event: Any) -> None:
        self.names[event.stream_id] = event.data.name

    def reset(self) -> None:
        self.names.clear()


def test_reads_show_placeholders_once_forgotten() -> None:
    store, keys = registered_store()
    assert store.read_stream("c-1")[0].data.name == "Ann"
    keys.forget("c-1")
    assert [e.data for e in store.read_stream("c-1")] == [
        Registered("c-1", "", "forgotten@invalid", 0),
        Ordered(5),
    ]
    assert [e.data.name for e in store.read_all() if e.event_type == "crm.Registered"] == [
        "",
        "Bob",
    ]


def test_commands_fold_forgotten_streams_and_refuse_new_personal_data() -> None:
    store, keys = registered_store()
    execute_sync(store, Relocate(customer="c-1", address="1 High Street"))
    keys.forget("c-1")
    # the fold (the Rust loop) decodes the placeholders: the command still works
    result = execute_sync(store, PlaceOrder(customer="c-1", amount=7))
    assert result.events[0].version == 4
    # a new event with personal data for the forgotten subject: refused, nothing written
    head = store.head()
    with pytest.raises(SubjectForgotten):
        execute_sync(store, Relocate(customer="c-1", address="2 Low Road"))
    assert store.head() == head
    # another subject is not concerned
    execute_sync(store, Relocate(customer="c-2", address="3 Mid Lane"))
    assert store.read_stream("c-2")[-1].data == Moved("c-2", "3 Mid Lane")


async def test_projections_rebuild_without_the_forgotten_data() -> None:
    store, keys = registered_store()
    names = Names()
    runner = ProjectionRunner(store, names)
    await runner.run_until_caught_up()
    assert names.names == {"c-1": "Ann", "c-2": "Bob"}
    keys.forget("c-1")
    await runner.rebuild("names")
    assert names.names == {"c-1": "", "c-2": "Bob"}


def cli_read(stream: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        cli, ["read", stream, "--app", "tests.shred.cli_app:app", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_the_cli_reads_through_the_apps_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    app = cli_app.app
    execute_sync(app.store, Register(customer="cli-1", name="Cleo", email="c@x.y", age=33))
    assert cli_read("cli-1")[0]["data"] == {
        "customer": "cli-1",
        "name": "Cleo",
        "email": "c@x.y",
        "age": 33,
        "plan": "basic",
    }
    app.keys.forget("cli-1")
    assert cli_read("cli-1")[0]["data"] == {
        "customer": "cli-1",
        "name": "",
        "email": "forgotten@invalid",
        "age": 0,
        "plan": "basic",
    }
