"""A tiny account domain and the known command sequence the hook tests observe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventcore import (
    BusinessRuleViolation,
    Command,
    ConcurrencyConflict,
    RetryPolicy,
    StoreUnavailable,
    StreamId,
    event,
    execute_sync,
    require,
    stream,
)
from eventcore.testing import FaultyStore


@event("obs.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@event("obs.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


class Account(Command[int, Any]):
    account: StreamId = stream()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, ev: Any, stream_id: str) -> int:
        return state + (ev.amount if isinstance(ev, Deposited) else 0)


class Open(Account):
    owner: str

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.account, Opened(self.owner))]


class Deposit(Account):
    amount: int

    def handle(self, state: int) -> list[tuple[str, Any]]:
        require(self.amount > 0, "amount must be positive")
        return [(self.account, Deposited(self.amount)), (self.account, Deposited(0))]


FAST = RetryPolicy(max_attempts=3, initial_delay=0.0)


def run_sequence(store: FaultyStore) -> dict[str, Any]:
    """The known sequence: success, success after a conflict retry, rejection,
    conflicts exhausted, store failure. Returns what each raised."""
    out: dict[str, Any] = {}
    out["open"] = execute_sync(store, Open(account="acc-1", owner="ann"), retry=FAST)
    store.faults[:] = ["conflict"]
    out["retried"] = execute_sync(store, Deposit(account="acc-1", amount=5), retry=FAST)
    try:
        execute_sync(store, Deposit(account="acc-1", amount=-1), retry=FAST)
    except BusinessRuleViolation as exc:
        out["rejected"] = exc
    store.faults[:] = ["conflict", "conflict", "conflict"]
    try:
        execute_sync(store, Deposit(account="acc-1", amount=7), retry=FAST)
    except ConcurrencyConflict as exc:
        out["exhausted"] = exc
    store.faults[:] = ["unavailable"]
    try:
        execute_sync(
            store,
            Open(account="acc-2", owner="bob"),
            retry=RetryPolicy.never(),
        )
    except StoreUnavailable as exc:
        out["failed"] = exc
    store.faults[:] = []
    return out
