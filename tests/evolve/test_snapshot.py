"""Snapshots across an event-class change: a snapshot holds folded state, not events, so
a new event version leaves it readable; the tail after it is upcast like any fold, and the
outcome equals a full fold. A state class that changed is ignored (a full fold), as is a
snapshot of another ``snapshot_version``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventcore import Command, MemoryStore, StreamId, execute_sync, stream
from eventcore.registry import EventRegistry, event, upcaster
from eventcore.snapshot import MemorySnapshotStore, Snapshot

OLD = EventRegistry()
NEW = EventRegistry()


@event("snap.Added", registry=OLD)
@dataclass(frozen=True)
class AddedV1:
    n: int


@event("snap.Added", version=2, registry=NEW)
@dataclass(frozen=True)
class Added:
    amount: int


@upcaster("snap.Added", from_version=1, registry=NEW)
def rename(data: dict[str, Any]) -> dict[str, Any]:
    return {"amount": data["n"]}


@dataclass(frozen=True)
class Total:
    total: int = 0
    events: int = 0


class Add(Command[Total, Any]):
    """One command class in both deploys (snapshots are keyed by it)."""

    cart: StreamId = stream()
    seen: list[Total]
    new: bool = False

    def initial_state(self) -> Total:
        return Total()

    def apply(self, state: Total, event: Any, stream_id: str) -> Total:
        amount = event.amount if isinstance(event, Added) else event.n
        return Total(state.total + amount, state.events + 1)

    def handle(self, state: Total) -> list[tuple[str, Any]]:
        self.seen.append(state)
        return [(self.cart, Added(10) if self.new else AddedV1(1))]


class Spy(MemorySnapshotStore):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[Snapshot | None] = []

    def load(self, key: str) -> Snapshot | None:
        found = super().load(key)
        self.found.append(found)
        return found


def test_a_snapshot_taken_before_a_new_event_version_still_serves() -> None:
    snapshots = Spy()
    store = MemoryStore(registry=OLD, snapshots=snapshots, snapshot_every=3)
    for _ in range(7):
        execute_sync(store, Add(cart="c", seen=[]))
    assert len(snapshots) == 1
    # The new deploy: the same events and snapshots, new event classes, a cold cache.
    store.registry = NEW
    assert store.state_cache is not None
    store.state_cache.clear()
    snapshots.found.clear()
    seen: list[Total] = []
    execute_sync(store, Add(cart="c", seen=seen, new=True))
    assert seen == [Total(7, 7)]
    [used] = snapshots.found
    assert used is not None and 0 < used.events < 7  # a snapshot, then an upcast tail
    # The same outcome as a full fold of the log under the new classes.
    full = MemoryStore(registry=NEW)
    full.append([(e.stream_id, e.stored_type, e.payload, None) for e in store.read_stream("c")])
    again: list[Total] = []
    execute_sync(full, Add(cart="c", seen=again, new=True))
    assert again == [Total(17, 8)]
