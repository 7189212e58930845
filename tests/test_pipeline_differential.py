"""The command machine against its reference model (``tests/pipeline_model.py``).

Hypothesis draws a short run of commands and executor options; each command runs twice in
lockstep, once through the model and once through ``eventcore._pipeline.run_command``,
each against its own simulated world (a small reference store with a snapshot store).
The two worlds start equal and get the same injected faults (concurrent writers, an
unavailable store, lost append replies, duplicate ids, a same-key caller, a store that
breaks), so as long as the two runs emit the same effects the worlds stay equal. Every
effect is compared, normalised, as it comes, and so are the outcome, the logs, the
caches' counters and the snapshots at the end of each command.

A second property runs the machine the way the in-memory store will (``run.drive`` on a
real MemoryStore: the store's effects inside the machine, D1) against the model on a
simulated world: only the effects that come out (SLEEP, LOAD, SAVE, DONE), the outcome and
the logs are compared. Until the machine has ``drive``, the test does the same with
``send``, so it also checks the simulated world against the real store.

Event ids are compared by where they come from: a fresh id is numbered by its first
appearance in its run (the two runs draw different UUIDv7s, but must reuse them alike),
an idempotency key's ids and the simulated writers' ids must be equal.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from eventcore import (
    Command,
    ConcurrencyConflict,
    DuplicateEventId,
    EventRegistry,
    MemoryStore,
    Metadata,
    OutcomeUnknown,
    RecordedEvent,
    RetryPolicy,
    StoreUnavailable,
    StreamId,
    _pipeline,
    require,
    stream,
)
from eventcore._pipeline import APPEND, DONE, FOLD, LOAD, LOOKUP, SAVE, SLEEP, TAIL, _Keyed
from eventcore.boundary import QueryCommand
from eventcore.errors import ConditionFailed
from eventcore.executor import execute_sync
from eventcore.query import Query
from eventcore.recorded import AppendResult, NewEvent
from eventcore.state_cache import CacheEntry, StateCache

from . import pipeline_model

# -- the domain ------------------------------------------------------------------------

REGISTRY = EventRegistry()


@dataclass(frozen=True)
class Added:
    """A number added to a stream; a negative one makes ``apply`` raise."""

    n: int


@dataclass(frozen=True)
class Linked:
    """Points at a stream that ``discover`` then adds."""

    to: str


@dataclass(frozen=True)
class Unregistered:
    """An event the registry does not know (``handle`` emitting it is a SerializationError)."""

    n: int


REGISTRY.register("diff.Added", Added)
REGISTRY.register("diff.Linked", Linked)

DECLARABLE = ["a-0", "a-1", "a-2"]
DISCOVERABLE = ["d-0", "d-1", "d-2", "d-3"]
EVERY_STREAM = DECLARABLE + DISCOVERABLE
TARGETS = [*EVERY_STREAM, "x-0"]  # x-0 is never declared nor discovered
State = tuple[tuple[str, Any], ...]


class Plain(Command[State, Any]):
    """Folds every event into a tuple (so order matters) and does what ``outcome`` says."""

    streams_: tuple[StreamId, ...] = stream()
    outcome: str = "emit"
    emits: tuple[tuple[str, str], ...] = ()
    note: str = ""  # may hold an undeclared stream id (the UndeclaredStream hint names it)

    def initial_state(self) -> State:
        return ()

    def apply(self, state: State, event: Any, stream_id: str) -> State:
        if isinstance(event, Added):
            if event.n < 0:
                raise ValueError(f"cannot apply Added({event.n}) of {stream_id}")
            return (*state, (stream_id, event.n))
        return (*state, (stream_id, "->" + event.to))

    def handle(self, state: State) -> Any:
        outcome = self.outcome
        if outcome == "violate":
            require(False, f"rule broken after {len(state)} events")
        if outcome == "raise":
            raise RuntimeError(f"handle crashed on {state!r}")
        if outcome == "bulk":  # more events than one LOOKUP asks for
            return [(self.streams_[0], Added(i)) for i in range(pipeline_model.LOOKUP_CHUNK + 1)]
        if outcome in MALFORMED:
            return MALFORMED[outcome](self)
        out: list[tuple[Any, Any]] = []
        for target, what in self.emits:
            if what == "poison":
                out.append((target, Added(-1)))
            elif what.startswith("link:"):
                out.append((target, Linked(what[5:])))
            elif what == "unregistered":
                out.append((target, Unregistered(1)))
            else:
                out.append((target, Added(int(what) + len(state))))
        return out


MALFORMED: dict[str, Callable[[Plain], Any]] = {
    "none": lambda c: None,
    "int": lambda c: 42,
    "strings": lambda c: list(c.streams_),
    "triples": lambda c: [(c.streams_[0], Added(1), 3)],
    "not-an-event": lambda c: [(c.streams_[0], 5)],
    "int-stream": lambda c: [(5, Added(1))],
}


class Discovering(Plain):
    """Discovers ``discovers`` first, then every stream a ``Linked`` event points at."""

    discovers: tuple[str, ...] = ()
    max_discovery_rounds = 2

    def discover(self, state: State) -> Iterable[str]:
        linked = [value[2:] for _, value in state if isinstance(value, str)]
        return [*self.discovers, *linked]


class Uncached(Plain):
    """Never cached: folds every stream in full every time."""

    state_cache = False


# -- the simulated world ---------------------------------------------------------------

WRITER_IDS = 1 << 100
"""Simulated writers' event ids start here (the same in both worlds)."""
KEYS = ["k-1", "k-2"]


@dataclass
class Stored:
    position: int
    event_id: int
    stream_id: str
    version: int
    event_type: str
    payload: bytes
    metadata: Metadata


class Fault:
    """What the world does to one effect (drawn once, applied to both worlds)."""

    def __init__(self, kind: str, writes: Sequence[tuple[str, Any]] = (), same: bool = True):
        self.kind = kind
        self.writes = writes
        self.same = same  # a same-key writer's metadata: this command's, or another's

    def __repr__(self) -> str:
        return f"Fault({self.kind!r}, {list(self.writes)!r}, same={self.same})"


class Throw:
    """The store raised ``exc``: the shell throws it into the run."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(frozen=True)
class SnapTail:
    """What a snapshot store that reads the events after a snapshot with it returns
    beside the entry (as PostgreSQL's): the next TAIL's hint, the read it saves."""

    streams: list[str]
    versions: list[int]
    read: Any


class Pending:
    """What an async store returns to a sync shell: an awaitable (never awaited)."""

    def __await__(self) -> Any:
        yield None

    def __repr__(self) -> str:
        return "Pending()"


class World:
    """A reference event store (streams of encoded events in one global order) and a
    snapshot store, interpreting every effect of one run; also names its run's ids."""

    def __init__(self, versions_first: bool = False) -> None:
        self.versions_first = versions_first
        self.log: list[Stored] = []
        self.streams: dict[str, list[Stored]] = {}
        self.by_id: dict[int, Stored] = {}
        self.snapshots: dict[Any, CacheEntry] = {}
        self.writes = 0
        self.labels: dict[int, Any] = {}
        self.fresh = 0
        for key in KEYS:
            for i, event_id in enumerate(_Keyed(key, Plain(streams_=("a-0",)), None).ids(40)):
                self.labels[event_id] = ("key", key, i)
        self.pending: list[Any] = []  # coroutines handed out (closed after each command)
        self.command: Any = None
        self.key: str | None = None
        self.metadata: Metadata | None = None

    # -- ids

    def label(self, event_id: Any) -> Any:
        """Where an id comes from: a key, a writer, or the n-th fresh id of this run."""
        value = event_id.int if hasattr(event_id, "int") else event_id
        label = self.labels.get(value)
        if label is None:
            label = self.labels[value] = ("fresh", self.fresh)
            self.fresh += 1
        return label

    # -- the store

    def version(self, stream_id: str) -> int:
        return len(self.streams.get(stream_id, ()))

    def write(self, events: Sequence[tuple[str, str, bytes, int]], metadata: Metadata) -> None:
        for stream_id, name, payload, event_id in events:
            rows = self.streams.setdefault(stream_id, [])
            row = Stored(
                len(self.log) + 1, event_id, stream_id, len(rows) + 1, name, payload, metadata
            )
            rows.append(row)
            self.log.append(row)
            self.by_id[event_id] = row

    def writer(self, writes: Sequence[tuple[str, Any]]) -> None:
        """A concurrent writer appends ``writes`` (one batch)."""
        batch = []
        for stream_id, ev in writes:
            event_id = WRITER_IDS + self.writes
            self.labels[event_id] = ("writer", self.writes)
            self.writes += 1
            batch.append((stream_id, *REGISTRY.encode(ev), event_id))
        self.write(batch, Metadata())

    def same_key_writer(self, count: int, same: bool) -> None:
        """Another caller with this command's idempotency key writes first."""
        if self.key is None:
            return
        ids = _Keyed(self.key, self.command, self.metadata).ids(count)
        if any(i in self.by_id for i in ids):
            return
        if same:
            metadata = _Keyed(self.key, self.command, self.metadata).metadata
        else:
            metadata = _Keyed(self.key, Plain(streams_=("a-2",), note="other"), None).metadata
        target = (
            EVERY_STREAM[0] if not isinstance(self.command, Plain) else self.command.streams_[0]
        )
        self.write([(target, *REGISTRY.encode(Added(9)), i) for i in ids], metadata)

    def fold(self, streams: Sequence[str]) -> Any:
        """The rows of ``streams`` in global order, and their versions; the rows name the
        caller's stream ids (as the MemoryStore does: a command's StreamId objects)."""
        given = {s: s for s in streams}
        rows = [self.row(r, given) for r in self.log if r.stream_id in given]
        return rows, [self.version(s) for s in streams]

    @staticmethod
    def row(r: Any, given: Mapping[str, str]) -> tuple[Any, ...]:
        """A stored event as a fold row."""
        return (given[r.stream_id], r.event_type, r.payload, r.version, r.position)

    def tail(self, streams: Sequence[str], versions: Sequence[int], fold_from: int) -> Any:
        if any(self.version(s) != v for s, v in zip(streams[:fold_from], versions, strict=False)):
            return None  # an earlier discovery round's stream moved
        after = dict(zip(streams[fold_from:], versions[fold_from:], strict=True))
        folded = [
            r.position for r in self.log if r.stream_id in after and r.version <= after[r.stream_id]
        ]
        rows = [r for r in self.log if r.stream_id in after and r.version > after[r.stream_id]]
        if rows and folded and rows[0].position <= max(folded):
            return None
        given = {s: s for s in streams}
        return [self.row(r, given) for r in rows], [self.version(s) for s in streams]

    def append(
        self,
        events: list[Any],
        checks: list[Any],
        metadata: Metadata | None,
        versions_first: bool = False,
    ) -> Any:
        """The in-memory store's append: idempotent for the same batch, atomic, checked.

        ``versions_first``: a store that checks the expected versions before the ids (a
        resend of a batch it did write then conflicts with the batch itself).
        """
        metadata = metadata if metadata is not None else Metadata()
        conflicts = [(s, v, self.version(s)) for s, v in checks if self.version(s) != v]
        if conflicts and versions_first:
            return ConcurrencyConflict(conflicts)
        ids = [e[3] for e in events]
        if len(set(ids)) != len(ids):
            return DuplicateEventId(None, "twice in one batch")
        stored = [i for i in ids if i in self.by_id]
        if stored:
            first = self.by_id[ids[0]].position if ids[0] in self.by_id else -1
            for k, (stream_id, name, payload, event_id) in enumerate(events):
                old = self.by_id.get(event_id)
                if (
                    old is None
                    or old.position != first + k
                    or (old.stream_id, old.event_type, old.payload) != (stream_id, name, payload)
                    or old.metadata != metadata
                ):
                    return DuplicateEventId(str(self.label(event_id)), "different content")
            versions = {s: self.version(s) for s, _ in checks}
            for k, e in enumerate(events):
                versions[e[0]] = self.log[first + k - 1].version
            return AppendResult(
                [first + k for k in range(len(events))], list(versions.items()), events
            )
        if conflicts:
            return ConcurrencyConflict(conflicts)
        start = len(self.log) + 1
        self.write(events, metadata)
        versions = {s: self.version(s) for s, _ in checks}
        for e in events:
            versions[e[0]] = self.version(e[0])
        return AppendResult(list(range(start, start + len(events))), list(versions.items()), events)

    def lookup(self, ids: Sequence[Any]) -> list[RecordedEvent[Any]]:
        rows = sorted(
            (self.by_id[i] for i in set(ids) if i in self.by_id), key=lambda r: r.position
        )
        return [
            RecordedEvent(
                r.position,
                r.event_id,
                r.stream_id,
                r.version,
                r.event_type,
                r.payload,
                0,
                r.metadata,
                REGISTRY,
            )
            for r in rows
        ]

    # -- effects

    def perform(self, effect: tuple[Any, ...], fault: Fault) -> Any:
        """Carry out ``effect`` under ``fault``: its result, or a Throw."""
        kind, f = effect[0], fault.kind
        if f == "throw":
            return Throw(RuntimeError(f"the store broke during {kind}"))
        if f == "writer":
            self.writer(fault.writes)
        elif f == "same-key":
            self.same_key_writer(len(fault.writes), fault.same)
        try:
            if kind == SLEEP:
                return None
            if f in ("down", "lost", "lost-unwritten") and kind != APPEND:
                return StoreUnavailable(f"the store is down ({kind})")
            if f == "garbage":
                return "garbage"
            if f == "async":  # either kind of awaitable, in turn
                if len(self.pending) % 2:
                    self.pending.append(None)
                    return Pending()
                self.pending.append(asyncio.sleep(0))
                return self.pending[-1]
            if kind == FOLD:
                return self.fold(effect[1])
            if kind == TAIL:
                if f == "refuse":
                    return None
                hint = effect[4]
                if type(hint) is SnapTail and (hint.streams, hint.versions) == (
                    list(effect[1]),
                    list(effect[2]),
                ):
                    result = hint.read  # read with the snapshot (maybe stale: the append checks)
                else:
                    result = self.tail(*effect[1:4])
                if f == "skew" and result is not None:  # a buggy store: verify mode sees it
                    stray = (effect[1][-1], *REGISTRY.encode(Added(0)), 0, 0)
                    return [*result[0], stray], result[1]
                return result
            if kind == LOOKUP:
                return self.lookup(effect[1])
            if kind == LOAD:
                entry = self.snapshots.get(effect[2])
                if entry is None:
                    return None
                entry = copy_entry(entry)
                if f == "with-tail":  # its tail read with it
                    read = self.tail(entry.streams, entry.versions, entry.fold_from)
                    return entry, SnapTail(list(entry.streams), list(entry.versions), read)
                return entry
            if kind == SAVE:
                self.snapshots[effect[2]] = copy_entry(effect[3])
                return None
            if kind == APPEND:
                if f == "down":
                    return StoreUnavailable("the store is down (append)")
                if f == "lost-unwritten":
                    self.writer(fault.writes)
                    return OutcomeUnknown("the reply was lost (not written)")
                if f == "dup":
                    return DuplicateEventId(
                        str(self.label(effect[1][0][3])) if effect[1] else None, "injected"
                    )
                first = self.versions_first or f == "versions-first"
                result = self.append(effect[1], effect[2], effect[3], first)
                if f == "lost" and type(result) is AppendResult:
                    self.writer(fault.writes)  # (when there are some)
                    return OutcomeUnknown("the reply was lost (written)")
                return result
        except Exception as exc:  # apply raised inside a fold: the shell throws it in
            return Throw(exc)
        raise AssertionError(f"unknown effect {effect!r}")

    # -- comparing

    def effect(self, effect: tuple[Any, ...]) -> tuple[Any, ...]:
        """``effect`` normalised: ids by label, callables and registries by identity."""
        kind = effect[0]
        if kind == FOLD:
            return (FOLD, list(effect[1]))
        if kind == TAIL:
            hint = effect[4]
            if isinstance(hint, ConcurrencyConflict):
                hint = (type(hint).__name__, hint.conflicts, hint.attempts)
            return (TAIL, list(effect[1]), list(effect[2]), effect[3], hint)
        if kind == APPEND:
            events = [(e[0], e[1], e[2], self.label(e[3])) for e in effect[1]]
            return (APPEND, events, [tuple(c) for c in effect[2]], effect[3])
        if kind == LOOKUP:
            return (LOOKUP, [self.label(i) for i in effect[1]])
        if kind == LOAD:
            return (LOAD, effect[1], effect[2])
        if kind == SAVE:
            return (SAVE, effect[1], effect[2], entry_parts(effect[3]))
        if kind == SLEEP:
            return (SLEEP, round(effect[1], 9))
        if kind == DONE:
            return (DONE, self.result(effect[1]))
        raise AssertionError(f"unknown effect {effect!r}")

    def result(self, result: Any) -> tuple[Any, ...]:
        events = [
            (self.label(e.event_id), e.stream_id, e.version, e.position) for e in result.events
        ]
        versions = sorted(result.stream_versions.items())
        return (result.attempts, result.replayed, events, versions, list(result.positions))

    def error(self, exc: BaseException) -> tuple[Any, ...]:
        out: list[Any] = [type(exc).__name__, str(exc)]
        if isinstance(exc, ConcurrencyConflict):
            out += [exc.conflicts, exc.attempts]
        if isinstance(exc, OutcomeUnknown):
            out.append([self.label(i) for i in exc.event_ids])
        cause = exc.__cause__
        if cause is not None:
            out.append((type(cause).__name__, str(cause)))
        return tuple(out)

    def records(self) -> Sequence[Any]:
        """The stored events, in position order (what ``contents`` compares)."""
        return self.log

    def contents(self) -> list[tuple[Any, ...]]:
        rows = [
            (
                r.position,
                self.label(r.event_id),
                r.stream_id,
                r.version,
                r.event_type,
                r.payload,
                r.metadata,
            )
            for r in self.records()
        ]
        snapshots = sorted((repr(k), entry_parts(e)) for k, e in self.snapshots.items())
        return [*rows, ("snapshots", snapshots)]


def copy_entry(entry: CacheEntry) -> CacheEntry:
    return CacheEntry(
        entry.state,
        list(entry.streams),
        list(entry.versions),
        entry.fold_from,
        entry.since,
        entry.rounds,
    )


def entry_parts(entry: CacheEntry) -> tuple[Any, ...]:
    return (
        entry.state,
        list(entry.streams),
        list(entry.versions),
        entry.fold_from,
        entry.since,
        entry.rounds,
    )


# -- running both in lockstep ----------------------------------------------------------


class Side:
    """One run (model or machine) and its world."""

    def __init__(self, start: Callable[[], Any], world: World) -> None:
        self.start = start
        self.steps: Any = None
        self.world = world

    def advance(self, given: Any) -> tuple[str, Any]:
        """Resume the run with ``given`` (a result, or a Throw): its next effect or its end."""
        try:
            if self.steps is None:
                self.steps = self.start()  # the machine may refuse bad input here already
            if isinstance(given, Throw):
                return ("effect", self.steps.throw(given.exc))
            return ("effect", self.steps.send(given))
        except StopIteration:
            return ("stopped", None)
        except Exception as exc:
            return ("raised", exc)

    def seen(self, out: tuple[str, Any]) -> tuple[Any, ...]:
        what, value = out
        if what == "effect":
            return ("effect", self.world.effect(value))
        if what == "raised":
            return ("raised", self.world.error(value))
        return (what,)


NATIVE = (FOLD, TAIL, APPEND, LOOKUP)
"""The effects the in-memory store runs inside the machine (``run.drive``)."""


class ModelDriveSide(Side):
    """The model, as a drive-mode run shows it: its world performs every native effect
    (no faults), and only the others (SLEEP, LOAD, SAVE, DONE) come out."""

    def advance(self, given: Any) -> tuple[str, Any]:
        out = super().advance(given)
        while out[0] == "effect" and out[1][0] in NATIVE:
            out = super().advance(self.world.perform(out[1], Fault("none")))
        return out


class DriveSide(Side):
    """The machine on a real MemoryStore through ``run.drive(core_store, result)`` (D1);
    until the machine has it, the same done by hand with ``send`` (what ``execute_sync``
    does with those effects)."""

    world: NativeWorld

    def advance(self, given: Any) -> tuple[str, Any]:
        try:
            if self.steps is None:
                self.steps = self.start()
            if isinstance(given, Throw):
                return ("effect", self.steps.throw(given.exc))
            return ("effect", drive(self.steps, self.world.store, given))
        except StopIteration:
            return ("stopped", None)
        except Exception as exc:
            return ("raised", exc)


def drive(run: Any, store: MemoryStore, result: Any) -> Any:
    """``run.drive(store._core, result)``, or its equivalent over ``send`` and the store."""
    if hasattr(run, "drive"):
        return run.drive(store._core, result)
    while True:
        effect = run.send(result)
        kind = effect[0]
        if kind not in NATIVE:
            return effect
        try:
            if kind == FOLD:
                result = store.read_fold(effect[1])
            elif kind == TAIL:
                result = store.read_tail(*effect[1:])
            elif kind == APPEND:
                result = store.append(effect[1], expected=effect[2], metadata=effect[3])
            else:
                result = store.read_events_by_id(effect[1])
        except (ConcurrencyConflict, StoreUnavailable, DuplicateEventId) as exc:
            result = exc
        except BaseException as exc:
            run.throw(exc)
            raise


class NativeWorld(World):
    """The machine's world in drive mode: a real MemoryStore (the machine reads and writes
    it natively), the simulated writers writing there too, and a snapshot store."""

    def __init__(self, versions_first: bool = False) -> None:
        super().__init__(versions_first)
        self.store = MemoryStore(registry=REGISTRY, state_cache=None)

    def write(self, events: Sequence[tuple[str, str, bytes, int]], metadata: Metadata) -> None:
        self.store.append(list(events), metadata=metadata)

    def records(self) -> Sequence[Any]:
        return self.store.read_all()


FaultSource = Callable[[str, list[str]], Fault]
"""The fault the next effect of a kind meets, given the streams a writer would write to."""


def play(model: Side, machine: Side, next_fault: FaultSource) -> str:
    """Run both to their end, comparing every effect; the outcome's name (for events)."""
    given: list[Any] = [None, None]
    steps = 0
    while True:
        outs = [model.advance(given[0]), machine.advance(given[1])]
        seen = [model.seen(outs[0]), machine.seen(outs[1])]
        assert seen[0] == seen[1], f"after {steps} effects:\n model: {seen[0]}\n machine: {seen[1]}"
        what, effect = outs[0]
        if what == "raised":
            return type(effect).__name__
        assert what == "effect", f"the run stopped without DONE after {steps} effects"
        steps += 1
        assert steps < 400, "a run that does not end"
        kind = effect[0]
        note(f"effect {kind}")
        if kind == DONE:
            for side in (model, machine):  # and the run is over: send raises StopIteration
                with pytest.raises(StopIteration):
                    side.steps.send(None)
            return "done" if not effect[1].replayed else "replayed"
        streams = [c[0] for c in effect[2]] if kind == APPEND else list(model.world.streams)
        if kind in (FOLD, TAIL):
            streams = list(effect[1])
        fault = next_fault(kind, streams)
        if fault.kind != "none":
            note(f"fault {fault.kind} on {kind}")
        given = [model.world.perform(effect, fault), machine.world.perform(outs[1][1], fault)]


def note(what: str) -> None:
    """A hypothesis event (what share of examples reached ``what``), when under hypothesis."""
    if currently_in_test_context():
        event(what)


# -- strategies ------------------------------------------------------------------------

adds = st.integers(0, 3).map(Added)
links = st.sampled_from(DISCOVERABLE).map(Linked)
written = st.one_of(adds, links)

# The faults each effect may meet (a writer also writes during a SLEEP), with weights.
FAULTS: dict[str, list[tuple[str, int]]] = {
    FOLD: [("writer", 6), ("down", 5), ("poison", 1), ("garbage", 1), ("async", 1), ("throw", 1)],
    TAIL: [
        ("writer", 6),
        ("down", 4),
        ("refuse", 2),
        ("skew", 2),
        ("garbage", 1),
        ("async", 1),
        ("throw", 1),
    ],
    LOOKUP: [("writer", 3), ("same-key", 4), ("down", 4), ("garbage", 1), ("async", 1)],
    APPEND: [
        ("writer", 8),
        ("same-key", 3),
        ("down", 5),
        ("lost", 4),
        ("lost-unwritten", 3),
        ("versions-first", 3),
        ("dup", 3),
        ("garbage", 1),
        ("throw", 1),
    ],
    LOAD: [("with-tail", 6), ("down", 6), ("garbage", 1), ("throw", 1)],
    SAVE: [("down", 6), ("throw", 1)],
    SLEEP: [("writer", 4), ("same-key", 1), ("throw", 1)],
}


@st.composite
def faults(
    draw: Any,
    kind: str,
    streams: Sequence[str],
    rarity: int,
    last: Fault,
    table: dict[str, list[tuple[str, int]]] | None = None,
) -> Fault:
    """The fault one ``kind`` of effect meets: none ``rarity - 1`` times in ``rarity``, or
    often the last fault again (so that failures can outlast the policy). A writer writes
    to one of ``streams`` (the effect's) half the time."""
    choices = (table or FAULTS)[kind]
    sticky = last.kind != "none" and any(f == last.kind for f, _ in choices)
    if sticky and not draw(st.integers(0, 2)):
        return last
    if draw(st.integers(0, rarity - 1)):
        return Fault("none")
    fault = draw(st.sampled_from([f for f, weight in choices for _ in range(weight)]))
    drawn: Fault = draw(fault_of(fault, streams))
    return drawn


@st.composite
def fault_of(draw: Any, fault: str, streams: Sequence[str]) -> Fault:
    """A ``fault`` with what it needs drawn; writers write to ``streams`` half the time."""
    targets = st.sampled_from(streams) if streams else st.sampled_from(EVERY_STREAM)
    if draw(st.booleans()):
        targets = st.sampled_from(EVERY_STREAM)
    if fault in ("writer", "same-key", "lost", "lost-unwritten"):
        writes: Any = st.lists(st.tuples(targets, written), min_size=1, max_size=2)
        if fault.startswith("lost") and draw(st.booleans()):
            writes = st.just(())  # (else a writer writes right after the lost reply)
        return Fault(fault, draw(writes), draw(st.booleans()))
    if fault == "poison":
        return Fault("writer", [(draw(targets), Added(-1))])
    return Fault(fault)


# What the retries and cache focuses script for the first effects of a kind in a command.
SCRIPTED: dict[str, dict[str, list[str]]] = {
    "retries": {
        APPEND: ["none", "writer", "down", "lost", "lost-unwritten", "dup", "same-key", "garbage"],
        LOOKUP: ["none", "none", "down", "same-key"],
        SLEEP: ["none", "none", "writer", "same-key"],
    },
    "cache": {
        TAIL: ["none", "writer", "down", "refuse", "skew"],
        APPEND: ["none", "none", "writer"],
        FOLD: ["none", "none", "none", "down"],
    },
}


@st.composite
def scripts(draw: Any, focus: str, streams: Sequence[str]) -> dict[str, list[Fault]]:
    """Up to three faults in a row for each kind the focus scripts (combinations such as a
    lost reply and then a conflict, that independent draws rarely reach)."""
    out: dict[str, list[Fault]] = {}
    for kind, names in SCRIPTED.get(focus, {}).items():
        chosen = draw(st.lists(st.sampled_from(names), max_size=3))
        out[kind] = [draw(fault_of(name, streams)) for name in chosen]
    return out


WHATS = [*(["0", "1", "2"] * 3), "link:d-0", "link:d-1", "link:d-2", "poison", "unregistered"]
OUTCOMES = ["emit"] * 24 + ["violate", "raise", "bulk", *MALFORMED]
SHAPES = [("a-0",), ("a-0",), ("a-1",), ("a-0", "a-1"), ("a-1", "a-0"), ("a-0", "a-1", "a-2")]
FOCUSES = ["broad", "retries", "cache"]
"""What an example stresses: everything a little, the retry paths, or the state cache."""


@st.composite
def shapes(draw: Any, focus: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A command's class, declared streams and first discoveries."""
    kinds = ["plain", "discovering"] if focus != "broad" else ["plain", "discovering", "uncached"]
    kind = draw(st.sampled_from(kinds))
    declared = draw(st.sampled_from(SHAPES))
    discovers = tuple(draw(st.lists(st.sampled_from(DISCOVERABLE), max_size=2)))
    return kind, declared, discovers if kind == "discovering" else ()


@st.composite
def commands(draw: Any, shape: tuple[str, tuple[str, ...], tuple[str, ...]], focus: str) -> Any:
    """A command of ``shape``, doing what it draws (mostly: emitting to its streams; only
    that, outside the broad focus, but for a rare rule violation)."""
    kind, declared, discovers = shape
    if focus == "broad" and draw(st.integers(0, 60)) == 0:
        return ALIEN
    if focus == "broad":
        targets = st.one_of(*[st.sampled_from(declared)] * 6, st.sampled_from(TARGETS))
        outcomes, whats = st.sampled_from(OUTCOMES), st.sampled_from(WHATS)
    else:
        targets = st.sampled_from(declared)
        outcomes = st.sampled_from(["emit"] * 10 + ["violate"])
        whats = st.sampled_from(WHATS[:-2] + (["poison"] if focus == "cache" else []))
    fields: dict[str, Any] = {
        "streams_": declared,
        "outcome": draw(outcomes),
        "emits": tuple(draw(st.lists(st.tuples(targets, whats), max_size=3))),
        "note": draw(st.sampled_from(["", "", "x-0"])),
    }
    if kind == "discovering":
        return Discovering(discovers=discovers, **fields)
    return (Uncached if kind == "uncached" else Plain)(**fields)


ALIEN = object()
"""Not a command at all."""


@st.composite
def plans(draw: Any, focus: str) -> list[tuple[Any, str | None, Metadata | None]]:
    """Commands of one or two shapes (so later ones find earlier ones' cached states),
    each with an idempotency key or not (rarely an invalid one) and metadata or not."""
    few = draw(st.lists(shapes(focus), min_size=1, max_size=1 if focus == "cache" else 2))
    keys = [None, None, "k-1", "k-1", "k-2"] if focus != "cache" else [None, None, None, "k-1"]
    plan = []
    for _ in range(draw(st.integers(2 if focus == "cache" else 1, 5))):
        command = draw(commands(draw(st.sampled_from(few)), focus))
        key = draw(st.sampled_from(keys))
        if focus == "broad" and draw(st.integers(0, 40)) == 0:
            key = ""
        plan.append((command, key, draw(st.sampled_from([None, Metadata(user_id="u-1")]))))
    return plan


@st.composite
def options(draw: Any, focus: str) -> dict[str, Any]:
    """Executor options for one example: the policy, a cache, snapshots, warm appends."""
    policy = RetryPolicy(
        max_attempts=draw(st.integers(1, 3)),
        initial_delay=draw(st.sampled_from([0.001, 0.0])),
        multiplier=2.0,
        max_delay=0.003,
        jitter=0.0,
        retry_unavailable=focus == "retries" or draw(st.sampled_from([True, True, True, False])),
        unavailable_initial_delay=0.5,
        unavailable_max_delay=1.0,
        unavailable_timeout=draw(st.sampled_from([1.0, 2.5] + [0.0] * (focus != "retries"))),
    )
    cache = None
    if focus == "cache" or draw(st.integers(0, 3)):
        low = draw(st.integers(0, 1 if focus == "cache" else 2))
        cache = (draw(st.integers(1, 3)), low, draw(st.booleans()))
    warm = draw(st.sampled_from([True, True, False] if focus == "cache" else [True, False]))
    return {
        "policy": policy,
        "cache": cache,
        "snapshot_every": draw(st.sampled_from([0, 0, 1, 2, 3])),
        "warm_append_first": warm,
        "keep_own_events": draw(st.booleans()),
    }


CHAIN = [("d-0", Linked("d-1")), ("d-1", Linked("d-2")), ("d-2", Linked("d-3"))]
"""Links that take a discovering command past its two rounds."""
history = st.lists(st.tuples(st.sampled_from(EVERY_STREAM), written), max_size=6)
history = st.one_of(history, history, history, history.map(lambda h: CHAIN + h))


@dataclass
class Scenario:
    """One example: the executor options, the store's history, the commands, the faults'
    rarity, whether the store checks expected versions before event ids, and what other
    writers write before each command."""

    focus: str
    options: dict[str, Any]
    history: list[tuple[str, Any]]
    plan: list[tuple[Any, str | None, Metadata | None]]
    rarity: int
    versions_first: bool
    interludes: list[list[tuple[str, Any]]] = dataclasses.field(default_factory=list)


@st.composite
def scenarios(draw: Any) -> Scenario:
    focus = draw(st.sampled_from(FOCUSES))
    rarity = 2 if focus == "retries" else draw(st.sampled_from([3, 8]))
    return Scenario(
        focus,
        draw(options(focus)),
        draw(history),
        draw(plans(focus)),
        rarity,
        draw(st.booleans()),
        draw(st.lists(st.lists(st.tuples(st.sampled_from(EVERY_STREAM), written), max_size=2))),
    )


# -- the property ----------------------------------------------------------------------


def new_cache(spec: tuple[int, int, bool] | None) -> StateCache | None:
    if spec is None:
        return None
    return StateCache(spec[0], min_events=spec[1], verify=spec[2])


def check_agree(
    machine_run: Callable[..., Any],
    case: Scenario,
    faults_for: Callable[[Any], FaultSource],
    native: bool = False,
) -> None:
    """Run ``case`` through the model and through ``machine_run``, in lockstep, each
    command meeting the faults ``faults_for(command)`` gives. ``native``: the machine
    runs on a real MemoryStore through ``drive`` (only SLEEP, LOAD, SAVE, DONE compared,
    and the logs)."""
    opts = case.options
    worlds = [World(case.versions_first), World(case.versions_first)]
    if native:
        worlds[1] = NativeWorld()
    for world in worlds:
        for stream_id, ev in case.history:
            world.writer([(stream_id, ev)])
    caches = [new_cache(opts["cache"]), new_cache(opts["cache"])]
    for n, (command, key, metadata) in enumerate(case.plan):
        if n < len(case.interludes):
            for world in worlds:
                world.writer(case.interludes[n])
        sides = []
        for run, world, cache in zip(
            (pipeline_model.run_command, machine_run), worlds, caches, strict=True
        ):
            world.command, world.key, world.metadata = command, key, metadata

            def start(
                run: Any = run,
                command: Any = command,
                metadata: Any = metadata,
                key: Any = key,
                cache: Any = cache,
            ) -> Any:
                return run(
                    command,
                    REGISTRY,
                    opts["policy"],
                    metadata,
                    key,
                    cache,
                    opts["snapshot_every"],
                    opts["warm_append_first"],
                    keep_own_events=opts.get("keep_own_events", False),
                )

            kind = Side if not native else ModelDriveSide if world is worlds[0] else DriveSide
            sides.append(kind(start, world))
        try:
            outcome = play(sides[0], sides[1], faults_for(command))
        finally:
            for world in worlds:
                for coroutine in filter(None, world.pending):
                    coroutine.close()  # (the run may have ended without looking at it)
                world.pending.clear()
        note(f"outcome {outcome}")
        assert worlds[0].contents() == worlds[1].contents(), f"after command {n}: the logs differ"
        first, second = caches
        if first is not None and second is not None:
            counts = [(len(c), c.hits, c.misses, c.evictions) for c in (first, second)]
            assert counts[0] == counts[1], (
                f"after command {n}: cache (entries, hits, misses, evictions)"
            )
            if first.hits:
                note("a cache hit")


def drawn_faults(
    data: st.DataObject, case: Scenario, table: dict[str, list[tuple[str, int]]] | None = None
) -> Callable[[Any], FaultSource]:
    """Faults drawn by hypothesis: a script by the case's focus, then one draw per effect
    (from ``table``, by default :data:`FAULTS`)."""

    def faults_for(command: Any) -> FaultSource:
        streams = command.streams_ if isinstance(command, Plain) else ()
        script = data.draw(scripts(case.focus, streams), label="script") if not table else {}
        last = Fault("none")

        def next_fault(kind: str, streams: list[str]) -> Fault:
            nonlocal last
            if script.get(kind):
                last = script[kind].pop(0)
            else:
                drawn = faults(kind, streams, case.rarity, last, table)
                last = data.draw(drawn, label=f"fault on {kind}")
            return last

        return next_fault

    return faults_for


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=scenarios())
def test_the_machine_agrees_with_the_model(data: st.DataObject, case: Scenario) -> None:
    note(f"focus {case.focus}")
    check_agree(_pipeline.run_command, case, drawn_faults(data, case))


# The in-memory store's path: its own effects run natively, so faults meet only the others
# (writers write between commands instead; the conflicts are the test above's).
NATIVE_FAULTS: dict[str, list[tuple[str, int]]] = {
    LOAD: [("down", 3), ("garbage", 1), ("throw", 1)],
    SAVE: [("down", 3), ("throw", 1)],
    SLEEP: [("throw", 1)],
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=scenarios())
def test_the_machine_on_the_memory_store_agrees_with_the_model(
    data: st.DataObject, case: Scenario
) -> None:
    note(f"focus {case.focus}")
    case.versions_first = False  # (a MemoryStore checks ids first)
    check_agree(_pipeline.run_command, case, drawn_faults(data, case, NATIVE_FAULTS), True)


# -- combinations that random draws reach only now and then ----------------------------

RETRIES = RetryPolicy(
    max_attempts=3,
    initial_delay=0.001,
    max_delay=0.003,
    jitter=0.0,
    unavailable_initial_delay=0.5,
    unavailable_max_delay=1.0,
    unavailable_timeout=2.5,
)
WRITE = [("a-0", Added(1))]


def emit(*whats: str, outcome: str = "emit") -> Plain:
    return Plain(streams_=("a-0",), outcome=outcome, emits=tuple(("a-0", w) for w in whats))


def fixed(
    plan: list[Any],
    script: list[dict[str, list[Fault]]],
    *,
    policy: RetryPolicy = RETRIES,
    history: Sequence[tuple[str, Any]] = (("a-0", Added(1)),),
    cache: tuple[int, int, bool] | None = None,
    snapshot_every: int = 0,
    warm: bool = False,
    versions_first: bool = False,
) -> tuple[Scenario, list[dict[str, list[Fault]]]]:
    """A scenario whose n-th command meets the faults ``script[n]`` (by kind, in order)."""
    opts = {
        "policy": policy,
        "cache": cache,
        "snapshot_every": snapshot_every,
        "warm_append_first": warm,
    }
    plan = [p if isinstance(p, tuple) else (p, None, None) for p in plan]
    return Scenario("fixed", opts, list(history), plan, 1, versions_first), script


def lost(kind: str = "lost", writes: Sequence[tuple[str, Any]] = ()) -> Fault:
    return Fault(kind, writes)


FIXED = {
    "a lost reply, then a conflict: the lookup finds the write": fixed(
        [emit("1")], [{APPEND: [lost()]}], versions_first=True
    ),
    "a lost reply, then a conflict, and the lookup fails": fixed(
        [emit("1")], [{APPEND: [lost()], LOOKUP: [Fault("down")]}], versions_first=True
    ),
    "a lost reply, then a conflict, and the lookup answers garbage": fixed(
        [emit("1")], [{APPEND: [lost()], LOOKUP: [Fault("garbage")]}], versions_first=True
    ),
    "an unwritten lost reply, then a conflict: nothing found, run again": fixed(
        [emit("1")], [{APPEND: [lost("lost-unwritten", WRITE)]}]
    ),
    "a lost reply, then the store stays down": fixed(
        [emit("1")],
        [{APPEND: [lost(), Fault("down")]}],
        policy=dataclasses.replace(RETRIES, unavailable_timeout=1.0),
    ),
    "a keyed conflict at the last attempt: the key's write is found": fixed(
        [(emit("1"), "k-1", None)],
        [{APPEND: [Fault("same-key", WRITE, same=True)]}],
        policy=dataclasses.replace(RETRIES, max_attempts=1),
        versions_first=True,
    ),
    "an unkeyed duplicate id is raised": fixed([emit("1")], [{APPEND: [Fault("dup")]}]),
    "a keyed duplicate id, and no write under the key": fixed(
        [(emit("1"), "k-1", None)], [{APPEND: [Fault("dup")]}]
    ),
    "a keyed duplicate id: the same-key winner's write is found": fixed(
        [(emit("1"), "k-1", None)], [{APPEND: [Fault("same-key", WRITE, same=True)]}]
    ),
    "a keyed rule violation: the same-key winner's write is found": fixed(
        [(emit(outcome="violate"), "k-1", None)],
        [{FOLD: [Fault("same-key", WRITE, same=True)]}],
    ),
    "an append answered with garbage": fixed([emit("1")], [{APPEND: [Fault("garbage")]}]),
    "verify mode: a tail that does not match a full fold": fixed(
        [emit("1"), emit("2")], [{}, {TAIL: [Fault("skew")]}], cache=(3, 0, True)
    ),
    "verify mode: the full fold fails": fixed(
        [emit("1"), emit("2")], [{}, {FOLD: [Fault("down")]}], cache=(3, 0, True)
    ),
    "verify mode: the full fold's discovery fails": fixed(
        [Discovering(streams_=("a-0",), discovers=("d-0",), emits=(("d-0", "1"),))] * 2,
        [{}, {FOLD: [Fault("none"), Fault("down")]}],
        cache=(3, 0, True),
    ),
    "warm appends: an own event that apply refuses is not cached": fixed(
        [emit("poison"), emit("1")], [{}, {}], cache=(3, 0, False), warm=True
    ),
    "warm appends: handle fails on the unread state, then on the read one": fixed(
        [emit("1"), emit(outcome="violate")], [{}, {}], cache=(3, 0, False), warm=True
    ),
    "warm appends: a conflict costs no attempt": fixed(
        [emit("1"), emit("1")],
        [{}, {APPEND: [Fault("writer", WRITE)]}],
        cache=(3, 0, False),
        warm=True,
        policy=dataclasses.replace(RETRIES, max_attempts=1),
    ),
    "a durable snapshot, loaded by the next command": fixed(
        [emit("1"), emit("2")], [{}, {}], snapshot_every=1
    ),
    "a snapshot loaded with its tail: the tail is folded without a read": fixed(
        [emit("1"), emit("2")], [{}, {LOAD: [Fault("with-tail")]}], snapshot_every=1
    ),
    "warm appends: a snapshot's tail is folded before deciding": fixed(
        [emit("1"), emit("2")], [{}, {LOAD: [Fault("with-tail")]}], snapshot_every=1, warm=True
    ),
    "warm appends: a snapshot's stale tail, then a conflict": fixed(
        [emit("1"), emit("2")],
        [{}, {LOAD: [Fault("with-tail")], TAIL: [Fault("writer", WRITE)]}],
        snapshot_every=1,
        warm=True,
    ),
    "warm appends: a snapshot's tail that cannot extend it": fixed(
        [emit("1"), emit("2")],
        [{}, {LOAD: [Fault("with-tail")], TAIL: [Fault("refuse")]}],
        snapshot_every=1,
        warm=True,
    ),
    "a snapshot's tail that cannot extend it: a full fold": fixed(
        [emit("1"), emit("2")],
        [{}, {LOAD: [Fault("with-tail")], TAIL: [Fault("refuse")]}],
        snapshot_every=1,
    ),
    "discovery past its rounds": fixed(
        [Discovering(streams_=("a-0",), discovers=("d-0",))], [{}], history=CHAIN
    ),
}


@pytest.mark.parametrize("name", list(FIXED))
def test_the_machine_agrees_with_the_model_on(name: str) -> None:
    case, script = FIXED[name]
    scripts = iter(script)

    def faults_for(command: Any) -> FaultSource:
        mine = {kind: list(faults) for kind, faults in next(scripts).items()}
        return lambda kind, streams: mine[kind].pop(0) if mine.get(kind) else Fault("none")

    check_agree(_pipeline.run_command, case, faults_for)


# -- query boundaries (eventcore.boundary.QueryCommand) ---------------------------------


@dataclass(frozen=True)
class Booked:
    """A booking of a slot; a negative ``n`` makes ``apply`` raise."""

    slot: str
    n: int


REGISTRY.register("diff.Booked", Booked)


class Book(QueryCommand[State, Any]):
    """Books ``slot`` (at most ``limit`` times): its boundary is the slot's tag."""

    slot: str = "s-0"
    streams_: tuple[StreamId, ...] = stream()
    outcome: str = "emit"
    target: str = "b-0"
    limit: int = 3
    race: int = 0  # handle lets a competing writer book the slot this many times first

    def query(self) -> Query:
        return Query.of(["diff.Booked"], [f"slot:{self.slot}"])

    def initial_state(self) -> State:
        return ()

    def apply(self, state: State, event: Any, stream_id: str) -> State:
        if event.n < 0:
            raise ValueError(f"cannot apply Booked({event.n})")
        return (*state, (stream_id, event.n))

    def handle(self, state: State) -> Any:
        if RACE["left"] > 0:
            RACE["left"] -= 1
            RACE["write"](self.slot)
        outcome = self.outcome
        if outcome == "violate":
            require(len(state) < self.limit, f"slot {self.slot} is full")
        if outcome == "raise":
            raise RuntimeError("handle crashed")
        if outcome == "none":
            return []
        if outcome == "poison":
            return [(self.target, Booked(self.slot, -1))]
        if outcome == "untagged-other":  # an event outside the query
            return [(self.target, Added(len(state)))]
        return [(self.target, Booked(self.slot, len(state)))]

    def tags_of(self, event: Any) -> Iterable[str]:
        if self.outcome == "bad-tag":
            return [" "]
        return [f"slot:{event.slot}"] if isinstance(event, Booked) else []


RACE: dict[str, Any] = {"left": 0, "write": None}
"""The competing writer ``Book.handle`` lets in (set per run: each world writes its own)."""


class UncachedBook(Book):
    state_cache = False


# "carry": a race whose ConditionFailed carries the read after its position (as
# PostgreSQL's does), which a cached command's retry folds instead of reading.
Q_FAULTS = ["none", "unavailable", "race", "carry", "lost", "bump"]


class QWorld:
    """A real MemoryStore with scripted faults: the same script gives the same world."""

    def __init__(self, faults: list[str], cache: bool) -> None:
        self.store = MemoryStore(
            registry=REGISTRY, state_cache=StateCache(min_events=0) if cache else 0
        )
        self.faults = list(faults)
        self.ids = WRITER_IDS

    def write(self, slot: str, stream_id: str = "w-0") -> None:
        self.ids += 1
        name, payload = REGISTRY.encode(Booked(slot, 100))
        self.store.append([NewEvent(stream_id, name, payload, self.ids, (f"slot:{slot}",))])

    def run(self, effect: tuple[Any, ...]) -> Any:
        """Run one store effect (as the shells do), with the next fault."""
        fault = self.faults.pop(0) if self.faults else "none"
        kind = effect[0]
        if fault == "unavailable":
            return StoreUnavailable("scripted")
        if fault in ("race", "carry"):
            self.write("s-0")
        if fault == "bump":
            self.write("s-9", "a-0")
        try:
            if kind is _pipeline.QUERY:
                return self.store.read_query(effect[1], after=effect[2])
            if kind is _pipeline.STREAMS:
                return self.store.read_streams(effect[1])
            if kind is LOOKUP:
                return self.store.read_events_by_id(effect[1])
            assert kind is _pipeline.APPEND_IF, effect
            out = self.store.append(
                effect[1], expected=effect[2], metadata=effect[3], condition=effect[4]
            )
        except ConditionFailed as exc:
            if fault == "carry":
                exc.read = self.store.read_query(effect[4].query, after=effect[4].after)
            return exc
        except (ConcurrencyConflict, DuplicateEventId, StoreUnavailable) as exc:
            return exc
        if fault == "lost":
            return OutcomeUnknown("scripted", [e[3] for e in effect[1]])
        return out

    def contents(self) -> list[tuple[Any, ...]]:
        return [
            (e.position, e.stream_id, e.event_type, e.payload, e.tags)
            for e in self.store.read_all()
        ]


class Ids:
    """Numbers a run's event ids by first appearance (the writers' ids as they are)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def __call__(self, event_id: Any) -> Any:
        i = int(event_id)
        if WRITER_IDS < i < WRITER_IDS + (1 << 20):
            return i
        return ("fresh", self.seen.setdefault(i, len(self.seen)))


def q_effect(effect: tuple[Any, ...], ids: Ids) -> tuple[Any, ...]:
    """An effect, normalised for comparison."""
    kind = effect[0]
    if kind is _pipeline.APPEND_IF:
        events = [(e[0], e[1], e[2], ids(e[3]), tuple(e[4])) for e in effect[1]]
        cond = effect[4]
        return (kind, events, list(effect[2]), effect[3], (cond.query, cond.after))
    if kind is LOOKUP:
        return (kind, [ids(i) for i in effect[1]])
    if kind is SLEEP:
        return (kind, round(effect[1], 9))
    if kind is DONE:
        r = effect[1]
        own = Ids()  # its ids by their order in the result (a retry draws new ones)
        written = [(e.stream_id, e.version, e.position, own(e.event_id)) for e in r.events]
        return (kind, r.attempts, r.replayed, written, sorted(r.stream_versions.items()))
    return (kind, *effect[1:])


def q_drive(run: Any, world: QWorld, ids: Ids, model: bool) -> tuple[list[Any], Any]:
    """Drive a run (the model's generator or a CommandRun) against ``world``: the
    normalised effects and the outcome (``("ok", done)`` or ``("error", type, message)``)."""
    seen: list[Any] = []
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                effect = run.send(value)
            elif model:
                effect = run.throw(error)
            else:
                run.throw(error)
                raise AssertionError("throw returned")
        except StopIteration:
            raise AssertionError("the run ended without DONE") from None
        except Exception as exc:
            return seen, ("error", type(exc).__name__, str(exc))
        error = None
        seen.append(q_effect(effect, ids))
        kind = effect[0]
        if kind is DONE:
            return seen, ("ok", seen[-1])
        if kind is SLEEP:
            value = None
            continue
        try:
            value = world.run(effect)
        except Exception as exc:  # an error the store raised: thrown into the run
            error = exc


@st.composite
def query_cases(draw: Any) -> tuple[list[Any], list[str], bool]:
    cmds = []
    for _ in range(draw(st.integers(1, 4))):
        cls = draw(st.sampled_from([Book, UncachedBook]))
        streams_ = tuple(draw(st.sampled_from([(), ("a-0",)])))
        outcome = draw(
            st.sampled_from(
                [
                    "emit",
                    "emit",
                    "emit",
                    "none",
                    "violate",
                    "raise",
                    "poison",
                    "bad-tag",
                    "untagged-other",
                ]
            )
        )
        target = draw(st.sampled_from(["b-0", "b-1", "a-0"]))
        key = draw(st.sampled_from([None, None, "k-1", "k-2"]))
        attempts = draw(st.integers(1, 4))
        cmds.append(
            (cls(streams_=streams_, outcome=outcome, target=target, limit=2), key, attempts)
        )
    faults = draw(st.lists(st.sampled_from(Q_FAULTS), max_size=12))
    return cmds, faults, draw(st.booleans())


def test_query_commands_agree_with_the_model_on_a_condition_failure_and_exhaustion() -> None:
    """A hand-picked run: two races then success, then races past the policy."""
    cmds = [
        (Book(streams_=()), None, 5),
        (Book(streams_=()), None, 2),
        (Book(streams_=()), "k-1", 3),
    ]
    check_query_agree(
        cmds,
        ["race", "none", "race", "none", "none", "race", "race", "race", "race", "race", "race"],
        True,
    )


def test_a_retry_folds_the_read_a_failed_condition_carries() -> None:
    """A cached query command whose condition fails with the read after its position
    (``ConditionFailed.read``, as PostgreSQL's) retries without a QUERY: it folds that
    read onto the state it decided on; model and machine agree, and the booking sees
    the competing one. Uncached, or without a carried read, the retry reads."""
    script = ["none", "carry", "none", "none"]
    check_query_agree([(Book(streams_=()), None, 3)], script, True)
    for cls, fault, reads in ((Book, "carry", 1), (Book, "race", 2), (UncachedBook, "carry", 2)):
        world = QWorld(["none", fault, "none", "none"], True)
        policy = RetryPolicy(max_attempts=3, jitter=0)
        run = _pipeline.run_command(
            cls(streams_=()), REGISTRY, policy, None, None, world.store.state_cache
        )
        seen, out = q_drive(run, world, Ids(), False)
        assert [e[0] for e in seen].count(_pipeline.QUERY) == reads, (cls, fault)
        assert out[0] == "ok"
        booked = [e for e in world.store.read_all() if e.stream_id == "b-0"]
        assert len(booked) == 1 and booked[0].data.n == 1  # it saw the competing booking


def assert_same_caches(worlds: Any) -> None:
    """The two worlds' state caches counted the same hits and misses and hold the same
    entries."""
    a, b = (w.store.state_cache for w in worlds)
    assert a is not None and b is not None
    assert (a.hits, a.misses) == (b.hits, b.misses)
    assert {k: (e.state, e.versions) for k, e in a._entries.items()} == {
        k: (e.state, e.versions) for k, e in b._entries.items()
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=query_cases(), warm=st.booleans())
def test_query_commands_agree_with_the_model(
    case: tuple[list[Any], list[str], bool], warm: bool
) -> None:
    """Query commands: the machine (effect by effect) and the model emit the same effects,
    outcomes and writes, under condition failures, conflicts, store failures, lost
    replies, idempotency keys and the state cache, with and without appending a cached
    state first (``warm_append_first``, PostgreSQL's way)."""
    check_query_agree(*case, warm=warm)


def test_a_warm_query_command_appends_first_and_reads_only_when_it_must() -> None:
    """With ``warm_append_first`` a cached query command appends without a QUERY. A
    failed condition costs no attempt: its carried read is folded (still no QUERY), or the
    retry reads after the cached position. A ``handle`` that refuses, or decides nothing,
    on the unread state reads and decides again. Model and machine agree on each."""
    one = [(Book(streams_=()), None, 1)]
    # (faults of the second command's effects, its command, QUERY effects it makes)
    for faults, second, queries in (
        (["none"], Book(streams_=()), 0),
        (["carry", "none"], Book(streams_=()), 0),
        (["race", "none", "none"], Book(streams_=()), 1),
        (["race", "none", "none"], Book(streams_=(), outcome="violate", limit=2), 1),
        (["none", "none"], Book(streams_=(), outcome="raise"), 1),
        (["none"], Book(streams_=(), outcome="none"), 1),
    ):
        # The first command: a QUERY and an APPEND_IF, no fault.
        check_query_agree([*one, (second, None, 1)], ["none", "none", *faults], True, warm=True)
        world = QWorld(["none", "none", *faults], True)
        policy = RetryPolicy(max_attempts=1, jitter=0)
        for n, command in enumerate((one[0][0], second)):
            run = _pipeline.run_command(
                command, REGISTRY, policy, None, None, world.store.state_cache, 0, True
            )
            seen, out = q_drive(run, world, Ids(), False)
            if n == 1:
                assert [e[0] for e in seen].count(_pipeline.QUERY) == queries, faults
        booked = [e.data.n for e in world.store.read_all() if e.stream_id == "b-0"]
        if second.outcome == "none":
            assert out[0] == "ok" and booked == [0]
        elif second.outcome == "raise":  # read first, then the error (not a retry)
            assert out[:2] == ("error", "RuntimeError") and booked == [0]
        elif second.outcome == "violate":
            # The read after the failure shows the slot full (its booking, the race's).
            assert out[:2] == ("error", "BusinessRuleViolation") and booked == [0]
        else:  # the second booking saw the first (and the competing one, if any)
            assert out[0] == "ok" and booked == [
                0,
                2 if "race" in faults or "carry" in faults else 1,
            ]


def check_query_agree(
    cmds: list[Any], faults: list[str], cache: bool, *, warm: bool = False
) -> None:
    worlds = (QWorld(faults, cache), QWorld(faults, cache))
    for command, key, attempts in cmds:
        policy = RetryPolicy(max_attempts=attempts, jitter=0, unavailable_initial_delay=0.001)
        outs = []
        for world, model in zip(worlds, (True, False), strict=True):
            ids = Ids()
            cache_ = world.store.state_cache if cache else None
            if model:
                run: Any = pipeline_model.run_command(
                    command, REGISTRY, policy, None, key, cache_, 0, warm
                )
            else:
                run = _pipeline.run_command(command, REGISTRY, policy, None, key, cache_, 0, warm)
            outs.append(q_drive(run, world, ids, model))
        assert outs[0] == outs[1], command
        assert worlds[0].contents() == worlds[1].contents()
    if cache:
        assert_same_caches(worlds)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=query_cases(), races=st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_query_commands_on_the_memory_store_agree_with_the_model(
    case: tuple[list[Any], list[str], bool], races: list[int]
) -> None:
    """``execute_sync`` on a MemoryStore (the whole query command in one native call)
    against the model on the same store kind: outcome, writes and cache agree; competing
    writers come in from ``handle`` (between the read and the append)."""
    cmds, _, cache = case
    worlds = (QWorld([], cache), QWorld([], cache))
    for (command, key, attempts), race in zip(cmds, races, strict=False):
        policy = RetryPolicy(max_attempts=attempts, jitter=0)
        outs: list[Any] = []
        for world, model in zip(worlds, (True, False), strict=True):
            RACE["left"], RACE["write"] = race, world.write
            if model:
                run: Any = pipeline_model.run_command(
                    command,
                    REGISTRY,
                    policy,
                    None,
                    key,
                    world.store.state_cache if cache else None,
                )
                outs.append(q_drive(run, world, Ids(), True)[1])
            else:
                try:
                    r = execute_sync(world.store, command, retry=policy, idempotency_key=key)
                    outs.append(("ok", q_effect((DONE, r), Ids())))
                except Exception as exc:
                    outs.append(("error", type(exc).__name__, str(exc)))
        assert outs[0] == outs[1], command
        assert worlds[0].contents() == worlds[1].contents()
    RACE["left"] = 0
    if cache:
        assert_same_caches(worlds)
