"""Versioned events on PostgreSQL: reads, folds, projection filters and ``eventcore check``
decode old versions and old names through the same registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from eventcore import Command, NewEvent, StreamId, execute, stream
from eventcore.cli import cli
from eventcore.errors import EventDecodeError
from eventcore.postgres import PostgresStore
from eventcore.projection import MemoryCheckpointStore, ProjectionRunner
from tests.evolve import checkapp
from tests.pgserver import drop_schema, new_schema_name

pytestmark = pytest.mark.postgres


class AddOne(Command[int, Any]):
    cart: StreamId = stream()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + event.qty

    def handle(self, state: int) -> list[tuple[str, Any]]:
        cls = self_registry().class_of("chk.ProductAdded")
        return [(self.cart, cls("z", 1))]


def self_registry() -> Any:
    return checkapp.pg.registry


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    schema = new_schema_name()
    pg = PostgresStore(postgres_dsn, schema=schema, registry=self_registry(), max_size=2)
    await pg.migrate()
    old = checkapp.OLD
    await pg.append([NewEvent("cart-1", *old.encode(checkapp.ItemAddedV1("a", 2)))])
    try:
        yield pg
    finally:
        await pg.close()
        await drop_schema(postgres_dsn, schema)


async def test_reads_folds_and_projections_upcast(store: PostgresStore) -> None:
    cls = self_registry().class_of("chk.ProductAdded")
    [rec] = await store.read_stream("cart-1")
    assert rec.data == cls("a", 2)
    assert (rec.event_type, rec.event_version, rec.stored_type) == (
        "chk.ProductAdded",
        1,
        "chk.ItemAdded",
    )
    result = await execute(store, AddOne(cart="cart-1"))
    assert result.events[0].version == 2
    events = await store.read_stream("cart-1")
    assert [e.stored_type for e in events] == ["chk.ItemAdded", "chk.ProductAdded@v2"]
    assert [e.data for e in events] == [cls("a", 2), cls("z", 1)]

    class Seen:
        name = "seen"
        event_types = ("chk.ProductAdded",)

        def __init__(self) -> None:
            self.data: list[Any] = []

        def apply(self, e: Any) -> None:
            self.data.append(e.data)

    seen = Seen()
    runner = ProjectionRunner(store, seen, checkpoints=MemoryCheckpointStore(), page_size=1)
    await runner.run_until_caught_up()
    assert seen.data == [cls("a", 2), cls("z", 1)]


async def test_a_fold_that_cannot_decode_names_the_stream(store: PostgresStore) -> None:
    await store.append([NewEvent("cart-1", "chk.ProductAdded@v2", b"\xc1")])
    with pytest.raises(EventDecodeError) as info:
        await execute(store, AddOne(cart="cart-1"))
    assert info.value.stream_id == "cart-1"
    assert info.value.stored_version == 2
    [_, bad] = await store.read_stream("cart-1")
    assert (info.value.version, info.value.position) == (2, bad.position)  # the full fold's
    with pytest.raises(EventDecodeError) as read:
        _ = bad.data
    assert (read.value.stream_id, read.value.version, read.value.position) == (
        "cart-1",
        2,
        bad.position,
    )


def test_check_against_postgres(store: PostgresStore, postgres_dsn: str) -> None:
    target = ["--dsn", postgres_dsn, "--schema", store.schema, "--app", "tests.evolve.checkapp:pg"]
    ok = CliRunner().invoke(cli, ["check", *target, "--json"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    [row] = [json.loads(line) for line in ok.stdout.splitlines()]
    assert (row["stored_type"], row["count"], row["decodes"]) == ("chk.ItemAdded", 1, True)


async def test_a_transactional_projection_dead_letters_an_undecodable_event(
    store: PostgresStore,
) -> None:
    from eventcore.postgres import PostgresCheckpointStore
    from eventcore.projection import FailureStrategy, ProjectionError

    await store.append([NewEvent("cart-1", "chk.ProductAdded@v2", b"\xc1")])
    cls = self_registry().class_of("chk.ProductAdded")
    await store.append([NewEvent("cart-1", *self_registry().encode(cls("b", 1)))])

    class InTx:
        name = "in_tx"
        on_error = FailureStrategy.stop(undecodable="skip")

        def __init__(self) -> None:
            self.data: list[Any] = []

        async def apply_in_transaction(self, events: list[Any], connection: Any) -> None:
            for e in events:
                self.data.append(e.data)

    proj = InTx()
    checkpoints = PostgresCheckpointStore(store)
    await ProjectionRunner(store, proj, checkpoints=checkpoints).run_until_caught_up()
    assert proj.data[-2:] == [cls("a", 2), cls("b", 1)]
    [letter] = await checkpoints.dead_letters("in_tx")
    assert letter.event_type == "chk.ProductAdded" and "EventDecodeError" in letter.error

    class Strict(InTx):
        name = "strict"
        on_error = FailureStrategy(then="skip", undecodable="stop")

    with pytest.raises(ProjectionError):
        await ProjectionRunner(store, Strict(), checkpoints=checkpoints).run_until_caught_up()
