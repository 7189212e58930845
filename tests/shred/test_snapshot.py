"""A command state annotated like an event: its durable snapshots are sealed too."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    Command,
    MemoryStore,
    StreamId,
    execute_sync,
    require,
    stream,
)
from eventcore.shredding import MemoryKeyStore, Personal, Subject
from tests.shred.domain import Ordered, Register, Registered, make_registry
from tests.test_snapshot_exec import Spy, restart


@dataclasses.dataclass(frozen=True)
class Profile:
    """A folded state that keeps a personal field: sealed whenever it is snapshotted."""

    customer: Annotated[str, Subject] = "?"
    name: Annotated[str, Personal] = ""
    orders: int = 0


class OrderAsNamed(Command[Profile, Any]):
    """Needs the customer's name in its state (refuses once it is forgotten)."""

    customer: StreamId = stream()

    def initial_state(self) -> Profile:
        return Profile()

    def apply(self, state: Profile, event: Any, stream_id: str) -> Profile:
        match event:
            case Registered(customer=customer, name=name):
                return Profile(customer, name, state.orders)
            case Ordered():
                return dataclasses.replace(state, orders=state.orders + 1)
        return state

    def handle(self, state: Profile) -> list[tuple[str, Any]]:
        require(state.name != "", "the customer's name is forgotten")
        return [(self.customer, Ordered(1))]


def test_snapshots_of_an_annotated_state_are_sealed_and_shredded() -> None:
    keys = MemoryKeyStore()
    spy = Spy()
    store = MemoryStore(registry=make_registry(keys), snapshots=spy, snapshot_every=3)
    execute_sync(store, Register(customer="c-1", name="Ann", email="a@x.y", age=4))
    for _ in range(4):
        execute_sync(store, OrderAsNamed(customer="c-1"))
    assert spy.saves, "no snapshot was taken"
    assert all(b"Ann" not in s.state for s in spy.saves)
    keys.forget("c-1")
    restart(store)  # a new process: no cached state, the snapshot is read
    with pytest.raises(BusinessRuleViolation, match="forgotten"):
        execute_sync(store, OrderAsNamed(customer="c-1"))
    assert spy.loads[-1] is not None  # it came from the snapshot, with the placeholder
