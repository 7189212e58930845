"""Crashes, restarts and competing runners: the read model always equals a rebuild."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests.projection.conftest import Recorder, all_events, write

from eventcore.projection import (
    MemoryCheckpointStore,
    PostgresCheckpointStore,
    ProjectionRunner,
)

ROOT = Path(__file__).resolve().parents[2]


class PgCounts:
    """A read model in PostgreSQL, applied in the runner's transaction (exactly once).

    ``applied`` has the position as primary key: applying an event twice raises.
    """

    def __init__(self, schema: str, name: str = "pgcounts") -> None:
        self.name = name
        self.t = f'"{schema}".rm_{name}'

    async def setup(self, conn: Any) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.t}_applied (position bigint PRIMARY KEY);"
            f"CREATE TABLE IF NOT EXISTS {self.t}_counts (stream_id text PRIMARY KEY,"
            " n bigint NOT NULL)"
        )

    async def apply_in_transaction(self, events: list[Any], conn: Any) -> None:
        await conn.executemany(
            f"INSERT INTO {self.t}_applied (position) VALUES ($1)", [(e.position,) for e in events]
        )
        counts = Counter(e.stream_id for e in events)
        await conn.executemany(
            f"INSERT INTO {self.t}_counts (stream_id, n) VALUES ($1, $2) ON CONFLICT (stream_id)"
            f" DO UPDATE SET n = {self.t}_counts.n + EXCLUDED.n",
            list(counts.items()),
        )

    async def reset_in_transaction(self, conn: Any) -> None:
        await conn.execute(f"TRUNCATE {self.t}_applied, {self.t}_counts")

    async def read(self, conn: Any) -> tuple[list[int], dict[str, int]]:
        applied = [r[0] for r in await conn.fetch(f"SELECT position FROM {self.t}_applied")]
        counts = dict(await conn.fetch(f"SELECT stream_id, n FROM {self.t}_counts"))
        return sorted(applied), counts


async def expected_model(store: Any) -> tuple[list[int], dict[str, int]]:
    events = await all_events(store)
    return [e.position for e in events], dict(Counter(e.stream_id for e in events))


async def cancel_randomly(make_runner: Any, rounds: int, rng: random.Random) -> None:
    """Start a runner and cancel its task (no graceful stop) at a random moment."""
    for _ in range(rounds):
        task = asyncio.create_task(make_runner().run_forever())
        await asyncio.sleep(rng.uniform(0.0, 0.06))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_cancelled_runner_restarts_to_the_rebuilt_model(store: Any) -> None:
    """At-least-once (memory checkpoints): after random cancels, model == rebuild."""
    rng = random.Random(7)
    await write(store, 1500, per_append=25)
    rec = Recorder()
    cps = MemoryCheckpointStore()

    def make() -> ProjectionRunner:
        return ProjectionRunner(store, rec, checkpoints=cps, page_size=40, poll_interval=0.1)

    writing = asyncio.create_task(write(store, 600, per_append=3, offset=1500))
    await cancel_randomly(make, 12, rng)  # during catch-up and live
    await writing
    await cancel_randomly(make, 4, rng)
    await make().run_until_caught_up()
    fresh = Recorder()
    await ProjectionRunner(store, fresh, checkpoints=MemoryCheckpointStore()).run_until_caught_up()
    assert rec.seen == fresh.seen
    assert sorted(rec.seen) == (await expected_model(store))[0]
    assert rec.duplicates <= 16 * 40  # at most one page again per crash


@pytest.mark.postgres
async def test_transactional_checkpoint_survives_cancels_exactly_once(
    postgres_store: Any,
) -> None:
    store = postgres_store
    rng = random.Random(11)
    proj = PgCounts(store.schema)
    pool = await store._get_pool()
    async with pool.acquire() as conn:
        await proj.setup(conn)
    await write(store, 1500, per_append=25)
    cps = PostgresCheckpointStore(store)

    def make() -> ProjectionRunner:
        return ProjectionRunner(
            store, proj, checkpoints=cps, page_size=40, poll_interval=0.1, takeover_interval=0.05
        )

    writing = asyncio.create_task(write(store, 600, per_append=3, offset=1500))
    await cancel_randomly(make, 10, rng)
    await writing
    await cancel_randomly(make, 4, rng)
    await make().run_until_caught_up()
    async with pool.acquire() as conn:
        model = await proj.read(conn)
    assert model == await expected_model(store)  # a duplicate would have hit the PK


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from eventcore.postgres import PostgresStore
    from eventcore.projection import PostgresCheckpointStore, ProjectionRunner
    from tests.projection.test_crash import PgCounts

    async def main():
        store = PostgresStore(sys.argv[1], schema=sys.argv[2], poll_interval=0.1)
        proj = PgCounts(sys.argv[2])
        runner = ProjectionRunner(store, proj, checkpoints=PostgresCheckpointStore(store),
                                  page_size=25, poll_interval=0.1, takeover_interval=0.05,
                                  lock_check_interval=0.2)
        await runner.run_forever()

    asyncio.run(main())
    """
)


def spawn(dsn: str, schema: str) -> subprocess.Popen[bytes]:
    code = CHILD.format(root=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, dsn, schema],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def checkpoint(conn: Any, schema: str, name: str) -> int:
    value = await conn.fetchval(
        f'SELECT position FROM "{schema}".projection_checkpoints WHERE name = $1', name
    )
    return int(value or 0)


@pytest.mark.postgres
async def test_killed_process_restarts_exactly_once(postgres_store: Any, postgres_dsn: str) -> None:
    """SIGKILL a runner process at random points during catch-up and live; restart."""
    store = postgres_store
    rng = random.Random(3)
    proj = PgCounts(store.schema)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await proj.setup(conn)
        await PostgresCheckpointStore(store).migrate()
        await write(store, 3000, per_append=50)
        last = 0
        for round_ in range(3):
            child = spawn(postgres_dsn, store.schema)
            try:
                writing = write(store, 150, per_append=5, offset=10_000 * (round_ + 1))
                await asyncio.wait_for(writing, 20)
                # Kill only a runner that got to work: on a loaded machine a child may still
                # be importing after a second, and killing it then tests nothing.
                for _ in range(600):
                    if await checkpoint(conn, store.schema, "pgcounts") > last:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail(f"round {round_}: the runner never moved its checkpoint")
                await asyncio.sleep(rng.uniform(0.0, 0.7))
            finally:
                kill(child)
            assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
            last = await checkpoint(conn, store.schema, "pgcounts")
        # The last one is killed mid-way too; a restart in this process finishes the job.
        assert await checkpoint(conn, store.schema, "pgcounts") > 0
        cps = PostgresCheckpointStore(store)
        await ProjectionRunner(store, proj, checkpoints=cps).run_until_caught_up()
        assert await proj.read(conn) == await expected_model(store)
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_two_runners_compete_one_active_then_takeover(
    postgres_store: Any, postgres_dsn: str
) -> None:
    """A process runs the projection; ours waits in standby, takes over after a kill."""
    store = postgres_store
    proj = PgCounts(store.schema)
    conn = await asyncpg.connect(postgres_dsn)
    child = spawn(postgres_dsn, store.schema)
    try:
        await proj.setup(conn)
        cps = PostgresCheckpointStore(store)
        await cps.migrate()
        await write(store, 500, per_append=20)
        # Wait until the child is active (its checkpoint moves).
        for _ in range(200):
            if await checkpoint(conn, store.schema, "pgcounts") > 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the child runner never became active")
        ours = ProjectionRunner(
            store,
            proj,
            checkpoints=cps,
            page_size=25,
            poll_interval=0.1,
            takeover_interval=0.05,
        )
        stop = asyncio.Event()

        async def writer(k: int) -> None:
            i = 0
            while not stop.is_set():
                await write(store, 2, per_append=2, streams=16, offset=100_000 * (k + 1) + i)
                i += 2
                await asyncio.sleep(0.002)

        async with ours:
            writers = [asyncio.create_task(writer(k)) for k in range(16)]
            await asyncio.sleep(0.5)
            assert (await ours.status())["pgcounts"].state == "standby"
            kill(child)
            for _ in range(100):
                if (await ours.status())["pgcounts"].state in ("live", "catching_up"):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the standby runner did not take over")
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*writers)
            await ours.wait_for(await store.head(), timeout=20)
        assert await proj.read(conn) == await expected_model(store)
    finally:
        kill(child)
        await conn.close()


@pytest.mark.postgres
async def test_in_process_runners_only_one_active(postgres_store: Any) -> None:
    """Two runners of one projection in one process: only the lock holder applies."""
    store = postgres_store
    await write(store, 200)
    a, b = Recorder("same"), Recorder("same")
    cps = PostgresCheckpointStore(store)
    ra = ProjectionRunner(store, a, checkpoints=cps, takeover_interval=0.05)
    rb = ProjectionRunner(store, b, checkpoints=cps, takeover_interval=0.05)
    async with ra:
        await ra.wait_for(await store.head())
        async with rb:
            last = await write(store, 50, offset=200)
            await ra.wait_for(last)
            await asyncio.sleep(0.2)
            assert (await rb.status())["same"].state == "standby"
        assert not b.seen
        await ra.stop()
        # With ra gone, rb takes over from the shared checkpoint.
        async with rb:
            last = await write(store, 30, offset=250)
            await rb.wait_for(last, timeout=10)
    assert len(a.seen) == 250 and sorted(b.seen) == [
        e.position for e in (await all_events(store))[250:]
    ]
