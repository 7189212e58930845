"""Upcasting in command folds: the Rust fold loop decodes old versions through the same
decoders, and a decode error there names the stream, version and position."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from eventcore import Command, MemoryStore, NewEvent, StreamId, execute, execute_sync, stream
from eventcore._core import fold
from eventcore.errors import EventDecodeError, SerializationError
from eventcore.registry import EventRegistry, event, upcaster
from tests.folds import fold_streams_sync

OLD = EventRegistry()
NEW = EventRegistry()


@event("fold.Deposited", registry=OLD)
@dataclass(frozen=True)
class DepositedV1:
    amount: int  # whole euros


@event("fold.Deposited", version=2, registry=NEW)
@dataclass(frozen=True)
class Deposited:
    cents: int


@upcaster("fold.Deposited", from_version=1, registry=NEW)
def euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["amount"] * 100}


class Deposit(Command[int, Deposited]):
    account: StreamId = stream()
    cents: int

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Deposited, stream_id: str) -> int:
        return state + event.cents

    def handle(self, state: int) -> list[tuple[str, Deposited]]:
        return [(self.account, Deposited(self.cents))] if state < 10_000 else []


def old_and_new_store() -> MemoryStore:
    store = MemoryStore(registry=NEW)
    store.append([NewEvent("acc-1", *OLD.encode(DepositedV1(5)))])
    store.append([NewEvent("acc-1", *NEW.encode(Deposited(20)))])
    return store


def test_a_command_folds_old_versions_through_the_upcaster() -> None:
    store = old_and_new_store()
    state, versions = fold_streams_sync(
        store, ["acc-1"], 0, lambda s, e, sid: s + e.cents, NEW.decoders
    )
    assert (state, versions) == (520, [2])
    result = execute_sync(store, Deposit(account="acc-1", cents=1))
    assert [(w.stream_id, w.version) for w in result.events] == [("acc-1", 3)]
    assert [e.data for e in store.read_stream("acc-1")] == [
        Deposited(500),
        Deposited(20),
        Deposited(1),
    ]


def test_the_async_face_folds_the_same() -> None:
    store = old_and_new_store()
    result = asyncio.run(execute(store.aio, Deposit(account="acc-1", cents=1)))
    assert result.events[0].version == 3


def test_a_fold_that_cannot_decode_names_stream_version_and_position() -> None:
    store = MemoryStore(registry=NEW)
    store.append([NewEvent("acc-0", *NEW.encode(Deposited(1)))])
    store.append([NewEvent("acc-1", *NEW.encode(Deposited(1)))])
    store.append([NewEvent("acc-1", "fold.Deposited", b"\xc1")])  # not msgpack
    store.append([NewEvent("acc-1", "fold.Unknown", b"")])
    with pytest.raises(EventDecodeError) as info:
        execute_sync(store, Deposit(account="acc-1", cents=1))
    err = info.value
    assert isinstance(err, SerializationError)
    assert (err.stream_id, err.version, err.position) == ("acc-1", 2, 3)
    assert (err.stored_type, err.stored_version) == ("fold.Deposited", 1)
    assert "cannot decode event at stream 'acc-1', version 2, position 3" in str(err)
    assert store.stream_version("acc-1") == 3  # nothing written
    assert err.__cause__ is not None


def test_a_fold_of_an_unregistered_type_names_the_event() -> None:
    store = MemoryStore(registry=NEW)
    store.append([NewEvent("acc-1", *NEW.encode(Deposited(1)))])
    store.append([NewEvent("acc-1", "fold.Unknown", b"")])
    with pytest.raises(EventDecodeError, match="no event type registered") as info:
        execute_sync(store, Deposit(account="acc-1", cents=1))
    assert (info.value.stream_id, info.value.version, info.value.position) == ("acc-1", 2, 2)


def test_the_fold_function_takes_versions_and_positions_when_given() -> None:
    def add(state: int, event: Deposited, stream_id: str) -> int:
        return state + event.cents

    old = OLD.encode(DepositedV1(1))[1]
    rows = [("a", "fold.Deposited", old, 1, 10), ("a", "fold.Deposited@v2", b"\x00", 2, 11)]
    with pytest.raises(EventDecodeError) as info:
        fold(0, add, NEW.decoders, rows)
    assert (info.value.stream_id, info.value.version, info.value.position) == ("a", 2, 11)
    assert fold(0, add, NEW.decoders, [r[:3] for r in rows[:1]]) == 100
    with pytest.raises(EventDecodeError) as info:
        fold(0, add, NEW.decoders, [r[:3] for r in rows])
    assert (info.value.stream_id, info.value.version, info.value.position) == ("a", None, None)
    with pytest.raises(TypeError, match="version, position"):
        fold(0, add, NEW.decoders, [("a", "fold.Deposited", old, 1)])


def test_an_upcast_failure_in_a_fold_keeps_its_reason_and_gains_the_place() -> None:
    reg = EventRegistry()

    @event("fold.Deposited", version=2, registry=reg)
    @dataclass(frozen=True)
    class Strict:
        cents: int

    @upcaster("fold.Deposited", from_version=1, registry=reg)
    def broken(data: dict[str, Any]) -> Any:
        return "nope"

    store = MemoryStore(registry=reg)
    store.append([NewEvent("acc-1", *OLD.encode(DepositedV1(5)))])

    with pytest.raises(EventDecodeError, match="returned str") as info:
        fold_streams_sync(store, ["acc-1"], 0, lambda s, e, i: s, reg.decoders)
    assert (info.value.stream_id, info.value.version, info.value.position) == ("acc-1", 1, 1)
