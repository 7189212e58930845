"""The PostgreSQL store's own connection pool (``eventcore.postgres._pool.ConnectionPool``).

Behaviour against a real server: reuse (LIFO) and the size getters, the ``max_size``
bound under load, first-come first-served waiters, cancellation of waiters (including the
race where a waiter is cancelled in the loop turn it is handed a connection or a slot),
statements cancelled or timed out mid-flight, server errors, connections killed by the
server, connections given back inside a transaction, connect failures, ``close()`` and
``terminate()``. Also: a store on a borrowed ``asyncpg.Pool``.

Every pool connection gets an ``application_name`` unique to the test, so the test can
count its backends in ``pg_stat_activity`` on the server side.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from tests.folds import fold_streams
from tests.pgserver import drop_schema, new_schema_name

from eventcore import NewEvent
from eventcore.postgres import PostgresStore
from eventcore.postgres._pool import ConnectionPool, PoolClosed

pytestmark = pytest.mark.postgres

PID = "SELECT pg_backend_pid()"
# Errors a statement sent on a connection the server already closed may raise.
LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)


class Pools:
    """Makes pools for one test; remembers every connection they open; cleans up."""

    def __init__(self, dsn: str, admin: asyncpg.Connection) -> None:
        self.dsn = dsn
        self.admin = admin
        self.app = f"pooltest_{uuid.uuid4().hex[:12]}"
        self.opened: list[asyncpg.Connection] = []
        self._pools: list[ConnectionPool] = []

    async def connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, server_settings={"application_name": self.app})
        self.opened.append(conn)
        return conn

    def new(
        self,
        *,
        min_size: int = 0,
        max_size: int,
        connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
    ) -> ConnectionPool:
        pool = ConnectionPool(connect or self.connect, min_size=min_size, max_size=max_size)
        self._pools.append(pool)
        return pool

    async def backends(self) -> int:
        """This test's connections the server has open."""
        return int(
            await self.admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
            )
        )

    async def wait_backends(self, expected: int, timeout: float = 3.0) -> int:
        """Poll until the server shows ``expected`` backends (a closed one exits shortly)."""
        deadline = time.monotonic() + timeout
        while (n := await self.backends()) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return n

    async def wait_running(self, pid: int, timeout: float = 3.0) -> None:
        """Wait until backend ``pid`` is running a ``pg_sleep`` statement."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await self.admin.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%'",
                pid,
            )
            if state == "active":
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"backend {pid} never ran the statement")

    def cleanup(self) -> None:
        for pool in self._pools:
            pool.terminate()
        for conn in self.opened:
            if not conn.is_closed():
                conn.terminate()


@pytest.fixture
async def admin(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pools(postgres_dsn: str, admin: asyncpg.Connection) -> AsyncIterator[Pools]:
    made = Pools(postgres_dsn, admin)
    try:
        yield made
    finally:
        made.cleanup()


def _kill_while_loop_is_blocked(dsn: str, pid: int) -> None:
    """Terminate backend ``pid`` from another thread and wait until it is gone.

    Called without ``await``, so the test's event loop does not run meanwhile: the client
    side of the killed connection has not yet seen the end of its socket.
    """

    async def kill() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            for _ in range(300):
                if not await conn.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"backend {pid} did not exit")
        finally:
            await conn.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kill())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


# -- sizes and reuse ------------------------------------------------------------------


async def test_open_opens_min_size_and_getters(pools):
    # open() opens exactly min_size connections (server-side too); the getters agree.
    pool = pools.new(min_size=2, max_size=4)
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert (pool.get_min_size(), pool.get_max_size()) == (2, 4)
    assert await pool.open() is pool
    assert (pool.get_size(), pool.get_idle_size()) == (2, 2)
    assert len(pools.opened) == 2
    assert await pools.backends() == 2
    await pool.open()  # already at min_size: opens nothing more
    assert pool.get_size() == 2 and len(pools.opened) == 2
    for low, high in [(2, 1), (-1, 1), (0, 0)]:
        with pytest.raises(ValueError):
            ConnectionPool(pools.connect, min_size=low, max_size=high)
    await pool.close()


async def test_connections_are_reused_most_recent_first(pools):
    # Idle connections are reused (same backend pid), the last given back first (LIFO).
    pool = pools.new(max_size=3)
    conns = [await pool.acquire() for _ in range(3)]
    pids = [await c.fetchval(PID) for c in conns]
    assert len(set(pids)) == 3
    assert (pool.get_size(), pool.get_idle_size()) == (3, 0)
    for conn in conns:
        await pool.release(conn)
    assert (pool.get_size(), pool.get_idle_size()) == (3, 3)
    assert await pool.fetchval(PID) == pids[2]  # the last released
    assert await pool.fetchval(PID) == pids[2]  # ...and it is back on top
    first, second = await pool.acquire(), await pool.acquire()
    assert [await first.fetchval(PID), await second.fetchval(PID)] == [pids[2], pids[1]]
    assert pool.get_idle_size() == 1
    await pool.release(first)
    await pool.release(second)
    assert len(pools.opened) == 3  # nothing opened beyond the first three
    await pool.close()


# -- the max_size bound and fairness --------------------------------------------------


async def test_never_more_than_max_size_connections(pools):
    # 30 concurrent tasks on max_size=3 all finish; at no time more than 3 connections
    # exist (pool size, holders, distinct pids, connect calls, server-side backends).
    pool = pools.new(max_size=3)
    pids: set[int] = set()
    holders = peak_holders = peak_size = peak_backends = 0
    done = asyncio.Event()

    async def work(i: int) -> int:
        nonlocal holders, peak_holders, peak_size
        if i % 2:  # the one-statement path
            pid = await pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.01)")
        else:
            async with pool.acquire() as conn:
                holders += 1
                peak_holders = max(peak_holders, holders)
                pid = await conn.fetchval(PID)
                await asyncio.sleep(0.01)
                holders -= 1
        peak_size = max(peak_size, pool.get_size())
        pids.add(pid)
        return i

    async def monitor() -> None:
        nonlocal peak_backends
        while not done.is_set():
            peak_backends = max(peak_backends, await pools.backends())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(monitor())
    results = await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(30))), 10)
    done.set()
    await watcher
    assert sorted(results) == list(range(30))
    assert len(pids) == 3  # all three slots were used, never a fourth
    assert len(pools.opened) == 3
    assert peak_holders <= 3 and peak_size == 3
    assert 0 < peak_backends <= 3
    assert (pool.get_size(), pool.get_idle_size()) == (3, 3)
    await pool.close()


async def test_waiters_are_served_first_come_first_served(pools):
    # Callers queued behind a busy pool get the connection in the order they asked.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with pool.acquire() as conn:
            order.append(i)
            assert conn is held  # handed on, never reopened
            await asyncio.sleep(0.005)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0.005)  # queue each one before the next
    assert order == []
    await pool.release(held)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3, 4]
    assert len(pools.opened) == 1
    await pool.close()


# -- cancelled waiters ----------------------------------------------------------------


async def test_cancelled_waiter_leaks_nothing(pools):
    # A waiter cancelled while queued does not take the next released connection.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    pid = await held.fetchval(PID)
    waiter = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (pool.get_size(), pool.get_idle_size()) == (1, 0)
    await pool.release(held)
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)  # back idle, not lost
    assert await asyncio.wait_for(pool.fetchval(PID), 2) == pid
    assert len(pools.opened) == 1
    await pool.close()


async def test_waiter_cancelled_in_the_turn_it_is_handed_a_connection(pools):
    # release() hands the connection to the queued waiter (its future is resolved at
    # once); cancelling the waiter before it runs must put the connection back: idle when
    # nobody else waits, or handed to the next waiter.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    pid = await held.fetchval(PID)

    alone = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.02)
    await pool.release(held)  # never suspends: no loop turn before the cancel
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)

    held = await pool.acquire()
    first = asyncio.create_task(pool.fetchval(PID))
    second = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.02)
    await pool.release(held)  # handed to `first`...
    first.cancel()  # ...which is cancelled in the same turn
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 2) == pid  # passed on to the next waiter
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    assert len(pools.opened) == 1
    await pool.close()


async def test_waiter_cancelled_in_the_turn_it_is_handed_a_slot(pools):
    # A dropped connection reserves its slot for the first waiter (which would open a
    # new connection); cancelled in that same turn, the waiter gives the slot up: freed
    # when nobody else waits, or handed to the next waiter.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    await held.execute("BEGIN")  # given back inside a transaction: dropped

    alone = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.02)
    await pool.release(held)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert isinstance(await asyncio.wait_for(pool.fetchval(PID), 2), int)

    held = await pool.acquire()
    await held.execute("BEGIN")
    old_pid = await held.fetchval(PID)
    first = asyncio.create_task(pool.fetchval(PID))
    second = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.02)
    await pool.release(held)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    new_pid = await asyncio.wait_for(second, 2)
    assert new_pid != old_pid  # `second` opened a connection in the freed slot
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    await pool.close()


# -- statements that do not end normally -----------------------------------------------


async def test_statement_cancelled_mid_flight_terminates_its_connection(pools):
    # A cancelled statement may leave the protocol mid-message: its connection is
    # terminated, never reused, and its slot is free for a new one.
    pool = pools.new(max_size=1)
    pid = await pool.fetchval(PID)
    started = time.monotonic()
    sleeper = asyncio.create_task(pool.fetchval("SELECT pg_sleep(5)"))
    await pools.wait_running(pid)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert pools.opened[0].is_closed()
    new_pid = await asyncio.wait_for(pool.fetchval(PID), 2)  # the slot was freed
    assert new_pid != pid
    assert time.monotonic() - started < 4  # did not wait for the statement
    assert (pool.get_size(), len(pools.opened)) == (1, 2)
    await pool.close()


async def test_client_side_timeout_terminates_its_connection(pools):
    # asyncio.wait_for around a statement: same as a cancel, the connection is dropped.
    pool = pools.new(max_size=1)
    pid = await pool.fetchval(PID)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.fetchval("SELECT pg_sleep(5)"), 0.2)
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert pools.opened[0].is_closed()
    assert await asyncio.wait_for(pool.fetchval(PID), 2) != pid
    assert pool.get_size() == 1
    await pool.close()


async def test_server_error_keeps_the_connection(pools):
    # An error reported by the server leaves the connection usable: it is kept and
    # reused, and the asyncpg error reaches the caller, for every statement method.
    pool = pools.new(max_size=2)
    pid = await pool.fetchval(PID)
    for run in (pool.fetchval, pool.fetchrow, pool.fetch, pool.execute):
        with pytest.raises(asyncpg.DivisionByZeroError):
            await run("SELECT 1/0")
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
        assert await pool.fetchval(PID) == pid
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.execute("SELECT * FROM no_such_table_here")
    with pytest.raises(asyncpg.DivisionByZeroError):  # escaping the `async with` body
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1/0")
    assert await pool.fetchval(PID) == pid
    # The normal results of each method, on the same connection.
    assert [tuple(r) for r in await pool.fetch("SELECT 1, 'a' UNION ALL SELECT 2, 'b'")] == [
        (1, "a"),
        (2, "b"),
    ]
    assert tuple(await pool.fetchrow("SELECT 3, 4")) == (3, 4)
    assert await pool.fetchrow("SELECT 1 WHERE false") is None
    assert await pool.execute("SELECT $1::int", 5) == "SELECT 1"
    assert len(pools.opened) == 1
    await pool.close()


async def test_connection_killed_while_idle_is_replaced(pools, admin):
    # Killed by the server while idle, once the loop has run (so the client saw the
    # socket close): is_closed() is true, the pool drops it before reuse and the next
    # statement simply runs on a new connection.
    pool = pools.new(max_size=2)
    pid = await pool.fetchval(PID)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(200):
        if pools.opened[0].is_closed():
            break
        await asyncio.sleep(0.01)
    assert pools.opened[0].is_closed()
    assert pool.get_idle_size() == 1  # still listed until the next acquire looks at it
    new_pid = await pool.fetchval(PID)
    assert new_pid != pid
    assert (pool.get_size(), pool.get_idle_size(), len(pools.opened)) == (1, 1, 2)
    await pool.close()


async def test_connection_killed_before_the_client_noticed(pools, postgres_dsn):
    # Killed while the event loop does not run: the socket's end is not seen yet, so
    # is_closed() is false and the pool reuses it. Observed: that one statement fails
    # (asyncpg raises ConnectionDoesNotExistError, "connection was closed in the middle
    # of operation"); the connection is dropped and the next statement works on a new one.
    pool = pools.new(max_size=2)
    pid = await pool.fetchval(PID)
    _kill_while_loop_is_blocked(postgres_dsn, pid)
    assert not pools.opened[0].is_closed()
    with pytest.raises(LOST):
        await asyncio.wait_for(pool.fetchval(PID), 5)
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert pools.opened[0].is_closed()
    assert await pool.fetchval(PID) not in (None, pid)
    assert pool.get_size() == 1 <= pool.get_max_size()
    await pool.close()


async def test_connection_given_back_inside_a_transaction_is_dropped(pools):
    # A connection still inside a transaction is terminated on release, not reused, and
    # its slot is freed; one whose transaction ended is kept.
    pool = pools.new(max_size=1)
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        pid = await conn.fetchval(PID)
    assert conn.is_closed()
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)

    conn = await asyncio.wait_for(pool.acquire(), 2)
    second_pid = await conn.fetchval(PID)
    assert second_pid != pid
    await conn.execute("BEGIN")
    await pool.release(conn)  # the awaited form drops it too
    assert conn.is_closed() and pool.get_size() == 0

    async with pool.acquire() as conn, conn.transaction():
        third_pid = await conn.fetchval(PID)
    assert not conn.is_closed()
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    assert await pool.fetchval(PID) == third_pid not in (pid, second_pid)
    await pool.close()


# -- acquire / release ------------------------------------------------------------------


async def test_acquire_awaited_or_as_context_and_bad_release(pools, postgres_dsn):
    # Both acquire forms lend (and take back) the same idle connection; releasing a
    # connection twice, or one the pool did not lend, raises and changes nothing.
    pool = pools.new(max_size=2)
    conn = await pool.acquire()
    assert await conn.fetchval("SELECT 1") == 1
    assert (pool.get_size(), pool.get_idle_size()) == (1, 0)
    await pool.release(conn)
    assert pool.get_idle_size() == 1
    async with pool.acquire() as again:
        assert again is conn
        assert pool.get_idle_size() == 0
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)

    with pytest.raises(asyncpg.InterfaceError):
        await pool.release(conn)  # already given back
    foreign = await asyncpg.connect(postgres_dsn)
    try:
        with pytest.raises(asyncpg.InterfaceError):
            await pool.release(foreign)
        assert not foreign.is_closed()  # left alone
    finally:
        await foreign.close()
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)

    # An ordinary exception leaving the `async with` body keeps the connection; a
    # timeout (the protocol state is then unknown) drops it.
    with pytest.raises(ValueError):
        async with pool.acquire() as again:
            raise ValueError
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    with pytest.raises(TimeoutError):
        async with pool.acquire() as again:
            raise TimeoutError
    assert again.is_closed()
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    await pool.close()


async def test_connect_failure_frees_the_slot_for_a_waiter(pools):
    # max_size=1: the first caller's connect fails while a second caller is queued
    # behind it; the failure reaches the first caller and the second gets a connection.
    calls = 0

    async def flaky() -> asyncpg.Connection:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            raise ConnectionRefusedError("refused (test)")
        return await pools.connect()

    pool = pools.new(max_size=1, connect=flaky)
    first = asyncio.create_task(pool.fetchval(PID))
    second = asyncio.create_task(pool.fetchval(PID))
    await asyncio.sleep(0.01)
    assert pool.get_size() == 1  # the failing connect holds the only slot
    with pytest.raises(ConnectionRefusedError):
        await first
    assert isinstance(await asyncio.wait_for(second, 2), int)
    assert calls == 2
    assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
    await pool.close()


# -- close and terminate ---------------------------------------------------------------


async def test_close_closes_idle_connections_then_refuses(pools):
    # close() closes the idle connections (gone on the server too); afterwards every
    # way to get a connection raises PoolClosed.
    pool = pools.new(min_size=2, max_size=3)
    await pool.open()
    assert await pools.backends() == 2
    await asyncio.wait_for(pool.close(), 5)
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    assert all(conn.is_closed() for conn in pools.opened)
    assert await pools.wait_backends(0) == 0
    with pytest.raises(PoolClosed):
        await pool.acquire()
    with pytest.raises(PoolClosed):
        async with pool.acquire():
            pass
    with pytest.raises(PoolClosed):
        await pool.fetchval("SELECT 1")
    assert issubclass(PoolClosed, asyncpg.InterfaceError)
    assert len(pools.opened) == 2  # nothing was opened for the refused calls


async def test_close_fails_waiters_and_waits_for_holders(pools):
    # close(): a queued waiter gets PoolClosed at once; close() itself returns only when
    # the held connection is given back, and then closes it.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.02)
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0.05)
    with pytest.raises(PoolClosed):
        await waiter
    assert not closing.done()  # waiting for `held`
    assert await held.fetchval("SELECT 1") == 1  # still usable by its holder
    await pool.release(held)
    await asyncio.wait_for(closing, 2)
    assert held.is_closed()
    assert pool.get_size() == 0


async def test_terminate_closes_everything_at_once(pools):
    # terminate(): held and idle connections are closed at once, waiters fail, and
    # holders giving theirs back afterwards (either acquire form) do not raise.
    pool = pools.new(max_size=2)
    held = await pool.acquire()
    go = asyncio.Event()

    async def holder() -> bool:
        async with pool.acquire() as conn:
            await go.wait()
            return conn.is_closed()

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0.02)
    waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.02)
    assert pool.get_size() == 2
    pool.terminate()
    assert (pool.get_size(), pool.get_idle_size()) == (0, 0)
    with pytest.raises(PoolClosed):
        await waiter
    assert held.is_closed()
    await pool.release(held)  # no error
    go.set()
    assert await holding is True  # its connection was closed; the exit did not raise
    with pytest.raises(PoolClosed):
        await pool.acquire()

    idle_pool = pools.new(min_size=1, max_size=1)
    await idle_pool.open()
    idle_pool.terminate()
    assert all(conn.is_closed() for conn in pools.opened)
    assert await pools.wait_backends(0) == 0


async def test_close_while_a_connection_is_being_opened(pools):
    # A connection that finishes opening after close() began is closed, the caller gets
    # PoolClosed, and close() returns.
    async def slow() -> asyncpg.Connection:
        await asyncio.sleep(0.1)
        return await pools.connect()

    pool = pools.new(max_size=1, connect=slow)
    caller = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.02)  # the connection is being opened
    try:
        await asyncio.wait_for(pool.close(), 1)
    finally:
        with pytest.raises(PoolClosed):
            await caller
    assert pool.get_size() == 0


async def test_two_concurrent_closes_both_return(pools):
    # Both close() calls wait for the held connection, and both return once it is back.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    first = asyncio.create_task(pool.close())
    second = asyncio.create_task(pool.close())
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()
    await pool.release(held)
    await asyncio.wait_for(asyncio.gather(first, second), 2)
    assert held.is_closed() and pool.get_size() == 0


async def test_a_cancelled_open_leaves_a_usable_pool(pools):
    # open() cancelled while its connections are being opened gives their slots back:
    # the pool can still lend max_size connections afterwards.
    async def slow() -> asyncpg.Connection:
        await asyncio.sleep(0.3)
        return await pools.connect()

    pool = pools.new(min_size=2, max_size=2, connect=slow)
    opening = asyncio.create_task(pool.open())
    await asyncio.sleep(0.05)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert pool.get_size() == 0
    results = await asyncio.wait_for(
        asyncio.gather(pool.fetchval("SELECT 1"), pool.fetchval("SELECT 2")), 3
    )
    assert results == [1, 2]
    assert pool.get_size() == 2


async def test_terminate_reaches_a_connection_being_handed_to_a_waiter(pools):
    # A connection given back to a queued waiter that has not run yet is closed by a
    # terminate() in the same loop turn; the waiter gets PoolClosed, not a live connection.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.02)
    await pool.release(held)  # handed to the waiter, which has not resumed yet
    pool.terminate()
    with pytest.raises(PoolClosed):
        await waiter
    assert held.is_closed()
    assert pool.get_size() == 0
    assert await pools.wait_backends(0) == 0


async def test_releasing_twice_while_a_waiter_queues_raises(pools):
    # A double release must not lend one connection to two callers.
    pool = pools.new(max_size=1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.02)
    await pool.release(held)
    with pytest.raises(asyncpg.InterfaceError):
        await pool.release(held)
    got = await waiter
    assert got is held
    await pool.release(got)
    assert pool.get_idle_size() == 1


# -- a store on a borrowed asyncpg pool -------------------------------------------------


async def test_store_on_a_borrowed_asyncpg_pool(postgres_dsn):
    # PostgresStore(pool=asyncpg.Pool) uses that pool as it is: it migrates, appends,
    # reads and folds through it, and closing the store leaves the pool open.
    borrowed = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    schema = new_schema_name()
    try:
        store = PostgresStore(pool=borrowed, schema=schema)
        assert await store.migrate() == PostgresStore.latest_schema_version()
        result = await store.append([NewEvent("acct", "n", b"5"), NewEvent("acct", "n", b"7")])
        assert dict(result.stream_versions) == {"acct": 2}
        assert [e.payload for e in await store.read_stream("acct")] == [b"5", b"7"]

        def apply(state: int, value: Any, stream_id: str) -> int:
            return state + int(value)

        folded = await fold_streams(store, ["acct", "none"], 0, apply, {"n": bytes.decode})
        assert folded == (12, [2, 0])
        await store.close()
        assert not borrowed.is_closing()
        assert await borrowed.fetchval(f'SELECT count(*) FROM "{schema}".events') == 2
    finally:
        await borrowed.close()
        await drop_schema(postgres_dsn, schema)


# -- connections lent to user code are reset -------------------------------------------

SESSION = (
    "SELECT current_setting('statement_timeout'), current_setting('search_path'),"
    " current_setting('application_name'), current_user = session_user,"
    " to_regclass('pg_temp.scratch') IS NULL,"
    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
    " (SELECT count(*) FROM pg_listening_channels()), pg_backend_pid()"
)


async def _dirty(conn: asyncpg.Connection, role: str) -> None:
    """What a projection's apply_in_transaction code might leave in its session."""
    await conn.execute("SET statement_timeout = '1s'")
    await conn.execute("SET search_path = elsewhere")
    await conn.execute("SET application_name = 'user code'")
    await conn.execute("CREATE TEMP TABLE scratch (x int)")
    await conn.execute("SELECT pg_advisory_lock(4242)")
    await conn.add_listener("user_channel", lambda *a: None)
    await conn.execute(f'SET ROLE "{role}"')


@pytest.fixture
async def role(admin: asyncpg.Connection) -> AsyncIterator[str]:
    name = f"pool_role_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE ROLE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP ROLE "{name}"')


async def test_a_lent_connection_is_reset_before_reuse(pools, role):
    from eventcore.postgres._pool import PooledConnection

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(
            pools.dsn,
            server_settings={"application_name": pools.app, "statement_timeout": "12345"},
            connection_class=PooledConnection,
        )
        pools.opened.append(conn)
        return conn

    pool = pools.new(max_size=1, connect=connect)
    async with pool.lend() as conn:
        fresh = await conn.fetchrow(SESSION)
        await _dirty(conn, role)
        assert (await conn.fetchrow(SESSION))[:4] != fresh[:4]
    async with pool.acquire() as again:  # the same connection (max_size=1)
        assert tuple(await again.fetchrow(SESSION)) == tuple(fresh)
        assert fresh[0] == "12345ms" and fresh[2] == pools.app  # as it was opened
        await again.add_listener("user_channel", lambda *a: None)  # LISTENs again
        assert await again.fetchval("SELECT count(*) FROM pg_listening_channels()") == 1
        await again.remove_listener("user_channel", lambda *a: None)
    assert pool.get_size() == 1


async def test_the_stores_own_statements_skip_the_reset(pools):
    # acquire() (every statement of the store) gives the connection back as it is: no
    # reset round trip; only lend() resets.
    pool = pools.new(max_size=1)
    async with pool.acquire() as conn:
        await conn.execute("SET search_path = kept")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW search_path") == "kept"


async def test_a_transactional_projection_cannot_leak_session_state(postgres_store_factory, role):
    from eventcore.projection import ProjectionRunner

    store = await postgres_store_factory(max_size=1)  # one pooled connection: the one lent
    async with store._borrow() as conn:
        fresh = await conn.fetchrow(SESSION)

    class Dirty:
        name = "dirty"
        batches = 0

        async def apply_in_transaction(self, events, connection):
            self.batches += 1
            await connection.execute("SET search_path = elsewhere")
            await connection.execute("SELECT pg_advisory_lock(4242)")
            await connection.execute(f'SET ROLE "{role}"')

    await store.append([NewEvent("s", "t", b"") for _ in range(5)])
    projection = Dirty()
    await ProjectionRunner(store, projection, page_size=2).run_until_caught_up()
    assert projection.batches == 3
    async with store._borrow() as conn:
        assert tuple(await conn.fetchrow(SESSION)) == tuple(fresh)
