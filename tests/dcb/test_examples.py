"""The DCB specification's examples (eventcore.examples.dcb) on every store (issue 19)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventcore import (
    BusinessRuleViolation,
    ConditionFailed,
    MemoryStore,
    OutcomeUnknown,
    RetryPolicy,
    StoreUnavailable,
    execute,
    execute_sync,
)
from eventcore.examples.dcb import (
    MAX_COURSES,
    CreateInvoice,
    DefineCourse,
    InvoiceCreated,
    RegisterUser,
    Subscribe,
    registry,
)
from eventcore.query import Query

PATIENT = RetryPolicy(max_attempts=60, initial_delay=0.001, max_delay=0.02)


async def test_a_course_holds_its_capacity_and_a_student_its_limit(dcb_store: Any) -> None:
    for c in range(MAX_COURSES + 1):
        await execute(dcb_store, DefineCourse(course=f"c{c}", capacity=2))
    with pytest.raises(BusinessRuleViolation, match="exists"):
        await execute(dcb_store, DefineCourse(course="c0", capacity=9))
    await execute(dcb_store, Subscribe(student="s1", course="c0"))
    with pytest.raises(BusinessRuleViolation, match="is subscribed to c0"):
        await execute(dcb_store, Subscribe(student="s1", course="c0"))
    await execute(dcb_store, Subscribe(student="s2", course="c0"))
    with pytest.raises(BusinessRuleViolation, match="c0 is full"):
        await execute(dcb_store, Subscribe(student="s3", course="c0"))
    for c in range(1, MAX_COURSES):
        await execute(dcb_store, Subscribe(student="s1", course=f"c{c}"))
    with pytest.raises(BusinessRuleViolation, match=f"{MAX_COURSES} courses"):
        await execute(dcb_store, Subscribe(student="s1", course=f"c{MAX_COURSES}"))
    with pytest.raises(BusinessRuleViolation, match="no course"):
        await execute(dcb_store, Subscribe(student="s9", course="nope"))
    subscribed = await dcb_store.read_query(Query.of(tags=["student:s1"]))
    assert len(subscribed.events) == MAX_COURSES
    assert all(e.tags == (f"course:{e.data.course}", "student:s1") for e in subscribed.events)


async def test_a_user_name_is_taken_once(dcb_store: Any) -> None:
    result = await execute(dcb_store, RegisterUser(user="u1", name="ann"))
    assert result.events[0].stream_id == "user-u1"
    with pytest.raises(BusinessRuleViolation, match="taken"):
        await execute(dcb_store, RegisterUser(user="u2", name="ann"))
    await execute(dcb_store, RegisterUser(user="u2", name="bob"))


async def test_invoice_numbers_are_gapless(dcb_store: Any) -> None:
    for i in range(12):
        await execute(dcb_store, CreateInvoice(customer=f"k{i % 3}"))
    numbers = [e.data.number for e in await dcb_store.read_all()]
    assert numbers == list(range(1, 13))


async def test_concurrent_commands_keep_every_limit(dcb_store: Any) -> None:
    """Clients race for the same decisions; failed conditions are retried from fresh
    state, and no limit is ever passed (on PostgreSQL from separate connections)."""
    await execute(dcb_store, DefineCourse(course="hot", capacity=5))

    async def attempt(command: Any) -> bool:
        try:
            await execute(dcb_store, command, retry=PATIENT)
        except BusinessRuleViolation:
            return False
        return True

    subs = await asyncio.gather(
        *(attempt(Subscribe(student=f"s{i}", course="hot")) for i in range(12))
    )
    names = await asyncio.gather(*(attempt(RegisterUser(user=f"u{i}", name="x")) for i in range(8)))
    invoices = await asyncio.gather(*(attempt(CreateInvoice(customer="k")) for i in range(10)))
    assert (sum(subs), sum(names), sum(invoices)) == (5, 1, 10)
    numbers = sorted(
        e.data.number for e in await dcb_store.read_all() if isinstance(e.data, InvoiceCreated)
    )
    assert numbers == list(range(1, 11))


def test_execute_sync_runs_query_commands_and_retries_a_failed_condition() -> None:
    store = MemoryStore(registry=registry)
    execute_sync(store, CreateInvoice(customer="a"))
    calls = {"n": 0}
    original = store.append

    def racing_append(events: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # another client creates invoice 2 between read and append
            original(
                [
                    # an append without a condition, straight to the store
                    ("invoice-2", *registry.encode(InvoiceCreated(2, "other")), None)
                ]
            )
        return original(events, **kwargs)

    store.append = racing_append  # type: ignore[method-assign]
    result = execute_sync(store, CreateInvoice(customer="b"))
    assert result.attempts == 2
    assert [e.stream_id for e in result.events] == ["invoice-3"]
    store.append = original  # type: ignore[method-assign]
    with pytest.raises(ConditionFailed) as caught:

        def always_racing(events: Any, **kwargs: Any) -> Any:
            original([("x", *registry.encode(InvoiceCreated(99, "o")), None)])
            return original(events, **kwargs)

        store.append = always_racing  # type: ignore[method-assign]
        execute_sync(store, CreateInvoice(customer="c"), retry=RetryPolicy.fixed(0, max_attempts=3))
    assert caught.value.attempts == 3


def test_the_state_cache_reads_only_the_events_after_its_position() -> None:
    store = MemoryStore(registry=registry)
    reads: list[int] = []
    original = store.read_query

    def counting(query: Any, **kwargs: Any) -> Any:
        found = original(query, **kwargs)
        reads.append(len(found.events))
        return found

    store.read_query = counting  # type: ignore[method-assign]
    for _ in range(5):
        execute_sync(store, CreateInvoice(customer="a"))
    # The first command folds nothing; each later one finds its state cached and reads
    # nothing new (its own invoice was applied to the state it put back).
    assert reads == [0, 0, 0, 0, 0]
    assert store.state_cache is not None and store.state_cache.hits == 4
    # An invoice written by someone else is read as the tail.
    store.append([("invoice-6", *registry.encode(InvoiceCreated(6, "o")), None)])
    result = execute_sync(store, CreateInvoice(customer="a"))
    assert reads[-1] == 1
    assert [e.stream_id for e in result.events] == ["invoice-7"]
    # Without the cache, every command reads every invoice.
    uncached = MemoryStore(registry=registry, state_cache=0)
    for _ in range(3):
        execute_sync(uncached, CreateInvoice(customer="a"))
    assert [e.data.number for e in uncached.read_all()] == [1, 2, 3]


def test_an_unavailable_store_and_a_lost_reply_are_retried_without_a_duplicate() -> None:
    """A failed read is read again; an append whose reply was lost (it was written) is
    sent again with the same ids and condition: the replay answers, one invoice only."""
    store = MemoryStore(registry=registry, state_cache=0)
    read_query, append = store.read_query, store.append
    faults = {"read": 1, "append": 1}

    def flaky_read(query: Any, **kwargs: Any) -> Any:
        if faults["read"]:
            faults["read"] -= 1
            raise StoreUnavailable("read failed")
        return read_query(query, **kwargs)

    def lossy_append(events: Any, **kwargs: Any) -> Any:
        result = append(events, **kwargs)
        if faults["append"]:
            faults["append"] -= 1
            raise OutcomeUnknown("reply lost", [e.event_id for e in events])
        return result

    store.read_query = flaky_read  # type: ignore[method-assign]
    store.append = lossy_append  # type: ignore[method-assign]
    fast = RetryPolicy(unavailable_initial_delay=0.001)
    result = execute_sync(store, CreateInvoice(customer="a"), retry=fast)
    # Attempts count every try, a retry after a store failure too (as for any command):
    # the failed read, the lost reply, the resend.
    assert result.attempts == 3 and faults == {"read": 0, "append": 0}
    assert [e.data.number for e in store.read_all()] == [1]
    assert list(result.positions) == [1]
