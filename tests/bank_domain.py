"""A small bank domain shared by the core library tests (events, commands, helpers).

Event type names use the ``tbank.`` prefix so they never collide with the example app or
the contract suite in the process-wide default registry.
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


class Money(Value, int, gt=0):
    """An amount in cents; always positive."""


class AccountNo(Value, str, pattern=r"acc-[0-9]+"):
    """An account number such as ``acc-42``."""


@event("tbank.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@event("tbank.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@event("tbank.Withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: int


@event("tbank.Noted")
class Noted(msgspec.Struct, frozen=True):
    """A msgspec event whose ``note`` may hold anything (to provoke encoding errors)."""

    note: Any


AccountEvent = Opened | Deposited | Withdrawn


@dataclass(frozen=True)
class Account:
    opened: bool = False
    balance: int = 0


def fold_account(state: Account, ev: Any) -> Account:
    if isinstance(ev, Opened):
        return Account(opened=True, balance=state.balance)
    if isinstance(ev, Deposited):
        return Account(opened=state.opened, balance=state.balance + ev.amount)
    if isinstance(ev, Withdrawn):
        return Account(opened=state.opened, balance=state.balance - ev.amount)
    return state


class SingleAccount(Command[Account, AccountEvent]):
    account: StreamId = stream()

    def initial_state(self) -> Account:
        return Account()

    def apply(self, state: Account, event: AccountEvent, stream_id: str) -> Account:
        return fold_account(state, event)


class OpenAccount(SingleAccount):
    owner: str

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        require(not state.opened, f"account {self.account} is already open")
        return [(self.account, Opened(self.owner))]


class Deposit(SingleAccount):
    amount: Money

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        require(state.opened, f"account {self.account} is not open")
        return [(self.account, Deposited(self.amount))]


class Withdraw(SingleAccount):
    amount: Money

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        require(state.opened, f"account {self.account} is not open")
        require(state.balance >= self.amount, f"insufficient funds in {self.account}")
        return [(self.account, Withdrawn(self.amount))]


class Transfer(Command[dict[str, Account], AccountEvent]):
    """Move money between two accounts in one atomic write to both streams."""

    source: StreamId = stream()
    target: StreamId = stream()
    amount: Money

    def initial_state(self) -> dict[str, Account]:
        return {self.source: Account(), self.target: Account()}

    def apply(
        self, state: dict[str, Account], event: AccountEvent, stream_id: str
    ) -> dict[str, Account]:
        state[stream_id] = fold_account(state[stream_id], event)
        return state

    def handle(self, state: dict[str, Account]) -> list[tuple[str, AccountEvent]]:
        require(self.source != self.target, "cannot transfer to the same account")
        require(state[self.source].opened and state[self.target].opened, "both must be open")
        require(state[self.source].balance >= self.amount, f"insufficient funds in {self.source}")
        return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]


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
    batch = [new(account, Opened(account))]
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
