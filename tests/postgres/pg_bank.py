"""A small bank for the PostgreSQL tests: accounts and an atomic two-stream Transfer."""

from __future__ import annotations

from dataclasses import dataclass

from eventcore import Command, EventRegistry, StreamId, event, require, stream

BANK = EventRegistry()


@event("pgbank.Opened", registry=BANK)
@dataclass(frozen=True)
class Opened:
    owner: str


@event("pgbank.Deposited", registry=BANK)
@dataclass(frozen=True)
class Deposited:
    amount: int


@event("pgbank.Withdrawn", registry=BANK)
@dataclass(frozen=True)
class Withdrawn:
    amount: int


@dataclass(frozen=True)
class Account:
    opened: bool = False
    balance: int = 0


def fold(state: Account, e: object) -> Account:
    if isinstance(e, Opened):
        return Account(True, state.balance)
    if isinstance(e, Deposited):
        return Account(state.opened, state.balance + e.amount)
    if isinstance(e, Withdrawn):
        return Account(state.opened, state.balance - e.amount)
    return state


class Deposit(Command[Account, object]):
    account: StreamId = stream()
    amount: int

    def initial_state(self) -> Account:
        return Account()

    def apply(self, state: Account, e: object, stream_id: str) -> Account:
        return fold(state, e)

    def handle(self, state: Account) -> list[tuple[str, object]]:
        require(state.opened, "account not open")
        return [(self.account, Deposited(self.amount))]


class Transfer(Command[dict, object]):
    source: StreamId = stream()
    target: StreamId = stream()
    amount: int

    def initial_state(self) -> dict:
        return {self.source: Account(), self.target: Account()}

    def apply(self, state: dict, e: object, stream_id: str) -> dict:
        state[stream_id] = fold(state[stream_id], e)
        return state

    def handle(self, state: dict) -> list[tuple[str, object]]:
        require(self.source != self.target, "same account")
        require(state[self.source].opened and state[self.target].opened, "not open")
        require(state[self.source].balance >= self.amount, "insufficient funds")
        return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]


async def open_accounts(store, names: list[str], balance: int) -> None:
    """Open every account with ``balance`` in one atomic append."""
    from eventcore import NO_STREAM, NewEvent

    batch = []
    for name in names:
        batch.append(NewEvent(name, *BANK.encode(Opened(name))))
        batch.append(NewEvent(name, *BANK.encode(Deposited(balance))))
    await store.append(batch, expected={name: NO_STREAM for name in names})


async def balance_of(store, name: str) -> int:
    state = Account()
    for recorded in await store.read_stream(name):
        state = fold(state, recorded.data)
    return state.balance
