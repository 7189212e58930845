"""The PostgreSQL tests' bank: the shipped example domain plus two helpers.

The domain (accounts, Deposit, an atomic two-stream Transfer) is
``eventcore.examples.bank``; its events live in their own registry, ``BANK``.
"""

from __future__ import annotations

from eventcore import NO_STREAM, NewEvent
from eventcore.examples.bank import (
    Account,
    AccountOpened,
    Deposit,
    Deposited,
    Transfer,
    Withdrawn,
    fold_account,
)
from eventcore.examples.bank import registry as BANK

__all__ = ["BANK", "Deposit", "Transfer", "Withdrawn", "balance_of", "open_accounts"]


async def open_accounts(store, names: list[str], balance: int) -> None:
    """Open every account with ``balance`` in one atomic append."""
    batch = []
    for name in names:
        batch.append(NewEvent(name, *BANK.encode(AccountOpened(name))))
        batch.append(NewEvent(name, *BANK.encode(Deposited(balance))))
    await store.append(batch, expected={name: NO_STREAM for name in names})


async def balance_of(store, name: str) -> int:
    """An account's balance, folded from its stream."""
    state = Account()
    for recorded in await store.read_stream(name):
        state = fold_account(state, recorded.data)
    return state.balance
