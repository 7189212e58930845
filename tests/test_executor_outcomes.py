"""No command ends with an unknown outcome: the unavailable-store schedule, OutcomeUnknown,
and idempotency keys (issue 10, section 2), on the in-memory store and FaultyStore."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest

import eventcore.executor as executor_module
from eventcore import (
    BusinessRuleViolation,
    IdempotencyKeyReused,
    MemoryStore,
    Metadata,
    OutcomeUnknown,
    RetryPolicy,
    StoreUnavailable,
    ValidationError,
    execute_sync,
)
from eventcore._pipeline import IDEMPOTENCY_FIELD
from eventcore.retry import DEFAULT_RETRY
from eventcore.testing import FaultyStore

from .bank_domain import (
    Deposit,
    Deposited,
    EmitTo,
    Noted,
    Transfer,
    Withdraw,
    Withdrawn,
    balance,
    log_snapshot,
    open_with,
)

NO_UNAVAILABLE_RETRY = RetryPolicy(retry_unavailable=False)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sync shell's sleeps, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(executor_module.time, "sleep", waits.append)
    return waits


# --- (a) the default retry rides out an outage of seconds ------------------------------


def test_default_policy_rides_out_an_outage_of_seconds(slept: list[float]) -> None:
    # Today's default (5 attempts, 1+2+4+8 ms) gave up after 15 ms of outage.
    faulty = FaultyStore(faults=["unavailable"] * 15)
    open_with(faulty.store, "a")
    result = execute_sync(faulty, Deposit(account="a", amount=2))
    assert result.attempts == 16
    assert balance(faulty.store, "a") == 2
    assert len(slept) == 15
    assert sum(slept) >= 0.5 * 21.15  # the un-jittered waits add up to 21.15 s
    assert max(slept) <= DEFAULT_RETRY.unavailable_max_delay


def test_default_policy_gives_up_after_its_waiting_budget(slept: list[float]) -> None:
    faulty = FaultyStore(faults=["unavailable"] * 100)
    open_with(faulty.store, "a")
    with pytest.raises(StoreUnavailable) as info:
        execute_sync(faulty, Deposit(account="a", amount=2))
    assert not isinstance(info.value, OutcomeUnknown)  # refused: known not written
    assert len(slept) == 19  # 50 ms doubling to 2 s: 19 waits fit in 30 s
    assert 0.5 * 29.15 <= sum(slept) <= 29.15
    assert balance(faulty.store, "a") == 0


def test_unavailable_schedule_is_documented_and_separate_from_conflicts() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.unavailable_initial_delay == 0.05
    assert policy.unavailable_max_delay == 2.0
    assert policy.unavailable_timeout == 30.0
    assert [policy.unavailable_delay(n) for n in range(1, 8)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    )
    assert [policy.delay(n) for n in range(1, 4)] == pytest.approx([0.001, 0.002, 0.004])
    jittered = [RetryPolicy().jittered(1.0) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in jittered) and len(set(jittered)) > 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"unavailable_initial_delay": 0},
        {"unavailable_initial_delay": 3.0, "unavailable_max_delay": 2.0},
        {"unavailable_timeout": -1},
        {"unavailable_timeout": float("nan")},
    ],
)
def test_invalid_unavailable_schedules_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_conflicts_keep_their_fast_schedule(slept: list[float]) -> None:
    faulty = FaultyStore(faults=["conflict", "conflict"])
    open_with(faulty.store, "a")
    execute_sync(faulty, Deposit(account="a", amount=1), retry=RetryPolicy(jitter=0))
    assert slept == pytest.approx([0.001, 0.002])


# --- (b) an unknown outcome says so, with the event ids -------------------------------


def test_lost_reply_not_retried_raises_outcome_unknown_with_the_ids(run: Any) -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    open_with(faulty.store, "a", 10)
    open_with(faulty.store, "b")
    head = faulty.store.head()
    with pytest.raises(OutcomeUnknown) as info:
        run(faulty, Transfer(source="a", target="b", amount=3), retry=NO_UNAVAILABLE_RETRY)
    written = faulty.store.read_all(after_position=head)
    assert len(written) == 2
    assert info.value.event_ids == [e.event_id for e in written]
    assert all(isinstance(i, uuid.UUID) for i in info.value.event_ids)
    assert isinstance(info.value, StoreUnavailable)  # retried by policy like any outage
    # The ids answer the question "was it written?".
    assert faulty.store.read_events_by_id(info.value.event_ids) == written


def test_lost_reply_then_outage_still_raises_outcome_unknown(run: Any) -> None:
    # The resend fails with a plain StoreUnavailable, but the first send may have been
    # written: the error must keep saying the outcome is unknown.
    faulty = FaultyStore(faults=["lost-reply", "unavailable"])
    open_with(faulty.store, "a")
    policy = RetryPolicy(jitter=0, unavailable_initial_delay=0.001, unavailable_timeout=0.001)
    with pytest.raises(OutcomeUnknown) as info:
        run(faulty, Deposit(account="a", amount=4), retry=policy)
    assert faulty.calls == ["fold:ok", "append:lost-reply", "append:unavailable"]
    stored = faulty.store.read_stream("a")[-1]
    assert info.value.event_ids == [stored.event_id]
    assert isinstance(info.value.__cause__, StoreUnavailable)


def test_refused_append_is_known_not_written(run: Any) -> None:
    faulty = FaultyStore(faults=["unavailable"])
    open_with(faulty.store, "a")
    with pytest.raises(StoreUnavailable) as info:
        run(faulty, Deposit(account="a", amount=4), retry=NO_UNAVAILABLE_RETRY)
    assert type(info.value) is StoreUnavailable


# --- (c) idempotency keys --------------------------------------------------------------


def test_same_key_twice_writes_once_and_returns_the_first_outcome(run: Any) -> None:
    store = MemoryStore()
    open_with(store, "a", 10)
    first = run(store, Withdraw(account="a", amount=10), idempotency_key="req-1")
    assert not first.replayed and first.attempts == 1
    before = log_snapshot(store)
    # Run again, the command would now fail its rules (balance 0), yet the retry gets the
    # first outcome and writes nothing.
    again = run(store, Withdraw(account="a", amount=10), idempotency_key="req-1")
    assert again.replayed and again.attempts == 0
    assert log_snapshot(store) == before
    assert [e.data for e in store.read_stream("a")][-1] == Withdrawn(10)
    assert again.events == first.events
    assert list(again.positions) == list(first.positions)
    assert again.stream_versions == first.stream_versions == {"a": 3}
    with pytest.raises(BusinessRuleViolation):  # without the key it really runs
        run(store, Withdraw(account="a", amount=10))


def test_key_derives_the_same_ids_in_another_process() -> None:
    code = (
        "from eventcore import MemoryStore, execute_sync\n"
        "from tests.bank_domain import Deposit, open_with\n"
        "s = MemoryStore(); open_with(s, 'a')\n"
        "r = execute_sync(s, Deposit(account='a', amount=5), idempotency_key='order-77')\n"
        "print(*[e.event_id for e in r.events])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    store = MemoryStore()
    open_with(store, "a")
    result = execute_sync(store, Deposit(account="a", amount=5), idempotency_key="order-77")
    assert [str(e.event_id) for e in result.events] == out
    other = execute_sync(store, Deposit(account="a", amount=5), idempotency_key="order-78")
    assert other.events[0].event_id != result.events[0].event_id


def test_lost_reply_then_caller_retry_with_the_key(run: Any) -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    open_with(faulty.store, "a", 10)
    open_with(faulty.store, "b")
    command = Transfer(source="a", target="b", amount=10)
    with pytest.raises(OutcomeUnknown) as info:
        run(faulty, command, idempotency_key="t-1", retry=NO_UNAVAILABLE_RETRY)
    result = run(faulty, command, idempotency_key="t-1", retry=NO_UNAVAILABLE_RETRY)
    assert result.replayed
    assert [w.event_id for w in result.events] == info.value.event_ids
    assert balance(faulty.store, "a") == 0 and balance(faulty.store, "b") == 10
    assert faulty.calls == ["lookup:ok", "fold:ok", "append:lost-reply", "lookup:ok"]


def test_lost_reply_resent_by_the_executor_with_a_key(run: Any) -> None:
    faulty = FaultyStore(faults=["lost-reply"])
    open_with(faulty.store, "a")
    result = run(
        faulty,
        Deposit(account="a", amount=3),
        idempotency_key="k",
        retry=RetryPolicy(unavailable_initial_delay=0.001),
    )
    assert result.attempts == 2 and not result.replayed
    assert [e.data for e in faulty.store.read_stream("a")][1:] == [Deposited(3)]


def test_key_reused_for_a_different_command_is_refused(run: Any) -> None:
    store = MemoryStore()
    open_with(store, "a", 10)
    run(store, Deposit(account="a", amount=5), idempotency_key="k-1")
    before = log_snapshot(store)
    with pytest.raises(IdempotencyKeyReused, match="k-1") as info:
        run(store, Deposit(account="a", amount=6), idempotency_key="k-1")  # other fields
    assert info.value.key == "k-1"
    assert info.value.command == info.value.stored == "eventcore.examples.bank.Deposit"
    with pytest.raises(IdempotencyKeyReused) as info:
        run(store, Withdraw(account="a", amount=5), idempotency_key="k-1")  # other type
    assert info.value.stored == "eventcore.examples.bank.Deposit"
    assert info.value.command == "eventcore.examples.bank.Withdraw"
    assert log_snapshot(store) == before


def test_key_taken_by_events_written_without_a_key_is_refused() -> None:
    store = MemoryStore()
    open_with(store, "a")
    result = execute_sync(store, Deposit(account="a", amount=5), idempotency_key="k")
    ids = [e.event_id for e in result.events]
    other = MemoryStore()
    open_with(other, "a")
    # Someone appended an event with the key's first id, but no idempotency record.
    other.append([("a", "demo.bank.Deposited", result.append._new[0][2], ids[0])])
    with pytest.raises(IdempotencyKeyReused, match="another writer"):
        execute_sync(other, Deposit(account="a", amount=5), idempotency_key="k")


def test_key_with_user_metadata_keeps_it_and_records_the_key() -> None:
    store = MemoryStore()
    open_with(store, "a")
    meta = Metadata(user_id="ann", custom={"request": "r-9"})
    execute_sync(store, Deposit(account="a", amount=1), metadata=meta, idempotency_key="req")
    stored = store.read_stream("a")[-1].metadata
    assert stored.user_id == "ann"
    assert stored.custom["request"] == "r-9"
    record = stored.custom[IDEMPOTENCY_FIELD]
    assert record["key"] == "req"
    assert record["command"].startswith("eventcore.examples.bank.Deposit:")


def test_without_a_key_there_is_no_lookup() -> None:
    faulty = FaultyStore()
    open_with(faulty.store, "a")
    execute_sync(faulty, Deposit(account="a", amount=1))
    assert faulty.calls == ["fold:ok", "append:ok"]


def test_unavailable_lookup_is_retried(run: Any) -> None:
    faulty = FaultyStore(read_faults=["unavailable"])
    open_with(faulty.store, "a")
    result = run(
        faulty,
        Deposit(account="a", amount=1),
        idempotency_key="k",
        retry=RetryPolicy(unavailable_initial_delay=0.001),
    )
    assert not result.replayed
    assert faulty.calls == ["lookup:unavailable", "lookup:ok", "fold:ok", "append:ok"]


def test_a_command_writing_many_events_is_found_whole() -> None:
    store = MemoryStore()
    emit = tuple(("s", Noted(i)) for i in range(40))  # more than one lookup's worth
    first = execute_sync(store, EmitTo(declared=("s",), emit=emit), idempotency_key="bulk")
    again = execute_sync(store, EmitTo(declared=("s",), emit=emit), idempotency_key="bulk")
    assert again.replayed
    assert again.events == first.events
    assert len(store) == 40


def test_conflict_then_lookup_finds_a_concurrent_same_key_write() -> None:
    # FaultyStore's "interleave" cannot write under our key, so drive the race by hand:
    # a competing caller with the same key commits between our fold and our append.
    store = MemoryStore()
    open_with(store, "a", 10)

    class Racing(FaultyStore):
        raced = False

        def append(self, events: Any, **kwargs: Any) -> Any:
            if not self.raced:
                self.raced = True
                # The other caller's request carries other metadata (another request id).
                execute_sync(
                    self.store,
                    Withdraw(account="a", amount=10),
                    metadata=Metadata(custom={"request": "second"}),
                    idempotency_key="w",
                )
            return super().append(events, **kwargs)

    racing = Racing(store)
    result = execute_sync(
        racing,
        Withdraw(account="a", amount=10),
        metadata=Metadata(custom={"request": "first"}),
        idempotency_key="w",
    )
    assert result.replayed
    assert [e.data for e in store.read_stream("a")].count(Withdrawn(10)) == 1
    assert store.read_stream("a")[-1].metadata.custom["request"] == "second"


def test_concurrent_callers_with_one_key_write_once() -> None:
    store = MemoryStore()
    open_with(store, "a", 100)
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def caller(n: int) -> None:
        barrier.wait()
        try:
            results.append(
                execute_sync(
                    store,
                    Withdraw(account="a", amount=60),  # a second run would be refused
                    metadata=Metadata(custom={"caller": n}),
                    idempotency_key="pay-1",
                    retry=RetryPolicy(max_attempts=50, initial_delay=0.0),
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 8
    assert len({tuple(e.event_id for e in r.events) for r in results}) == 1
    assert balance(store, "a") == 40


@pytest.mark.parametrize("key", ["", "x" * 256, 42, b"k"])
def test_invalid_keys_are_refused(key: Any) -> None:
    store = MemoryStore()
    open_with(store, "a")
    with pytest.raises(ValidationError, match="idempotency_key"):
        execute_sync(store, Deposit(account="a", amount=1), idempotency_key=key)
    assert store.stream_version("a") == 1


def test_read_events_by_id_on_the_memory_store() -> None:
    store = MemoryStore()
    open_with(store, "a", 5)
    events = store.read_stream("a")
    ids = [e.event_id for e in events]
    assert store.read_events_by_id([ids[1], uuid.uuid4(), ids[0]]) == events
    assert store.read_events_by_id([i.int for i in ids]) == events
    assert store.read_events_by_id([]) == []
