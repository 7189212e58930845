"""The write token a command result carries, on replica reads.

A result's :class:`~eventcore.recorded.WriteToken` is its last position and the primary's
timeline. A replica read with it waits until the replica's log horizon has passed that
position, then reads there; a replica that does not get there within ``replica_wait``
seconds leaves the read to the primary. Real servers: the session's streaming replica
(pausing its replay makes it lag on demand) and, for failover, a cluster of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest
from tests.pgserver import (
    DB_NAME,
    SUPERUSER,
    PostgresServer,
    Replica,
    drop_schema,
    launch_cluster,
    new_schema_name,
)
from tests.postgres.pg_bank import BANK, Deposit, open_accounts
from tests.postgres.test_pg_replica import replay_paused

from eventcore import NewEvent, RetryPolicy, execute
from eventcore.errors import OutcomeUnknown, StoreUnavailable, ValidationError
from eventcore.examples.bank import Account, AccountEvent, SingleAccount
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner
from eventcore.recorded import NO_WRITE, WriteToken

pytestmark = pytest.mark.postgres


class LookOnly(SingleAccount):
    """Decides nothing: the result has no write to wait for."""

    def handle(self, state: Account) -> list[tuple[str, AccountEvent]]:
        return []


@pytest.fixture
async def stores(
    postgres_store_factory: Any, postgres_replica: Replica, postgres_server: PostgresServer
) -> tuple[PostgresStore, PostgresStore]:
    """A writer (primary only) and a reader of the same schema that reads from the replica
    (another store object: it knows nothing of the writer's appends but their tokens)."""
    writer = await postgres_store_factory(registry=BANK)
    reader = await postgres_store_factory(
        schema=writer.schema, registry=BANK, replicas=[postgres_replica.dsn], replica_wait=5.0
    )
    await postgres_replica.wait_replayed(postgres_server.dsn)
    return writer, reader


async def primary_timeline(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        name = await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())")
    finally:
        await conn.close()
    return int(name[:8], 16)


async def test_every_result_carries_a_token_and_one_that_wrote_nothing_waits_for_nothing(
    stores: tuple[PostgresStore, PostgresStore], postgres_server: PostgresServer
) -> None:
    writer, _ = stores
    await open_accounts(writer, ["acc"], 0)
    result = await execute(writer, Deposit(account="acc", amount=5))
    token = result.write_token
    assert token == WriteToken(await primary_timeline(postgres_server.dsn), result.positions[-1])
    assert token.timeline >= 1
    assert WriteToken.parse(str(token)) == token
    # Replayed under its idempotency key: the same position (the timeline not known).
    again = await execute(writer, Deposit(account="acc", amount=5), idempotency_key="k")
    replayed = await execute(writer, Deposit(account="acc", amount=5), idempotency_key="k")
    assert replayed.replayed and replayed.write_token.position == again.write_token.position
    # Nothing written: nothing to wait for.
    assert (await execute(writer, LookOnly(account="acc"))).write_token == NO_WRITE
    assert (await writer.append([])).write_token == NO_WRITE
    for bad in ("", "1", "a:2", "1:-2", "1:2:3"):
        with pytest.raises(ValidationError):
            WriteToken.parse(bad)


async def test_a_read_with_the_token_never_misses_the_write(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    writer, reader = stores
    await open_accounts(writer, ["acc"], 0)
    for n in range(1, 41):
        result = await execute(writer, Deposit(account="acc", amount=1))
        token = result.write_token
        started = time.monotonic()
        events = await reader.read_stream("acc", after=token)
        page = await reader.read_all(after_position=token.position - 1, after=token)
        # Served by the replica (a fallback would have waited replica_wait = 5 s first).
        assert time.monotonic() - started < 4.0
        assert events[-1].position == token.position, n
        assert [e.position for e in page] == [token.position], n


async def test_a_lagging_replica_makes_the_read_wait_then_fall_back(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    writer, reader = stores
    reader._replicas.wait = 0.3  # type: ignore[union-attr]
    first = await writer.append([NewEvent("lag", "Opened", b"{}")])
    await reader.read_stream("lag", after=first.write_token)
    async with replay_paused(postgres_replica):
        second = await writer.append([NewEvent("lag", "Deposited", b"{}")])
        # Without the token the replica answers, without the write.
        assert [e.version for e in await reader.read_stream("lag")] == [1]
        started = time.monotonic()
        events = await reader.read_stream("lag", after=second.write_token)
        assert time.monotonic() - started >= 0.3  # waited for the replica, then the primary
        assert [e.version for e in events] == [1, 2]
        page = await reader.read_all(after_position=first.last_position, after=second.write_token)
        assert [e.position for e in page] == [second.last_position]
        # A token of another timeline (a write from before a failover) is not waited for:
        # only the primary can say what the log holds now.
        elsewhere = WriteToken(second.write_token.timeline + 1, second.last_position)
        started = time.monotonic()
        events = await reader.read_stream("lag", after=elsewhere)
        assert time.monotonic() - started < 0.3
        assert [e.version for e in events] == [1, 2]
        # Nothing to wait for: the replica answers at once.
        assert [e.version for e in await reader.read_stream("lag", after=NO_WRITE)] == [1]
    # Replayed: the replica meets the token itself.
    assert [e.version for e in await reader.read_stream("lag", after=second.write_token)] == [
        1,
        2,
    ]
    with pytest.raises(ValidationError):
        await reader.read_stream("lag", after="1:2")  # type: ignore[arg-type]


async def test_a_long_transaction_on_the_primary_holds_back_log_reads_not_stream_reads(
    stores: tuple[PostgresStore, PostgresStore], postgres_server: PostgresServer
) -> None:
    writer, reader = stores
    reader._replicas.wait = 2.0  # type: ignore[union-attr]
    hold = await asyncpg.connect(postgres_server.dsn)
    try:
        # Any transaction holding an id (here an unrelated one) keeps a hot standby's
        # snapshot xmin, and so its log horizon, below it until it ends.
        await hold.execute("BEGIN")
        await hold.fetchval("SELECT pg_current_xact_id()")
        result = await writer.append([NewEvent("held", "Opened", b"{}")])
        token = result.write_token
        started = time.monotonic()
        events = await reader.read_stream("held", after=token)
        assert time.monotonic() - started < 2.0  # visible on the replica: served there
        assert [e.position for e in events] == [token.position]
        started = time.monotonic()
        page = await reader.read_all(after_position=token.position - 1, after=token)
        # The replica's horizon stays below the write: the primary answers (its horizon
        # counts only the store's own appends in flight).
        assert time.monotonic() - started >= 2.0
        assert [e.position for e in page] == [token.position]
    finally:
        await hold.execute("ROLLBACK")
        await hold.close()
    page = await reader.read_all(after_position=token.position - 1, after=token)
    assert [e.position for e in page] == [token.position]


async def test_a_replica_read_waits_only_until_the_replica_catches_up(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    writer, reader = stores
    async with replay_paused(postgres_replica):
        result = await writer.append([NewEvent("catch", "Opened", b"{}")])

        async def resume_soon() -> None:
            await asyncio.sleep(0.2)
            conn = await asyncpg.connect(postgres_replica.admin_dsn)
            await conn.execute("SELECT pg_wal_replay_resume()")
            await conn.close()

        resume = asyncio.create_task(resume_soon())
        started = time.monotonic()
        events = await reader.read_stream("catch", after=result.write_token)
        assert [e.event_type for e in events] == ["Opened"]
        waited = time.monotonic() - started
        await resume
    assert 0.15 <= waited < 4.0, waited  # the replica served it once replayed


async def test_projection_catch_up_takes_a_token(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    writer, reader = stores
    seen: list[int] = []

    class Seen:
        name = "seen"

        def apply(self, event: Any) -> None:
            seen.append(event.position)

    async with ProjectionRunner(reader, Seen(), poll_interval=0.05) as runner:
        result = await writer.append([NewEvent("proj", "Opened", b"{}")])
        await runner.wait_for(result.write_token, timeout=10)
        assert seen[-1] == result.last_position
        await runner.wait_for(NO_WRITE, timeout=0)


NO_RIDE = RetryPolicy(max_attempts=50, unavailable_timeout=0.0)


@pytest.fixture
def cluster() -> Any:
    primary, replica = launch_cluster(synchronous=True)
    try:
        yield primary, replica
    finally:
        replica.shutdown()
        primary.shutdown()


async def test_a_token_from_before_a_failover(cluster: Any) -> None:
    primary, replica = cluster
    hosts = f"127.0.0.1:{primary.port},127.0.0.1:{replica.port}"
    dsn = f"postgresql://{SUPERUSER}@{hosts}/{DB_NAME}?target_session_attrs=read-write"
    replica_dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{replica.port}/{DB_NAME}"
    store = PostgresStore(dsn, schema=new_schema_name(), registry=BANK, connect_timeout=2)
    await store.migrate()
    await open_accounts(store, ["acc"], 0)
    before = (await execute(store, Deposit(account="acc", amount=1))).write_token
    reader = PostgresStore(
        dsn, schema=store.schema, replicas=[replica_dsn], replica_wait=5.0, connect_timeout=2
    )
    assert (await reader.read_stream("acc", after=before))[-1].position == before.position
    await asyncio.to_thread(primary.crash)
    await asyncio.to_thread(replica.promote)
    deadline = time.monotonic() + 30
    while True:  # commands resume against the promoted replica
        try:
            after = (await execute(store, Deposit(account="acc", amount=1))).write_token
            break
        except (StoreUnavailable, OutcomeUnknown):
            assert time.monotonic() < deadline, "commands did not resume"
            await asyncio.sleep(0.1)
    assert after.timeline > before.timeline  # a promotion starts a new timeline
    assert after.position > before.position
    while True:  # the reader's connections to the dead primary fail once
        try:
            started = time.monotonic()
            events = await reader.read_stream("acc", after=before)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "reads did not resume"
            await asyncio.sleep(0.1)
    # The old token is not waited for (replica_wait is 5 s): the new primary answers,
    # and its log holds the acknowledged write (synchronous replication).
    assert time.monotonic() - started < 4.0
    assert before.position in [e.position for e in events]
    assert (await reader.read_stream("acc", after=after))[-1].position == after.position
    await reader.close()
    await store.close()


def test_cli_reads_take_a_token(postgres_server: PostgresServer, postgres_replica: Replica) -> None:
    from click.testing import CliRunner

    from eventcore.cli._app import cli

    schema = new_schema_name()

    async def setup() -> None:
        async with PostgresStore(postgres_server.dsn, schema=schema) as store:
            await store.migrate()
            await store.append([NewEvent("cli-t", "Opened", b"{}")])
        await postgres_replica.wait_replayed(postgres_server.dsn)

    asyncio.run(setup())
    env = {"EVENTCORE_REPLICAS": postgres_replica.dsn}
    base = ["--dsn", postgres_server.dsn, "--schema", schema, "--json"]

    def versions(args: list[str]) -> list[int]:
        out = CliRunner().invoke(cli, args, env=env)
        assert out.exit_code == 0, out.output
        return [json.loads(line)["version"] for line in out.output.splitlines()]

    async def append_unreplayed() -> None:
        async with replay_paused(postgres_replica):
            async with PostgresStore(postgres_server.dsn, schema=schema) as store:
                token = str(
                    (await store.append([NewEvent("cli-t", "Deposited", b"{}")])).write_token
                )
            # The replica has not replayed it: without the token the CLI reads miss it.
            assert await asyncio.to_thread(versions, ["read", "cli-t", *base]) == [1]
            with_token = ["read", "cli-t", *base, "--after-token", token]
            assert await asyncio.to_thread(versions, with_token) == [1, 2]
            tail = ["tail", "-n", "5", *base, "--after-token", token]
            assert await asyncio.to_thread(versions, tail) == [1, 2]

    try:
        asyncio.run(append_unreplayed())
        bad = CliRunner().invoke(cli, ["read", "cli-t", *base, "--after-token", "x"], env=env)
        assert bad.exit_code == 2 and "timeline:position" in bad.output
    finally:
        asyncio.run(drop_schema(postgres_server.dsn, schema))


@pytest.fixture(scope="module")
def second_replica(postgres_server: PostgresServer) -> Any:
    """Another streaming replica of the session's server (two replay points at once)."""
    replica = Replica.launch(postgres_server.pg_ctl, postgres_server.port)  # type: ignore[arg-type]
    try:
        yield replica
    finally:
        replica.shutdown()


async def test_a_subscription_over_two_replicas_at_different_points_never_skips(
    postgres_store_factory: Any,
    postgres_server: PostgresServer,
    postgres_replica: Replica,
    second_replica: Replica,
) -> None:
    from eventcore.projection import Subscription

    writer = await postgres_store_factory()
    # Not from the factory: it migrates, and a store that wrote reads its own writes (a
    # token on every read); a pure reader's reads take the replicas in turn.
    reader = PostgresStore(
        postgres_server.dsn,
        schema=writer.schema,
        replicas=[postgres_replica.dsn, second_replica.dsn],
    )
    first = await writer.append([NewEvent("two", "Opened", b"{}")])
    await postgres_replica.wait_replayed(postgres_server.dsn)
    await second_replica.wait_replayed(postgres_server.dsn)
    await reader.replica_status()
    async with replay_paused(second_replica):
        later = await writer.append([NewEvent("two", "Deposited", b"{}")])
        await postgres_replica.wait_replayed(postgres_server.dsn)
        # One replica has the second event, the other not: the head read on one and the
        # page on the other must not make the cursor pass an event it did not deliver.
        for n in range(6):
            if n % 2:
                await reader.stream_version("two")  # the next read goes to the other replica
            sub = Subscription(reader, after_position=first.last_position, live=False)
            delivered = [e.position async for page in sub for e in page.events]
            assert sub.position <= max(delivered, default=first.last_position) or (
                later.last_position in delivered
            ), (delivered, sub.position)
    await reader.close()


async def test_a_store_told_a_token_shows_the_write_to_its_subscriptions(
    stores: tuple[PostgresStore, PostgresStore], postgres_replica: Replica
) -> None:
    from eventcore.projection import Subscription

    writer, reader = stores
    reader._replicas.wait = 0.3  # type: ignore[union-attr]
    first = await writer.append([NewEvent("sub", "Opened", b"{}")])
    reader.read_after(first.write_token)
    assert [e.version for e in await reader.read_stream("sub")] == [1]
    async with replay_paused(postgres_replica):
        second = await writer.append([NewEvent("sub", "Deposited", b"{}")])
        sub = Subscription(reader, after_position=first.last_position, live=False)
        assert [e.position async for page in sub for e in page.events] == []  # lagging
        reader.read_after(second.write_token)
        reader.read_after(first.write_token)  # an older one changes nothing
        sub = Subscription(reader, after_position=first.last_position, live=False)
        delivered = [e.position async for page in sub for e in page.events]
        assert delivered == [second.last_position]
    # Replayed: the replica serves again. Another timeline's token is ignored (waiting
    # for its position would take replica_wait, then the primary).
    reader._replicas.wait = 2.0  # type: ignore[union-attr]
    reader.read_after(WriteToken(second.write_token.timeline + 1, 1 << 62))
    started = time.monotonic()
    assert [e.version for e in await reader.read_stream("sub")] == [1, 2]
    assert time.monotonic() - started < 1.5
    with pytest.raises(ValidationError):
        reader.read_after("1:2")  # type: ignore[arg-type]
