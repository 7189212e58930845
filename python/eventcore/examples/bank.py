"""A bank: open, deposit, withdraw, and transfer between two accounts as ONE command.

The domain behind ``examples/bank.py``, ``eventcore demo`` and ``eventcore bench``. Its
events live in a registry of their own (:data:`registry`), so they never collide with
your types in the default registry; stores for it must use it
(``MemoryStore(registry=bank.registry)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventcore import Command, EventRegistry, StreamId, Value, event, require, stream

registry = EventRegistry()
"""The registry of the demo's events (``demo.bank.*``)."""


class Money(Value, int, gt=0):
    """An amount in cents; always positive."""


@event("demo.bank.AccountOpened", registry=registry)
@dataclass(frozen=True)
class AccountOpened:
    """An account was opened."""

    owner: str


@event("demo.bank.Deposited", registry=registry)
@dataclass(frozen=True)
class Deposited:
    """Money came in."""

    amount: int


@event("demo.bank.Withdrawn", registry=registry)
@dataclass(frozen=True)
class Withdrawn:
    """Money went out."""

    amount: int


AccountEvent = AccountOpened | Deposited | Withdrawn


@dataclass(frozen=True)
class Account:
    """An account's state."""

    opened: bool = False
    balance: int = 0


def fold_account(state: Account, ev: AccountEvent) -> Account:
    """Apply one event to an account."""
    match ev:
        case AccountOpened():
            return Account(opened=True, balance=state.balance)
        case Deposited(amount=amount):
            return Account(opened=state.opened, balance=state.balance + amount)
        case Withdrawn(amount=amount):
            return Account(opened=state.opened, balance=state.balance - amount)
    return state


class SingleAccount(Command[Account, AccountEvent]):
    """Shared fold for the commands on one account."""

    account: StreamId = stream()

    def initial_state(self) -> Account:
        """A closed, empty account."""
        return Account()

    def apply(self, state: Account, event: AccountEvent, stream_id: str) -> Account:
        """Fold one past event."""
        return fold_account(state, event)


class OpenAccount(SingleAccount):
    """Open an account for ``owner``."""

    owner: str

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        """Refuse to open twice."""
        require(not state.opened, f"account {self.account} is already open")
        return [(self.account, AccountOpened(self.owner))]


class Deposit(SingleAccount):
    """Deposit ``amount`` into an open account."""

    amount: Money

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        """Only into an open account."""
        require(state.opened, f"account {self.account} is not open")
        return [(self.account, Deposited(self.amount))]


class Withdraw(SingleAccount):
    """Withdraw ``amount`` if the balance covers it."""

    amount: Money

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        """No overdrafts."""
        require(state.opened, f"account {self.account} is not open")
        require(state.balance >= self.amount, f"insufficient funds in {self.account}")
        return [(self.account, Withdrawn(self.amount))]


class Transfer(Command[dict[str, Account], AccountEvent]):
    """Move money between two accounts in ONE atomic write to both streams."""

    source: StreamId = stream()
    target: StreamId = stream()
    amount: Money

    def initial_state(self) -> dict[str, Account]:
        """Both accounts, closed and empty."""
        return {self.source: Account(), self.target: Account()}

    def apply(
        self, state: dict[str, Account], event: AccountEvent, stream_id: str
    ) -> dict[str, Account]:
        """Fold one past event of either account."""
        state[stream_id] = fold_account(state[stream_id], event)
        return state

    def handle(self, state: dict[str, Account]) -> list[tuple[str, AccountEvent]]:
        """Both open, distinct, and the source covers the amount."""
        require(self.source != self.target, "cannot transfer to the same account")
        require(state[self.source].opened and state[self.target].opened, "both must be open")
        require(state[self.source].balance >= self.amount, f"insufficient funds in {self.source}")
        return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]
