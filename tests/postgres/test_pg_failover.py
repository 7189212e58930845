"""Failover: the primary crashes, its synchronous replica is promoted, the store follows.

A cluster of its own (tests/pgserver.py ``launch_cluster``: the session's servers are not
touched): a primary with a synchronous streaming replica. The store's DSN lists both hosts
with ``target_session_attrs=read-write``. Clients run commands all along; the primary is
killed (``pg_ctl stop -m immediate``), commands fail with ``StoreUnavailable`` (or
``OutcomeUnknown``) during the gap, the replica is promoted (``pg_ctl promote``), and
commands work again against it. Every acknowledged command's events are on the new
primary, and a projection that ran through it all resumes and sees every one of them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.pgserver import DB_NAME, SUPERUSER, launch_cluster, new_schema_name
from tests.postgres.pg_bank import BANK, Deposit, open_accounts

from eventcore import RetryPolicy, execute
from eventcore.errors import OutcomeUnknown, StoreUnavailable
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner

pytestmark = pytest.mark.postgres

# Ride out nothing: the gap is seen as errors by the clients (they retry themselves).
NO_RIDE = RetryPolicy(max_attempts=20, unavailable_timeout=0.0)


@pytest.fixture
def cluster() -> Any:
    primary, replica = launch_cluster(synchronous=True)
    try:
        yield primary, replica
    finally:
        replica.shutdown()
        primary.shutdown()


async def test_commands_follow_a_promoted_replica_and_lose_nothing_acknowledged(
    cluster: Any,
) -> None:
    primary, replica = cluster
    dsn = (
        f"postgresql://{SUPERUSER}@127.0.0.1:{primary.port},127.0.0.1:{replica.port}/{DB_NAME}"
        "?target_session_attrs=read-write"
    )
    store = PostgresStore(dsn, schema=new_schema_name(), registry=BANK, connect_timeout=2)
    await store.migrate()
    accounts = [f"acc-{i}" for i in range(4)]
    await open_accounts(store, accounts, 0)
    acknowledged: dict[str, int] = dict.fromkeys(accounts, 0)
    errors: list[BaseException] = []
    maybe: dict[str, int] = dict.fromkeys(accounts, 0)  # outcome unknown: 0 or 1 each
    stop = asyncio.Event()
    seen: list[int] = []

    class Deposits:
        name = "deposits"

        def apply(self, event: Any) -> None:
            seen.append(event.position)

    async def client(account: str) -> None:
        while not stop.is_set():
            try:
                await execute(store, Deposit(account=account, amount=1), retry=NO_RIDE)
            except OutcomeUnknown as exc:
                errors.append(exc)
                maybe[account] += 1
                await asyncio.sleep(0.05)
            except StoreUnavailable as exc:
                errors.append(exc)
                await asyncio.sleep(0.05)
            else:
                acknowledged[account] += 1

    runner = ProjectionRunner(store, Deposits(), poll_interval=0.2)
    async with runner:
        clients = [asyncio.create_task(client(a)) for a in accounts]
        await asyncio.sleep(0.5)
        before = sum(acknowledged.values())
        assert before > 0
        await asyncio.to_thread(primary.crash)
        await asyncio.sleep(0.5)  # the gap: no primary at all
        in_gap = len(errors)
        assert in_gap > 0, "commands must fail while there is no primary"
        promoted_at = time.monotonic()
        await asyncio.to_thread(replica.promote)
        # Commands work again against the new primary.
        after_promotion = sum(acknowledged.values())
        while sum(acknowledged.values()) < after_promotion + 20:
            assert time.monotonic() - promoted_at < 30, "commands did not resume"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
        # Nothing acknowledged was lost: the new primary has every deposit.
        versions = {a: await store.stream_version(a) for a in accounts}
        for a in accounts:
            deposits = versions[a] - 2  # opened + the opening deposit
            assert acknowledged[a] <= deposits <= acknowledged[a] + maybe[a], (a, versions)
        head = await store.head()
        await runner.wait_for(head, timeout=30)
    # The projection resumed across the failover and saw every event (at least once: a
    # batch whose checkpoint was not saved when the primary died comes again).
    assert len(set(seen)) == sum(versions.values())
    async with PostgresStore(
        f"postgresql://{SUPERUSER}@127.0.0.1:{replica.port}/{DB_NAME}", schema=store.schema
    ) as direct:
        assert await direct.stream_version(accounts[0]) == versions[accounts[0]]
    await store.close()


def test_a_dsn_may_list_several_hosts_each_checked() -> None:
    from eventcore.errors import ConfigurationError
    from eventcore.postgres.store import check_dsn

    ok = "postgresql://app@db-a:5432,db-b:5433/app?target_session_attrs=read-write"
    assert check_dsn(ok) == ok
    with pytest.raises(ConfigurationError, match="malformed"):
        check_dsn("postgresql://app@db-a:5432,db-b:99999/app")
    with pytest.raises(ConfigurationError, match="malformed"):
        check_dsn("postgresql://app@db-a:x,db-b:5432/app")
