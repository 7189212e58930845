"""Read replicas: routing, read-your-writes, lag, rotation, and the global log on a standby.

The session's streaming replica (tests/pgserver.py) replays the primary; pausing its
replay (``pg_wal_replay_pause()``) makes it lag on demand, so where a read went is seen
in what it returns.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from tests.pgserver import PostgresServer, Replica, drop_schema, new_schema_name
from tests.postgres.test_pg_global_log import NaiveReader, TailingReader, Writer

from eventcore import NewEvent
from eventcore.errors import ValidationError
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner

pytestmark = pytest.mark.postgres

CAUGHT_UP = 64 * 1024
"""Lag in bytes of a replica that has replayed what the test wrote (the server's own
background WAL, e.g. autovacuum's, may still be on its way)."""


@asynccontextmanager
async def replay_paused(replica: Replica) -> AsyncIterator[None]:
    """The replica receives WAL but replays none of it inside the block."""
    conn = await asyncpg.connect(replica.admin_dsn)
    try:
        await conn.execute("SELECT pg_wal_replay_pause()")
        yield
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


@pytest.fixture
async def stores(
    postgres_store_factory: Any, postgres_replica: Replica, postgres_server: PostgresServer
) -> tuple[PostgresStore, PostgresStore]:
    """A writer (primary only) and a reader of the same schema that reads from the replica."""
    writer = await postgres_store_factory()
    reader = await postgres_store_factory(
        schema=writer.schema, replicas=[postgres_replica.dsn], replica_wait=0.3
    )
    await postgres_replica.wait_replayed(postgres_server.dsn)
    return writer, reader


async def test_reads_go_to_the_replica_and_a_token_waits_then_falls_back(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    writer, reader = stores
    first = await writer.append([NewEvent("acc-1", "Opened", b"{}")])
    await reader.read_stream("acc-1", after=await writer.write_token())
    async with replay_paused(postgres_replica):
        second = await writer.append([NewEvent("acc-1", "Deposited", b"{}")])
        token = await writer.write_token()
        # Not replayed: the replica does not have it, the primary does.
        assert [e.version for e in await reader.read_stream("acc-1")] == [1]
        assert await reader.stream_version("acc-1") == 1
        primary = await reader.read_stream("acc-1", read_from="primary")
        assert [e.version for e in primary] == [1, 2]
        # With the token: waits replica_wait for the replica, then reads the primary.
        started = time.monotonic()
        assert [e.version for e in await reader.read_stream("acc-1", after=token)] == [1, 2]
        assert time.monotonic() - started >= 0.3
        page = await reader.read_all(after_position=first.last_position, after=token)
        assert [e.position for e in page] == [second.last_position]
    # Replayed now: the token is met by the replica itself.
    assert [e.version for e in await reader.read_stream("acc-1", after=token)] == [1, 2]
    status = await reader.replica_status()
    assert len(status) == 1 and status[0].in_rotation
    assert status[0].replay_lsn is not None and status[0].replay_lsn >= token


async def test_a_store_reads_its_own_writes_through_a_lagging_replica(
    postgres_store_factory: Any, postgres_replica: Replica, postgres_server: PostgresServer
) -> None:
    store = await postgres_store_factory(replicas=[postgres_replica.dsn], replica_wait=10.0)
    await postgres_replica.wait_replayed(postgres_server.dsn)
    async with replay_paused(postgres_replica):
        await store.append([NewEvent("own", "Opened", b"{}")])

        async def resume_soon() -> None:
            await asyncio.sleep(0.2)
            conn = await asyncpg.connect(postgres_replica.admin_dsn)
            await conn.execute("SELECT pg_wal_replay_resume()")
            await conn.close()

        resume = asyncio.create_task(resume_soon())
        started = time.monotonic()
        # Its own append is seen: the read waits until the replica has replayed it.
        assert [e.event_type for e in await store.read_stream("own")] == ["Opened"]
        waited = time.monotonic() - started
        await resume
    assert 0.15 <= waited < 10.0, waited  # served by the replica once replayed, no fallback


async def test_lag_is_reported_and_a_lagging_replica_leaves_rotation_and_returns(
    postgres_store_factory: Any, postgres_replica: Replica, postgres_server: PostgresServer
) -> None:
    store = await postgres_store_factory(
        replicas=[postgres_replica.dsn], replica_max_lag=0.3, replica_wait=0.05
    )
    writer = await postgres_store_factory(schema=store.schema)
    await postgres_replica.wait_replayed(postgres_server.dsn)
    [ok] = await store.replica_status()
    # Caught up (the server's own background WAL may be in flight: a few kB at most).
    assert ok.in_rotation and ok.error is None
    assert ok.lag_bytes is not None and ok.lag_bytes < CAUGHT_UP
    assert ok.lag_seconds is not None and ok.lag_seconds < 0.3
    async with replay_paused(postgres_replica):
        await writer.append([NewEvent("lag", "E", b"1")])
        await writer.append([NewEvent("lag", "E", b"2")])
        await asyncio.sleep(0.5)
        [lagging] = await store.replica_status()
        assert lagging.lag_bytes is not None and lagging.lag_bytes > 0
        assert lagging.lag_seconds is not None and lagging.lag_seconds > 0.3
        assert not lagging.in_rotation and "lag" in (lagging.error or "")
        # Out of rotation: reads go to the primary and see both events.
        assert len(await store.read_stream("lag")) == 2
    await postgres_replica.wait_replayed(postgres_server.dsn)
    [back] = await store.replica_status()
    assert back.in_rotation and back.lag_bytes is not None and back.lag_bytes < CAUGHT_UP, back


async def test_a_dead_replica_leaves_rotation_and_comes_back(
    stores: tuple[PostgresStore, PostgresStore],
    postgres_replica: Replica,
    postgres_server: PostgresServer,
) -> None:
    writer, reader = stores
    reader._replicas.probe_interval = 0.1  # type: ignore[union-attr]
    await writer.append([NewEvent("d", "E", b"1")])
    assert len(await reader.read_stream("d", after=await writer.write_token())) == 1
    await asyncio.to_thread(postgres_replica.stop)
    try:
        await writer.append([NewEvent("d", "E", b"2")])
        # The read that finds it dead goes to the primary; so do the next ones.
        for _ in range(3):
            assert len(await reader.read_stream("d", read_from="replica")) == 2
        [dead] = await reader.replica_status()
        assert not dead.in_rotation and dead.error
    finally:
        await asyncio.to_thread(postgres_replica.start)
    await postgres_replica.wait_replayed(postgres_server.dsn)
    deadline = time.monotonic() + 10
    while not (await reader.replica_status())[0].in_rotation:
        assert time.monotonic() < deadline, "the replica did not come back into rotation"
        await asyncio.sleep(0.1)
    async with replay_paused(postgres_replica):
        await writer.append([NewEvent("d", "E", b"3")])
        await asyncio.sleep(0.3)  # a probe has run: in rotation, lag under max_lag
        assert len(await reader.read_stream("d")) == 2  # served by the replica again


async def test_idempotency_lookups_read_the_primary(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    writer, reader = stores
    await reader.head()  # its own migration replayed: its reads wait for nothing now
    async with replay_paused(postgres_replica):
        result = await writer.append([NewEvent("idem", "E", b"1")])
        ids = result.event_ids
        # The executor's idempotency lookup: never a lagging replica's answer.
        assert [e.event_id for e in await reader.read_events_by_id(ids)] == ids
        assert await reader.read_events_by_id(ids, read_from="replica") == []


async def test_read_from_is_checked(stores: tuple[PostgresStore, PostgresStore]) -> None:
    _, reader = stores
    with pytest.raises(ValidationError):
        await reader.read_stream("x", read_from="standby")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PostgresStore("postgresql://u@h/d", replicas="postgresql://u@r/d")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PostgresStore("postgresql://u@h/d", read_from="any")  # type: ignore[arg-type]


async def test_the_global_log_on_a_replica_never_skips_late_commits(
    stores: tuple[PostgresStore, PostgresStore],
    postgres_replica: Replica,
    postgres_server: PostgresServer,
) -> None:
    """test_pg_global_log's shuffled schedule, tailed on the replica: on a hot standby the
    horizon is the standby snapshot's xmin (its lock table does not show the primary's
    writers), which must still never pass an append that commits later."""
    writer_store, reader_store = stores
    rng = random.Random(20261201)
    writers = [
        Writer(await asyncpg.connect(postgres_server.dsn), writer_store.schema) for _ in range(6)
    ]
    primary = await asyncpg.connect(postgres_server.dsn)
    standby = await asyncpg.connect(postgres_replica.dsn)
    reader = TailingReader(reader_store, limit=2)
    naive = NaiveReader(standby, writer_store.schema, limit=2)
    committed: list[uuid.UUID] = []

    async def replayed() -> None:
        # Poll only once the standby has replayed what the primary has written so far.
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")
        while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", lsn):
            await asyncio.sleep(0.001)

    try:
        for round_no in range(6):
            for i, writer in enumerate(writers):
                await writer.begin_and_append(f"s-{round_no}-{i}", rng.randint(1, 3))
            order = list(range(len(writers)))
            rng.shuffle(order)
            for i in order:
                committed += await writers[i].finish(commit=rng.random() > 0.15)
                await replayed()
                await reader.poll()
                await naive.poll()
    finally:
        for writer in writers:
            await writer.conn.close()
    await replayed()
    await reader.poll()
    await naive.poll()
    await primary.close()
    await standby.close()
    assert len(reader.seen) == len(set(reader.seen)), "an event was delivered twice"
    assert sorted(reader.seen) == sorted(committed), "the replica reader missed events"
    assert reader.positions == sorted(reader.positions)
    # The same schedule on the same standby defeats a reader that pages by position.
    assert set(committed) - set(naive.seen), "the naive reader should skip on the standby"
    assert await reader_store.head() == reader.cursor


async def test_a_projection_catches_up_and_follows_from_the_replica(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    writer, reader = stores
    for i in range(20):
        await writer.append([NewEvent(f"p-{i % 3}", "Counted", b"{}")])
    seen: list[int] = []

    class Count:
        name = "count"

        def apply(self, event: Any) -> None:
            seen.append(event.position)

    runner = ProjectionRunner(reader, [Count()], checkpoints=reader.checkpoint_store())
    async with runner:
        last = await writer.append([NewEvent("p-live", "Counted", b"{}")])
        await runner.wait_for(last.last_position, timeout=10)
    assert len(seen) == 21 and seen == sorted(seen)
    assert seen[-1] == last.last_position


def test_cli_reads_from_replicas_and_shows_their_lag(
    postgres_server: PostgresServer, postgres_replica: Replica
) -> None:
    from click.testing import CliRunner

    from eventcore.cli._app import cli

    schema = new_schema_name()

    async def setup() -> None:
        async with PostgresStore(postgres_server.dsn, schema=schema) as store:
            await store.migrate()
            await store.append([NewEvent("cli-1", "Opened", b"{}")])
        await postgres_replica.wait_replayed(postgres_server.dsn)

    asyncio.run(setup())
    env = {"EVENTCORE_REPLICAS": postgres_replica.dsn}
    base = ["--dsn", postgres_server.dsn, "--schema", schema]
    try:
        out = CliRunner().invoke(cli, ["replicas", *base, "--json"], env=env)
        assert out.exit_code == 0, out.output
        [row] = [json.loads(line) for line in out.output.splitlines()]
        assert row["in_rotation"] is True and 0 <= row["lag_bytes"] < CAUGHT_UP
        assert row["replica"] == f"127.0.0.1:{postgres_replica.port}/eventcore_test"

        async def append_unreplayed() -> None:
            async with replay_paused(postgres_replica):
                async with PostgresStore(postgres_server.dsn, schema=schema) as store:
                    await store.append([NewEvent("cli-1", "Deposited", b"{}")])
                # Reads through the CLI go to the replica, which has not replayed it.
                await asyncio.to_thread(check_cli_reads)

        def check_cli_reads() -> None:
            read = CliRunner().invoke(cli, ["read", "cli-1", *base, "--json"], env=env)
            assert read.exit_code == 0, read.output
            assert [json.loads(x)["version"] for x in read.output.splitlines()] == [1]
            direct = CliRunner().invoke(cli, ["read", "cli-1", *base, "--json"], env={})
            assert [json.loads(x)["version"] for x in direct.output.splitlines()] == [1, 2]

        asyncio.run(append_unreplayed())
        none = CliRunner().invoke(cli, ["replicas", *base], env={"EVENTCORE_REPLICAS": ""})
        assert none.exit_code == 1 and "no replicas" in none.output
    finally:
        asyncio.run(drop_schema(postgres_server.dsn, schema))


async def test_hooks_see_each_probe(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    from prometheus_client import CollectorRegistry

    from eventcore.metrics import PrometheusHook
    from eventcore.observe import add_hook, remove_hook

    _, reader = stores
    registry = CollectorRegistry()
    hook = PrometheusHook(registry)
    add_hook(hook)
    try:
        [status] = await reader.replica_status()
    finally:
        remove_hook(hook)
    labels = {"replica": status.replica}
    assert registry.get_sample_value("eventcore_replica_in_rotation", labels) == 1
    assert registry.get_sample_value("eventcore_replica_lag_bytes", labels) == status.lag_bytes
    assert registry.get_sample_value("eventcore_replica_lag_seconds", labels) == status.lag_seconds


def test_the_sync_face_routes_reads_and_hands_out_tokens(
    postgres_server: PostgresServer, postgres_replica: Replica
) -> None:
    from eventcore.postgres import SyncPostgresStore

    schema = new_schema_name()
    writer = SyncPostgresStore.connect(postgres_server.dsn, schema=schema)
    reader = SyncPostgresStore.connect(
        postgres_server.dsn, schema=schema, replicas=[postgres_replica.dsn], replica_wait=5
    )
    try:
        writer.migrate()
        writer.append([NewEvent("sync-1", "E", b"1")])
        token = writer.write_token()
        [status] = reader.replica_status()
        assert status.in_rotation
        # The reader waits for the token on its replica: the event is there.
        assert len(reader.read_stream("sync-1", after=token)) == 1
        assert len(reader.read_all(read_from="primary")) == 1
    finally:
        writer.close()
        reader.close()
        asyncio.run(drop_schema(postgres_server.dsn, schema))
