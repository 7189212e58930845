"""A bank on eventcore's in-memory store: open, deposit, withdraw, and transfer atomically.

Run it with ``python examples/bank.py [--accounts N] [--commands N]``.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

from eventcore import (
    BusinessRuleViolation,
    Command,
    MemoryStore,
    StreamId,
    Value,
    event,
    execute_sync,
    require,
    stream,
)


class Money(Value, int, gt=0):
    """An amount in cents; always positive."""


@event("bank.AccountOpened")
@dataclass(frozen=True)
class AccountOpened:
    owner: str


@event("bank.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@event("bank.Withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: int


AccountEvent = AccountOpened | Deposited | Withdrawn


@dataclass(frozen=True)
class Account:
    opened: bool = False
    balance: int = 0


def fold_account(state: Account, event: AccountEvent) -> Account:
    match event:
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
        return Account()

    def apply(self, state: Account, event: AccountEvent, stream_id: str) -> Account:
        return fold_account(state, event)


class OpenAccount(SingleAccount):
    owner: str

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        require(not state.opened, f"account {self.account} is already open")
        return [(self.account, AccountOpened(self.owner))]


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
    """Move money between two accounts in ONE atomic write to both streams."""

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


def balance(store: MemoryStore, account: str) -> int:
    state = Account()
    for recorded in store.read_stream(account):
        state = fold_account(state, recorded.data)
    return state.balance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    store = MemoryStore()
    accounts = [StreamId(f"account-{i}") for i in range(args.accounts)]
    for i, account in enumerate(accounts):
        execute_sync(store, OpenAccount(account=account, owner=f"owner {i}"))
        execute_sync(store, Deposit(account=account, amount=Money(10_000)))

    rejected = 0
    started = time.perf_counter()
    for _ in range(args.commands):
        kind = rng.random()
        account = rng.choice(accounts)
        amount = Money(rng.randint(1, 500))
        command: Command[object, object]
        if kind < 0.3:
            command = Deposit(account=account, amount=amount)  # type: ignore[assignment]
        elif kind < 0.6:
            command = Withdraw(account=account, amount=amount)  # type: ignore[assignment]
        else:
            other = rng.choice(accounts)
            command = Transfer(source=account, target=other, amount=amount)  # type: ignore[assignment]
        try:
            execute_sync(store, command)
        except BusinessRuleViolation:
            rejected += 1
    elapsed = time.perf_counter() - started

    print(f"{'account':<12} {'balance':>10}")
    total = 0
    for account in accounts:
        amount = balance(store, account)
        total += amount
        print(f"{account:<12} {amount / 100:>10.2f}")
    print(f"{'total':<12} {total / 100:>10.2f}")
    print(f"commands: {args.commands} ({rejected} rejected by business rules)")
    print(f"events written: {len(store)}")
    print(f"commands/s: {args.commands / elapsed:,.0f}")


if __name__ == "__main__":
    main()
