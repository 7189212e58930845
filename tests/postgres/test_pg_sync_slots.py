"""Connection slots shared across pools (``eventcore.postgres._pool.Slots``).

SyncPostgresStore bounds its connections with them: the loop thread's pool and every
thread's lane take a slot per connection. Here a pool given slots must never hold more
connections than it took slots, and must give every slot back when a connection is gone
(dropped, failed to open, closed, terminated).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventcore.postgres._pool import ConnectionPool, Slots

pytestmark = pytest.mark.postgres

PID = "SELECT pg_backend_pid()"


def test_slots_take_and_give() -> None:
    slots = Slots(2)
    assert slots.take(keep=1) and not slots.take(keep=1)  # never the last one with keep=1
    assert slots.take() and not slots.take()
    slots.give(2)
    assert slots.free == 2


async def test_a_pool_opens_only_the_slots_it_takes(postgres_dsn: str) -> None:
    slots = Slots(3)
    assert slots.take()  # held elsewhere (another thread's connection)
    pool = ConnectionPool(
        lambda: asyncpg.connect(postgres_dsn), min_size=3, max_size=5, slots=slots
    )
    await pool.open()  # min_size 3, but only 2 slots free
    assert (pool.get_size(), slots.free) == (2, 0)
    held = [await pool.acquire() for _ in range(2)]
    third = asyncio.create_task(pool.fetchval(PID))  # no slot: waits for a connection
    await asyncio.sleep(0.2)
    assert not third.done() and pool.get_size() == 2
    await pool.release(held.pop())
    assert isinstance(await asyncio.wait_for(third, 5), int)
    # A connection given back inside a transaction is dropped: its slot comes back.
    conn = held.pop()
    tr = conn.transaction()
    await tr.start()
    await pool.release(conn)
    assert (pool.get_size(), slots.free) == (1, 1)
    await pool.close()
    assert (pool.get_size(), slots.free) == (0, 2)


async def test_a_failed_connect_and_terminate_give_slots_back(postgres_dsn: str) -> None:
    slots = Slots(2)
    calls = 0

    async def flaky() -> asyncpg.Connection:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionRefusedError("refused (test)")
        return await asyncpg.connect(postgres_dsn)

    pool = ConnectionPool(flaky, min_size=0, max_size=2, slots=slots)
    with pytest.raises(ConnectionRefusedError):
        await pool.fetchval(PID)
    assert (pool.get_size(), slots.free) == (0, 2)
    a, b = await pool.acquire(), await pool.acquire()
    assert slots.free == 0
    await pool.release(a)
    pool.terminate()  # b still held: closed too
    assert b.is_closed()
    assert (pool.get_size(), slots.free) == (0, 2)
