"""PostgreSQL: a purge erases its events' rows of the tag table (migration 0009), not
only their events: a tag may be personal data, and nothing of a purged event stays."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import NewEvent

pytestmark = pytest.mark.postgres


async def test_a_purge_deletes_the_tag_rows_of_its_events(postgres_store_factory: Any) -> None:
    store = await postgres_store_factory()
    result = await store.append(
        [
            NewEvent("acc-1", "t.Opened", b"{}", tags=("customer:ann", "vip")),
            NewEvent("acc-2", "t.Opened", b"{}", tags=("customer:ann",)),
        ]
    )
    await store.delete_stream("acc-1")
    await store.purge_stream("acc-1", actor="ops", reason="forget")
    pool = await store._get_pool()
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f'SELECT position, tag FROM "{store.schema}".event_tags ORDER BY position, tag'
        )
    assert [(r["position"], r["tag"]) for r in rows] == [(result.positions[1], "customer:ann")]
