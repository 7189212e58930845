"""The sans-IO command pipeline driven by hand: no store, results fed in as values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    Command,
    CommandError,
    ConcurrencyConflict,
    DuplicateEventId,
    EventRegistry,
    ExecutionResult,
    IdempotencyKeyReused,
    InvalidStreamId,
    Metadata,
    OutcomeUnknown,
    RecordedEvent,
    RetryPolicy,
    SerializationError,
    StoreUnavailable,
    StreamId,
    UndeclaredStream,
    UsageError,
    default_registry,
    stream,
)
from eventcore._pipeline import run_command
from eventcore.recorded import AppendResult, recorded_events

from .bank_domain import (
    AccountOpened,
    Catalogued,
    Deposit,
    Deposited,
    EmitTo,
    Noted,
    PlaceOrder,
    Reserved,
    Stocked,
    Transfer,
    Withdrawn,
)

NO_DELAY = RetryPolicy(max_attempts=5, initial_delay=0.0)

# The pipeline's effects, as the tests see them. The generator may yield tagged tuples
# (``("fold", streams)``) or named tuples (``Fold(...)``); both carry the same fields in
# the same order, and both are parsed into these. A fold is resumed with the rows a store
# read (``rows``) and the streams' versions: the machine folds them itself.


@dataclass
class Fold:
    streams: list[str]


@dataclass
class Append:
    events: list[tuple[str, str, bytes, int]]
    expected: list[tuple[str, int]]
    metadata: Metadata | None


@dataclass
class Sleep:
    seconds: float


@dataclass
class Done:
    result: ExecutionResult


@dataclass
class Lookup:
    event_ids: list[int]


KINDS: dict[str, type] = {
    "fold": Fold,
    "append": Append,
    "sleep": Sleep,
    "done": Done,
    "lookup": Lookup,
}


def parse(effect: Any) -> Any:
    if isinstance(effect, tuple) and effect and isinstance(effect[0], str):
        kind, fields = effect[0], effect[1:]
    else:
        kind, fields = type(effect).__name__.lower(), tuple(effect)
    assert kind in KINDS, f"unknown effect {effect!r}"
    parsed = KINDS[kind](*fields)
    if isinstance(parsed, Fold):
        parsed.streams = list(parsed.streams)
    return parsed


class Steps:
    """The pipeline generator, with its effects parsed; a finished run becomes ``Done``."""

    def __init__(
        self, command: Any, registry: Any, policy: RetryPolicy, metadata: Any, key: Any = None
    ) -> None:
        self.gen = run_command(command, registry, policy, metadata, key)

    def send(self, value: Any) -> Any:
        try:
            effect = self.gen.send(value)
        except StopIteration as stop:
            return Done(stop.value)
        return parse(effect)


def start(
    command: Any,
    policy: RetryPolicy = NO_DELAY,
    metadata: Metadata | None = None,
    key: str | None = None,
) -> Any:
    steps = Steps(command, default_registry, policy, metadata, key)
    return steps, steps.send(None)


def finish(steps: Steps, value: Any) -> ExecutionResult:
    done = steps.send(value)
    assert isinstance(done, Done), done
    assert isinstance(done.result, ExecutionResult)
    with pytest.raises(StopIteration):  # and the run is over
        steps.gen.send(None)
    return done.result


def ok(effect: Append, versions: dict[str, int]) -> AppendResult:
    """The AppendResult a store would return for ``effect`` given the versions before."""
    after = dict(versions)
    for e in effect.events:
        after[e[0]] = after.get(e[0], 0) + 1
    base = 100
    return AppendResult(range(base, base + len(effect.events)), after, effect.events)


def rows(*events: tuple[str, Any], registry: EventRegistry = default_registry) -> list[Any]:
    """The fold rows a store returns for ``(stream, event)`` pairs in global order:
    ``(stream, type, payload, version, position)``, versions from 1 per stream."""
    versions: dict[str, int] = {}
    out = []
    for position, (stream_id, ev) in enumerate(events, 1):
        versions[stream_id] = versions.get(stream_id, 0) + 1
        out.append((stream_id, *registry.encode(ev), versions[stream_id], position))
    return out


def opened(stream_id: str, balance: int) -> list[tuple[str, Any]]:
    """An account's events: opened, then ``balance`` deposited (when not 0)."""
    return [(stream_id, AccountOpened(stream_id))] + (
        [(stream_id, Deposited(balance))] if balance else []
    )


def fold_open_account(
    balance: int, registry: EventRegistry = default_registry
) -> tuple[list[Any], list[int]]:
    """A read of an open account with ``balance``, at version 2."""
    return rows(("a", AccountOpened("a")), ("a", Deposited(balance)), registry=registry), [2]


def test_happy_path_effects_in_order() -> None:
    cmd = Deposit(account="acc-1", amount=5)
    steps, fold = start(cmd)
    assert isinstance(fold, Fold)
    assert fold.streams == ["acc-1"]

    # The rows fold from initial_state() with the command's apply: the account is open.
    append = steps.send(fold_open_account(10))
    assert isinstance(append, Append)
    assert append.expected == [("acc-1", 2)]
    assert append.metadata is None
    [(stream_id, name, payload, event_id)] = append.events
    assert stream_id == "acc-1"
    assert name == "demo.bank.Deposited"
    assert default_registry.decode(name, payload) == Deposited(5)
    assert isinstance(event_id, int) and (event_id >> 76) & 0xF == 7

    result = finish(steps, ok(append, {"acc-1": 2}))
    assert result.attempts == 1
    assert result.positions == range(100, 101)
    assert result.stream_versions == {"acc-1": 3}
    [written] = result.events
    assert written.version == 3 and written.position == 100
    assert written.event_id.int == event_id


def test_multi_stream_expected_versions_follow_declaration_order() -> None:
    steps, fold = start(Transfer(source="a", target="b", amount=3))
    assert fold.streams == ["a", "b"]
    append = steps.send((rows(*opened("a", 10), *opened("b", 0)), [4, 1]))
    assert append.expected == [("a", 4), ("b", 1)]
    assert [(e[0], e[1]) for e in append.events] == [
        ("a", "demo.bank.Withdrawn"),
        ("b", "demo.bank.Deposited"),
    ]
    ids = [e[3] for e in append.events]
    assert ids == sorted(ids) and len(set(ids)) == 2
    result = finish(steps, ok(append, {"a": 4, "b": 1}))
    assert [(w.stream_id, w.version) for w in result.events] == [("a", 5), ("b", 2)]


def test_metadata_is_passed_to_the_append() -> None:
    meta = Metadata(user_id="ann")
    steps, _ = start(Deposit(account="a", amount=1), metadata=meta)
    append = steps.send(fold_open_account(0))
    assert append.metadata is meta


def test_business_rule_violation_stops_before_any_append() -> None:
    steps, _ = start(Deposit(account="a", amount=1))
    with pytest.raises(BusinessRuleViolation, match="not open"):
        steps.send(([], [0]))


def test_business_rule_violation_is_not_retried_after_a_conflict() -> None:
    steps, _ = start(Transfer(source="a", target="b", amount=8))
    append = steps.send((rows(*opened("a", 10), *opened("b", 0)), [2, 1]))
    assert isinstance(append, Append)
    sleep = steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert isinstance(sleep, Sleep)
    fold2 = steps.send(None)
    assert isinstance(fold2, Fold) and fold2.streams == ["a", "b"]
    # The retry folds from a fresh initial state (on the old one, 10 + 2 would cover 8).
    with pytest.raises(BusinessRuleViolation, match="insufficient"):
        steps.send((rows(*opened("a", 2), *opened("b", 0)), [3, 1]))


def test_undeclared_stream_raises_before_any_append() -> None:
    cmd = EmitTo(declared=["a"], emit=(("a", Deposited(1)), ("elsewhere", Deposited(2))))
    steps, _ = start(cmd)
    with pytest.raises(UndeclaredStream) as info:
        steps.send(([], [0]))
    assert info.value.stream_id == "elsewhere"
    assert info.value.command == "EmitTo"


def test_serialization_error_raises_before_any_append() -> None:
    cmd = EmitTo(declared=["a"], emit=(("a", Noted(object())),))
    steps, _ = start(cmd)
    with pytest.raises(SerializationError) as info:
        steps.send(([], [0]))
    assert info.value.event_type == "tbank.Noted"


def test_handle_returning_nothing_appends_only_the_checks() -> None:
    steps, _ = start(EmitTo(declared=["a", "b"]))
    append = steps.send(([], [3, 0]))
    assert append.events == []
    assert append.expected == [("a", 3), ("b", 0)]
    result = finish(steps, AppendResult(range(0), {"a": 3, "b": 0}, []))
    assert result.events == [] and result.attempts == 1


def test_not_a_command_is_a_command_error() -> None:
    with pytest.raises(CommandError):
        start(object())


def test_conflict_retries_from_fresh_state_with_new_event_ids() -> None:
    policy = RetryPolicy.fixed(0.25, max_attempts=3)
    cmd = Deposit(account="a", amount=5)
    steps, _ = start(cmd, policy)
    append1 = steps.send(fold_open_account(0))
    sleep = steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert sleep == Sleep(0.25)
    fold2 = steps.send(None)
    assert isinstance(fold2, Fold)
    assert fold2.streams == ["a"]
    append2 = steps.send((rows(*opened("a", 7)), [3]))
    assert append2.expected == [("a", 3)]
    assert append2.events[0][3] != append1.events[0][3]
    assert append2.events[0][3] > append1.events[0][3]
    result = finish(steps, ok(append2, {"a": 3}))
    assert result.attempts == 2


def test_conflicts_exhaust_the_policy_and_raise_with_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0)
    steps, _ = start(Deposit(account="a", amount=5), policy)
    effects: list[Any] = []
    for attempt in range(1, 4):
        append = steps.send(fold_open_account(0))
        assert isinstance(append, Append)
        conflict = ConcurrencyConflict([("a", 2, 2 + attempt), ("b", 0, 1)])
        if attempt < 3:
            sleep = steps.send(conflict)
            assert sleep == Sleep(0.0)
            effects.append(steps.send(None))
        else:
            with pytest.raises(ConcurrencyConflict) as info:
                steps.send(conflict)
    assert all(isinstance(e, Fold) for e in effects)
    assert info.value.attempts == 3
    assert [(c.stream_id, c.expected, c.actual) for c in info.value.conflicts] == [
        ("a", 2, 5),
        ("b", 0, 1),
    ]


def test_never_policy_raises_the_first_conflict() -> None:
    steps, _ = start(Deposit(account="a", amount=5), RetryPolicy.never())
    steps.send(fold_open_account(0))
    with pytest.raises(ConcurrencyConflict) as info:
        steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert info.value.attempts == 1


def unavailable_every(seconds: float, *, timeout: float = 30.0) -> RetryPolicy:
    """A policy that waits ``seconds`` before each retry of an unavailable store."""
    return RetryPolicy(
        jitter=0.0,
        unavailable_initial_delay=seconds,
        unavailable_max_delay=seconds,
        unavailable_timeout=timeout,
    )


def test_unavailable_append_resends_the_same_events_with_the_same_ids() -> None:
    policy = unavailable_every(0.5)
    steps, _ = start(Transfer(source="a", target="b", amount=3), policy)
    append1 = steps.send((rows(*opened("a", 10), *opened("b", 0)), [2, 1]))
    assert steps.send(StoreUnavailable("timeout")) == Sleep(0.5)
    append2 = steps.send(None)
    assert isinstance(append2, Append)
    assert append2.events == append1.events
    assert append2.expected == append1.expected
    assert steps.send(StoreUnavailable("timeout")) == Sleep(0.5)
    append3 = steps.send(None)
    assert append3.events == append1.events
    result = finish(steps, ok(append3, {"a": 2, "b": 1}))
    assert result.attempts == 3
    assert [w.event_id.int for w in result.events] == [e[3] for e in append1.events]


def test_unavailable_append_exhausts_the_policy() -> None:
    # One retry fits in the waiting budget, the second would pass it.
    steps, _ = start(Deposit(account="a", amount=1), unavailable_every(0.1, timeout=0.15))
    steps.send(fold_open_account(0))
    steps.send(StoreUnavailable("down"))
    steps.send(None)
    err = StoreUnavailable("still down")
    with pytest.raises(StoreUnavailable) as info:
        steps.send(err)
    assert info.value is err


def test_unavailable_is_raised_at_once_when_the_policy_says_so() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0, retry_unavailable=False)
    steps, _ = start(Deposit(account="a", amount=1), policy)
    steps.send(fold_open_account(0))
    with pytest.raises(StoreUnavailable):
        steps.send(StoreUnavailable("down"))
    steps, _ = start(Deposit(account="a", amount=1), policy)
    with pytest.raises(StoreUnavailable):
        steps.send(StoreUnavailable("down on read"))


def test_unavailable_read_is_retried_after_a_sleep() -> None:
    policy = unavailable_every(0.125)
    steps, _ = start(Deposit(account="a", amount=1), policy)
    assert steps.send(StoreUnavailable("read failed")) == Sleep(0.125)
    fold = steps.send(None)
    assert isinstance(fold, Fold) and fold.streams == ["a"]
    append = steps.send(fold_open_account(0))
    result = finish(steps, ok(append, {"a": 2}))
    assert result.attempts == 2


def test_unavailable_read_exhausts_the_policy() -> None:
    steps, _ = start(Deposit(account="a", amount=1), unavailable_every(0.1, timeout=0.15))
    steps.send(StoreUnavailable("1"))
    steps.send(None)
    with pytest.raises(StoreUnavailable):
        steps.send(StoreUnavailable("2"))


def test_lost_reply_then_conflict_runs_the_command_again() -> None:
    steps, _ = start(Deposit(account="a", amount=1))
    steps.send(fold_open_account(0))
    assert isinstance(steps.send(StoreUnavailable("lost")), Sleep)
    steps.send(None)
    assert isinstance(steps.send(ConcurrencyConflict([("a", 2, 3)])), Sleep)
    assert isinstance(steps.send(None), Fold)


def test_outcome_unknown_then_conflict_looks_the_first_send_up() -> None:
    # The first send's link broke, but the server finished it after the resend checked
    # for its ids: the resend conflicts with the command's own write.
    steps, _ = start(Deposit(account="a", amount=1))
    append = steps.send(fold_open_account(0))
    ids = [e[3] for e in append.events]
    assert isinstance(steps.send(OutcomeUnknown("lost", ids)), Sleep)
    steps.send(None)
    lookup = steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert lookup == Lookup(ids)
    result = finish(steps, stored(append))
    assert [w.event_id.int for w in result.events] == ids
    assert not result.replayed and result.attempts == 2
    # Not stored: the conflict is a real one and the command runs again.
    steps, _ = start(Deposit(account="a", amount=1))
    append = steps.send(fold_open_account(0))
    steps.send(OutcomeUnknown("lost", [e[3] for e in append.events]))
    steps.send(None)
    steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert isinstance(steps.send([]), Sleep)
    assert isinstance(steps.send(None), Fold)


def test_sleeps_follow_the_exponential_policy() -> None:
    policy = RetryPolicy.exponential(
        initial_delay=0.01, multiplier=2.0, max_delay=0.03, max_attempts=5, jitter=0.0
    )
    steps, _ = start(Deposit(account="a", amount=1), policy)
    sleeps = []
    for _ in range(4):
        steps.send(fold_open_account(0))
        sleep = steps.send(ConcurrencyConflict([("a", 2, 3)]))
        sleeps.append(sleep.seconds)
        steps.send(None)
    assert sleeps == pytest.approx([0.01, 0.02, 0.03, 0.03])


def test_unexpected_append_result_is_a_type_error() -> None:
    steps, _ = start(Deposit(account="a", amount=1))
    steps.send(fold_open_account(0))
    with pytest.raises(TypeError):
        steps.send("what is this")


# --- discovery -------------------------------------------------------------------------


def test_discovered_streams_are_read_once_and_checked() -> None:
    cmd = PlaceOrder(order="order-1")
    steps, fold = start(cmd)
    assert fold.streams == ["order-1"]
    fold2 = steps.send((rows(("order-1", Catalogued(("p-1", "p-2", "p-1")))), [1]))
    assert isinstance(fold2, Fold)
    assert fold2.streams == ["p-1", "p-2"]
    assert all(type(s) is StreamId for s in fold2.streams)
    # Discovered streams fold into the same state: the order's products stay in it.
    append = steps.send((rows(("p-1", Stocked(5)), ("p-2", Stocked(5))), [3, 1]))
    assert isinstance(append, Append)
    assert append.expected == [("order-1", 1), ("p-1", 3), ("p-2", 1)]
    assert [(e[0], default_registry.decode(e[1], e[2])) for e in append.events] == [
        ("p-1", Reserved(1)),
        ("p-2", Reserved(1)),
        ("p-1", Reserved(1)),
    ]


class Endless(Command[int, Any]):
    """Discovers a brand-new stream every round."""

    seed: StreamId = stream()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state

    def discover(self, state: int) -> Iterable[str]:
        self.__dict__.setdefault("rounds", 0)
        self.__dict__["rounds"] += 1
        return [f"s-{self.__dict__['rounds']}"]

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return []


def test_discovery_is_bounded() -> None:
    cmd = Endless(seed="seed")
    steps, _ = start(cmd)
    folds = 0
    with pytest.raises(CommandError, match="discovering"):
        result: Any = ([], [0])
        while True:
            effect = steps.send(result)
            assert isinstance(effect, Fold)
            assert len(effect.streams) == 1
            folds += 1
            result = ([], [0])
    assert folds == Endless.max_discovery_rounds


def test_discovering_only_known_streams_ends_discovery() -> None:
    class Known(Endless):
        def discover(self, state: int) -> Iterable[str]:
            return ["seed", " seed "]

    steps, _ = start(Known(seed="seed"))
    append = steps.send(([], [4]))
    assert isinstance(append, Append)
    assert append.expected == [("seed", 4)]


def test_discovering_an_invalid_stream_id_fails() -> None:
    class Invalid(Endless):
        def discover(self, state: int) -> Iterable[str]:
            return [""]

    steps, _ = start(Invalid(seed="seed"))
    with pytest.raises(InvalidStreamId):
        steps.send(([], [0]))


def test_unavailable_during_discovery_read_is_retried_like_any_read() -> None:
    # StoreUnavailable is documented as retried by the executor's policy.
    cmd = PlaceOrder(order="order-1")
    steps, _ = start(cmd, unavailable_every(0.0625))
    steps.send((rows(("order-1", Catalogued(("p-1",)))), [1]))
    sleep = steps.send(StoreUnavailable("read failed"))
    assert sleep == Sleep(0.0625)
    fold = steps.send(None)
    assert isinstance(fold, Fold) and fold.streams == ["order-1"]


def test_emitting_to_a_discovered_stream_is_allowed() -> None:
    cmd = PlaceOrder(order="order-9")
    steps, _ = start(cmd)
    steps.send((rows(("order-9", Catalogued(("p-9",)))), [1]))
    append = steps.send((rows(("p-9", Stocked(1))), [1]))
    assert [e[0] for e in append.events] == ["p-9"]


def test_registry_is_the_one_given() -> None:
    registry = EventRegistry()
    registry.register("other.AccountOpened", AccountOpened)
    registry.register("other.Deposited", Deposited)
    registry.register("other.Withdrawn", Withdrawn)
    steps = Steps(Deposit(account="a", amount=2), registry, NO_DELAY, None)
    assert isinstance(steps.send(None), Fold)
    # The rows decode with this registry's decoders (the default one has no "other.*").
    append = steps.send(fold_open_account(0, registry))
    assert append.events[0][1] == "other.Deposited"


# --- idempotency keys: the LOOKUP effect ------------------------------------------------


def stored(append: Append, first_position: int = 50) -> list[RecordedEvent[Any]]:
    """The RecordedEvents a store would hold after ``append`` was written."""
    versions: dict[str, int] = {}
    rows = []
    for i, (stream_id, name, payload, event_id) in enumerate(append.events):
        versions[stream_id] = versions.get(stream_id, 2) + 1
        meta = append.metadata
        rows.append(
            (first_position + i, event_id, stream_id, versions[stream_id], name, payload, 0, meta)
        )
    return recorded_events(rows, default_registry)


def test_keyed_command_looks_its_ids_up_first_and_writes_with_them() -> None:
    steps, lookup = start(Deposit(account="a", amount=5), key="req-1")
    assert isinstance(lookup, Lookup) and len(lookup.event_ids) == 16
    fold = steps.send([])  # nothing written under the key yet
    assert isinstance(fold, Fold)
    append = steps.send(fold_open_account(0))
    assert isinstance(append, Append)
    assert [e[3] for e in append.events] == lookup.event_ids[:1]
    assert append.metadata is not None
    assert append.metadata.custom["eventcore.idempotency"]["key"] == "req-1"
    result = finish(steps, ok(append, {"a": 2}))
    assert result.attempts == 1 and not result.replayed


def test_keyed_command_found_returns_the_stored_outcome_without_running() -> None:
    steps, _ = start(Deposit(account="a", amount=5), key="req-1")
    steps.send([])
    append = steps.send(fold_open_account(0))
    # A second run of the same request: its lookup finds the events.
    steps2, lookup = start(Deposit(account="a", amount=5), key="req-1")
    result = finish(steps2, stored(append))
    assert result.replayed and result.attempts == 0
    assert [w.event_id.int for w in result.events] == lookup.event_ids[:1]
    assert list(result.positions) == [50]
    assert result.stream_versions == {"a": 3}


def test_keyed_duplicate_id_looks_the_winner_up() -> None:
    steps, _ = start(Deposit(account="a", amount=5), key="k")
    steps.send([])
    append = steps.send(fold_open_account(0))
    lookup = steps.send(DuplicateEventId(append.events[0][3], "already stored"))
    assert isinstance(lookup, Lookup)
    assert finish(steps, stored(append)).replayed


def test_unkeyed_duplicate_id_is_raised() -> None:
    steps, _ = start(Deposit(account="a", amount=5))
    append = steps.send(fold_open_account(0))
    err = DuplicateEventId(append.events[0][3], "already stored")
    with pytest.raises(DuplicateEventId) as info:
        steps.send(err)
    assert info.value is err


def test_keyed_conflict_at_the_last_attempt_looks_up_before_raising() -> None:
    steps, _ = start(Deposit(account="a", amount=5), RetryPolicy.never(), key="k")
    steps.send([])
    append = steps.send(fold_open_account(0))
    lookup = steps.send(ConcurrencyConflict([("a", 2, 3)]))
    assert isinstance(lookup, Lookup)  # a same-key caller may have written it
    assert finish(steps, stored(append)).replayed
    steps, _ = start(Deposit(account="a", amount=5), RetryPolicy.never(), key="k")
    steps.send([])
    steps.send(fold_open_account(0))
    steps.send(ConcurrencyConflict([("a", 2, 3)]))
    with pytest.raises(ConcurrencyConflict):
        steps.send([])  # not found: the conflict stands


def test_key_reused_for_another_command_is_refused_by_the_pipeline() -> None:
    steps, _ = start(Deposit(account="a", amount=5), key="k")
    steps.send([])
    append = steps.send(fold_open_account(0))
    steps2, _ = start(Deposit(account="a", amount=6), key="k")
    with pytest.raises(IdempotencyKeyReused):
        steps2.send(stored(append))


def test_lost_reply_then_exhausted_raises_outcome_unknown_with_the_ids() -> None:
    policy = RetryPolicy(unavailable_initial_delay=0.1, unavailable_timeout=0.1, jitter=0)
    steps, _ = start(Transfer(source="a", target="b", amount=3), policy)
    append = steps.send((rows(*opened("a", 10), *opened("b", 0)), [2, 1]))
    assert steps.send(OutcomeUnknown("lost", [e[3] for e in append.events])) == Sleep(0.1)
    steps.send(None)
    with pytest.raises(OutcomeUnknown) as info:
        steps.send(StoreUnavailable("refused"))
    assert [i.int for i in info.value.event_ids] == [e[3] for e in append.events]


def test_async_store_given_to_the_sync_shell_is_a_usage_error() -> None:
    async def fold() -> None:
        return None

    steps, _ = start(Deposit(account="a", amount=5))
    with pytest.raises(UsageError, match="await execute"):
        steps.send(fold())


def test_outcome_unknown_then_conflict_and_a_failed_check_stays_unknown() -> None:
    steps, _ = start(Deposit(account="a", amount=1))
    append = steps.send(fold_open_account(0))
    ids = [e[3] for e in append.events]
    steps.send(OutcomeUnknown("lost", ids))
    steps.send(None)
    steps.send(ConcurrencyConflict([("a", 2, 3)]))
    with pytest.raises(OutcomeUnknown) as info:
        steps.send(StoreUnavailable("down"))
    assert [i.int for i in info.value.event_ids] == ids
