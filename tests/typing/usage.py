"""Right and wrong uses of the command protocol; lines marked `# error` must be flagged."""

from __future__ import annotations

from dataclasses import dataclass

from eventcore import Command, MemoryStore, StreamId, Value, event, execute_sync, stream
from eventcore.postgres import PostgresStore, SyncPostgresStore


@event("typing.Added")
@dataclass(frozen=True)
class Added:
    n: int


@event("typing.Named")
@dataclass(frozen=True)
class Named:
    name: str


@dataclass(frozen=True)
class Counter:
    total: int = 0


class Add(Command[Counter, Added]):
    counter: StreamId = stream()
    n: int

    def initial_state(self) -> Counter:
        return Counter()

    def apply(self, state: Counter, event: Added, stream_id: str) -> Counter:
        return Counter(state.total + event.n)

    def handle(self, state: Counter) -> list[tuple[str, Added]]:
        return [(self.counter, Added(self.n))]


class WrongApplyState(Command[Counter, Added]):
    counter: StreamId = stream()

    def initial_state(self) -> Counter:
        return Counter()

    def apply(self, state: int, event: Added, stream_id: str) -> int:  # error
        return state

    def handle(self, state: Counter) -> list[tuple[str, Added]]:
        return []


class WrongEventType(Command[Counter, Added]):
    counter: StreamId = stream()

    def initial_state(self) -> Counter:
        return Counter()

    def apply(self, state: Counter, event: Added, stream_id: str) -> Counter:
        return state

    def handle(self, state: Counter) -> list[tuple[str, Named]]:  # error
        return [(self.counter, Named("x"))]


class WrongInitialState(Command[Counter, Added]):
    counter: StreamId = stream()

    def initial_state(self) -> str:  # error
        return "zero"

    def apply(self, state: Counter, event: Added, stream_id: str) -> Counter:
        return state

    def handle(self, state: Counter) -> list[tuple[str, Added]]:
        return []


def right_usage(store: MemoryStore) -> int:
    result = execute_sync(store, Add(counter=StreamId("c-1"), n=2))
    return result.attempts


def wrong_usage(store: MemoryStore) -> None:
    Add(counter=StreamId("c-1"), n="two")  # error
    Add(StreamId("c-1"), 2)  # error
    command = Add(counter=StreamId("c-1"), n=2)
    command.n = 3  # error


class Money(Value, int, gt=0):
    """An amount of money."""


class Quantity(Value, int, ge=0):
    """A count of items."""


class Move(Command[Counter, Added]):
    source: StreamId = stream()
    targets: tuple[StreamId, ...] = stream()

    def initial_state(self) -> Counter:
        return Counter()

    def apply(self, state: Counter, event: Added, stream_id: str) -> Counter:
        return state

    def handle(self, state: Counter) -> list[tuple[str, Added]]:
        return [(self.source, Added(1))]


def values_and_streams() -> None:
    money: Money = Money(3)
    count: Quantity = Quantity(money)
    wrong: Quantity = Money(3)  # error
    total: int = Money(3) + count
    Move(source="acc-1", targets=("acc-2", StreamId("acc-3")))
    Move(source=StreamId("acc-1"), targets=())
    Move(source=1, targets=())  # error
    Move(source="acc-1", targets="acc-2")  # error
    print(money, count, wrong, total)


def sync_postgres(sync: SyncPostgresStore, aio: PostgresStore) -> None:
    execute_sync(sync, Add(counter=StreamId("c-1"), n=2))
    execute_sync(aio, Add(counter=StreamId("c-1"), n=2))  # error
