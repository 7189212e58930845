"""Through PgBouncer in transaction pooling mode (the suite's own, tests/pgserver.py).

The contract suite and the projection tests run through it too (their
``postgres-pgbouncer`` parameter); here: commands under concurrency, what the store's
default mode hits there, and the sessions PgBouncer cannot give (LISTEN, leader leases)
on a direct connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.pgserver import Bouncer, drop_schema, new_schema_name
from tests.postgres.pg_bank import BANK, Deposit, Transfer, balance_of, open_accounts

from eventcore import NewEvent, RetryPolicy, execute
from eventcore.errors import StoreUnavailable, ValidationError
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner

pytestmark = pytest.mark.postgres


async def test_commands_run_concurrently_through_pgbouncer(pgbouncer_store: PostgresStore) -> None:
    store = pgbouncer_store
    store.registry = BANK
    names = [f"acc-{i}" for i in range(8)]
    await open_accounts(store, names, 100)

    retry = RetryPolicy(max_attempts=50)

    async def client(i: int) -> None:
        # Neighbours share an account: conflicts, retried by the executor.
        for j in range(10):
            source, target = names[i], names[(i + 1) % 8]
            await execute(
                store, Transfer(source=source, target=target, amount=1 + j % 3), retry=retry
            )
            await execute(store, Deposit(account=names[i], amount=1), retry=retry)

    await asyncio.gather(*(client(i) for i in range(8)))
    balances = [await balance_of(store, name) for name in names]
    assert sum(balances) == 8 * 100 + 8 * 10  # transfers move money, deposits add one each
    # Every client moved 1+2+3+1+2+3+1+2+3+1 = 19 to its neighbour and got 19 back.
    assert balances == [100 + 10] * 8
    assert [await store.stream_version(n) for n in names] == [2 + 10 + 10 + 10] * 8
    # No session of its own through PgBouncer: no leases, and waits poll the head.
    assert store.checkpoint_store().exclusive is False
    assert await store.subscribe_notifications() is False
    head = await store.head()
    await store.append([NewEvent("late", "E", b"1")])
    assert await store.wait_for_append(head, 5) > head


async def test_the_default_mode_is_refused_by_pgbouncer(pgbouncer: Bouncer) -> None:
    # asyncpg sends statement_timeout as a startup parameter, which PgBouncer refuses.
    store = PostgresStore(pgbouncer.dsn, schema=new_schema_name(), connect_timeout=5)
    with pytest.raises(StoreUnavailable, match="statement_timeout"):
        await store.open()
    await store.close()
    with pytest.raises(ValidationError):
        PostgresStore(pgbouncer.dsn, direct_dsn=pgbouncer.dsn)  # only with pgbouncer=True


async def test_leases_and_listen_use_the_direct_connection(
    pgbouncer: Bouncer, postgres_dsn: str
) -> None:
    schema = new_schema_name()
    stores = [
        PostgresStore(pgbouncer.dsn, schema=schema, pgbouncer=True, direct_dsn=postgres_dsn)
        for _ in range(2)
    ]
    seen: list[list[int]] = [[], []]

    def projection(i: int) -> Any:
        class Count:
            name = "count"

            def apply(self, event: Any) -> None:
                seen[i].append(event.position)

        return Count()

    try:
        await stores[0].migrate()
        assert stores[0].checkpoint_store().exclusive is True
        assert await stores[0].subscribe_notifications() is True
        runners = [
            ProjectionRunner(s, projection(i), takeover_interval=0.1) for i, s in enumerate(stores)
        ]
        async with runners[0], runners[1]:
            last = 0
            for n in range(5):
                last = (await stores[n % 2].append([NewEvent("x", "E", b"%d" % n)])).last_position
            # Exactly one runner holds the lease (a session lock on its direct connection).
            deadline = asyncio.get_running_loop().time() + 10
            while max(len(seen[0]), len(seen[1])) < 5:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            states = sorted([(await r.status())["count"].state for r in runners])
            assert states == ["live", "standby"], states
            assert sorted([len(seen[0]), len(seen[1])]) == [0, 5]
            assert max(seen[0] + seen[1]) == last
    finally:
        for s in stores:
            await s.close()
        await drop_schema(postgres_dsn, schema)
