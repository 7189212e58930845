"""The service's read model: every account's owner and balance, kept by a projection."""

from __future__ import annotations

from dataclasses import dataclass

from eventcore import RecordedEvent
from eventcore.examples.bank import AccountEvent, AccountOpened, Deposited, Withdrawn


@dataclass
class AccountView:
    """One account as the query endpoints show it."""

    owner: str
    balance: int = 0
    version: int = 0
    """The account stream's version this view reflects."""


class Accounts:
    """A projection of the bank's events into a dict of :class:`AccountView`.

    It lives in the process's memory, so every instance of the service builds its own
    from the global log when it starts (its checkpoints are in memory too: a checkpoint
    kept in PostgreSQL would outlive the dict it describes).
    """

    name = "accounts"
    event_types = ("demo.bank.AccountOpened", "demo.bank.Deposited", "demo.bank.Withdrawn")

    def __init__(self) -> None:
        self.accounts: dict[str, AccountView] = {}

    def apply(self, event: RecordedEvent[AccountEvent]) -> None:
        """Fold one event into its account's view."""
        data = event.data
        if isinstance(data, AccountOpened):
            self.accounts[event.stream_id] = AccountView(owner=data.owner)
        view = self.accounts.get(event.stream_id)
        if view is None:  # money moved on an account opened before this model existed
            view = self.accounts[event.stream_id] = AccountView(owner="")
        if isinstance(data, Deposited):
            view.balance += data.amount
        elif isinstance(data, Withdrawn):
            view.balance -= data.amount
        view.version = event.version
