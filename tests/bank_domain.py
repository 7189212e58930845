"""The core tests' bank: the shipped example domain, plus what only the tests need.

The accounts (``AccountOpened``/``Deposited``/``Withdrawn``, ``OpenAccount``, ``Deposit``,
``Withdraw`` and the atomic two-stream ``Transfer``) are ``eventcore.examples.bank``,
re-exported here. The example keeps its events in a registry of its own; the tests' stores
use the default registry (``MemoryStore()``, ``Scenario()``, ``FaultyStore()``), so this
module also registers them there, under the example's names (``demo.bank.*``).

On top of it, what exists only to exercise special behaviour (test-only event type names
use the ``tbank.`` prefix): ``AccountNo`` (a pattern-checked value type), ``Noted`` (an
event that can hold anything, to provoke encoding errors), ``EmitTo`` (emits whatever it is
told, to probe the executor's checks) and ``PlaceOrder`` (discovers the streams it needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from eventcore import (
    Command,
    MemoryStore,
    NewEvent,
    StreamId,
    Value,
    default_registry,
    event,
    require,
    stream,
)
from eventcore.examples import bank
from eventcore.examples.bank import (
    Account,
    AccountEvent,
    AccountOpened,
    Deposit,
    Deposited,
    Money,
    OpenAccount,
    Transfer,
    Withdraw,
    Withdrawn,
    fold_account,
)

__all__ = [
    "Account",
    "AccountEvent",
    "AccountNo",
    "AccountOpened",
    "Catalogued",
    "Deposit",
    "Deposited",
    "EmitTo",
    "Money",
    "Noted",
    "OpenAccount",
    "OrderState",
    "PlaceOrder",
    "Reserved",
    "Stocked",
    "Transfer",
    "Withdraw",
    "Withdrawn",
    "balance",
    "fold_account",
    "log_snapshot",
    "new",
    "open_with",
]

for _cls in (AccountOpened, Deposited, Withdrawn):
    default_registry.register(bank.registry.name_of(_cls), _cls)


class AccountNo(Value, str, pattern=r"acc-[0-9]+"):
    """An account number such as ``acc-42``."""


@event("tbank.Noted")
class Noted(msgspec.Struct, frozen=True):
    """A msgspec event whose ``note`` may hold anything (to provoke encoding errors)."""

    note: Any


class EmitTo(Command[list[tuple[str, Any]], Any]):
    """Declares ``declared`` and emits ``emit`` as is: to probe the executor's checks."""

    declared: tuple[StreamId, ...] = stream()
    emit: tuple[tuple[str, Any], ...] = ()

    def initial_state(self) -> list[tuple[str, Any]]:
        return []

    def apply(self, state: list[tuple[str, Any]], event: Any, stream_id: str) -> Any:
        state.append((stream_id, event))
        return state

    def handle(self, state: list[tuple[str, Any]]) -> Sequence[tuple[str, Any]]:
        return list(self.emit)


@event("tbank.Catalogued")
@dataclass(frozen=True)
class Catalogued:
    """An order stream event naming product streams the order depends on."""

    products: tuple[str, ...]


@event("tbank.Stocked")
@dataclass(frozen=True)
class Stocked:
    quantity: int


@event("tbank.Reserved")
@dataclass(frozen=True)
class Reserved:
    quantity: int


@dataclass
class OrderState:
    products: list[str]
    stock: dict[str, int]


class PlaceOrder(Command[OrderState, Any]):
    """Reads an order, discovers its product streams, reserves one of each product."""

    order: StreamId = stream()

    def initial_state(self) -> OrderState:
        return OrderState(products=[], stock={})

    def apply(self, state: OrderState, event: Any, stream_id: str) -> OrderState:
        if isinstance(event, Catalogued):
            state.products.extend(event.products)
        elif isinstance(event, Stocked):
            state.stock[stream_id] = state.stock.get(stream_id, 0) + event.quantity
        elif isinstance(event, Reserved):
            state.stock[stream_id] = state.stock.get(stream_id, 0) - event.quantity
        return state

    def discover(self, state: OrderState) -> Iterable[str]:
        return state.products

    def handle(self, state: OrderState) -> list[tuple[str, Any]]:
        for product in state.products:
            require(state.stock.get(product, 0) >= 1, f"{product} is out of stock")
        return [(p, Reserved(1)) for p in state.products]


def new(stream_id: str, ev: Any, event_id: Any = None) -> NewEvent:
    """An encoded NewEvent for ``ev`` (default registry)."""
    return NewEvent(stream_id, *default_registry.encode(ev), event_id)


def open_with(store: MemoryStore, account: str, amount: int = 0) -> None:
    """Open ``account`` and deposit ``amount`` (no version check)."""
    batch = [new(account, AccountOpened(account))]
    if amount:
        batch.append(new(account, Deposited(amount)))
    store.append(batch)


def balance(store: MemoryStore, account: str) -> int:
    """The balance of ``account`` as stored."""
    state = Account()
    for recorded in store.read_stream(account):
        state = fold_account(state, recorded.data)
    return state.balance


def log_snapshot(store: MemoryStore) -> list[tuple[Any, ...]]:
    """Everything observable about the global log, for before/after comparisons."""
    return [
        (e.position, e.event_id, e.stream_id, e.version, e.event_type, e.payload)
        for e in store.read_all()
    ]
