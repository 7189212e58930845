"""The in-memory store against a plain-Python reference model (hypothesis, stateful).

Random appends with random expected versions (exact right and wrong, NO_STREAM,
STREAM_EXISTS, ANY) over a few streams, idempotent replays, reused event ids, and every
read; the store and the model must give identical results and identical errors.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    DuplicateEventId,
    MemoryStore,
    Metadata,
    NewEvent,
    StreamConflict,
    uuid7,
)

STREAMS = ["acc-1", "acc-2", "acc-10", "ord-1", "ord-2"]
TYPES = ["m.A", "m.B", "m.C"]
PREFIXES = ["acc-", "acc-1", "ord-", "x", ""]
DECODERS = {t: (lambda b, t=t: (t, b)) for t in TYPES}


@dataclass
class Stored:
    position: int
    event_id: int
    stream_id: str
    version: int
    event_type: str
    payload: bytes
    metadata: Metadata

    def key(self) -> tuple[Any, ...]:
        return (
            self.position,
            self.event_id,
            self.stream_id,
            self.version,
            self.event_type,
            self.payload,
            self.metadata,
        )


@dataclass
class Model:
    """The reference model of the documented store semantics."""

    log: list[Stored] = field(default_factory=list)
    streams: dict[str, list[int]] = field(default_factory=dict)  # stream -> log indexes
    by_id: dict[int, int] = field(default_factory=dict)  # event id -> log index

    def version(self, stream_id: str) -> int:
        return len(self.streams.get(stream_id, []))

    def append(
        self,
        events: list[tuple[str, str, bytes, int]],
        expected: list[tuple[str, int]],
        metadata: Metadata,
    ) -> tuple[list[int], dict[str, int]] | Exception:
        ids = [e[3] for e in events]
        if len(set(ids)) != len(ids):
            return DuplicateEventId(None, "twice in one batch")
        stored = [i for i in ids if i in self.by_id]
        if stored:
            if len(stored) != len(ids):
                return DuplicateEventId(None, "only part of the batch was stored")
            first = self.by_id[ids[0]]
            for k, (stream_id, event_type, payload, event_id) in enumerate(events):
                index = self.by_id[event_id]
                old = self.log[index]
                if (
                    index != first + k
                    or (old.stream_id, old.event_type, old.payload)
                    != (stream_id, event_type, payload)
                    or old.metadata != metadata
                ):
                    return DuplicateEventId(event_id, "different content")
            versions = {s: self.version(s) for s, _ in expected}
            for k, e in enumerate(events):
                versions[e[0]] = self.log[first + k].version
            return [first + k + 1 for k in range(len(events))], versions
        conflicts = []
        for stream_id, exp in expected:
            actual = self.version(stream_id)
            if exp == ANY:
                ok = True
            elif exp == STREAM_EXISTS:
                ok = actual > 0
            else:
                ok = actual == exp
            if not ok:
                conflicts.append((stream_id, exp, actual))
        if conflicts:
            return ConcurrencyConflict(conflicts)
        positions = []
        for stream_id, event_type, payload, event_id in events:
            index = len(self.log)
            indexes = self.streams.setdefault(stream_id, [])
            indexes.append(index)
            self.log.append(
                Stored(index + 1, event_id, stream_id, len(indexes), event_type, payload, metadata)
            )
            self.by_id[event_id] = index
            positions.append(index + 1)
        versions = {s: self.version(s) for s, _ in expected}
        for e in events:
            versions[e[0]] = self.version(e[0])
        return positions, versions

    def stream(self, stream_id: str) -> list[Stored]:
        return [self.log[i] for i in self.streams.get(stream_id, [])]


def keys(recorded: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            e.position,
            e.event_id.int,
            e.stream_id,
            e.version,
            e.event_type,
            e.payload,
            e.metadata,
        )
        for e in recorded
    ]


limits = st.one_of(st.none(), st.integers(0, 6))


class StoreMachine(RuleBasedStateMachine):
    """Drives a MemoryStore and the Model with the same operations."""

    @initialize()
    def setup(self) -> None:
        self.store = MemoryStore()
        self.model = Model()
        # Successful appends, for replays: (events, expected, metadata, positions, versions).
        self.batches: list[Any] = []

    def check_same(
        self, events: list[tuple[str, str, bytes, Any]], expected: Any, meta: Any
    ) -> Any:
        given_ids = [e[3] for e in events]
        pairs = list(expected.items()) if isinstance(expected, dict) else list(expected)
        head_before = self.store.head()
        try:
            result = self.store.append(events, expected=expected, metadata=meta)
        except (ConcurrencyConflict, DuplicateEventId) as exc:
            assert self.store.head() == head_before
            model_ids = [
                uuid7().int if e[3] is None else getattr(e[3], "int", e[3]) for e in events
            ]
            outcome = self.model.append(
                [(*e[:3], i) for e, i in zip(events, model_ids, strict=True)],
                pairs,
                meta or Metadata(),
            )
            assert isinstance(outcome, type(exc)), (exc, outcome)
            if isinstance(exc, ConcurrencyConflict):
                assert exc.conflicts == tuple(StreamConflict(*c) for c in outcome.conflicts)
                assert exc.attempts == 1
            return None
        ids = [i.int for i in result.event_ids]
        for given, got in zip(given_ids, ids, strict=True):
            if given is not None:
                assert got == (given.int if isinstance(given, uuid.UUID) else given)
            else:
                assert uuid.UUID(int=got).version == 7
        outcome = self.model.append(
            [(*e[:3], i) for e, i in zip(events, ids, strict=True)],
            pairs,
            meta or Metadata(),
        )
        assert not isinstance(outcome, Exception), f"store accepted, model says {outcome!r}"
        positions, versions = outcome
        assert list(result.positions) == positions
        assert dict(result.stream_versions) == versions
        assert len(result) == len(events)
        assert [(w.event_id.int, w.stream_id, w.version, w.position) for w in result.events] == [
            (i, self.model.log[p - 1].stream_id, self.model.log[p - 1].version, p)
            for i, p in zip(ids, positions, strict=True)
        ]
        assert result.last_position == max(positions, default=0)
        return result, ids

    @rule(
        data=st.data(),
        batch=st.lists(
            st.tuples(st.sampled_from(STREAMS), st.sampled_from(TYPES), st.binary(max_size=8)),
            max_size=4,
        ),
        checked=st.lists(st.sampled_from(STREAMS), unique=True, max_size=3),
        explicit_ids=st.booleans(),
        user=st.one_of(st.none(), st.sampled_from(["ann", "bob"])),
    )
    def append(
        self,
        data: st.DataObject,
        batch: list[tuple[str, str, bytes]],
        checked: list[str],
        explicit_ids: bool,
        user: str | None,
    ) -> None:
        expected = []
        for stream_id in checked:
            actual = self.model.version(stream_id)
            kind = data.draw(st.sampled_from(["right", "wrong", "none", "exists", "any"]))
            if kind == "right":
                exp = actual
            elif kind == "wrong":
                exp = data.draw(st.integers(0, actual + 2).filter(lambda v, a=actual: v != a))
            else:
                exp = {"none": NO_STREAM, "exists": STREAM_EXISTS, "any": ANY}[kind]
            expected.append((stream_id, exp))
        events = [NewEvent(s, t, p, uuid7() if explicit_ids else None) for s, t, p in batch]
        meta = Metadata(user_id=user) if user else None
        as_mapping = data.draw(st.booleans())
        done = self.check_same(events, dict(expected) if as_mapping else expected, meta)
        if done is not None and explicit_ids and events:
            result, _ = done
            self.batches.append((events, expected, meta, list(result.positions), result))

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def replay_a_batch(self, data: st.DataObject) -> None:
        events, expected, meta, positions, original = data.draw(st.sampled_from(self.batches))
        head = self.store.head()
        again = self.store.append(events, expected=expected, metadata=meta)
        assert self.store.head() == head
        assert list(again.positions) == positions
        assert again.events == original.events
        assert self.check_same(events, expected, meta) is not None

    @precondition(lambda self: self.model.log)
    @rule(data=st.data(), how=st.sampled_from(["payload", "stream", "type", "mixed", "meta"]))
    def reuse_an_event_id(self, data: st.DataObject, how: str) -> None:
        old = data.draw(st.sampled_from(self.model.log))
        event_id = uuid.UUID(int=old.event_id)
        stream_id, event_type, payload = old.stream_id, old.event_type, old.payload
        meta = old.metadata or None
        if how == "payload":
            payload = old.payload + b"!"
        elif how == "stream":
            stream_id = next(s for s in STREAMS if s != old.stream_id)
        elif how == "type":
            event_type = next(t for t in TYPES if t != old.event_type)
        elif how == "meta":
            meta = Metadata(user_id="someone-else")
        events = [NewEvent(stream_id, event_type, payload, event_id)]
        if how == "mixed":
            # The stored event unchanged plus one new event: only part is a replay.
            events.append(NewEvent(old.stream_id, old.event_type, old.payload, uuid7()))
        with pytest.raises(DuplicateEventId):
            self.store.append(events, metadata=meta)
        assert self.check_same(events, [], meta) is None

    @rule(
        stream_id=st.sampled_from([*STREAMS, "nobody"]),
        after=st.integers(0, 6),
        limit=limits,
    )
    def read_stream(self, stream_id: str, after: int, limit: int | None) -> None:
        got = self.store.read_stream(stream_id, after_version=after, limit=limit)
        want = [e for e in self.model.stream(stream_id) if e.version > after][:limit]
        assert keys(got) == [e.key() for e in want]

    @rule(
        stream_ids=st.lists(st.sampled_from([*STREAMS, "nobody"]), unique=True, max_size=4),
        after=st.integers(0, 4),
        limit=limits,
    )
    def read_streams(self, stream_ids: list[str], after: int, limit: int | None) -> None:
        got = self.store.read_streams(stream_ids, after_version=after, limit=limit)
        want = sorted(
            (e for s in stream_ids for e in self.model.stream(s) if e.version > after),
            key=lambda e: e.position,
        )[:limit]
        assert keys(got) == [e.key() for e in want]

    @rule(
        stream_id=st.sampled_from([*STREAMS, "nobody"]),
        before=st.one_of(st.none(), st.integers(0, 8)),
        limit=limits,
    )
    def read_stream_backwards(self, stream_id: str, before: int | None, limit: int | None) -> None:
        got = self.store.read_stream_backwards(stream_id, before_version=before, limit=limit)
        events = self.model.stream(stream_id)
        if before is not None:
            events = [e for e in events if e.version < before]
        want = list(reversed(events))[:limit]
        assert keys(got) == [e.key() for e in want]

    @rule(
        after=st.integers(0, 30),
        limit=limits,
        types=st.one_of(st.none(), st.lists(st.sampled_from([*TYPES, "m.Z"]), max_size=2)),
        prefix=st.one_of(st.none(), st.sampled_from(PREFIXES)),
    )
    def read_all(
        self, after: int, limit: int | None, types: list[str] | None, prefix: str | None
    ) -> None:
        got = self.store.read_all(
            after_position=after, limit=limit, event_types=types, stream_prefix=prefix
        )
        want = [
            e
            for e in self.model.log
            if e.position > after
            and (types is None or e.event_type in types)
            and (prefix is None or e.stream_id.startswith(prefix))
        ][:limit]
        assert keys(got) == [e.key() for e in want]

    @rule(stream_ids=st.lists(st.sampled_from([*STREAMS, "nobody"]), unique=True, max_size=4))
    def fold_streams(self, stream_ids: list[str]) -> None:
        def apply(state: list[Any], event: Any, stream_id: str) -> list[Any]:
            state.append((stream_id, event))
            return state

        state, versions = self.store.fold_streams(stream_ids, [], apply, DECODERS)
        want = sorted(
            (e for s in stream_ids for e in self.model.stream(s)), key=lambda e: e.position
        )
        assert state == [(e.stream_id, (e.event_type, e.payload)) for e in want]
        assert list(versions) == [self.model.version(s) for s in stream_ids]

    @rule(
        prefix=st.one_of(st.none(), st.sampled_from(PREFIXES)),
        after=st.one_of(st.none(), st.sampled_from([*STREAMS, "a", "z"])),
        limit=limits,
    )
    def list_streams(self, prefix: str | None, after: str | None, limit: int | None) -> None:
        got = self.store.list_streams(prefix=prefix, after=after, limit=limit)
        want = sorted(
            (s, len(ix))
            for s, ix in self.model.streams.items()
            if ix and (prefix is None or s.startswith(prefix)) and (after is None or s > after)
        )[:limit]
        assert [tuple(x) for x in got] == want

    @invariant()
    def versions_and_head_agree(self) -> None:
        if not hasattr(self, "store"):
            return
        assert self.store.head() == len(self.model.log)
        assert len(self.store) == len(self.model.log)
        for stream_id in [*STREAMS, "nobody"]:
            assert self.store.stream_version(stream_id) == self.model.version(stream_id)


StoreMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreModel = StoreMachine.TestCase


# --- plain unit tests of the store's extras ----------------------------------------------


def test_positions_and_versions_are_contiguous() -> None:
    store = MemoryStore()
    for i in range(50):
        store.append([NewEvent(STREAMS[i % len(STREAMS)], "m.A", bytes([i]))])
    log = store.read_all()
    assert [e.position for e in log] == list(range(1, 51))
    for s in STREAMS:
        assert [e.version for e in store.read_stream(s)] == list(range(1, 11))


def test_stored_events_are_immutable() -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"x")])
    [e] = store.read_all()
    with pytest.raises(AttributeError):
        e.payload = b"y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        e.version = 9  # type: ignore[misc]
    [again] = store.read_all()
    assert again.payload == b"x" and again.version == 1
    assert again == e


def test_wait_for_append_wakes_on_a_write_and_times_out_otherwise() -> None:
    store = MemoryStore()
    started = time.monotonic()
    assert store.wait_for_append(0, 0.05) == 0
    assert time.monotonic() - started >= 0.04

    def later() -> None:
        time.sleep(0.05)
        store.append([NewEvent("s", "m.A", b"")])

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    assert store.wait_for_append(0, 5.0) == 1
    assert time.monotonic() - started < 4.0
    thread.join()
    # Already past: returns at once.
    started = time.monotonic()
    assert store.wait_for_append(0, 5.0) == 1
    assert time.monotonic() - started < 1.0


async def test_async_wait_for_append() -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"")])
    assert await store.aio.wait_for_append(0, 1.0) == 1
    assert await store.aio.wait_for_append(1, 0.01) == 1


async def test_a_store_that_was_awaited_on_is_freed() -> None:
    """Regression: the watcher behind ``aio.wait_for_append`` kept its store alive forever
    (it was the value of a WeakKeyDictionary and held its own key)."""
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"x" * 1000)])
    assert await store.aio.wait_for_append(1, 0.01) == 1  # times out: starts the watcher
    gone = weakref.ref(store)
    del store
    deadline = time.monotonic() + 5.0  # the watcher thread ends within its 0.1 s slice
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        await asyncio.sleep(0.02)
    assert gone() is None


def test_memory_usage_grows_with_events() -> None:
    store = MemoryStore()
    empty = store.memory_usage()
    assert isinstance(empty, int) and empty >= 0
    store.append([NewEvent(f"s-{i % 10}", "m.A", b"x" * 100) for i in range(1000)])
    grown = store.memory_usage()
    assert grown - empty >= 100 * 1000
    assert repr(store) == "MemoryStore(events=1000)"


async def test_async_view_shares_the_data() -> None:
    store = MemoryStore()
    await store.aio.append([NewEvent("s", "m.A", b"1")], expected={"s": NO_STREAM})
    assert store.stream_version("s") == 1
    assert [e.payload for e in await store.aio.read_stream("s")] == [b"1"]
    assert await store.aio.head() == 1
    async with store.aio as aio:
        assert await aio.stream_version("s") == 1


def test_append_result_uses_the_trimmed_stream_ids() -> None:
    # Stream ids are validated and trimmed by the store; the result must describe the
    # events as stored (trimmed ids, right versions), whatever spelling the caller used.
    store = MemoryStore()
    first = store.append([NewEvent(" padded ", "m.A", b"x")], expected={" padded ": NO_STREAM})
    assert dict(first.stream_versions) == {"padded": 1}
    assert [(w.stream_id, w.version, w.position) for w in first.events] == [("padded", 1, 1)]
    second = store.append([NewEvent("padded", "m.A", b"y"), NewEvent("padded\t", "m.A", b"z")])
    assert dict(second.stream_versions) == {"padded": 3}
    assert [(w.stream_id, w.version) for w in second.events] == [("padded", 2), ("padded", 3)]
    assert [(e.stream_id, e.version) for e in store.read_all()] == [
        ("padded", 1),
        ("padded", 2),
        ("padded", 3),
    ]
