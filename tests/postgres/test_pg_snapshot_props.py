"""On PostgreSQL, random commands with snapshots and restarts equal a plain in-memory run.

Each example plays the snapshot property's operations (tests/test_snapshot_props.py) on
its own streams of one schema, through a NEW PostgresStore object (a restarted process:
an empty cache, the snapshots of earlier examples' streams in the table), snapshots every
event, the cache emptied before about a third of the operations and verifying every state
it hands out against a full fold. Outcomes and each stream's events must equal a run on an
in-memory store with neither cache nor snapshots, except for one count: PostgreSQL appends
a warm command's events without reading first, and a conflict there (an injected one
included) stands for the read it skipped, so it costs no attempt; the in-memory store reads
the tail first and counts that conflict. So attempts may only be FEWER on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from tests.cache_domain import AsyncFaulty, log_of, run_ops_async, same_but_fewer_attempts
from tests.pgserver import drop_schema, new_schema_name
from tests.test_snapshot_props import ops_st, restarts_st

from eventcore import MemoryStore
from eventcore.postgres import PostgresStore
from eventcore.state_cache import StateCache

pytestmark = pytest.mark.postgres


def by_stream(events: list[Any], prefix: str) -> list[tuple[Any, ...]]:
    """The events of ``prefix``'s streams, per stream in version order (no positions)."""
    mine = [e for e in events if e.stream_id.startswith(prefix)]
    return sorted(log_of(mine))


def test_random_commands_with_snapshots_on_postgres_match_a_plain_store(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    numbers = itertools.count()
    found = [0]

    async def migrate() -> None:
        async with PostgresStore(postgres_dsn, schema=schema) as store:
            await store.migrate()

    async def one(ops: list[Any], restarts: list[bool]) -> None:
        prefix = f"x{next(numbers)}-"
        cache = StateCache(min_events=0, verify=True)
        async with PostgresStore(
            postgres_dsn, schema=schema, state_cache=cache, snapshot_every=1, max_size=2
        ) as pg:
            loads = pg.snapshots.store.load_with_tail  # what a command's load reads

            async def counted(key: str) -> Any:
                snap, tail = await loads(key)
                found[0] += snap is not None
                return snap, tail

            pg.snapshots.store.load_with_tail = counted  # type: ignore[method-assign]
            a = await run_ops_async(AsyncFaulty(pg), ops, prefix, restarts)
            pg_log = by_stream(await pg.read_all(), prefix)
        plain = MemoryStore(state_cache=0).aio
        b = await run_ops_async(AsyncFaulty(plain), ops, prefix, restarts)
        same_but_fewer_attempts(a, b)
        assert pg_log == by_stream(await plain.read_all(), prefix)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ops=ops_st, restarts=restarts_st)
    def prop(ops: list[Any], restarts: list[bool]) -> None:
        asyncio.run(one(ops, restarts))

    asyncio.run(migrate())
    try:
        prop()
    finally:
        asyncio.run(drop_schema(postgres_dsn, schema))
    assert found[0] >= 10  # not vacuous: commands did start from snapshots
