"""The testing kit: Scenario (given/when/then), FaultyStore, and the pytest plugin fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    ConcurrencyConflict,
    MemoryStore,
    Metadata,
    OutcomeUnknown,
    RetryPolicy,
    StoreUnavailable,
    UndeclaredStream,
    execute,
    execute_sync,
)
from eventcore.memory import AsyncMemoryStore
from eventcore.testing import FaultyStore, Scenario

from .bank_domain import (
    AccountOpened,
    Deposit,
    Deposited,
    EmitTo,
    OpenAccount,
    Transfer,
    Withdraw,
    Withdrawn,
    new,
)

# --- Scenario --------------------------------------------------------------------------


def test_given_when_then_passes_for_the_right_events() -> None:
    scenario = (
        Scenario()
        .given(
            ("acc-1", AccountOpened("ann")),
            ("acc-1", Deposited(10)),
            ("acc-2", AccountOpened("bob")),
        )
        .when(Transfer(source="acc-1", target="acc-2", amount=4))
        .then(("acc-1", Withdrawn(4)), ("acc-2", Deposited(4)))
    )
    assert scenario.error is None
    assert scenario.result is not None and scenario.result.attempts == 1
    assert [(e.stream_id, e.version) for e in scenario.written()] == [("acc-1", 3), ("acc-2", 2)]
    assert scenario.store.head() == 5


def test_given_nothing_is_a_fresh_store() -> None:
    scenario = Scenario().when(OpenAccount(account="acc-1", owner="ann"))
    scenario.then(("acc-1", AccountOpened("ann")))
    assert scenario.store.head() == 1


def test_given_metadata_is_stored() -> None:
    meta = Metadata(user_id="setup")
    scenario = Scenario().given(("a", AccountOpened("x")), metadata=meta)
    [e] = scenario.store.read_all()
    assert e.metadata == meta


def test_then_fails_when_other_events_were_written() -> None:
    scenario = Scenario().given(("a", AccountOpened("x"))).when(Deposit(account="a", amount=3))
    with pytest.raises(AssertionError, match="events written differ"):
        scenario.then(("a", Deposited(4)))
    with pytest.raises(AssertionError):
        scenario.then(("b", Deposited(3)))
    with pytest.raises(AssertionError):
        scenario.then()
    with pytest.raises(AssertionError):
        scenario.then(("a", Deposited(3)), ("a", Deposited(3)))
    scenario.then(("a", Deposited(3)))


def test_then_fails_when_the_command_raised() -> None:
    scenario = Scenario().when(Deposit(account="a", amount=3))
    assert isinstance(scenario.error, BusinessRuleViolation)
    assert scenario.result is None
    with pytest.raises(AssertionError, match="raised"):
        scenario.then(("a", Deposited(3)))


def test_then_raises_passes_for_the_right_error() -> None:
    scenario = (
        Scenario()
        .given(("a", AccountOpened("x")))
        .when(Withdraw(account="a", amount=1))
        .then_raises(BusinessRuleViolation, match="insufficient funds")
    )
    assert scenario.written() == []
    Scenario().when(EmitTo(declared=["a"], emit=(("b", Deposited(1)),))).then_raises(
        UndeclaredStream
    )


def test_then_raises_fails_when_the_command_succeeded() -> None:
    scenario = Scenario().when(OpenAccount(account="a", owner="x"))
    with pytest.raises(AssertionError, match="succeeded"):
        scenario.then_raises(BusinessRuleViolation)


def test_then_raises_fails_for_another_error_or_message() -> None:
    scenario = Scenario().when(Deposit(account="a", amount=1))
    with pytest.raises(AssertionError):
        scenario.then_raises(UndeclaredStream)
    with pytest.raises(AssertionError, match="does not match"):
        scenario.then_raises(BusinessRuleViolation, match="insufficient")
    scenario.then_raises(BusinessRuleViolation, match="not open")


def test_then_only_counts_events_written_by_the_command() -> None:
    store = MemoryStore()
    store.append([new("a", AccountOpened("x"))])
    scenario = Scenario(store).given(("a", Deposited(5))).when(Withdraw(account="a", amount=5))
    scenario.then(("a", Withdrawn(5)))


def test_scenario_uses_its_retry_policy() -> None:
    faulty = FaultyStore(faults=["conflict"])
    faulty.store.append([new("a", AccountOpened("x"))])
    scenario = Scenario(faulty, retry=RetryPolicy.never())  # type: ignore[arg-type]
    scenario.when(Deposit(account="a", amount=1)).then_raises(ConcurrencyConflict)


def test_then_raises_fails_when_a_failed_command_wrote_events() -> None:
    # A lost reply without retries: the command "failed" but its events are stored.
    faulty = FaultyStore(faults=["lost-reply"])
    faulty.store.append([new("a", AccountOpened("x"))])
    scenario = Scenario(faulty, retry=RetryPolicy.never())  # type: ignore[arg-type]
    scenario.when(Deposit(account="a", amount=1))
    assert isinstance(scenario.error, StoreUnavailable)
    with pytest.raises(AssertionError, match="wrote events"):
        scenario.then_raises(StoreUnavailable)


# --- FaultyStore -----------------------------------------------------------------------


def test_faulty_store_follows_its_script_then_behaves() -> None:
    faulty = FaultyStore(faults=[None, "unavailable", "conflict"])
    faulty.append([new("a", Deposited(1))])
    with pytest.raises(StoreUnavailable):
        faulty.append([new("a", Deposited(2))])
    with pytest.raises(ConcurrencyConflict) as info:
        faulty.append([new("a", Deposited(3))], expected={"a": 1})
    assert [tuple(c) for c in info.value.conflicts] == [("a", 1, 1)]
    faulty.append([new("a", Deposited(4))])
    assert [e.data for e in faulty.read_stream("a")] == [Deposited(1), Deposited(4)]
    assert faulty.calls == ["append:ok", "append:unavailable", "append:conflict", "append:ok"]


def test_faulty_store_lost_reply_writes_then_fails() -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    batch = [new("a", Deposited(1), _id(1))]
    with pytest.raises(OutcomeUnknown) as info:  # a StoreUnavailable that says so
        faulty.append(batch)
    assert info.value.event_ids == [_id(1)]
    assert faulty.store.stream_version("a") == 1
    # The client's retry of the same batch is idempotent.
    result = faulty.append(batch)
    assert list(result.positions) == [1]
    assert faulty.store.head() == 1


def test_faulty_store_lost_reply_names_ids_the_store_assigned() -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    with pytest.raises(OutcomeUnknown) as info:
        faulty.append([new("a", Deposited(1))])  # no id given: the store makes one
    assert info.value.event_ids == [e.event_id for e in faulty.store.read_stream("a")]


def test_faulty_store_lookups_by_id_follow_the_read_script() -> None:
    faulty = FaultyStore(read_faults=["unavailable"])
    faulty.append([new("a", Deposited(1), _id(5))])
    with pytest.raises(StoreUnavailable):
        faulty.read_events_by_id([_id(5)])
    assert [e.event_id for e in faulty.read_events_by_id([_id(5)])] == [_id(5)]
    assert faulty.calls == ["append:ok", "lookup:unavailable", "lookup:ok"]


def test_faulty_store_interleave_lets_a_competitor_win() -> None:
    faulty = FaultyStore(faults=["interleave"])
    faulty.store.append([new("a", Deposited(1))])
    with pytest.raises(ConcurrencyConflict) as info:
        faulty.append([new("a", Deposited(7))], expected={"a": 1})
    assert [tuple(c) for c in info.value.conflicts] == [("a", 1, 2)]
    assert [e.data for e in faulty.store.read_stream("a")] == [Deposited(1), Deposited(7)]


def test_faulty_store_read_faults() -> None:
    faulty = FaultyStore(read_faults=["unavailable", None])
    with pytest.raises(StoreUnavailable):
        faulty.read_fold(["a"])
    assert faulty.read_fold(["a"]) == ([], [0])
    assert faulty.calls == ["fold:unavailable", "fold:ok"]


def test_faulty_store_passes_other_reads_through() -> None:
    faulty = FaultyStore()
    faulty.store.append([new("a", Deposited(1))])
    assert faulty.head() == 1
    assert faulty.stream_version("a") == 1
    assert len(faulty.read_all()) == 1
    assert faulty.registry is faulty.store.registry


def test_faulty_store_rejects_an_unknown_fault_without_writing() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="explode"):
        FaultyStore(store, faults=["explode"])
    with pytest.raises(ValueError, match="boom"):
        FaultyStore(store, read_faults=["boom"])
    assert store.head() == 0


async def test_faulty_store_works_with_async_execute() -> None:
    faulty = FaultyStore(faults=["conflict", "unavailable"])
    faulty.store.append([new("a", AccountOpened("x"))])
    result = await execute(
        faulty, Deposit(account="a", amount=2), retry=RetryPolicy(initial_delay=0)
    )
    assert result.attempts == 3
    assert faulty.store.stream_version("a") == 2


def _id(n: int) -> Any:
    import uuid

    return uuid.UUID(int=(7 << 76) | (2 << 62) | n)


# --- pytest plugin fixtures ------------------------------------------------------------

_seen_stores: list[MemoryStore] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_memory_store_fixture_is_fresh_for_each_test(
    memory_store: MemoryStore, round_: int
) -> None:
    assert isinstance(memory_store, MemoryStore)
    assert memory_store.head() == 0 and len(memory_store) == 0
    assert all(memory_store is not s for s in _seen_stores)
    _seen_stores.append(memory_store)
    execute_sync(memory_store, OpenAccount(account="a", owner="x"))
    assert memory_store.head() == 1


async def test_async_memory_store_fixture_is_the_same_store(
    memory_store: MemoryStore, async_memory_store: AsyncMemoryStore
) -> None:
    assert isinstance(async_memory_store, AsyncMemoryStore)
    assert async_memory_store.sync is memory_store
    await execute(async_memory_store, OpenAccount(account="a", owner="x"))
    assert memory_store.stream_version("a") == 1
    assert await async_memory_store.head() == 1


def test_scenario_fixture_uses_the_test_store(
    scenario: Scenario, memory_store: MemoryStore
) -> None:
    assert isinstance(scenario, Scenario)
    assert scenario.store is memory_store
    scenario.given(("a", AccountOpened("x"))).when(Deposit(account="a", amount=9))
    scenario.then(("a", Deposited(9)))
    assert memory_store.head() == 2


def test_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("eventcore")
    assert plugin is not None
    assert plugin.__name__ == "eventcore.testing.plugin"
