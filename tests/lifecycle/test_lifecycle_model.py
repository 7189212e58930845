"""Soft delete, truncate-before and purge against a plain-Python reference model.

Hypothesis drives random appends, commands, deletes, truncations and purges over a few
streams of an in-memory store with its state cache and durable snapshots on (one snapshot
every two events). Every command checks in ``handle`` that the state it was given (cached,
restored from a snapshot and extended, or folded in full) is exactly the fold of the
stream's visible events in the model; reads, bounds and the global log must match it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from eventcore import (
    Command,
    MemoryStore,
    NewEvent,
    StreamId,
    default_registry,
    event,
    execute_sync,
    require,
    stream,
)
from eventcore.snapshot import MemorySnapshotStore
from eventcore.store import StreamBounds

STREAMS = ["acc-1", "acc-2", "acc-3"]


@event("lifemodel.Recorded")
@dataclass(frozen=True)
class Recorded:
    amount: int


class Record(Command[tuple[int, ...], Recorded]):
    """Appends ``amount`` after checking it was handed exactly ``expect``."""

    account: StreamId = stream()
    amount: int
    expect: tuple[int, ...]

    def initial_state(self) -> tuple[int, ...]:
        return ()

    def apply(self, state: tuple[int, ...], event: Recorded, stream_id: str) -> tuple[int, ...]:
        return (*state, event.amount)

    def handle(self, state: tuple[int, ...]) -> list[tuple[str, Recorded]]:
        require(state == self.expect, f"folded {state}, visible {self.expect}")
        return [(self.account, Recorded(self.amount))]


@dataclass
class ModelStream:
    events: list[tuple[int, int]] = field(default_factory=list)  # (position, amount)
    hidden: int = 0
    purged: int = 0

    def visible(self) -> tuple[int, ...]:
        return tuple(a for _, a in self.events[self.hidden :])


class LifecycleModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore(snapshots=MemorySnapshotStore(), snapshot_every=2)
        self.streams = {s: ModelStream() for s in STREAMS}
        self.log: list[tuple[int, str, int]] = []  # (position, stream, amount), not purged
        self.position = 0

    def _added(self, stream_id: str, amount: int) -> None:
        self.position += 1
        self.streams[stream_id].events.append((self.position, amount))
        self.log.append((self.position, stream_id, amount))

    @rule(stream_id=st.sampled_from(STREAMS), amount=st.integers(0, 99))
    def append(self, stream_id: str, amount: int) -> None:
        m = self.streams[stream_id]
        self.store.append(
            [NewEvent(stream_id, *default_registry.encode(Recorded(amount)))],
            expected={stream_id: len(m.events)},
        )
        self._added(stream_id, amount)

    @rule(stream_id=st.sampled_from(STREAMS), amount=st.integers(0, 99))
    def command(self, stream_id: str, amount: int) -> None:
        m = self.streams[stream_id]
        execute_sync(self.store, Record(account=stream_id, amount=amount, expect=m.visible()))
        self._added(stream_id, amount)

    @rule(stream_id=st.sampled_from(STREAMS))
    def delete(self, stream_id: str) -> None:
        m = self.streams[stream_id]
        assert self.store.delete_stream(stream_id, expected=len(m.events)) == len(m.events)
        m.hidden = len(m.events)

    @rule(stream_id=st.sampled_from(STREAMS), data=st.data())
    def truncate(self, stream_id: str, data: st.DataObject) -> None:
        m = self.streams[stream_id]
        before = data.draw(st.integers(1, len(m.events) + 1))
        assert self.store.truncate_stream(stream_id, before) == len(m.events)
        m.hidden = max(m.hidden, before - 1)

    @rule(stream_id=st.sampled_from(STREAMS))
    def purge(self, stream_id: str) -> None:
        m = self.streams[stream_id]
        record = self.store.purge_stream(stream_id, actor="model", reason="test")
        gone = m.events[m.purged : m.hidden]
        assert record.events == len(gone)
        if gone:
            assert (record.from_version, record.to_version) == (m.purged + 1, m.hidden)
            assert (record.first_position, record.last_position) == (gone[0][0], gone[-1][0])
        erased = {p for p, _ in gone}
        self.log = [e for e in self.log if e[0] not in erased]
        m.purged = m.hidden

    @invariant()
    def reads_match(self) -> None:
        for stream_id, m in self.streams.items():
            assert tuple(e.data.amount for e in self.store.read_stream(stream_id)) == m.visible()
            backwards = self.store.read_stream_backwards(stream_id)
            assert tuple(e.data.amount for e in reversed(backwards)) == m.visible()
            assert self.store.stream_bounds(stream_id) == StreamBounds(m.hidden + 1, len(m.events))
            state, versions = self.store.fold_streams(
                [stream_id],
                (),
                lambda s, e, _sid: (*s, e.amount),
                default_registry.decoders,
            )
            assert (state, versions) == (m.visible(), [len(m.events)])
        assert [(e.position, e.stream_id, e.data.amount) for e in self.store.read_all()] == self.log


LifecycleModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_model = LifecycleModel.TestCase
