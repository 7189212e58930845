"""Events and commands the contract suite writes."""

from __future__ import annotations

from dataclasses import dataclass

from eventcore import Command, StreamId, event, require, stream


@event("contract.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@event("contract.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@event("contract.Withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: int


class Transfer(Command[dict[str, int], Opened | Deposited | Withdrawn]):
    source: StreamId = stream()
    target: StreamId = stream()
    amount: int

    def initial_state(self) -> dict[str, int]:
        return {self.source: 0, self.target: 0}

    def apply(self, state: dict[str, int], event: object, stream_id: str) -> dict[str, int]:
        if isinstance(event, Deposited):
            state[stream_id] += event.amount
        elif isinstance(event, Withdrawn):
            state[stream_id] -= event.amount
        return state

    def handle(self, state: dict[str, int]) -> list[tuple[str, Deposited | Withdrawn]]:
        require(state[self.source] >= self.amount, "insufficient funds")
        return [(self.source, Withdrawn(self.amount)), (self.target, Deposited(self.amount))]
