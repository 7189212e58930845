"""Append conditions on PostgreSQL under concurrent appends: never two winners (issue 19)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from eventcore import ConditionFailed, NewEvent
from eventcore.query import AppendCondition, Query

pytestmark = pytest.mark.postgres

CLIENTS = 8
ROUNDS = 15


def ev(stream: str, event_type: str, *tags: str) -> NewEvent:
    return NewEvent(stream, event_type, b"{}", None, tags)


async def _try(store: Any, event: NewEvent, condition: AppendCondition) -> int | None:
    try:
        return (await store.append([event], condition=condition)).positions[0]
    except ConditionFailed:
        return None


async def test_of_many_appends_that_only_one_may_pass_exactly_one_passes(
    postgres_store_factory: Any,
) -> None:
    """CLIENTS appenders decide on the same read of a username and append under its
    condition at once, from their own connections; without the condition's locks
    (or with a check that reads before a concurrent writer commits) several pass."""
    store = await postgres_store_factory(max_size=CLIENTS + 2)
    for _ in range(ROUNDS):
        name = Query.of(["UserRegistered"], [f"username:{uuid.uuid4()}"])
        read = await store.read_query(name)
        assert read.events == []
        tag = name.items[0].tags[0]
        results = await asyncio.gather(
            *(
                _try(
                    store,
                    ev(f"user-{uuid.uuid4()}", "UserRegistered", tag),
                    AppendCondition(name, read.position),
                )
                for _ in range(CLIENTS)
            )
        )
        assert sum(r is not None for r in results) == 1, results
        assert len((await store.read_query(name)).events) == 1


async def test_a_plain_append_of_a_matching_type_is_ordered_against_a_condition(
    postgres_store_factory: Any,
) -> None:
    """A condition on a type alone (no tag) against concurrent untagged appends of that
    type: when both pass, the plain append lies after the conditional one (it waited for
    its lock); it never slips in below it unseen."""
    store = await postgres_store_factory(max_size=CLIENTS + 2)
    kind = f"Invoiced{uuid.uuid4().hex[:8]}"
    query = Query.of([kind])
    checked = 0
    for _ in range(ROUNDS):
        read = await store.read_query(query)
        conditional = _try(store, ev("inv-c", kind), AppendCondition(query, read.position))
        plain = [store.append([ev(f"inv-{i}", kind)]) for i in range(CLIENTS - 1)]
        won, *others = await asyncio.gather(conditional, *plain)
        if won is not None:
            checked += 1
            assert all(o.positions[0] > won for o in others)
    matching = (await store.read_query(query)).events
    assert len(matching) == checked + ROUNDS * (CLIENTS - 1)


async def test_writers_of_unrelated_tags_do_not_wait_for_a_held_condition(
    postgres_store_factory: Any,
) -> None:
    """A transaction holding a condition's lock (as an append holds it until commit)
    does not block an append of other tags, and does block one of its tag."""
    store = await postgres_store_factory(max_size=4)
    pool = await store._get_pool()
    schema = store.schema
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"SELECT \"{schema}\".lock_written('{{}}'::text[], '{{}}'::text[],"
            " ARRAY[hashtext('tag:course:c1')::bigint])"
        )
        await asyncio.wait_for(store.append([ev("c-2", "Enrolled", "course:c2")]), 5)
        blocked = asyncio.ensure_future(store.append([ev("c-1", "Enrolled", "course:c1")]))
        done, _ = await asyncio.wait([blocked], timeout=0.5)
        assert not done  # waits for the condition's lock
    await asyncio.wait_for(blocked, 5)


async def test_warm_invoice_commands_of_several_instances_keep_numbers_gapless(
    postgres_store_factory: Any,
) -> None:
    """Several store instances (each its own state cache, as separate processes) number
    invoices at once: each instance's cached last number goes stale as the others append,
    so its warm commands (appended without a read) fail their condition and retry from
    what the failure carries. Every number is taken once, in log order, none skipped;
    and the warm path was taken (fewer reads than commands)."""
    from eventcore import RetryPolicy, execute
    from eventcore.examples.dcb import CreateInvoice, InvoiceCreated, registry

    stores = [await postgres_store_factory(registry=registry)]
    for _ in range(3):
        stores.append(await postgres_store_factory(registry=registry, schema=stores[0].schema))
    reads = [0]
    for store in stores:
        original = store.read_query

        async def counting(query: Any, _original: Any = original, **kwargs: Any) -> Any:
            reads[0] += 1
            return await _original(query, **kwargs)

        store.read_query = counting
    patient = RetryPolicy(max_attempts=100, initial_delay=0.001, max_delay=0.01)

    async def client(store: Any, name: str) -> None:
        for _ in range(6):
            await execute(store, CreateInvoice(customer=name), retry=patient)

    await asyncio.gather(
        *(client(store, f"{i}-{j}") for i, store in enumerate(stores) for j in range(2))
    )
    log = [e.data for e in await stores[0].read_all() if isinstance(e.data, InvoiceCreated)]
    assert [i.number for i in log] == list(range(1, 49))
    assert reads[0] < 48
