"""Every store against one plain-Python reference model (hypothesis, stateful).

The same random operations drive a store (the in-memory store's async view, the SQLite
store's, or a :class:`~eventcore.postgres.PostgresStore` on a fresh schema) and the
reference ``Model``; results and errors must be identical. Appends cover every path of
PostgreSQL's ``append_events`` function: one stream (checked or not), several streams
where every checked stream is written, and the general path (checks on streams that are
only read, empty batches); expected versions right, wrong, ``NO_STREAM``,
``STREAM_EXISTS`` and ``ANY``; metadata; idempotent replays of whole batches and of runs
of the log (with other expected versions, ids as UUIDs or ints); event ids reused for
other content, twice in one batch, or next to new ones ("only part of the batch was
stored"). Every read is compared: ``read_stream``, ``read_streams``,
``read_stream_backwards``, ``read_all`` (types, prefix, limit, ``after_position`` on and
between positions), ``read_fold``, ``list_streams``, ``stream_version``, ``head``
and (PostgreSQL) ``latest_position``.

Positions may be sparse (PostgreSQL: ``transaction id * 2**20 + index``): the machine
maps the model's positions 1..N (log order) to the store's, learned from the append
results, checks that they are strictly increasing in log order and consecutive within
an append (and, for a store with ``dense_positions``, that they are 1..N), and compares
reads through that map. A replay is a run of the log stored consecutively (no other
event between), even across appends; :class:`NamingModel` also names the event each
DuplicateEventId is about.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    ConditionFailed,
    DuplicateEventId,
    MemoryStore,
    Metadata,
    NewEvent,
    StreamConflict,
    uuid7,
)
from eventcore.query import AppendCondition, Query, QueryItem
from eventcore.recorded import AppendResult

STREAMS = ["acc-1", "acc-2", "acc-10", "ord-1", "ord-2"]
TYPES = ["m.A", "m.B", "m.C"]
PREFIXES = ["acc-", "acc-1", "ord-", "x", ""]
TAGS = ["k:1", "k:2", "k:3"]


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
    tags: dict[int, tuple[str, ...]] = field(default_factory=dict)  # log index -> tags

    def matching(self, query: Query, after: int) -> list[Stored]:
        """The events after model position ``after`` that ``query`` matches (issue 19)."""
        return [
            e
            for e in self.log[after:]
            if query.matches(e.event_type, self.tags.get(e.position - 1, ()))
        ]

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


T = TypeVar("T")
ModelEvent = tuple[str, str, bytes, int]
"""An event as the model takes it: stream, type, payload, event id as an int."""

PART = "only part of this batch was stored before"
DIFFERENT = "already stored with different content"
TWICE = "appears more than once in this batch"
CORRELATION = uuid.UUID("0190a000-0000-7000-8000-000000000001")
SETTLE_SECONDS = 10.0
"""How long a check waits for the cluster's other transactions to stop holding back head."""

limits = st.one_of(st.none(), st.integers(0, 6))
metadata = st.one_of(
    st.none(),
    st.builds(
        lambda user, correlation, custom: (
            Metadata(user_id=user, correlation_id=correlation, custom=custom) or None
        ),
        st.sampled_from([None, "ann", "bob"]),
        st.sampled_from([None, CORRELATION]),
        st.sampled_from([None, {"tenant": "t1"}, {"tags": [1, 2]}]),
    ),
)


class NamingModel(Model):
    """The reference model, also naming the event a DuplicateEventId is about.

    A replay is any run of events stored consecutively in the log (no other event between
    them) in this order with the same content and metadata, even across appends, as in
    the in-memory store. Both stores decide on the first event of the batch (in order)
    that is not a replay: a missing one means "only part of this batch was stored before"
    (naming the first stored id), anything else "different content" (naming that event);
    the base model does not say which, this one does.
    """

    def duplicate(self, events: list[ModelEvent], metadata: Metadata) -> DuplicateEventId | None:
        """The DuplicateEventId both stores raise for this batch, or None (no duplicate)."""
        ids = [e[3] for e in events]
        seen: set[int] = set()
        for event_id in ids:
            if event_id in seen:
                return DuplicateEventId(event_id, TWICE)
            seen.add(event_id)
        stored = [i for i in ids if i in self.by_id]
        if not stored:
            return None
        first = self.by_id.get(ids[0])
        for k, (stream_id, event_type, payload, event_id) in enumerate(events):
            index = self.by_id.get(event_id)
            if index is None or first is None:
                return DuplicateEventId(stored[0], PART)
            old = self.log[index]
            if (
                index != first + k
                or (old.stream_id, old.event_type, old.payload) != (stream_id, event_type, payload)
                or old.metadata != metadata
            ):
                return DuplicateEventId(event_id, DIFFERENT)
        return None

    def append(
        self,
        events: list[ModelEvent],
        expected: list[tuple[str, int]],
        metadata: Metadata,
    ) -> tuple[list[int], dict[str, int]] | Exception:
        verdict = self.duplicate(events, metadata)
        outcome = super().append(events, expected, metadata)
        if verdict is None:
            assert not isinstance(outcome, DuplicateEventId), (outcome, "model disagrees")
            return outcome
        assert isinstance(outcome, DuplicateEventId), (outcome, "model disagrees")
        return verdict


def append_path(events: Sequence[NewEvent], checked: Sequence[str]) -> str:
    """Which path of ``append_events`` takes this batch (as the SQL function decides)."""
    written = {e.stream_id for e in events}
    if len(written) == 1 and (not checked or list(checked) == [events[0].stream_id]):
        return "one-stream"
    if events and set(checked) <= written:
        return "multi-stream"
    return "general"


def id_int(event_id: Any) -> int:
    """An event id (uuid.UUID, asyncpg's UUID or an int) as an int."""
    return event_id if isinstance(event_id, int) else uuid.UUID(str(event_id)).int


def recorded_keys(recorded: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [
        (e.position, e.event_id.int, e.stream_id, e.version, e.event_type, e.payload, e.metadata)
        for e in recorded
    ]


class StoreUnderTest:
    """A store the machine drives: its async face, how it starts and how it is dropped."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def start(self) -> None:
        """Make the store ready (PostgreSQL: open and migrate)."""

    async def latest_position(self) -> int:
        """The highest committed position (PostgreSQL's head may lag behind it)."""
        latest = getattr(self.store, "latest_position", None)
        return int(await (latest() if latest is not None else self.store.head()))

    async def drop(self) -> None:
        """Close the store and drop what it wrote."""
        await self.store.close()


class MemoryUnderTest(StoreUnderTest):
    def __init__(self) -> None:
        super().__init__(MemoryStore().aio)


class SqliteUnderTest(StoreUnderTest):
    def __init__(self) -> None:
        from eventcore.sqlite import SqliteStore

        self.folder = tempfile.mkdtemp(prefix="eventcore-model-")
        super().__init__(SqliteStore(f"{self.folder}/events.db", synchronous="OFF").aio)

    async def drop(self) -> None:
        await super().drop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresUnderTest(StoreUnderTest):
    def __init__(self, dsn: str) -> None:
        from eventcore.postgres import PostgresStore
        from tests.pgserver import new_schema_name

        self.dsn = dsn
        super().__init__(PostgresStore(dsn, schema=new_schema_name(), max_size=2))

    async def start(self) -> None:
        await self.store.open()
        await self.store.migrate()

    async def drop(self) -> None:
        from tests.pgserver import drop_schema

        try:
            await super().drop()
        finally:
            await drop_schema(self.dsn, self.store.schema)


class StoreMachine(RuleBasedStateMachine):
    """Drives a store and the NamingModel with the same operations."""

    def __init__(self, under_test: StoreUnderTest) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.under_test = under_test
        self.store = under_test.store
        self.dense = bool(getattr(self.store, "dense_positions", False))
        self.model = NamingModel()
        # pos[k - 1] is the store's position of the model's position k.
        self.pos: list[int] = []
        # Successful non-empty appends with explicit ids: (events, expected, meta, result).
        self.batches: list[tuple[list[NewEvent], list[tuple[str, int]], Any, AppendResult]] = []
        try:
            self.run(under_test.start())
        except BaseException:
            self.teardown()
            raise

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.under_test.drop())
        finally:
            self.loop.close()

    # -- positions ---------------------------------------------------------------------

    def at(self, model_position: int) -> int:
        """The store's position of the model's position (1..N)."""
        return self.pos[model_position - 1]

    def keys(self, events: Sequence[Stored]) -> list[tuple[Any, ...]]:
        """The model's events as recorded_keys() of the store's events should read."""
        return [(self.at(e.position), *e.key()[1:]) for e in events]

    def after_position(self, k: int, in_gap: bool) -> int:
        """The store's cursor for "after the model's position k".

        On a position (0 before the log, the last one beyond it), or (``in_gap``) the
        highest cursor that still lies before the next event.
        """
        n = len(self.pos)
        if k >= n:
            last = self.pos[-1] if n else 0
            return last + 12_345 if in_gap else last
        if in_gap:
            return self.pos[k] - 1
        return self.pos[k - 1] if k else 0

    def settled_head(self) -> int:
        """head(), once it reached latest_position().

        head() lags behind while any older transaction of the cluster is still running;
        nothing else writes to this schema, so it catches up (and then stays up).
        """
        deadline = self.loop.time() + SETTLE_SECONDS
        while True:
            head = self.run(self.store.head())
            latest = self.run(self.under_test.latest_position())
            if head == latest or self.loop.time() > deadline:
                assert head == latest, f"head {head} stays below latest {latest}"
                return head
            self.run(asyncio.sleep(0.01))

    # -- appends -----------------------------------------------------------------------

    def draw_expected(
        self, data: st.DataObject, stream_ids: Sequence[str]
    ) -> list[tuple[str, int]]:
        expected = []
        for stream_id in stream_ids:
            actual = self.model.version(stream_id)
            kind = data.draw(st.sampled_from(["right", "wrong", "none", "exists", "any"]))
            if kind == "right":
                exp = actual
            elif kind == "wrong":
                exp = data.draw(st.integers(0, actual + 1))
                if exp >= actual:  # any version but the actual one
                    exp += 1
            else:
                exp = {"none": NO_STREAM, "exists": STREAM_EXISTS, "any": ANY}[kind]
            expected.append((stream_id, exp))
        return expected

    def check_same(
        self, events: list[NewEvent], expected: Any, meta: Metadata | None
    ) -> AppendResult | None:
        """Append to both; assert the same outcome. The store's result, None on an error."""
        pairs = list(expected.items()) if isinstance(expected, dict) else list(expected)
        path = append_path(events, [s for s, _ in pairs])
        latest_before = self.run(self.under_test.latest_position())
        try:
            result = self.run(self.store.append(events, expected=expected, metadata=meta))
        except (ConcurrencyConflict, DuplicateEventId) as exc:
            event(f"append: {path}, {type(exc).__name__}")
            assert self.run(self.under_test.latest_position()) == latest_before
            model_ids = [uuid7().int if e[3] is None else id_int(e[3]) for e in events]
            outcome = self.model.append(
                [(*e[:3], i) for e, i in zip(events, model_ids, strict=True)],
                pairs,
                meta or Metadata(),
            )
            assert isinstance(outcome, type(exc)), (exc, outcome)
            if isinstance(exc, ConcurrencyConflict):
                assert isinstance(outcome, ConcurrencyConflict)
                assert exc.conflicts == tuple(StreamConflict(*c) for c in outcome.conflicts)
                assert exc.attempts == 1
            else:
                assert isinstance(outcome, DuplicateEventId)
                assert (id_int(exc.event_id), exc.reason) == (outcome.event_id, outcome.reason)
            return None
        ids = [i.int for i in result.event_ids]
        for given, got in zip(events, ids, strict=True):
            if given.event_id is not None:
                assert got == id_int(given.event_id)
            else:
                assert uuid.UUID(int=got).version == 7
        known = len(self.pos)
        outcome = self.model.append(
            [(*e[:3], i) for e, i in zip(events, ids, strict=True)],
            pairs,
            meta or Metadata(),
        )
        assert not isinstance(outcome, Exception), f"store accepted, model says {outcome!r}"
        positions, versions = outcome
        store_positions = list(result.positions)
        assert len(store_positions) == len(positions) == len(events)
        replay = bool(positions) and positions[0] <= known
        event(f"append: {path}, {'replay' if replay else 'ok'}")
        if replay:
            assert [self.at(p) for p in positions] == store_positions
            assert self.run(self.under_test.latest_position()) == latest_before
        elif positions:
            assert positions == list(range(known + 1, known + 1 + len(events)))
            first = store_positions[0]
            assert first > (self.pos[-1] if self.pos else 0), "positions must increase"
            if self.dense:
                assert first == known + 1, "dense positions: 1, 2, 3... without gaps"
            assert store_positions == list(range(first, first + len(events)))
            self.pos.extend(store_positions)
        assert dict(result.stream_versions) == versions
        assert len(result) == len(events)
        assert [(w.event_id.int, w.stream_id, w.version, w.position) for w in result.events] == [
            (i, self.model.log[p - 1].stream_id, self.model.log[p - 1].version, self.at(p))
            for i, p in zip(ids, positions, strict=True)
        ]
        assert result.last_position == max(store_positions, default=0)
        return result

    def append_batch(
        self, data: st.DataObject, into: list[str], size: int, checks: str, meta: Metadata | None
    ) -> None:
        """Append ``size`` events over the streams ``into``, checking as ``checks`` says.

        ``checks``: "none"; "written" (some of the written streams); "written+read" (some
        written ones and streams that are only read); "any" (any streams).
        """
        batch = data.draw(
            st.lists(
                st.tuples(st.sampled_from(into), st.sampled_from(TYPES), st.binary(max_size=8)),
                min_size=size,
                max_size=size,
            )
        )
        written = list(dict.fromkeys(s for s, _, _ in batch))
        if checks == "none":
            checked: list[str] = []
        elif checks == "any":
            checked = data.draw(st.lists(st.sampled_from(STREAMS), unique=True, max_size=3))
        else:
            checked = (
                data.draw(st.lists(st.sampled_from(written), unique=True, min_size=1))
                if written
                else []
            )
            if checks == "written+read":
                others = [s for s in STREAMS if s not in written]
                extra = data.draw(st.lists(st.sampled_from(others), unique=True, min_size=1))
                checked = data.draw(st.permutations([*checked, *extra[:2]]))
        expected = self.draw_expected(data, checked)
        explicit_ids = data.draw(st.booleans())
        events = [NewEvent(s, t, p, uuid7() if explicit_ids else None) for s, t, p in batch]
        as_mapping = data.draw(st.booleans())
        result = self.check_same(events, dict(expected) if as_mapping else expected, meta)
        if result is not None and explicit_ids and events:
            self.batches.append((events, expected, meta, result))

    @rule(
        data=st.data(),
        stream_id=st.sampled_from(STREAMS),
        size=st.integers(1, 4),
        checks=st.sampled_from(["none", "written"]),
        meta=metadata,
    )
    def append_to_one_stream(
        self, data: st.DataObject, stream_id: str, size: int, checks: str, meta: Metadata | None
    ) -> None:
        self.append_batch(data, [stream_id], size, checks, meta)

    @rule(
        data=st.data(),
        into=st.lists(st.sampled_from(STREAMS), unique=True, min_size=2, max_size=3),
        size=st.integers(2, 4),
        checks=st.sampled_from(["none", "written"]),
        meta=metadata,
    )
    def append_to_streams(
        self, data: st.DataObject, into: list[str], size: int, checks: str, meta: Metadata | None
    ) -> None:
        self.append_batch(data, into, size, checks, meta)

    @rule(
        data=st.data(),
        into=st.lists(st.sampled_from(STREAMS), unique=True, min_size=1, max_size=3),
        size=st.integers(0, 4),
        checks=st.sampled_from(["written+read", "any"]),
        meta=metadata,
    )
    def append_checking_other_streams(
        self, data: st.DataObject, into: list[str], size: int, checks: str, meta: Metadata | None
    ) -> None:
        self.append_batch(data, into, size, checks, meta)

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), recheck=st.booleans())
    def replay_a_batch(self, data: st.DataObject, recheck: bool) -> None:
        """The same events again: the original result, whatever the expected versions."""
        events, expected, meta, original = data.draw(st.sampled_from(self.batches))
        if recheck:  # the ids are looked at before any expected version
            streams = data.draw(st.lists(st.sampled_from(STREAMS), unique=True, max_size=3))
            expected = self.draw_expected(data, streams)
        result = self.check_same(events, expected, meta)
        assert result is not None
        assert list(result.positions) == list(original.positions)
        assert result.events == original.events

    @precondition(lambda self: self.model.log)
    @rule(
        data=st.data(),
        length=st.integers(1, 4),
        change=st.sampled_from(["none", "none", "reversed", "plus-new", "new-first"]),
        as_int=st.booleans(),
    )
    def replay_a_run(self, data: st.DataObject, length: int, change: str, as_int: bool) -> None:
        """Consecutive events of the log again: a replay, also across appends."""
        start = data.draw(st.integers(0, len(self.model.log) - 1))
        run = self.model.log[start : start + length]
        events = [
            NewEvent(
                e.stream_id,
                e.event_type,
                e.payload,
                e.event_id if as_int else uuid.UUID(int=e.event_id),
                self.model.tags.get(e.position - 1, ()),  # a replay carries its tags
            )
            for e in run
        ]
        if change == "reversed":
            events.reverse()
        elif change == "plus-new":
            events.append(NewEvent(run[0].stream_id, "m.A", b"new", uuid7()))
        elif change == "new-first":
            events.insert(0, NewEvent(run[0].stream_id, "m.A", b"new", uuid7()))
        self.check_same(events, [], run[0].metadata or None)

    @precondition(lambda self: self.model.log)
    @rule(
        data=st.data(),
        how=st.sampled_from(["payload", "stream", "type", "meta", "mixed", "twice"]),
    )
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
        elif how == "twice":
            fresh = uuid7()
            events = [NewEvent(old.stream_id, "m.A", b"", fresh)] * 2
        assert self.check_same(events, [], meta) is None

    # -- reads -------------------------------------------------------------------------

    @rule(
        stream_id=st.sampled_from([*STREAMS, "nobody"]),
        after=st.integers(0, 6),
        limit=limits,
    )
    def read_stream(self, stream_id: str, after: int, limit: int | None) -> None:
        got = self.run(self.store.read_stream(stream_id, after_version=after, limit=limit))
        want = [e for e in self.model.stream(stream_id) if e.version > after][:limit]
        assert recorded_keys(got) == self.keys(want)

    @rule(
        stream_ids=st.lists(st.sampled_from([*STREAMS, "nobody"]), unique=True, max_size=4),
        after=st.integers(0, 4),
        limit=limits,
    )
    def read_streams(self, stream_ids: list[str], after: int, limit: int | None) -> None:
        got = self.run(self.store.read_streams(stream_ids, after_version=after, limit=limit))
        want = sorted(
            (e for s in stream_ids for e in self.model.stream(s) if e.version > after),
            key=lambda e: e.position,
        )[:limit]
        assert recorded_keys(got) == self.keys(want)

    @rule(
        stream_id=st.sampled_from([*STREAMS, "nobody"]),
        before=st.one_of(st.none(), st.integers(0, 8)),
        limit=limits,
    )
    def read_stream_backwards(self, stream_id: str, before: int | None, limit: int | None) -> None:
        got = self.run(
            self.store.read_stream_backwards(stream_id, before_version=before, limit=limit)
        )
        events = self.model.stream(stream_id)
        if before is not None:
            events = [e for e in events if e.version < before]
        want = list(reversed(events))[:limit]
        assert recorded_keys(got) == self.keys(want)

    @rule(
        after=st.integers(0, 40),
        in_gap=st.booleans(),
        limit=limits,
        types=st.one_of(st.none(), st.lists(st.sampled_from([*TYPES, "m.Z"]), max_size=2)),
        prefix=st.one_of(st.none(), st.sampled_from(PREFIXES)),
    )
    def read_all(
        self,
        after: int,
        in_gap: bool,
        limit: int | None,
        types: list[str] | None,
        prefix: str | None,
    ) -> None:
        self.settled_head()
        got = self.run(
            self.store.read_all(
                after_position=self.after_position(after, in_gap),
                limit=limit,
                event_types=types,
                stream_prefix=prefix,
            )
        )
        want = [
            e
            for e in self.model.log
            if e.position > after
            and (types is None or e.event_type in types)
            and (prefix is None or e.stream_id.startswith(prefix))
        ][:limit]
        assert recorded_keys(got) == self.keys(want)

    @rule(stream_ids=st.lists(st.sampled_from([*STREAMS, "nobody"]), unique=True, max_size=4))
    def read_fold(self, stream_ids: list[str]) -> None:
        rows, versions = self.run(self.store.read_fold(stream_ids))
        want = sorted(
            (e for s in stream_ids for e in self.model.stream(s)), key=lambda e: e.position
        )
        assert [tuple(r) for r in rows] == [
            (e.stream_id, e.event_type, e.payload, e.version, self.at(e.position)) for e in want
        ]
        assert list(versions) == [self.model.version(s) for s in stream_ids]

    @rule(
        prefix=st.one_of(st.none(), st.sampled_from(PREFIXES)),
        after=st.one_of(st.none(), st.sampled_from([*STREAMS, "a", "z"])),
        limit=limits,
    )
    def list_streams(self, prefix: str | None, after: str | None, limit: int | None) -> None:
        got = self.run(self.store.list_streams(prefix=prefix, after=after, limit=limit))
        want = sorted(
            (s, len(ix))
            for s, ix in self.model.streams.items()
            if ix and (prefix is None or s.startswith(prefix)) and (after is None or s > after)
        )[:limit]
        assert [tuple(x) for x in got] == want

    # -- tags, query reads and conditional appends (issue 19) ----------------------------

    def draw_query(self, data: st.DataObject) -> Query:
        items = data.draw(
            st.lists(
                st.builds(
                    QueryItem,
                    st.lists(st.sampled_from(TYPES), unique=True, max_size=2).map(tuple),
                    st.lists(st.sampled_from(TAGS), unique=True, max_size=2).map(tuple),
                ),
                max_size=2,
            )
        )
        return Query(*items)

    @rule(data=st.data(), size=st.integers(1, 3), in_gap=st.booleans())
    def append_tagged_under_a_condition(self, data: st.DataObject, size: int, in_gap: bool) -> None:
        batch = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(STREAMS),
                    st.sampled_from(TYPES),
                    st.lists(st.sampled_from(TAGS), unique=True, max_size=3),
                ),
                min_size=size,
                max_size=size,
            )
        )
        query = self.draw_query(data)
        k = data.draw(st.integers(0, len(self.pos)))
        matching = self.model.matching(query, k)
        events = [NewEvent(s, t, b"t", uuid7(), tuple(tags)) for s, t, tags in batch]
        latest_before = self.run(self.under_test.latest_position())
        condition = AppendCondition(query, self.after_position(k, in_gap))
        try:
            result = self.run(self.store.append(events, condition=condition))
        except ConditionFailed as exc:
            event("append: tagged, ConditionFailed")
            assert matching, exc
            assert exc.position in (0, self.at(matching[0].position))
            assert self.run(self.under_test.latest_position()) == latest_before
            return
        event("append: tagged, ok")
        assert not matching, f"a condition passed over {matching[0]}"
        ids = [i.int for i in result.event_ids]
        outcome = self.model.append(
            [(*e[:3], i) for e, i in zip(events, ids, strict=True)], [], Metadata()
        )
        assert not isinstance(outcome, Exception)
        positions, _ = outcome
        for p, (_, _, tags) in zip(positions, batch, strict=True):
            if tags:
                self.model.tags[p - 1] = tuple(sorted(tags))
        self.pos.extend(result.positions)

    @rule(data=st.data(), in_gap=st.booleans(), limit=limits)
    def read_by_query(self, data: st.DataObject, in_gap: bool, limit: int | None) -> None:
        query = self.draw_query(data)
        k = data.draw(st.integers(0, len(self.pos)))
        head = self.settled_head()  # every append of the model is readable
        found = self.run(
            self.store.read_query(query, after=self.after_position(k, in_gap), limit=limit)
        )
        want = self.model.matching(query, k)[:limit]
        assert recorded_keys(found.events) == self.keys(want)
        assert [e.tags for e in found.events] == [
            self.model.tags.get(e.position - 1, ()) for e in want
        ]
        if limit and len(want) == limit:
            assert found.position == self.at(want[-1].position)
        else:
            assert found.position == head

    @invariant()
    def versions_and_head_agree(self) -> None:
        last = self.pos[-1] if self.pos else 0
        assert len(self.pos) == len(self.model.log)
        assert self.settled_head() == last
        assert self.run(self.under_test.latest_position()) == last
        for stream_id in [*STREAMS, "nobody"]:
            assert self.run(self.store.stream_version(stream_id)) == self.model.version(stream_id)
        sync = getattr(self.store, "sync", None)  # a synchronous store's own face
        if sync is not None:
            assert len(sync) == len(self.model.log)
            assert sync.head() == last


SETTINGS = settings(
    max_examples=60,  # per store (the in-memory store: see tests/test_store_model.py)
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
