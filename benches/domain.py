"""Benchmark domains: a bank written as users write it, for eventcore and for the baseline.

eventcore gets two variants of the same events, each in its own registry:

- ``DC``: the shipped example's events (``eventcore.examples.bank``, frozen dataclasses),
  registered again under ``bench.dc.*`` names;
- ``MS``: the same events as ``msgspec.Struct(frozen=True)`` classes.

Each variant is a :class:`Domain` bundling its registry, event classes and commands
(``OpenAccount``, ``Deposit``, ``Transfer``), so a workload is written once and run on both.
The state (``Account``) and ``Money`` are the example's too. The commands are the example's
rebuilt per variant, over that variant's event classes, with constant ``require`` messages:
the shipped ones format an f-string per call (about 0.17 us, some 2% of a cold command), and
both variants must do the same work for the dataclass/msgspec comparison and for the numbers
to stay comparable with earlier runs. Both variants also carry ``Blob``, an opaque-string
event for the batch and memory workloads, which the example has no use for.

The baseline is the ``eventsourcing`` library (9.5.x, in-memory POPO infrastructure):
``EsAccount`` is an ``Aggregate`` whose methods trigger the same events, ``EsBank`` the
``Application``. It is imported lazily (:func:`baseline`) because it is a benchmark-only
dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from eventcore import Command, EventRegistry, StreamId, event, require, stream
from eventcore.examples import bank
from eventcore.examples.bank import Account, Money


@dataclass
class Domain:
    """One variant of the bank domain (its own registry, event classes and commands)."""

    name: str
    registry: EventRegistry
    AccountOpened: Any
    Deposited: Any
    Withdrawn: Any
    Blob: Any
    OpenAccount: Any
    Deposit: Any
    Transfer: Any


def _make_domain(name: str, kind: str) -> Domain:
    registry = EventRegistry()
    prefix = f"bench.{name}."

    if kind == "dataclass":
        AccountOpened = registry.register(prefix + "AccountOpened", bank.AccountOpened)
        Deposited = registry.register(prefix + "Deposited", bank.Deposited)
        Withdrawn = registry.register(prefix + "Withdrawn", bank.Withdrawn)

        @event(prefix + "Blob", registry=registry)
        @dataclass(frozen=True)
        class Blob:
            data: str

    else:

        @event(prefix + "AccountOpened", registry=registry)
        class AccountOpened(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
            owner: str

        @event(prefix + "Deposited", registry=registry)
        class Deposited(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
            amount: int

        @event(prefix + "Withdrawn", registry=registry)
        class Withdrawn(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
            amount: int

        @event(prefix + "Blob", registry=registry)
        class Blob(msgspec.Struct, frozen=True):  # type: ignore[no-redef]
            data: str

    def fold_account(state: Account, ev: Any) -> Account:
        match ev:
            case AccountOpened():
                return Account(opened=True, balance=state.balance)
            case Deposited(amount=amount):
                return Account(opened=state.opened, balance=state.balance + amount)
            case Withdrawn(amount=amount):
                return Account(opened=state.opened, balance=state.balance - amount)
        return state

    class SingleAccount(Command[Account, Any]):
        account: StreamId = stream()

        def initial_state(self) -> Account:
            return Account()

        def apply(self, state: Account, ev: Any, stream_id: str) -> Account:
            return fold_account(state, ev)

    class OpenAccount(SingleAccount):
        owner: str

        def handle(self, state: Account) -> list[tuple[str, Any]]:
            require(not state.opened, "already open")
            return [(self.account, AccountOpened(self.owner))]

    class Deposit(SingleAccount):
        amount: Money

        def handle(self, state: Account) -> list[tuple[str, Any]]:
            require(state.opened, "not open")
            return [(self.account, Deposited(self.amount))]

    class Transfer(Command[dict[str, Account], Any]):
        source: StreamId = stream()
        target: StreamId = stream()
        amount: Money

        def initial_state(self) -> dict[str, Account]:
            return {self.source: Account(), self.target: Account()}

        def apply(self, state: dict[str, Account], ev: Any, stream_id: str) -> dict[str, Account]:
            state[stream_id] = fold_account(state[stream_id], ev)
            return state

        def handle(self, state: dict[str, Account]) -> list[tuple[str, Any]]:
            require(self.source != self.target, "same account")
            require(state[self.source].opened and state[self.target].opened, "both open")
            require(state[self.source].balance >= self.amount, "insufficient funds")
            return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]

    return Domain(
        name=name,
        registry=registry,
        AccountOpened=AccountOpened,
        Deposited=Deposited,
        Withdrawn=Withdrawn,
        Blob=Blob,
        OpenAccount=OpenAccount,
        Deposit=Deposit,
        Transfer=Transfer,
    )


DC = _make_domain("dc", "dataclass")
MS = _make_domain("ms", "struct")
DOMAINS = {"dataclass": DC, "msgspec": MS}


_BASELINE: Any = None


def baseline() -> Any:
    """The eventsourcing baseline: a namespace with ``EsBank``, ``EsAccount``, ``EsBlobs``."""
    global _BASELINE
    if _BASELINE is not None:
        return _BASELINE
    import types

    import eventsourcing
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate
    from eventsourcing.domain import event as es_event

    class EsAccount(Aggregate):
        @es_event("Opened")
        def __init__(self, owner: str) -> None:
            self.owner = owner
            self.balance = 0

        @es_event("Deposited")
        def deposit(self, amount: int) -> None:
            self.balance += amount

        @es_event("Withdrawn")
        def withdraw(self, amount: int) -> None:
            if amount > self.balance:
                raise ValueError("insufficient funds")
            self.balance -= amount

    class EsBlobs(Aggregate):
        """An aggregate whose events carry an opaque string (for batch and memory runs)."""

        @es_event("Created")
        def __init__(self) -> None:
            self.count = 0

        @es_event("Blob")
        def blob(self, data: str) -> None:
            self.count += 1

    class EsBank(Application[Any]):
        """In-memory (POPO) infrastructure, no snapshots, no aggregate cache: the defaults."""

    _BASELINE = types.SimpleNamespace(
        EsBank=EsBank,
        EsAccount=EsAccount,
        EsBlobs=EsBlobs,
        version=getattr(eventsourcing, "__version__", None) or _dist_version("eventsourcing"),
    )
    return _BASELINE


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
