"""The Rust command machine's own face: the fused in-memory drive, the trace, the result.

The algorithm's behaviour is covered by test_pipeline.py (driven by hand) and the
executor tests (both shells); these pin what the machine adds: which effects come back
from ``drive``, when the executor uses it, what the trace records, and the lazy result.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from eventcore import (
    Command,
    ConcurrencyConflict,
    ExecutionResult,
    MemoryStore,
    RetryPolicy,
    StreamId,
    UndeclaredStream,
    default_registry,
    execute_sync,
    stream,
)
from eventcore._core import CommandRun
from eventcore._pipeline import DONE, FOLD, SLEEP, run_command
from eventcore.errors import EventDecodeError
from eventcore.recorded import AppendResult
from eventcore.state_cache import StateCache
from eventcore.testing import FaultyStore

from .bank_domain import (
    Account,
    AccountOpened,
    Deposit,
    Deposited,
    EmitTo,
    Transfer,
    new,
    open_with,
)

FAST = RetryPolicy(max_attempts=5, initial_delay=0.0)


def test_run_command_is_the_rust_machine() -> None:
    run = run_command(Deposit(account="a", amount=1), default_registry, FAST, None)
    assert isinstance(run, CommandRun)
    assert run.trace is None  # no tracing asked for: nothing recorded
    effect = run.send(None)
    assert effect[0] is FOLD  # the effect names are the module's own str objects


def test_a_plain_command_is_one_native_call() -> None:
    store = MemoryStore(state_cache=None)
    open_with(store, "a", 10)
    run = run_command(Deposit(account="a", amount=5), store.registry, FAST, None)
    effect = run.drive(store._core, None)
    assert effect[0] is DONE  # fold, handle, encode and append happened inside
    result = effect[1]
    assert isinstance(result, ExecutionResult)
    assert result.attempts == 1
    assert result.stream_versions == {"a": 3}  # opened, deposited 10, deposited 5
    assert store.stream_version("a") == 3
    with pytest.raises(StopIteration):  # the run is over
        run.drive(store._core, None)


def test_drive_hands_back_the_sleep_of_a_conflict_retry() -> None:
    store = MemoryStore(state_cache=None)
    open_with(store, "a", 10)
    raced = []

    class Racing(Deposit):
        def handle(self, state: Account) -> Any:
            if not raced:  # a competing writer lands between this read and its append
                raced.append(True)
                store.append([new("a", Deposited(1))])
            return super().handle(state)

    policy = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0.0)
    run = run_command(Racing(account="a", amount=5), store.registry, policy, None, trace=True)
    effect = run.drive(store._core, None)
    assert effect[0] is SLEEP and effect[1] == 0.05  # the shell sleeps, not the machine
    effect = run.drive(store._core, None)
    assert effect[0] is DONE and effect[1].attempts == 2
    assert store.stream_version("a") == 4  # 2 opening, the racer's, this one
    trace = run.trace
    assert trace is not None
    assert ("retry", 1, "conflict", 0.05) in trace
    phases = [(t[0], t[1]) for t in trace if t[0] != "retry"]
    assert phases == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
        ("read_streams", 2),
        ("handle_command", 2),
        ("write_events", 2),
    ]


def test_trace_phases_are_on_the_perf_counter_clock_and_ordered() -> None:
    store = MemoryStore(state_cache=None)
    open_with(store, "a", 3)
    open_with(store, "b", 0)
    before = time.perf_counter_ns()
    run = run_command(
        Transfer(source="a", target="b", amount=2), store.registry, FAST, None, trace=True
    )
    effect = run.drive(store._core, None)
    after = time.perf_counter_ns()
    assert effect[0] is DONE
    trace = run.trace
    assert trace is not None
    assert [t[0] for t in trace] == ["read_streams", "handle_command", "write_events"]
    edges = [x for t in trace for x in t[2:]]
    assert edges == sorted(edges)
    assert before <= edges[0] and edges[-1] <= after


def test_send_records_the_same_trace_as_drive() -> None:
    cmd = Deposit(account="a", amount=1)
    run = run_command(cmd, default_registry, FAST, None, trace=True)
    fold = run.send(None)
    opened = (*default_registry.encode(AccountOpened("a")), 1, 1)
    append = run.send(([("a", *opened)], [1]))
    done = run.send(AppendResult(7, [("a", 2)], append[1]))
    assert (fold[0], append[0], done[0]) == ("fold", "append", "done")
    assert [t[:2] for t in run.trace or []] == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
    ]


def test_retries_for_an_unavailable_store_are_traced_with_their_reason() -> None:
    from eventcore.errors import StoreUnavailable

    policy = RetryPolicy(
        max_attempts=3, initial_delay=0.0, unavailable_initial_delay=0.5, jitter=0.0
    )
    run = run_command(Deposit(account="a", amount=1), default_registry, policy, None, trace=True)
    run.send(None)
    sleep = run.send(StoreUnavailable("down"))
    assert sleep == ("sleep", 0.5)
    assert ("retry", 1, "unavailable", 0.5) in (run.trace or [])


def test_the_executor_drives_only_a_plain_memory_store() -> None:
    # A wrapper around a memory store, or a store whose effect methods were replaced,
    # gets every effect through send: what it does must be seen.
    faulty = FaultyStore(faults=["conflict"])
    open_with(faulty.store, "a")
    assert execute_sync(faulty, Deposit(account="a", amount=1), retry=FAST).attempts == 2

    store = MemoryStore()
    open_with(store, "a")
    calls = []
    real = store.read_fold

    def counted(*args: Any) -> Any:
        calls.append(args[0])
        return real(*args)

    store.read_fold = counted  # type: ignore[method-assign]
    execute_sync(store, Deposit(account="a", amount=1))
    assert calls == [["a"]]


def test_an_error_from_user_code_ends_a_driven_run() -> None:
    store = MemoryStore()
    open_with(store, "a")

    class Broken(Deposit):
        def handle(self, state: Account) -> Any:
            raise RuntimeError("boom")

    run = run_command(Broken(account="a", amount=1), store.registry, FAST, None)
    with pytest.raises(RuntimeError, match="boom"):
        run.drive(store._core, None)
    with pytest.raises(StopIteration):  # over: a second call cannot resume it
        run.drive(store._core, None)
    assert store.stream_version("a") == 1  # nothing written
    assert execute_sync(store, Deposit(account="a", amount=1)).attempts == 1  # store unharmed


def test_the_result_builds_its_append_result_when_read() -> None:
    store = MemoryStore()
    open_with(store, "a")
    result = execute_sync(store, Deposit(account="a", amount=4))
    assert repr(result) == "ExecutionResult(events=1, attempts=1)"
    append = result.append
    assert isinstance(append, AppendResult)
    assert result.append is append  # built once
    assert result.positions == append.positions == range(2, 3)
    [written] = result.events
    assert (written.stream_id, written.version, written.position) == ("a", 2, 2)
    assert not result.replayed


def test_exhausted_conflicts_raise_from_drive() -> None:
    store = MemoryStore(state_cache=None)
    open_with(store, "a")

    class AlwaysRacing(Deposit):
        def handle(self, state: Account) -> Any:
            store.append([new("a", Deposited(1))])
            return super().handle(state)

    run = run_command(
        AlwaysRacing(account="a", amount=1), store.registry, RetryPolicy.never(), None
    )
    with pytest.raises(ConcurrencyConflict) as info:
        run.drive(store._core, None)
    assert info.value.attempts == 1


def test_the_codec_is_the_registrys_own_even_when_replaced_on_the_instance() -> None:
    from eventcore import EventRegistry, SerializationError

    registry = EventRegistry()
    for cls in (AccountOpened, Deposited):
        registry.register(default_registry.name_of(cls), cls)
    store = MemoryStore(registry=registry)
    open_with(store, "a")
    seen: list[Any] = []
    real = registry.encode

    def encode(event: Any) -> Any:
        seen.append(event)
        return real(event)

    registry.encode = encode  # type: ignore[method-assign]
    execute_sync(store, Deposit(account="a", amount=3))
    assert seen == [Deposited(3)]

    del registry.encode
    execute_sync(store, Deposit(account="a", amount=4))
    assert seen == [Deposited(3)]  # the registry's own encode again
    assert store.stream_version("a") == 3
    with pytest.raises(SerializationError):  # an unregistered class: the registry's error
        execute_sync(
            MemoryStore(registry=EventRegistry()),
            EmitTo(declared=("x",), emit=(("x", Deposited(1)),)),
        )


class _TwoFields(Command[list[str], Any]):
    """Two stream fields (possibly the same stream) and one holding several."""

    first: StreamId = stream()
    second: StreamId = stream()
    more: tuple[StreamId, ...] = stream()

    def initial_state(self) -> list[str]:
        return []

    def apply(self, state: list[str], event: Any, stream_id: str) -> list[str]:
        return [*state, stream_id]

    def handle(self, state: list[str]) -> list[tuple[str, Any]]:
        return [(s, AccountOpened(owner=",".join(state))) for s in self.streams()]


class _OwnStreams(_TwoFields):
    """Overrides ``streams()``: the machine must call it, not read the fields."""

    def streams(self) -> list[StreamId]:
        return [self.second]


@pytest.mark.parametrize(
    ("cls", "first", "second", "more", "declared"),
    [
        (_TwoFields, "a", "b", (), ["a", "b"]),
        (_TwoFields, "a", "a", (), ["a"]),  # the same stream twice: declared once
        (_TwoFields, "a", "b", ("c", "a"), ["a", "b", "c"]),  # a field with several
        (_OwnStreams, "a", "b", ("c",), ["b"]),
    ],
)
def test_the_declared_streams_are_what_streams_returns(
    cls: type[_TwoFields], first: str, second: str, more: tuple[str, ...], declared: list[str]
) -> None:
    store = MemoryStore(state_cache=None)
    for _ in range(2):  # the second run of a class uses what the first one learned
        command = cls(first=first, second=second, more=more)
        assert command.streams() == declared
        result = execute_sync(store, command)
        assert list(result.stream_versions) == declared
    assert [e.stream_id for e in store.read_all()] == declared * 2


class _Discovers(_TwoFields):
    """Discovers the stream ``c``; its parent does not: each class has its own facts."""

    def discover(self, state: list[str]) -> list[str]:
        return ["c"]


def test_each_command_class_has_its_own_facts() -> None:
    store = MemoryStore(state_cache=None)
    execute_sync(store, _TwoFields(first="c", second="d", more=()))  # one event on c (and d)
    for cls, first in [(_TwoFields, "a"), (_Discovers, "b"), (_TwoFields, "e"), (_Discovers, "f")]:
        execute_sync(store, cls(first=first, second=first + "2", more=()))
    owners = {e.stream_id: e.data.owner for e in store.read_all()}
    # The state is the folded streams' ids: only the discovering class folded c.
    assert [owners[s] for s in ("a", "b", "e", "f")] == ["", "c", "", "c"]


class _EmitsAs(EmitTo):
    """Emits its events in the sequence ``shape`` makes: a list, a tuple, a deque."""

    shape: Any = list

    def handle(self, state: list[tuple[str, Any]]) -> Any:
        return self.shape(self.emit)


class _ListSubclass(list):  # type: ignore[type-arg]
    """A list subclass (not read by index as a list is)."""


@pytest.mark.parametrize("shape", [list, tuple, _ListSubclass, collections.deque])
def test_handle_may_return_any_iterable_of_pairs(shape: Any) -> None:
    store = MemoryStore(state_cache=None)
    emit = (("x", Deposited(1)), ("y", Deposited(2)), ("x", Deposited(3)))
    result = execute_sync(store, _EmitsAs(declared=("x", "y"), emit=emit, shape=shape))
    assert [(e.stream_id, e.data) for e in store.read_all()] == list(emit)
    assert result.stream_versions == {"x": 2, "y": 1}
    with pytest.raises(UndeclaredStream):  # every pair is still checked
        execute_sync(store, _EmitsAs(declared=("x",), emit=emit, shape=shape))
    assert store.head() == 3


def test_the_native_fold_looks_up_each_decoder_on_every_read() -> None:
    # The store keeps each event type's str between folds, but not its decoder: a decoder
    # replaced in the registry between two commands is the one the second command uses.
    store = MemoryStore(state_cache=0)
    open_with(store, "acc-dec", 100)
    execute_sync(store, Deposit(account="acc-dec", amount=1))
    key = default_registry.name_of(Deposited)
    original = default_registry.decoders[key]
    seen: list[bytes] = []

    def counting(payload: bytes) -> Any:
        seen.append(payload)
        return original(payload)

    default_registry.decoders[key] = counting
    try:
        execute_sync(store, Deposit(account="acc-dec", amount=1))
    finally:
        default_registry.decoders[key] = original
    assert len(seen) == 2  # the two Deposited events before it, decoded by the new decoder
    assert store.stream_version("acc-dec") == 4


# -- the FOLD boundary: stores return rows, the machine folds them -----------------------


def test_a_store_is_asked_for_rows_without_the_commands_callbacks() -> None:
    store = MemoryStore()
    open_with(store, "a", 10)
    run = run_command(Deposit(account="a", amount=1), default_registry, FAST, None)
    assert run.send(None) == ("fold", ["a"])  # no state, apply or decoders handed out
    rows, versions = store.read_fold(["a"])
    append = run.send((rows, versions))  # folded here: open, 10
    assert append[0] == "append" and list(append[2]) == [("a", 2)]


def test_a_cached_states_tail_is_asked_for_with_its_versions_and_hint() -> None:
    store = MemoryStore(state_cache=StateCache(min_events=0))
    open_with(store, "a", 10)
    # In memory the state is kept with its own event folded in (keep_own_events): version 3.
    execute_sync(store, Deposit(account="a", amount=1), retry=FAST)
    store.append([new("a", Deposited(5))])
    cache = store.state_cache
    assert cache is not None
    run = run_command(Deposit(account="a", amount=1), default_registry, FAST, None, None, cache)
    tail = run.send(None)
    assert tail == ("tail", ["a"], [3], 0, None)
    read = store.read_tail(["a"], [3], 0, None)
    assert read is not None and [r[3] for r in read[0]] == [4]
    append = run.send(read)
    assert list(append[2]) == [("a", 4)]
    done = run.send(store.append(append[1], expected=append[2], metadata=append[3]))
    assert done[0] == "done"
    # Without keep_own_events the state decided on is kept: before its own event.
    (entry,) = cache._entries.values()
    assert entry.versions == [4] and store.stream_version("a") == 5
    assert entry.state == Account(opened=True, balance=10 + 1 + 5)


def test_rows_that_do_not_decode_end_the_run_with_the_events_place() -> None:
    run = run_command(Deposit(account="a", amount=1), default_registry, FAST, None)
    run.send(None)
    rows = [("a", "demo.bank.Deposited", b"\xc1", 1, 7)]
    with pytest.raises(EventDecodeError) as info:
        run.send((rows, [1]))
    assert (info.value.stream_id, info.value.version, info.value.position) == ("a", 1, 7)
    with pytest.raises(StopIteration):  # the run is over
        run.send(None)


def test_a_fold_read_must_be_rows_and_versions() -> None:
    run = run_command(Deposit(account="a", amount=1), default_registry, FAST, None)
    run.send(None)
    with pytest.raises(ValueError, match=r"\(rows, versions\)"):
        run.send(([], [0], "more"))
