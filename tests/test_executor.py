"""execute_sync and async execute on the in-memory store, with and without injected faults."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

import eventcore.executor as executor_module
from eventcore import (
    BusinessRuleViolation,
    Command,
    CommandError,
    ConcurrencyConflict,
    MemoryStore,
    Metadata,
    OutcomeUnknown,
    RetryPolicy,
    SerializationError,
    StoreUnavailable,
    StreamId,
    UndeclaredStream,
    ValidationError,
    execute,
    execute_sync,
)
from eventcore.retry import DEFAULT_RETRY
from eventcore.state_cache import StateCache
from eventcore.testing import FaultyStore

from .bank_domain import (
    AccountOpened,
    Catalogued,
    Deposit,
    Deposited,
    EmitTo,
    Noted,
    OpenAccount,
    PlaceOrder,
    Reserved,
    Stocked,
    Transfer,
    Withdraw,
    Withdrawn,
    balance,
    log_snapshot,
    new,
    open_with,
)

FAST = RetryPolicy(max_attempts=5, initial_delay=0.0, unavailable_initial_delay=0.001)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# --- success ---------------------------------------------------------------------------


def test_single_stream_command_writes_its_events(store: MemoryStore, run: Any) -> None:
    result = run(store, OpenAccount(account="acc-1", owner="ann"))
    assert result.attempts == 1
    assert result.stream_versions == {"acc-1": 1}
    [written] = result.events
    assert (written.stream_id, written.version, written.position) == ("acc-1", 1, 1)
    [recorded] = store.read_all()
    assert recorded.event_id == written.event_id
    assert recorded.data == AccountOpened("ann")
    assert list(result.positions) == [1]


def test_transfer_writes_both_streams_in_one_append(store: MemoryStore, run: Any) -> None:
    open_with(store, "a", 100)
    open_with(store, "b", 5)
    head = store.head()
    result = run(store, Transfer(source="a", target="b", amount=30))
    assert result.stream_versions == {"a": 3, "b": 3}
    assert [(w.stream_id, w.version) for w in result.events] == [("a", 3), ("b", 3)]
    assert list(result.positions) == [head + 1, head + 2]
    assert [(e.stream_id, e.data) for e in store.read_all(after_position=head)] == [
        ("a", Withdrawn(30)),
        ("b", Deposited(30)),
    ]
    assert balance(store, "a") == 70 and balance(store, "b") == 35


async def test_async_execute_accepts_the_store_or_its_async_view(store: MemoryStore) -> None:
    await execute(store, OpenAccount(account="x", owner="x"))
    result = await execute(store.aio, Deposit(account="x", amount=7))
    assert result.stream_versions == {"x": 2}
    assert balance(store, "x") == 7


def test_state_is_folded_across_past_events(store: MemoryStore, run: Any) -> None:
    open_with(store, "a", 10)
    run(store, Deposit(account="a", amount=5))
    run(store, Withdraw(account="a", amount=15))
    with pytest.raises(BusinessRuleViolation, match="insufficient"):
        run(store, Withdraw(account="a", amount=1))
    assert balance(store, "a") == 0


# --- failures write nothing ------------------------------------------------------------


def test_business_rule_violation_writes_nothing(store: MemoryStore, run: Any) -> None:
    open_with(store, "a", 10)
    open_with(store, "b")
    before = log_snapshot(store)
    with pytest.raises(BusinessRuleViolation) as info:
        run(store, Transfer(source="a", target="b", amount=11))
    assert "insufficient funds in a" in info.value.message
    with pytest.raises(BusinessRuleViolation):
        run(store, OpenAccount(account="a", owner="again"))
    with pytest.raises(BusinessRuleViolation):
        run(store, Deposit(account="never-opened", amount=1))
    assert log_snapshot(store) == before


def test_business_rule_violation_is_not_retried() -> None:
    faulty = FaultyStore()
    with pytest.raises(BusinessRuleViolation):
        execute_sync(faulty, Deposit(account="closed", amount=1), retry=FAST)
    assert faulty.calls == ["fold:ok"]


def test_undeclared_stream_writes_nothing(store: MemoryStore, run: Any) -> None:
    open_with(store, "a", 1)
    before = log_snapshot(store)
    command = EmitTo(declared=["a"], emit=(("a", Deposited(1)), ("b", Deposited(1))))
    with pytest.raises(UndeclaredStream) as info:
        run(store, command)
    assert info.value.stream_id == "b"
    assert "EmitTo" in str(info.value)
    assert log_snapshot(store) == before
    assert store.stream_version("b") == 0


class BareEvent(EmitTo):
    """Returns one event, not a list of (stream, event) pairs: a common slip."""

    def handle(self, state: Any) -> Any:
        return Deposited(1)


class EventsWithoutStreams(EmitTo):
    """Returns a list of events without their streams."""

    def handle(self, state: Any) -> Any:
        return [Deposited(1), Deposited(2)]


@pytest.mark.parametrize("command_type", [BareEvent, EventsWithoutStreams])
def test_handle_returning_bare_events_says_how_to_fix_it(
    store: MemoryStore, run: Any, command_type: type
) -> None:
    # Used to be "TypeError: object of type 'Deposited' has no len()" (or "cannot unpack").
    with pytest.raises(CommandError) as info:
        run(store, command_type(declared=["a"]))
    message = str(info.value)
    assert (
        f"{command_type.__name__}.handle() must return a sequence of (stream_id, event)" in message
    )
    assert "return [(self.account, Deposited(...))]" in message
    assert store.head() == 0


class Forgetful(Command[int, Any]):
    """Its account field lacks ``= stream()``."""

    account: StreamId
    amount: int = 1

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.account, Deposited(self.amount))]


def test_undeclared_stream_held_by_a_plain_field_hints_at_stream(
    store: MemoryStore, run: Any
) -> None:
    with pytest.raises(UndeclaredStream) as info:
        run(store, Forgetful(account="acc-1"))
    assert info.value.stream_id == "acc-1"
    assert "field 'account' holds it but is not a stream field" in str(info.value)
    assert "`account: StreamId = stream()`" in str(info.value)
    assert store.head() == 0


def test_serialization_error_writes_nothing(store: MemoryStore, run: Any) -> None:
    before = log_snapshot(store)
    command = EmitTo(declared=["a"], emit=(("a", Deposited(1)), ("a", Noted(object()))))
    with pytest.raises(SerializationError) as info:
        run(store, command)
    assert info.value.event_type == "tbank.Noted"
    assert log_snapshot(store) == before


def test_unregistered_event_type_writes_nothing(store: MemoryStore, run: Any) -> None:
    class NotAnEvent:
        pass

    with pytest.raises(SerializationError, match="NotAnEvent"):
        run(store, EmitTo(declared=["a"], emit=(("a", NotAnEvent()),)))
    assert store.head() == 0


def test_validation_happens_before_execution(store: MemoryStore) -> None:
    with pytest.raises(ValidationError):
        execute_sync(store, Deposit(account="a", amount=-5))  # type: ignore[arg-type]
    assert store.head() == 0


def test_a_non_command_is_rejected(store: MemoryStore, run: Any) -> None:
    with pytest.raises(CommandError):
        run(store, object())
    assert store.head() == 0


def test_an_exception_in_apply_propagates_and_writes_nothing(store: MemoryStore, run: Any) -> None:
    class Exploding(EmitTo):
        def apply(self, state: Any, event: Any, stream_id: str) -> Any:
            raise ZeroDivisionError("boom")

    store.append([new("a", Deposited(1))])
    before = log_snapshot(store)
    with pytest.raises(ZeroDivisionError):
        run(store, Exploding(declared=["a"], emit=(("a", Deposited(2)),)))
    assert log_snapshot(store) == before


# --- discovery -------------------------------------------------------------------------


def test_discovered_streams_are_read_checked_and_writable(store: MemoryStore, run: Any) -> None:
    store.append([new("order-1", Catalogued(("p-1", "p-2")))])
    store.append([new("p-1", Stocked(3)), new("p-2", Stocked(1))])
    result = run(store, PlaceOrder(order="order-1"))
    assert result.stream_versions == {"order-1": 1, "p-1": 2, "p-2": 2}
    assert [(w.stream_id, w.version) for w in result.events] == [("p-1", 2), ("p-2", 2)]
    assert [e.data for e in store.read_stream("p-2")] == [Stocked(1), Reserved(1)]
    # p-2 is now out of stock: the second order is rejected, nothing written.
    head = store.head()
    with pytest.raises(BusinessRuleViolation, match="p-2 is out of stock"):
        run(store, PlaceOrder(order="order-1"))
    assert store.head() == head


def test_a_change_to_a_discovered_stream_is_a_conflict(store: MemoryStore) -> None:
    store.append([new("order-1", Catalogued(("p-1",)))])
    store.append([new("p-1", Stocked(1))])
    real_fold = store.read_fold
    folds: list[list[str]] = []

    def fold_then_race(streams: Any, *args: Any) -> Any:
        folds.append(list(streams))
        result = real_fold(streams, *args)
        if list(streams) == ["p-1"] and len(folds) == 2:
            store.append([new("p-1", Stocked(5))])  # a competing writer, after our read
        return result

    real_tail = store.read_tail

    def tail(streams: Any, *args: Any) -> Any:  # a retry reads only what is new (state cache)
        folds.append(list(streams))
        return real_tail(streams, *args)

    store.read_fold = fold_then_race  # type: ignore[method-assign]
    store.read_tail = tail  # type: ignore[method-assign]
    with pytest.raises(ConcurrencyConflict) as info:
        execute_sync(store, PlaceOrder(order="order-1"), retry=RetryPolicy.never())
    assert [tuple(c) for c in info.value.conflicts] == [("p-1", 1, 2)]
    assert store.stream_version("p-1") == 2
    # With retries, the second attempt reads p-1 afresh and succeeds.
    folds.clear()
    result = execute_sync(store, PlaceOrder(order="order-1"), retry=FAST)
    assert result.attempts == 2
    # (the retry folds the tail of the state it decided on, both streams at once)
    assert folds == [["order-1"], ["p-1"], ["order-1", "p-1"]]
    assert result.stream_versions == {"order-1": 1, "p-1": 4}


def test_discovery_is_bounded(store: MemoryStore) -> None:
    class Chain(EmitTo):
        max_discovery_rounds = 2

        def discover(self, state: Any) -> Any:
            state.append(("round", None))
            return [f"link-{len(state)}"]

    with pytest.raises(CommandError, match="discovering"):
        execute_sync(store, Chain(declared=["start"], emit=(("start", Deposited(1)),)))
    assert store.head() == 0


# --- metadata --------------------------------------------------------------------------


def test_metadata_flows_into_every_stored_event(store: MemoryStore, run: Any) -> None:
    open_with(store, "a", 50)
    open_with(store, "b")
    head = store.head()
    meta = Metadata(user_id="ann", custom={"request": "r-1"})
    run(store, Transfer(source="a", target="b", amount=5), metadata=meta)
    written = store.read_all(after_position=head)
    assert len(written) == 2
    assert all(e.metadata == meta for e in written)
    assert all(e.metadata.custom["request"] == "r-1" for e in written)


def test_caused_by_links_a_reaction_to_its_cause(store: MemoryStore, run: Any) -> None:
    root_meta = Metadata(user_id="ann")
    run(store, OpenAccount(account="a", owner="ann"), metadata=root_meta)
    [opened] = store.read_stream("a")
    run(store, Deposit(account="a", amount=10), metadata=Metadata.caused_by(opened))
    [_, deposited] = store.read_stream("a")
    assert deposited.metadata.causation_id == opened.event_id
    assert deposited.metadata.correlation_id == opened.event_id
    assert deposited.metadata.user_id == "ann"
    run(store, Withdraw(account="a", amount=1), metadata=Metadata.caused_by(deposited))
    third = store.read_stream("a")[-1]
    assert third.metadata.causation_id == deposited.event_id
    assert third.metadata.correlation_id == opened.event_id


def test_no_metadata_stores_empty_metadata(store: MemoryStore, run: Any) -> None:
    run(store, OpenAccount(account="a", owner="ann"))
    [e] = store.read_all()
    assert e.metadata == Metadata()
    assert not e.metadata


# --- retries with injected faults ------------------------------------------------------


def test_injected_conflicts_are_retried_until_success(run: Any) -> None:
    faulty = FaultyStore(faults=["conflict", "conflict"])
    open_with(faulty.store, "a")
    result = run(faulty, Deposit(account="a", amount=4), retry=FAST)
    assert result.attempts == 3
    assert faulty.calls == [
        "fold:ok",
        "append:conflict",
        "fold:ok",
        "append:conflict",
        "fold:ok",
        "append:ok",
    ]
    assert [e.data for e in faulty.store.read_stream("a")] == [AccountOpened("a"), Deposited(4)]


def test_conflicts_beyond_the_policy_raise_with_every_conflict(run: Any) -> None:
    faulty = FaultyStore(faults=["conflict"] * 3)
    open_with(faulty.store, "a", 10)
    open_with(faulty.store, "b")
    before = log_snapshot(faulty.store)
    with pytest.raises(ConcurrencyConflict) as info:
        run(
            faulty,
            Transfer(source="a", target="b", amount=1),
            retry=RetryPolicy(max_attempts=3, initial_delay=0),
        )
    assert info.value.attempts == 3
    assert {c.stream_id for c in info.value.conflicts} == {"a", "b"}
    assert [(c.expected, c.actual) for c in info.value.conflicts] == [(2, 2), (1, 1)]
    assert log_snapshot(faulty.store) == before


def test_each_policy_object_gives_its_own_max_attempts(run: Any) -> None:
    # The machine keeps the last RetryPolicy's max_attempts (the class is frozen): another
    # policy object, even one equal to an earlier one, is read again.
    first = RetryPolicy(max_attempts=3, initial_delay=0)
    for policy in (first, RetryPolicy(max_attempts=1), first, RetryPolicy(max_attempts=2)):
        faulty = FaultyStore(faults=["conflict"] * 3)
        open_with(faulty.store, "a")
        with pytest.raises(ConcurrencyConflict) as info:
            run(faulty, Deposit(account="a", amount=1), retry=policy)
        assert info.value.attempts == policy.max_attempts
        assert faulty.store.stream_version("a") == 1


def test_never_retry_raises_the_first_conflict(run: Any) -> None:
    faulty = FaultyStore(faults=["conflict"])
    open_with(faulty.store, "a")
    with pytest.raises(ConcurrencyConflict) as info:
        run(faulty, Deposit(account="a", amount=1), retry=RetryPolicy.never())
    assert info.value.attempts == 1
    assert faulty.store.stream_version("a") == 1


def test_interleaved_deposit_is_folded_into_the_retry(run: Any) -> None:
    faulty = FaultyStore(faults=["interleave"])
    open_with(faulty.store, "a", 10)
    result = run(faulty, Deposit(account="a", amount=5), retry=FAST)
    assert result.attempts == 2
    assert faulty.calls == ["fold:ok", "append:interleave", "fold:ok", "append:ok"]
    # Both the competing deposit and ours are stored, ours last, with fresh versions.
    assert [e.data for e in faulty.store.read_stream("a")] == [
        AccountOpened("a"),
        Deposited(10),
        Deposited(5),
        Deposited(5),
    ]
    assert result.stream_versions == {"a": 4}
    assert [w.version for w in result.events] == [4]


def test_interleave_makes_a_rule_fail_on_the_retry(run: Any) -> None:
    faulty = FaultyStore(faults=["interleave"])
    open_with(faulty.store, "a", 10)
    with pytest.raises(BusinessRuleViolation, match="insufficient"):
        run(faulty, Withdraw(account="a", amount=6), retry=FAST)
    # Only the competing writer's withdrawal is stored.
    assert balance(faulty.store, "a") == 4
    assert faulty.calls == ["fold:ok", "append:interleave", "fold:ok"]


def test_unavailable_append_is_retried(run: Any) -> None:
    faulty = FaultyStore(faults=["unavailable", "unavailable"])
    open_with(faulty.store, "a")
    result = run(faulty, Deposit(account="a", amount=2), retry=FAST)
    assert result.attempts == 3
    assert faulty.calls == ["fold:ok", "append:unavailable", "append:unavailable", "append:ok"]
    assert [e.data for e in faulty.store.read_stream("a")] == [AccountOpened("a"), Deposited(2)]


def test_lost_reply_is_idempotent(run: Any) -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    open_with(faulty.store, "a", 10)
    open_with(faulty.store, "b")
    head = faulty.store.head()
    result = run(faulty, Transfer(source="a", target="b", amount=3), retry=FAST)
    assert result.attempts == 2
    assert faulty.calls == ["fold:ok", "append:lost-reply", "append:ok"]
    written = faulty.store.read_all(after_position=head)
    assert [(e.stream_id, e.data) for e in written] == [("a", Withdrawn(3)), ("b", Deposited(3))]
    # The result describes the one stored copy.
    assert [w.event_id for w in result.events] == [e.event_id for e in written]
    assert list(result.positions) == [e.position for e in written]
    assert [w.version for w in result.events] == [e.version for e in written]
    assert result.stream_versions == {"a": 3, "b": 2}
    assert balance(faulty.store, "a") == 7


def test_unavailable_beyond_the_policy_raises(run: Any) -> None:
    faulty = FaultyStore(faults=["unavailable"] * 2)
    open_with(faulty.store, "a")
    # One retry fits in the waiting budget, a second would pass it.
    policy = RetryPolicy(unavailable_initial_delay=0.001, unavailable_timeout=0.0015, jitter=0)
    with pytest.raises(StoreUnavailable) as info:
        run(faulty, Deposit(account="a", amount=2), retry=policy)
    assert not isinstance(info.value, OutcomeUnknown)  # nothing was sent: known not written
    assert faulty.calls == ["fold:ok", "append:unavailable", "append:unavailable"]
    assert faulty.store.stream_version("a") == 1


def test_unavailable_is_not_retried_when_the_policy_says_so(run: Any) -> None:
    faulty = FaultyStore(faults=["unavailable"])
    open_with(faulty.store, "a")
    policy = RetryPolicy(max_attempts=5, initial_delay=0, retry_unavailable=False)
    with pytest.raises(StoreUnavailable):
        run(faulty, Deposit(account="a", amount=2), retry=policy)
    assert faulty.calls == ["fold:ok", "append:unavailable"]


def test_unavailable_read_is_retried(run: Any) -> None:
    faulty = FaultyStore(read_faults=["unavailable"])
    open_with(faulty.store, "a")
    result = run(faulty, Deposit(account="a", amount=2), retry=FAST)
    assert result.attempts == 2
    assert faulty.calls == ["fold:unavailable", "fold:ok", "append:ok"]


# --- retry policy ----------------------------------------------------------------------


def test_default_policy_is_documented() -> None:
    assert RetryPolicy() == DEFAULT_RETRY
    policy = RetryPolicy()
    assert policy.max_attempts == 5
    assert policy.initial_delay == 0.001
    assert policy.multiplier == 2.0
    assert policy.max_delay == 0.1
    assert policy.jitter == 0.5
    assert policy.retry_unavailable is True


def test_fixed_delay() -> None:
    policy = RetryPolicy.fixed(0.2, max_attempts=4)
    assert [policy.delay(n) for n in range(1, 6)] == [0.2] * 5
    assert policy.max_attempts == 4


def test_exponential_delay_grows_and_is_capped() -> None:
    policy = RetryPolicy.exponential(initial_delay=0.01, multiplier=3.0, max_delay=0.5, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.01, 0.03, 0.09, 0.27, 0.5])


def test_jitter_scales_each_delay_into_range() -> None:
    policy = RetryPolicy.exponential(initial_delay=0.1, multiplier=2, max_delay=0.4, jitter=0.5)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.4)]:
        delays = [policy.delay(attempt) for _ in range(300)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 10  # really random
    full = RetryPolicy(initial_delay=0.1, max_delay=0.1, jitter=1.0)
    assert all(0.0 <= full.delay(1) <= 0.1 for _ in range(100))


def test_zero_initial_delay_means_no_sleep() -> None:
    assert RetryPolicy(initial_delay=0).delay(3) == 0.0


def test_never() -> None:
    assert RetryPolicy.never().max_attempts == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"max_delay": -0.1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_sync_shell_sleeps_per_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(executor_module.time, "sleep", slept.append)
    faulty = FaultyStore(faults=["conflict", "unavailable", "conflict"])
    open_with(faulty.store, "a")
    policy = RetryPolicy.exponential(initial_delay=0.5, multiplier=2, max_delay=1.5, jitter=0)
    result = execute_sync(faulty, Deposit(account="a", amount=1), retry=policy)
    assert result.attempts == 4
    # Conflicts follow their own schedule (0.5, then 1.0 for the second conflict); the
    # unavailable store in between waits the unavailable schedule's first delay.
    assert slept == [0.5, 0.05, 1.0]


async def test_async_shell_sleeps_per_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the module the executor loads
    faulty = FaultyStore(faults=["conflict", "conflict"])
    open_with(faulty.store, "a")
    result = await execute(faulty, Deposit(account="a", amount=1), retry=RetryPolicy.fixed(0.75))
    assert result.attempts == 3
    assert slept == [0.75, 0.75]


def test_real_delays_are_waited() -> None:
    faulty = FaultyStore(faults=["conflict", "conflict"])
    open_with(faulty.store, "a")
    started = time.monotonic()
    execute_sync(faulty, Deposit(account="a", amount=1), retry=RetryPolicy.fixed(0.03))
    assert time.monotonic() - started >= 0.05


# --- the in-memory store's one native call ---------------------------------------------


def test_the_cache_bound_is_read_at_each_command(run: Any) -> None:
    store = MemoryStore(state_cache=StateCache(min_events=1))
    cache = store.state_cache
    assert cache is not None
    open_with(store, "acc-0", 100)
    cache.max_entries = 0  # turned off after the store was built: not even looked up
    run(store, Deposit(account="acc-0", amount=1))
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)
    cache.max_entries = 10  # on again: the next command keeps its state
    run(store, Deposit(account="acc-0", amount=1))
    assert (len(cache), cache.misses) == (1, 1)
    assert balance(store, "acc-0") == 102


class CountsApplyLookups(Deposit):
    """A Deposit that counts how often the machine looks up its ``apply``."""

    lookups: ClassVar[list[str]] = []

    @property  # type: ignore[override]
    def apply(self) -> Any:
        type(self).lookups.append(self.account)
        return super().apply


def test_apply_is_looked_up_once_and_only_for_events_to_fold(run: Any) -> None:
    store = MemoryStore(state_cache=0)
    CountsApplyLookups.lookups.clear()
    with pytest.raises(BusinessRuleViolation):  # a new stream: nothing to fold
        run(store, CountsApplyLookups(account="new", amount=1))
    assert CountsApplyLookups.lookups == []
    open_with(store, "acc-0", 10)
    run(store, CountsApplyLookups(account="acc-0", amount=1))
    assert CountsApplyLookups.lookups == ["acc-0"]
    # A conflict folds again: the same bound method, not a second lookup.
    faulty = FaultyStore(faults=["conflict"])
    open_with(faulty.store, "acc-1", 10)
    CountsApplyLookups.lookups.clear()
    result = run(faulty, CountsApplyLookups(account="acc-1", amount=1), retry=FAST)
    assert result.attempts == 2
    assert CountsApplyLookups.lookups == ["acc-1"]
    assert balance(faulty.store, "acc-1") == 11


class HandleWithoutSelf(EmitTo):
    """``handle`` as a staticmethod: the machine calls what attribute lookup finds."""

    handle = staticmethod(lambda state: [("s-1", Deposited(len(state) + 1))])  # type: ignore[assignment]


def test_handle_is_called_as_attribute_lookup_finds_it(store: MemoryStore, run: Any) -> None:
    store.append([new("s-1", Deposited(7))])
    result = run(store, HandleWithoutSelf(declared=["s-1"]))
    assert result.stream_versions == {"s-1": 2}
    assert [e.data for e in store.read_stream("s-1")] == [Deposited(7), Deposited(2)]
