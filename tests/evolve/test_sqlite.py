"""Versioned events on SQLite: reads show the logical type, its version and the stored
key; folds (full and tail) upcast old versions and old names; a payload that cannot be
decoded names its stream, version and position, as on memory and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eventcore import Command, NewEvent, StreamId, execute_sync, stream
from eventcore.cli import cli
from eventcore.errors import EventDecodeError
from eventcore.sqlite import SqliteStore
from tests.evolve import checkapp
from tests.folds import fold_streams_sync, fold_tail_sync


def registry() -> Any:
    return checkapp.pg.registry


class AddOne(Command[int, Any]):
    cart: StreamId = stream()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + event.qty

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.cart, registry().class_of("chk.ProductAdded")("z", state))]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "events.db", registry=registry()) as sqlite:
        old = checkapp.OLD
        sqlite.append([NewEvent("cart-1", *old.encode(checkapp.ItemAddedV1("a", 2)))])
        yield sqlite


def test_reads_and_folds_upcast(store: SqliteStore) -> None:
    cls = registry().class_of("chk.ProductAdded")
    [rec] = store.read_stream("cart-1")
    assert rec.data == cls("a", 2)
    assert (rec.event_type, rec.event_version, rec.stored_type) == (
        "chk.ProductAdded",
        1,
        "chk.ItemAdded",
    )
    execute_sync(store, AddOne(cart="cart-1"))  # folds the v1 event: appends qty 2
    execute_sync(store, AddOne(cart="cart-1"))  # 2 + 2
    events = store.read_stream("cart-1")
    assert [e.stored_type for e in events] == ["chk.ItemAdded", *["chk.ProductAdded@v2"] * 2]
    assert [(e.event_type, e.event_version) for e in events][-1] == ("chk.ProductAdded", 2)
    assert [e.data for e in events] == [cls("a", 2), cls("z", 2), cls("z", 4)]
    decoders = registry().decoders
    state, versions = fold_streams_sync(store, ["cart-1"], 0, add_qty, decoders)
    assert (state, versions) == (8, [3])
    assert fold_tail_sync(store, ["cart-1"], [1], 0, 2, add_qty, decoders) == (8, [3])


def add_qty(state: int, event: Any, stream_id: str) -> int:
    return state + event.qty


def test_a_fold_that_cannot_decode_names_the_stream_version_and_position(
    store: SqliteStore,
) -> None:
    bad = store.append([NewEvent("cart-1", "chk.ProductAdded@v2", b"\xc1")])
    where = (bad.stream_versions["cart-1"], bad.positions[0])
    decoders = registry().decoders
    with pytest.raises(EventDecodeError) as folded:
        execute_sync(store, AddOne(cart="cart-1"))
    with pytest.raises(EventDecodeError) as tail:
        fold_tail_sync(store, ["cart-1"], [1], 0, 2, add_qty, decoders)
    with pytest.raises(EventDecodeError) as read:
        _ = store.read_stream("cart-1")[-1].data
    for err in (folded.value, tail.value, read.value):
        assert (err.stream_id, err.stored_version) == ("cart-1", 2)
        assert (err.version, err.position) == where
    assert f"version {where[0]}, position {where[1]}" in str(folded.value)


def test_check_against_sqlite(store: SqliteStore) -> None:
    target = ["--dsn", f"sqlite:///{store.path}", "--app", "tests.evolve.checkapp:pg"]
    ok = CliRunner().invoke(cli, ["check", *target, "--json"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    [row] = [json.loads(line) for line in ok.stdout.splitlines()]
    assert (row["stored_type"], row["count"], row["decodes"]) == ("chk.ItemAdded", 1, True)
