"""Soft delete, truncate-before and purge against a plain-Python reference model.

Hypothesis drives random appends, commands, deletes, truncations and purges over a few
streams of a store with its state cache and durable snapshots on (one snapshot every two
events): the in-memory store, SQLite (a fresh file per run) and PostgreSQL (a fresh
schema per run). Every command
checks in ``handle`` that the state it was given (cached, restored from a snapshot and
extended, appended on without reading, or folded in full) is exactly the fold of the
stream's visible events in the model; reads, bounds, versions, purge records and the
global log must match it too. Positions are learned from the store (PostgreSQL's are
sparse).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from eventcore import (
    Command,
    MemoryStore,
    NewEvent,
    StreamId,
    _core,
    default_registry,
    event,
    execute,
    execute_sync,
    require,
    stream,
)
from eventcore.postgres import PostgresStore
from eventcore.snapshot import MemorySnapshotStore
from tests.pgserver import drop_schema, new_schema_name

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
    events: list[tuple[int, int, int]] = field(default_factory=list)  # position, amount, version
    version: int = 0  # events and truncations that hid something each take one
    hidden: int = 0  # versions up to here are hidden
    purged: int = 0  # versions up to here are erased

    def visible(self) -> tuple[int, ...]:
        return tuple(a for _, a, v in self.events if v > self.hidden)

    def hide(self, upto: int) -> None:
        if any(self.hidden < v <= upto for _, _, v in self.events):
            self.hidden = upto
            self.version += 1


class LifecycleModel(RuleBasedStateMachine):
    """Drives a store and the model with the same operations (``dsn``: PostgreSQL,
    ``sqlite``: a SQLite file in a fresh directory)."""

    def __init__(self, dsn: str | None = None, *, sqlite: bool = False) -> None:
        super().__init__()
        self.dsn = dsn
        self.loop: asyncio.AbstractEventLoop | None = None
        self.folder: str | None = None
        self.store: Any
        if sqlite:
            from eventcore.sqlite import SqliteStore

            self.folder = tempfile.mkdtemp(prefix="eventcore-lifecycle-")
            self.store = SqliteStore(f"{self.folder}/events.db", snapshot_every=2)
        elif dsn is None:
            self.store = MemoryStore(snapshots=MemorySnapshotStore(), snapshot_every=2)
        else:
            self.loop = asyncio.new_event_loop()
            self.store = PostgresStore(dsn, schema=new_schema_name(), max_size=2, snapshot_every=2)
            self.run(self.store.open())
            self.run(self.store.migrate())
        self.streams = {s: ModelStream() for s in STREAMS}
        self.log: list[tuple[int, str, int]] = []  # (position, stream, amount), not purged

    def run(self, value: Any) -> Any:
        """``value``, or what it returns as a coroutine (PostgreSQL)."""
        if self.loop is not None and isinstance(value, Coroutine):
            return self.loop.run_until_complete(value)
        return value

    def teardown(self) -> None:
        if self.folder is not None:
            self.store.close()
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.loop is None or self.dsn is None:
            return
        try:
            self.run(self.store.close())
        finally:
            try:
                self.run(drop_schema(self.dsn, self.store.schema))
            finally:
                self.loop.close()

    def _added(self, stream_id: str, amount: int) -> None:
        m = self.streams[stream_id]
        m.version += 1
        [new] = self.run(self.store.read_stream(stream_id, after_version=m.version - 1))
        assert new.version == m.version and new.data == Recorded(amount)
        m.events.append((new.position, amount, m.version))
        self.log.append((new.position, stream_id, amount))

    @rule(stream_id=st.sampled_from(STREAMS), amount=st.integers(0, 99))
    def append(self, stream_id: str, amount: int) -> None:
        m = self.streams[stream_id]
        self.run(
            self.store.append(
                [NewEvent(stream_id, *default_registry.encode(Recorded(amount)))],
                expected={stream_id: m.version},
            )
        )
        self._added(stream_id, amount)

    @rule(stream_id=st.sampled_from(STREAMS), amount=st.integers(0, 99))
    def command(self, stream_id: str, amount: int) -> None:
        m = self.streams[stream_id]
        command = Record(account=stream_id, amount=amount, expect=m.visible())
        if self.loop is None:
            execute_sync(self.store, command)
        else:
            self.run(execute(self.store, command))
        self._added(stream_id, amount)

    @rule(stream_id=st.sampled_from(STREAMS))
    def delete(self, stream_id: str) -> None:
        m = self.streams[stream_id]
        was = m.version
        m.hide(m.version)
        assert self.run(self.store.delete_stream(stream_id, expected=was)) == m.version

    @rule(stream_id=st.sampled_from(STREAMS), data=st.data())
    def truncate(self, stream_id: str, data: st.DataObject) -> None:
        m = self.streams[stream_id]
        before = data.draw(st.integers(1, m.version + 1))
        m.hide(before - 1)
        assert self.run(self.store.truncate_stream(stream_id, before)) == m.version

    @rule(stream_id=st.sampled_from(STREAMS))
    def purge(self, stream_id: str) -> None:
        m = self.streams[stream_id]
        record = self.run(self.store.purge_stream(stream_id, actor="model", reason="test"))
        gone = [e for e in m.events if m.purged < e[2] <= m.hidden]
        assert record.events == len(gone)
        if gone:
            assert (record.from_version, record.to_version) == (gone[0][2], gone[-1][2])
            assert (record.first_position, record.last_position) == (gone[0][0], gone[-1][0])
        erased = {e[0] for e in gone}
        self.log = [e for e in self.log if e[0] not in erased]
        m.purged = m.hidden

    @invariant()
    def reads_match(self) -> None:
        store = self.store
        for stream_id, m in self.streams.items():
            assert tuple(e.data.amount for e in self.run(store.read_stream(stream_id))) == (
                m.visible()
            )
            backwards = self.run(store.read_stream_backwards(stream_id))
            assert tuple(e.data.amount for e in reversed(backwards)) == m.visible()
            deleted = m.hidden > 0 and not m.visible()
            assert self.run(store.stream_bounds(stream_id)) == (m.hidden + 1, m.version, deleted)
            assert self.run(store.stream_version(stream_id)) == m.version
            rows, versions = self.run(store.read_fold([stream_id]))
            state = _core.fold(
                (), lambda s, e, _sid: (*s, e.amount), default_registry.decoders, rows
            )
            assert (state, versions) == (m.visible(), [m.version])
        log = self.run(store.read_all())
        assert [(e.position, e.stream_id, e.data.amount) for e in log] == self.log


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_memory_store_matches_the_model() -> None:
    run_state_machine_as_test(LifecycleModel, settings=SETTINGS)


def test_sqlite_matches_the_model() -> None:
    run_state_machine_as_test(
        lambda: LifecycleModel(sqlite=True), settings=settings(SETTINGS, max_examples=30)
    )


@pytest.mark.postgres
def test_postgres_matches_the_model(postgres_dsn: str) -> None:
    run_state_machine_as_test(
        lambda: LifecycleModel(postgres_dsn), settings=settings(SETTINGS, max_examples=15)
    )
