"""A cold command's read is planned once per connection, not once per command.

PostgreSQL runs a prepared statement with a fresh (custom) plan each time while its
generic plan's estimate is above theirs. A fold that took its streams as one array
parameter could not be estimated in a generic plan (an array's length is unknown there),
so a store that connected to a schema with statistics planned it for every cold command,
which cost more than running it. The fold now takes one parameter per stream (up to
``FOLD_BY_COUNT``): both estimates agree and the generic plan is kept.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from eventcore import NewEvent
from eventcore.postgres._sql import FOLD_BY_COUNT

pytestmark = pytest.mark.postgres


async def _fold_plans(store: Any) -> list[tuple[str, int, int]]:
    """``(statement, generic plans, custom plans)`` of the folds the store's connection
    has prepared."""
    pool = await store._get_pool()
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'SELECT sid, typ, payload, ver, pos FROM (%'"
        )
    return [(r[0], r[1], r[2]) for r in rows]


async def test_a_store_on_a_schema_with_statistics_keeps_the_folds_generic_plan(
    postgres_store_factory: Any, postgres_dsn: str
) -> None:
    first = await postgres_store_factory()
    for k in range(0, 3000, 500):
        await first.append(
            [NewEvent(f"f-{s}", "t", b"x") for s in range(k, k + 500) for _ in range(4)]
        )
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'ANALYZE "{first.schema}".streams, "{first.schema}".events')
    finally:
        await conn.close()
    # A second store (another process, or a restart) connects after the statistics.
    store = await postgres_store_factory(schema=first.schema, min_size=1, max_size=1)
    runs = 20
    for n in range(1, FOLD_BY_COUNT + 2):  # every count with its own statement, and one more
        for i in range(runs):
            streams = [f"f-{(i * 7 + j * 131) % 3000}" for j in range(n)]
            rows, versions = await store.read_fold(streams)
            assert versions == [4] * n
            assert len(rows) == 4 * n
    plans = await _fold_plans(store)
    assert len(plans) == FOLD_BY_COUNT + 1
    per_count = [p for p in plans if "ANY(" not in p[0]]
    assert len(per_count) == FOLD_BY_COUNT
    for statement, generic, custom in per_count:
        # the first five runs are always custom; after them, the generic plan is kept
        assert custom <= 5 and generic == runs - custom, (statement[:120], generic, custom)
