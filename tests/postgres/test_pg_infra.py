"""The suite's extra servers: a streaming replica and PgBouncer (tests/pgserver.py)."""

from __future__ import annotations

import asyncpg
from tests.pgserver import Bouncer, PostgresServer, Replica, new_schema_name


async def test_replica_is_a_hot_standby_that_replays_the_primary(
    postgres_server: PostgresServer, postgres_replica: Replica
) -> None:
    schema = new_schema_name()
    primary = await asyncpg.connect(postgres_server.dsn)
    try:
        await primary.execute(f'CREATE TABLE "{schema}" (x int); INSERT INTO "{schema}" VALUES (7)')
        await postgres_replica.wait_replayed(postgres_server.dsn)
        replica = await asyncpg.connect(postgres_replica.dsn)
        try:
            assert await replica.fetchval("SELECT pg_is_in_recovery()") is True
            assert await replica.fetchval(f'SELECT x FROM "{schema}"') == 7
        finally:
            await replica.close()
    finally:
        await primary.execute(f'DROP TABLE "{schema}"')
        await primary.close()


async def test_pgbouncer_forwards_to_the_primary(
    postgres_server: PostgresServer, pgbouncer: Bouncer
) -> None:
    conn = await asyncpg.connect(pgbouncer.dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_database()") == "eventcore_test"
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        # Transaction pooling: a server connection's port is the server's, not PgBouncer's.
        assert await conn.fetchval("SELECT inet_server_port()") == postgres_server.port
    finally:
        await conn.close()
