"""Projection runners from synchronous code: ``run_until_caught_up_sync`` and ``rebuild_sync``."""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore, NewEvent, UsageError
from eventcore.projection import ProjectionRunner

from ..projection.conftest import Recorder


def append(store: Any, n: int, offset: int = 0) -> int:
    """Append ``n`` events, one per append; the last position."""
    last = 0
    for i in range(offset, offset + n):
        last = store.append([NewEvent(f"s-{i % 3}", "T", b"%d" % i)]).last_position
    return last


def _catch_up_then_resume(store: Any) -> None:
    recorder = Recorder()
    runner = ProjectionRunner(store, recorder, page_size=7)
    first = append(store, 20)
    runner.run_until_caught_up_sync()
    assert len(recorder.order) == 20 and recorder.order[-1] == first
    last = append(store, 5, offset=20)
    runner.run_until_caught_up_sync()  # the same runner again: from its checkpoint
    assert len(recorder.order) == 25 and recorder.order[-1] == last
    assert recorder.duplicates == 0
    # A new runner on the same checkpoints resumes from the saved one, not from the start.
    later = Recorder()
    append(store, 2, offset=25)
    ProjectionRunner(store, later, checkpoints=runner.checkpoints).run_until_caught_up_sync()
    assert len(later.order) == 2
    # A rebuild resets the projection and replays the whole log.
    runner.rebuild_sync()
    assert len(recorder.order) == 27 and recorder.duplicates == 0


def test_memory_store_from_sync_code() -> None:
    _catch_up_then_resume(MemoryStore())


@pytest.mark.postgres
def test_sync_postgres_store_from_sync_code(sync_pg: Any) -> None:
    sync_pg.loop_store.poll_interval = 0.2
    _catch_up_then_resume(sync_pg)


@pytest.mark.postgres
def test_exactly_once_with_the_checkpoint_in_the_same_transaction(sync_pg: Any) -> None:
    class Counter:
        name = "counter"

        def __init__(self) -> None:
            self.batches = 0

        async def apply_in_transaction(self, events: list[Any], connection: Any) -> None:
            self.batches += 1
            await connection.execute(
                f'CREATE TABLE IF NOT EXISTS "{sync_pg.schema}".seen (position bigint PRIMARY KEY)'
            )
            await connection.executemany(
                f'INSERT INTO "{sync_pg.schema}".seen VALUES ($1)', [(e.position,) for e in events]
            )

    append(sync_pg, 12)
    counter = Counter()
    ProjectionRunner(sync_pg, counter, page_size=5).run_until_caught_up_sync()
    assert counter.batches == 3

    async def seen() -> int:
        async with sync_pg.loop_store._borrow() as conn:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{sync_pg.schema}".seen'))

    assert sync_pg.run_on_loop(seen()) == 12


async def test_a_sync_entry_inside_a_running_loop_is_a_usage_error() -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "T", b"1")])
    runner = ProjectionRunner(store, Recorder())
    with pytest.raises(UsageError, match="inside a running event loop"):
        runner.run_until_caught_up_sync()
    with pytest.raises(UsageError, match="inside a running event loop"):
        runner.rebuild_sync()
    await runner.run_until_caught_up()  # the async entry still works here


@pytest.mark.postgres
async def test_a_runner_over_a_sync_store_refuses_another_loop(sync_pg: Any) -> None:
    runner = ProjectionRunner(sync_pg, Recorder())
    with pytest.raises(UsageError, match="run_until_caught_up_sync"):
        await runner.run_until_caught_up()
