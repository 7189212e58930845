"""A small customer domain with personal data, registered into a fresh registry per test."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgspec

from eventcore import Command, EventRegistry, StreamId, require, stream
from eventcore.registry import Codec
from eventcore.shredding import KeyStore, Personal, ShreddingCodec, Subject, subject


@dataclasses.dataclass(frozen=True)
class Registered:
    """A customer signed up: name, email and age are personal."""

    customer: Annotated[str, Subject]
    name: Annotated[str, Personal]
    email: Annotated[str, Personal(placeholder="forgotten@invalid")]
    age: Annotated[int, Personal]
    plan: str = "basic"


class Moved(msgspec.Struct, frozen=True):
    """A msgspec Struct event whose subject comes from a function; Optional placeholder."""

    who: str
    address: Annotated[str | None, Personal]
    tags: Annotated[list[str], Personal] = []


subject(lambda e: e.who)(Moved)


@dataclasses.dataclass(frozen=True)
class Ordered:
    """No personal field: the inner codec's business alone."""

    amount: int


TYPES: dict[str, type] = {
    "crm.Registered": Registered,
    "crm.Moved": Moved,
    "crm.Ordered": Ordered,
}


def make_registry(keys: KeyStore, inner: Codec | None = None) -> EventRegistry:
    """A registry with the shredding codec over ``keys`` and the domain's types."""
    registry = EventRegistry(ShreddingCodec(keys, inner))
    for name, cls in TYPES.items():
        registry.register(name, cls)
    return registry


@dataclasses.dataclass(frozen=True)
class Customer:
    """A command's view of a customer: registered, orders, and the name it was given."""

    registered: bool = False
    name: str = ""
    orders: int = 0


def fold_customer(state: Customer, event: Any) -> Customer:
    """One customer event folded into ``state`` (after a forget: the placeholders)."""
    match event:
        case Registered(name=name):
            return dataclasses.replace(state, registered=True, name=name)
        case Ordered():
            return dataclasses.replace(state, orders=state.orders + 1)
    return state


class PlaceOrder(Command[Customer, Any]):
    """Folds the customer stream (personal events included) and appends an order."""

    customer: StreamId = stream()
    amount: int

    def initial_state(self) -> Customer:
        return Customer()

    def apply(self, state: Customer, event: Any, stream_id: str) -> Customer:
        return fold_customer(state, event)

    def handle(self, state: Customer) -> list[tuple[str, Any]]:
        require(state.registered, "no such customer")
        return [(self.customer, Ordered(self.amount))]


class Register(Command[Customer, Any]):
    """Writes a Registered event (personal data) for a new customer."""

    customer: StreamId = stream()
    name: str
    email: str
    age: int

    def initial_state(self) -> Customer:
        return Customer()

    def apply(self, state: Customer, event: Any, stream_id: str) -> Customer:
        return fold_customer(state, event)

    def handle(self, state: Customer) -> list[tuple[str, Any]]:
        require(not state.registered, "already registered")
        return [(self.customer, Registered(str(self.customer), self.name, self.email, self.age))]


class Relocate(Command[Customer, Any]):
    """Writes a Moved event (personal data) for a registered customer."""

    customer: StreamId = stream()
    address: str

    def initial_state(self) -> Customer:
        return Customer()

    def apply(self, state: Customer, event: Any, stream_id: str) -> Customer:
        return fold_customer(state, event)

    def handle(self, state: Customer) -> list[tuple[str, Any]]:
        require(state.registered, "no such customer")
        return [(self.customer, Moved(str(self.customer), self.address))]
