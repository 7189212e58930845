"""Query commands in the one command machine: idempotency keys, hooks and reports,
Scenario, and the native in-memory path (issues 12 and 19)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    ConditionFailed,
    EventRegistry,
    IdempotencyKeyReused,
    MemoryStore,
    RetryPolicy,
    StreamId,
    execute,
    execute_sync,
    stream,
)
from eventcore.boundary import QueryCommand
from eventcore.examples.dcb import (
    CreateInvoice,
    InvoiceCreated,
    RegisterUser,
    UserRegistered,
    registry,
)
from eventcore.observe import CommandReport, Hook, RetryRecord, add_hook, remove_hook
from eventcore.query import Query
from eventcore.state_cache import StateCacheMismatch
from eventcore.testing import Scenario, verifying_store


async def test_an_idempotency_key_replays_the_first_outcome_on_every_store(dcb_store: Any) -> None:
    first = await execute(dcb_store, RegisterUser(user="u1", name="ann"), idempotency_key="req-1")
    again = await execute(dcb_store, RegisterUser(user="u1", name="ann"), idempotency_key="req-1")
    assert again.replayed and not first.replayed
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    found = await dcb_store.read_query(Query.of(["demo.dcb.UserRegistered"], ["username:ann"]))
    assert len(found.events) == 1
    with pytest.raises(IdempotencyKeyReused):
        await execute(dcb_store, RegisterUser(user="u2", name="bob"), idempotency_key="req-1")


def test_an_idempotency_key_after_a_failed_condition_writes_once() -> None:
    """The key's ids are fixed: a retry after a failed condition resends the same ids, and
    a caller with the same key afterwards gets the first outcome back."""
    store = MemoryStore(registry=registry)
    original = store.append
    calls = {"n": 0}

    def racing(events: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            original([("x", *registry.encode(InvoiceCreated(1, "other")), None)])
        return original(events, **kwargs)

    store.append = racing  # type: ignore[method-assign]
    result = execute_sync(store, CreateInvoice(customer="a"), idempotency_key="inv-a")
    assert result.attempts == 2
    assert [e.data.number for e in store.read_all()] == [1, 2]
    again = execute_sync(store, CreateInvoice(customer="a"), idempotency_key="inv-a")
    assert again.replayed and list(again.positions) == list(result.positions)
    assert store.head() == 2


class Keep(Hook):
    """Keeps every report."""

    def __init__(self) -> None:
        self.reports: list[CommandReport] = []

    def after_execute(self, report: CommandReport) -> None:
        self.reports.append(report)


def test_a_hook_sees_a_query_commands_report_with_its_retries() -> None:
    keep = Keep()
    add_hook(keep)
    try:
        _run_reported(keep)
    finally:
        remove_hook(keep)


def _run_reported(keep: Keep) -> None:
    store = MemoryStore(registry=registry)
    execute_sync(store, RegisterUser(user="u1", name="ann"))
    original = store.append

    def always_racing(events: Any, **kwargs: Any) -> Any:
        original([("x", *registry.encode(InvoiceCreated(99, "o")), None)])
        return original(events, **kwargs)

    store.append = always_racing  # type: ignore[method-assign]
    with pytest.raises(ConditionFailed):
        execute_sync(store, CreateInvoice(customer="c"), retry=RetryPolicy.fixed(0, max_attempts=2))
    store.append = original  # type: ignore[method-assign]
    with pytest.raises(BusinessRuleViolation):
        execute_sync(store, RegisterUser(user="u2", name="ann"))
    ok, exhausted, rejected = keep.reports
    assert ok.command_type == "RegisterUser" and ok.outcome == "success"
    assert [(p.name, p.attempt) for p in ok.phases] == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
    ]
    assert ok.result is not None and ok.result.attempts == 1
    assert exhausted.outcome == "conflict-exhausted" and exhausted.attempts == 2
    assert exhausted.retries == [RetryRecord(1, "conflict", 0.0)]
    assert [p.name for p in exhausted.phases].count("write_events") == 2
    assert (rejected.outcome, [p.name for p in rejected.phases]) == ("rejected", ["read_streams"])


def test_scenario_runs_a_query_command_with_tagged_history() -> None:
    taken = ("user-u1", UserRegistered("u1", "ann"), ["username:ann"])
    Scenario(MemoryStore(registry=registry)).given(taken).when(
        RegisterUser(user="u2", name="ann")
    ).then_raises(BusinessRuleViolation, match="taken")
    # Untagged history is outside the query: the name is free.
    Scenario(MemoryStore(registry=registry)).given(("user-u1", UserRegistered("u1", "ann"))).when(
        RegisterUser(user="u2", name="ann")
    ).then(("user-u2", UserRegistered("u2", "ann"), ["username:ann"]))


def test_scenario_then_compares_tags_when_given() -> None:
    scenario = Scenario(MemoryStore(registry=registry)).when(RegisterUser(user="u2", name="bo"))
    with pytest.raises(AssertionError, match="differ"):
        scenario.then(("user-u2", UserRegistered("u2", "bo"), ["username:other"]))
    scenario.then(("user-u2", UserRegistered("u2", "bo")))


@dataclass(frozen=True)
class Noted:
    text: str


NOTES = EventRegistry()
NOTES.register("t.Noted", Noted)


class Note(QueryCommand[tuple[str, ...], Any]):
    """Folds the topic's notes and its log's, and notes what it saw in its log."""

    log: StreamId = stream()

    def query(self) -> Query:
        return Query.of(["t.Noted"], ["topic:a"])

    def initial_state(self) -> tuple[str, ...]:
        return ()

    def apply(self, state: tuple[str, ...], event: Any, stream_id: str) -> tuple[str, ...]:
        return (*state, f"{stream_id}:{event.text}")

    def handle(self, state: tuple[str, ...]) -> Any:
        return [(self.log, Noted("|".join(state)))]

    def tags_of(self, event: Any) -> list[str]:
        return ["topic:a"]


def test_the_native_path_folds_declared_streams_with_the_query_in_global_order() -> None:
    """A query command with a declared stream: the stream's events and the query's are
    folded once each, in position order, on the native path and the effect-by-effect
    path alike (a wrapped store is driven effect by effect)."""

    def run(store: MemoryStore) -> list[str]:
        enc = NOTES.encode
        store.append([("other", *enc(Noted("q1")), None, ("topic:a",))])
        store.append([("log-1", *enc(Noted("s1")), None)])
        store.append([("log-1", *enc(Noted("both")), None, ("topic:a",))])
        store.append([("other", *enc(Noted("q2")), None, ("topic:a",))])
        store.append([("log-2", *enc(Noted("unrelated")), None)])
        result = execute_sync(store, Note(log=StreamId("log-1")))
        assert dict(result.stream_versions) == {"log-1": 3}
        return [e.data.text for e in store.read_stream("log-1")]

    native = run(MemoryStore(registry=NOTES))
    wrapped = MemoryStore(registry=NOTES)
    wrapped.read_query = wrapped.read_query  # type: ignore[method-assign]  # not fused
    assert not wrapped._fused
    assert native == run(wrapped) == ["s1", "both", "other:q1|log-1:s1|log-1:both|other:q2"]


def test_execute_sync_drives_a_query_command_on_sqlite(tmp_path: Any) -> None:
    """A synchronous store other than MemoryStore gets the effects one by one."""
    from eventcore.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "events.db", registry=registry)
    try:
        first = execute_sync(store, RegisterUser(user="u1", name="ann"), idempotency_key="r1")
        again = execute_sync(store, RegisterUser(user="u1", name="ann"), idempotency_key="r1")
        assert again.replayed and list(again.positions) == list(first.positions)
        with pytest.raises(BusinessRuleViolation):
            execute_sync(store, RegisterUser(user="u2", name="ann"))
        for customer in ("a", "b"):
            execute_sync(store, CreateInvoice(customer=customer))
        found = store.read_query(Query.of(["demo.dcb.InvoiceCreated"]))
        assert [e.data.number for e in found.events] == [1, 2]
        assert [tuple(e.tags) for e in found.events] == [("invoice:1",), ("invoice:2",)]
    finally:
        store.close()


class MutatingTally(QueryCommand[dict[str, int], Any]):
    """Tallies the topic's notes; its handle mutates the state it is given (a bug the
    state cache's verify mode exists to catch)."""

    topic: str

    def query(self) -> Query:
        return Query.of(["t.Noted"], [f"topic:{self.topic}"])

    def initial_state(self) -> dict[str, int]:
        return {"notes": 0}

    def apply(self, state: dict[str, int], event: Any, stream_id: str) -> dict[str, int]:
        return {"notes": state["notes"] + 1}

    def handle(self, state: dict[str, int]) -> Any:
        state["notes"] += 1000  # the bug: the state the cache keeps changes
        return [("tally", Noted(str(state["notes"])))]

    def tags_of(self, event: Any) -> list[str]:
        return [f"topic:{self.topic}"]


@pytest.mark.parametrize("fused", [True, False], ids=["native", "effect-by-effect"])
def test_verify_mode_catches_a_query_command_that_mutates_its_cached_state(
    fused: bool,
) -> None:
    """A query command's cached state plus its tail is checked against a full fold of
    the query up to the same position, on the native path and effect by effect alike;
    a clean command passes the check with writes in between (not folded twice)."""
    store = verifying_store(registry=NOTES)
    if not fused:
        store.read_query = store.read_query  # type: ignore[method-assign]  # not fused
    assert store._fused is fused
    enc = NOTES.encode
    store.append([("other", *enc(Noted("n")), None, ("topic:a",))])
    execute_sync(store, Note(log=StreamId("log-1")))  # declared stream: not cached
    execute_sync(store, MutatingTally(topic="a"))  # cold: the cache keeps a mutated state
    cache = store.state_cache
    assert cache is not None and cache.verify
    hits = cache.hits
    with pytest.raises(StateCacheMismatch, match="mutate the state"):
        execute_sync(store, MutatingTally(topic="a"))
    assert cache.hits == hits + 1
    assert len(store.read_query(Query.of(["t.Noted"], ["topic:a"])).events) == 3

    class Tally(MutatingTally):
        def handle(self, state: dict[str, int]) -> Any:
            return [("tally", Noted(str(state["notes"])))]

    for i in range(3):
        store.append([("other", *enc(Noted(f"m{i}")), None, ("topic:b",))])
        execute_sync(store, Tally(topic="b"))
    assert [e.data.text for e in store.read_stream("tally")][-3:] == ["1", "3", "5"]
    assert cache.hits == hits + 3
