"""Executor properties (hypothesis): failures write nothing, writes stay inside the command's
streams, and random command sequences agree with a reference model of the balances."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcore import (
    BusinessRuleViolation,
    CommandError,
    ConcurrencyConflict,
    IdempotencyKeyReused,
    MemoryStore,
    RetryPolicy,
    SerializationError,
    StoreUnavailable,
    UndeclaredStream,
    execute_sync,
    require,
)
from eventcore.testing import FaultyStore

from .bank_domain import (
    AccountOpened,
    Deposit,
    Deposited,
    EmitTo,
    Noted,
    OpenAccount,
    Transfer,
    Withdraw,
    Withdrawn,
    balance,
    log_snapshot,
    new,
)

POOL = ["s-0", "s-1", "s-2", "s-3", "s-4"]
ACCOUNTS = ["acc-0", "acc-1", "acc-2", "acc-3"]
SETTINGS = settings(max_examples=150, deadline=None)

events_st = st.one_of(
    st.builds(Deposited, st.integers(1, 100)),
    st.builds(Withdrawn, st.integers(1, 100)),
    st.builds(AccountOpened, st.text(max_size=5)),
)


def seeded_store(history: list[tuple[str, Any]]) -> MemoryStore:
    store = MemoryStore()
    if history:
        store.append([new(s, e) for s, e in history])
    return store


history_st = st.lists(st.tuples(st.sampled_from(POOL), events_st), max_size=8)


@SETTINGS
@given(
    history=history_st,
    declared=st.lists(st.sampled_from(POOL), unique=True, max_size=3),
    emit=st.lists(st.tuples(st.sampled_from(POOL), events_st), max_size=5),
)
def test_a_command_never_writes_outside_its_streams(
    history: list[tuple[str, Any]], declared: list[str], emit: list[tuple[str, Any]]
) -> None:
    store = seeded_store(history)
    before = log_snapshot(store)
    command = EmitTo(declared=declared, emit=tuple(emit))
    if all(s in declared for s, _ in emit):
        result = execute_sync(store, command)
        written = store.read_all(after_position=len(before))
        assert [(e.stream_id, e.data) for e in written] == emit
        assert {e.stream_id for e in written} <= set(declared)
        assert [w.event_id for w in result.events] == [e.event_id for e in written]
        assert set(result.stream_versions) == set(declared)
        for s in declared:
            assert result.stream_versions[s] == store.stream_version(s)
    else:
        with pytest.raises(UndeclaredStream) as info:
            execute_sync(store, command)
        assert info.value.stream_id not in declared
        assert log_snapshot(store) == before
    # Whatever happened, the history before it is untouched.
    assert log_snapshot(store)[: len(before)] == before


class Failure(Exception):
    pass


class Failing(EmitTo):
    """Fails in the way ``how`` says, after emitting ``emit`` would have been fine."""

    how: str = "rule"

    def apply(self, state: Any, event: Any, stream_id: str) -> Any:
        if self.how == "apply":
            raise Failure("apply failed")
        return super().apply(state, event, stream_id)

    def discover(self, state: Any) -> Any:
        if self.how == "discover":
            raise Failure("discover failed")
        if self.how == "discover-forever":
            state.append(("round", None))
            return [f"more-{len(state)}"]
        return ()

    def handle(self, state: Any) -> Any:
        events = list(self.emit)
        if self.how == "rule":
            require(False, "rejected")
        if self.how == "handle":
            raise Failure("handle failed")
        if self.how == "undeclared":
            events.append(("not-declared", Deposited(1)))
        if self.how == "unencodable":
            events.append((self.declared[0], Noted(object())))
        if self.how == "bad-return":
            return [("x",)]
        return events


FAILURES = {
    "rule": BusinessRuleViolation,
    "handle": Failure,
    "apply": Failure,
    "discover": Failure,
    "discover-forever": CommandError,
    "undeclared": UndeclaredStream,
    "unencodable": SerializationError,
    "bad-return": Exception,
}


@SETTINGS
@given(
    history=history_st,
    declared=st.lists(st.sampled_from(POOL), unique=True, min_size=1, max_size=3),
    emit_count=st.integers(0, 4),
    how=st.sampled_from(sorted(FAILURES)),
    data=st.data(),
)
def test_a_rejected_or_failed_command_writes_nothing(
    history: list[tuple[str, Any]],
    declared: list[str],
    emit_count: int,
    how: str,
    data: st.DataObject,
) -> None:
    if how == "apply":
        # apply only runs when there is something to fold.
        history = [*history, (declared[0], Deposited(1))]
    store = seeded_store(history)
    before = log_snapshot(store)
    emit = tuple(
        (data.draw(st.sampled_from(declared)), data.draw(events_st)) for _ in range(emit_count)
    )
    with pytest.raises(FAILURES[how]):
        execute_sync(store, Failing(declared=declared, emit=emit, how=how))
    assert log_snapshot(store) == before
    for s in POOL:
        assert store.stream_version(s) == sum(1 for h, _ in history if h == s)


command_st = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(ACCOUNTS), st.just(0), st.just("")),
    st.tuples(st.just("deposit"), st.sampled_from(ACCOUNTS), st.integers(1, 50), st.just("")),
    st.tuples(st.just("withdraw"), st.sampled_from(ACCOUNTS), st.integers(1, 50), st.just("")),
    st.tuples(
        st.just("transfer"),
        st.sampled_from(ACCOUNTS),
        st.integers(1, 50),
        st.sampled_from(ACCOUNTS),
    ),
)


@settings(max_examples=100, deadline=None)
@given(commands=st.lists(command_st, max_size=30))
def test_random_command_sequences_match_a_reference_model(
    commands: list[tuple[str, str, int, str]],
) -> None:
    store = MemoryStore()
    opened: set[str] = set()
    balances = dict.fromkeys(ACCOUNTS, 0)
    for kind, account, amount, other in commands:
        head = store.head()
        # The model's verdict, and the events it expects.
        expected: list[tuple[str, Any]] | None
        if kind == "open":
            command: Any = OpenAccount(account=account, owner=account)
            expected = None if account in opened else [(account, AccountOpened(account))]
        elif kind == "deposit":
            command = Deposit(account=account, amount=amount)
            expected = [(account, Deposited(amount))] if account in opened else None
        elif kind == "withdraw":
            command = Withdraw(account=account, amount=amount)
            ok = account in opened and balances[account] >= amount
            expected = [(account, Withdrawn(amount))] if ok else None
        else:
            command = Transfer(source=account, target=other, amount=amount)
            ok = (
                account != other
                and account in opened
                and other in opened
                and balances[account] >= amount
            )
            expected = [(account, Withdrawn(amount)), (other, Deposited(amount))] if ok else None

        if expected is None:
            with pytest.raises(BusinessRuleViolation):
                execute_sync(store, command)
            assert store.head() == head
            continue
        result = execute_sync(store, command)
        assert result.attempts == 1
        written = store.read_all(after_position=head)
        assert [(e.stream_id, e.data) for e in written] == expected
        assert {w.stream_id for w in result.events} <= set(command.streams())
        for stream_id, ev in expected:
            if isinstance(ev, AccountOpened):
                opened.add(stream_id)
            elif isinstance(ev, Deposited):
                balances[stream_id] += ev.amount
            else:
                balances[stream_id] -= ev.amount

    for account in ACCOUNTS:
        assert balance(store, account) == balances[account]
        assert balances[account] >= 0
    log = store.read_all()
    assert [e.position for e in log] == list(range(1, len(log) + 1))


# Idempotency keys against the reference model: callers retry every outcome-unknown
# or unavailable command with its key until it succeeds; a key writes once, a retry
# returns the first outcome, a key reused for another command writes nothing.
keyed_command_st = st.tuples(
    command_st,
    st.sampled_from(["k-0", "k-1", "k-2", "k-3", "k-4"]),
    st.lists(st.sampled_from([None, "lost-reply", "unavailable", "conflict"]), max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(commands=st.lists(keyed_command_st, max_size=25))
def test_keyed_commands_with_faults_match_a_reference_model(
    commands: list[tuple[tuple[str, str, int, str], str, list[str | None]]],
) -> None:
    faulty = FaultyStore()
    store = faulty.store
    opened: set[str] = set()
    balances = dict.fromkeys(ACCOUNTS, 0)
    outcomes: dict[str, tuple[Any, list[Any]]] = {}  # key -> (command, event ids written)
    policy = RetryPolicy(retry_unavailable=False, initial_delay=0.0)
    for (kind, account, amount, other), key, faults in commands:
        if kind == "open":
            command: Any = OpenAccount(account=account, owner=account)
            ok = account not in opened
            expected = [(account, AccountOpened(account))]
        elif kind == "deposit":
            command = Deposit(account=account, amount=amount)
            ok = account in opened
            expected = [(account, Deposited(amount))]
        elif kind == "withdraw":
            command = Withdraw(account=account, amount=amount)
            ok = account in opened and balances[account] >= amount
            expected = [(account, Withdrawn(amount))]
        else:
            command = Transfer(source=account, target=other, amount=amount)
            ok = account != other and {account, other} <= opened and balances[account] >= amount
            expected = [(account, Withdrawn(amount)), (other, Deposited(amount))]
        head = store.head()
        faulty.faults[:] = faults
        # A key is taken once its command wrote; a rejected command leaves it free.
        first = outcomes.get(key)
        if first is not None and first[0] != command:
            with pytest.raises(IdempotencyKeyReused):
                execute_sync(faulty, command, idempotency_key=key, retry=policy)
            assert store.head() == head
            continue
        ok_now = first is not None or ok
        result = None
        for _ in range(10):  # the caller's own retry loop, with the same key
            try:
                result = execute_sync(faulty, command, idempotency_key=key, retry=policy)
                break
            except (StoreUnavailable, ConcurrencyConflict):
                continue
            except BusinessRuleViolation:
                break
        faulty.faults[:] = []
        if not ok_now:
            assert result is None and store.head() == head
            continue
        assert result is not None
        if first is not None:
            assert result.replayed
            assert [w.event_id for w in result.events] == first[1]
            assert store.head() == head
            continue
        written = store.read_all(after_position=head)
        assert [(e.stream_id, e.data) for e in written] == expected
        assert [w.event_id for w in result.events] == [e.event_id for e in written]
        outcomes[key] = (command, [e.event_id for e in written])
        for stream_id, ev in expected:
            if isinstance(ev, AccountOpened):
                opened.add(stream_id)
            elif isinstance(ev, Deposited):
                balances[stream_id] += ev.amount
            else:
                balances[stream_id] -= ev.amount
    for account in ACCOUNTS:
        assert balance(store, account) == balances[account]
