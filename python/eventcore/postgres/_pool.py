"""The PostgreSQL store's own connection pool: asyncpg connections, a lean checkout.

Why not ``asyncpg.Pool``: the store runs one short autocommit statement per call, and
asyncpg's pool costs more than the statement's client side (the ``postgres.*`` keys of
``benches/headline.py`` measure the difference). Its release runs in a shielded task (one
more event-loop turn per statement), its acquire goes through a queue, a holder and a
proxy object, and it resets the session with a round trip on every release. The store's
own statements change no session state, so this pool resets a connection only after
lending it to user code (:meth:`ConnectionPool.lend`).

This pool keeps idle connections in a list (the most recently used is reused first, so a
light load stays on few warm connections), opens new ones up to ``max_size`` on demand,
and queues callers first-come first-served when every connection is busy. A connection is
checked before reuse and dropped (the slot is freed for a new one) when it is closed, was
given back inside a transaction, or its statement ended by anything other than an error
reported by the server: a cancelled task, a client-side timeout or a lost connection may
leave the protocol mid-statement, so such a connection is terminated, never reused.

A single statement (``fetch``, ``fetchrow``, ``fetchval``, ``execute`` and
:meth:`ConnectionPool.statement`) keeps its connection's client-side time limit
(``command_timeout``) without asyncpg's timer per statement (a timer handle pushed on and
cancelled from the event loop's heap, a large share of a short statement's client CPU):
the pool keeps one watchdog timer at the earliest deadline of its statements in flight,
and terminates a connection whose statement outlived its limit; the caller gets the
``TimeoutError`` asyncpg would have raised, and the connection is dropped as before.

It offers the part of the ``asyncpg.Pool`` interface the store uses: ``acquire()``
(awaited, or as ``async with``), ``release()``, ``fetch``, ``fetchrow``, ``fetchval``,
``execute``, ``close()``, ``terminate()`` and the size getters; and ``lend()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import asyncpg
from asyncpg.exceptions import _base as pgbase

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class PoolClosed(pgbase.InterfaceError):  # type: ignore[misc]
    """The pool was closed; nothing more can be acquired from it."""


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection whose :meth:`reset` undoes everything user code may change.

    asyncpg's own reset query (advisory locks, cursors, LISTENs, settings) plus the role
    and session authorization, temporary tables and sequence state. ``RESET ALL`` goes
    back to the settings the connection was opened with (its ``server_settings``).
    Prepared statements stay: they are the driver's statement cache.
    """

    def get_reset_query(self) -> str:
        """The statements :meth:`reset` runs (one round trip)."""
        return f"{super().get_reset_query()}\n{RESET_MORE}"


RESET_MORE = "SET SESSION AUTHORIZATION DEFAULT; DISCARD TEMP; DISCARD SEQUENCES;"
"""What :class:`PooledConnection` resets beyond asyncpg's default (``RESET ALL`` leaves
the role alone; resetting the session authorization resets it)."""


class Slots:
    """Connection slots shared by pools of several event loops (a bound across threads).

    A pool given ``slots`` opens a connection only after taking a slot and gives it back
    when the connection is gone; other holders (one connection per thread) take slots the
    same way. Thread-safe.
    """

    def __init__(self, total: int) -> None:
        self._lock = threading.Lock()
        self.free = total
        """Slots nobody holds."""

    def take(self, *, keep: int = 0) -> bool:
        """Take one slot if more than ``keep`` are free (``keep=1``: never the last)."""
        with self._lock:
            if self.free > keep:
                self.free -= 1
                return True
            return False

    def give(self, n: int = 1) -> None:
        """Give back ``n`` slots."""
        with self._lock:
            self.free += n


class ConnectionPool:
    """A first-come first-served pool of at most ``max_size`` asyncpg connections.

    Args:
        connect: opens one new connection (with every option it needs).
        min_size: connections :meth:`open` opens (open connections are kept, idle or not).
        max_size: the most connections open (or being opened) at once.
        slots: a bound shared with other holders: each connection of this pool holds one
            of its slots (when none is free, callers wait for a connection of this pool).
    """

    def __init__(
        self, connect: Connect, *, min_size: int, max_size: int, slots: Slots | None = None
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._connect = connect
        self._min_size = min_size
        self._max_size = max_size
        self._idle: list[asyncpg.Connection] = []
        self._in_use: set[asyncpg.Connection] = set()
        self._handing: set[asyncpg.Connection] = set()  # given to a waiter not yet running
        self._size = 0  # open or being opened
        # Callers waiting for a connection, oldest first; each future gets a connection,
        # or None: "a slot is free, open one yourself".
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closed = False
        self._drained: asyncio.Event | None = None
        self._slots = slots
        # Statements in flight under the watchdog: their connection -> deadline (monotonic
        # seconds), None once the watchdog terminated it; the watchdog's timer and when.
        self._watched: dict[asyncpg.Connection, float | None] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._untimed: dict[Any, Any] = {}  # a connection config -> the same, untimed

    # -- sizes -----------------------------------------------------------------------

    def get_size(self) -> int:
        """Connections open or being opened."""
        return self._size

    def get_idle_size(self) -> int:
        """Open connections nobody holds."""
        return len(self._idle)

    def get_min_size(self) -> int:
        """Connections :meth:`open` opens."""
        return self._min_size

    def get_max_size(self) -> int:
        """The most connections open at once."""
        return self._max_size

    # -- checkout ----------------------------------------------------------------------

    async def open(self) -> ConnectionPool:
        """Open ``min_size`` connections (at once); raises what opening one raised."""
        missing = self._min_size - self._size
        if self._slots is not None:  # the slots this pool may take now, at most
            missing = sum(self._slots.take() for _ in range(max(missing, 0)))
        if missing > 0:
            results = await asyncio.gather(
                *(self._open_idle() for _ in range(missing)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    self.terminate()
                    raise result
        return self

    async def _open_idle(self) -> None:
        self._put(await self._open_one())

    def acquire(self) -> _Lease:
        """A connection: ``conn = await pool.acquire()`` (then :meth:`release`) or
        ``async with pool.acquire() as conn:`` (released at the end)."""
        return _Lease(self)

    def lend(self) -> _Lease:
        """``async with pool.lend() as conn:`` a connection for user code, reset after.

        The session state the user's code may have changed (settings, role, locks,
        LISTENs, cursors, temporary tables) is reset (:meth:`asyncpg.Connection.reset`)
        before the connection goes back to the pool; a connection that cannot be reset is
        dropped.
        """
        return _Lease(self, reset=True)

    async def _acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise PoolClosed("the connection pool is closed")
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                self._in_use.add(conn)
                return conn
            self._size -= 1
            self._give_slots(1)
        if self._size < self._max_size and (self._slots is None or self._slots.take()):
            return await self._open_one()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection (or a slot) in the same turn we were cancelled.
                handed = waiter.result()
                if handed is None:  # a reserved slot: hand it on
                    self._size -= 1
                    self._slot_freed()
                else:
                    self._handing.discard(handed)
                    self._in_use.add(handed)
                    self._put(handed)
            else:
                waiter.cancel()  # skipped by _handover
            raise
        if conn is None:  # _slot_freed reserved a slot for us
            return await self._open_one(reserved=True)
        self._handing.discard(conn)
        if self._closed and conn.is_closed():  # terminate() ran meanwhile
            raise PoolClosed("the connection pool is closed")
        self._in_use.add(conn)
        return conn

    async def _open_one(self, *, reserved: bool = False) -> asyncpg.Connection:
        if not reserved:
            self._size += 1
        try:
            conn = await self._connect()
        except BaseException:
            self._size -= 1
            self._slot_freed()
            raise
        if self._closed:
            conn.terminate()
            self._size -= 1
            self._slot_freed()
            raise PoolClosed("the connection pool is closed")
        self._in_use.add(conn)
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        """Give a connection back (dropped if it is closed or inside a transaction)."""
        self._put(conn)

    def _put(self, conn: asyncpg.Connection) -> None:
        if conn not in self._in_use:
            if self._closed:  # terminate() already closed it
                conn.terminate()
                return
            raise pgbase.InterfaceError("release() of a connection this pool did not lend")
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            self._in_use.discard(conn)
            self._drop(conn)
            return
        self._in_use.discard(conn)
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._handing.add(conn)  # until the waiter runs; terminate() reaches it
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: asyncpg.Connection) -> None:
        """Take back a connection whose protocol state is unknown: terminate it."""
        if conn not in self._in_use:
            conn.terminate()
            return
        self._in_use.discard(conn)
        self._drop(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        if not conn.is_closed():
            conn.terminate()
        self._size -= 1
        self._slot_freed()

    def _slot_freed(self) -> None:
        if self._closed:
            self._give_slots(1)
            if self._size == 0 and self._drained is not None:
                self._drained.set()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._size += 1  # reserved for the waiter, which opens a connection
                waiter.set_result(None)
                return
        self._give_slots(1)

    def _give_slots(self, n: int) -> None:
        """``n`` connections of this pool are gone: their shared slots are free."""
        if self._slots is not None and n > 0:
            self._slots.give(n)

    # -- one statement -------------------------------------------------------------------

    async def statement(
        self,
        conn: asyncpg.Connection,
        call: Callable[..., Awaitable[Any]],
        query: str,
        args: Any,
    ) -> Any:
        """``call(query, *args)`` (a statement method of ``conn``, such as ``conn.fetchrow``):
        ONE statement on ``conn``, a connection of this pool its caller holds, within the
        connection's ``command_timeout``, kept by the pool's watchdog (see the module)
        instead of a timer of its own.

        Raises what ``call`` raises; ``TimeoutError`` when the limit passed (the
        connection is then terminated, as asyncpg's own timeout leaves it to be).
        """
        config = getattr(conn, "_config", None)
        limit = getattr(config, "command_timeout", None)
        # No limit, or settings not shaped as asyncpg's namedtuple (another asyncpg
        # release): asyncpg's own timer per statement keeps the limit.
        if limit is None or not isinstance(config, tuple) or not hasattr(config, "_replace"):
            return await call(query, *args)
        untimed = self._untimed.get(config)
        if untimed is None:
            untimed = self._untimed[config] = config._replace(command_timeout=None)
        deadline = time.monotonic() + limit
        self._watched[conn] = deadline
        if self._watchdog is None or deadline < self._watch_at:
            self._arm(deadline)
        conn._config = untimed  # asyncpg reads it when the statement starts
        try:
            return await call(query, *args)
        except Exception as exc:
            if conn in self._watched and self._watched[conn] is None:
                raise TimeoutError(
                    f"the statement outlived its client-side limit of {limit} s"
                ) from exc
            raise
        finally:
            conn._config = config
            del self._watched[conn]

    def _arm(self, when: float) -> None:
        """(Re)start the watchdog's one timer for ``when`` (monotonic seconds)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watch_at = when
        self._watchdog = loop.call_at(loop.time() + max(when - time.monotonic(), 0.0), self._watch)

    def _watch(self) -> None:
        """Terminate the connections whose statement is past its deadline; re-arm for the
        earliest deadline left."""
        self._watchdog = None
        now = time.monotonic()
        watched = self._watched
        for conn, deadline in list(watched.items()):
            if deadline is not None and deadline <= now:
                watched[conn] = None  # its caller raises TimeoutError
                conn.terminate()
        left = [d for d in watched.values() if d is not None]
        if left:  # (closing too: holders may still run statements)
            self._arm(min(left))

    async def _run(self, method: str, query: str, args: Any) -> Any:
        """``connection.<method>(query, *args)`` on a pooled connection (see
        :meth:`statement`)."""
        conn = await self._acquire()
        try:
            result = await self.statement(conn, getattr(conn, method), query, args)
        except pgbase.PostgresError:  # reported by the server: the connection is fine
            self._put(conn)
            raise
        except BaseException:
            self._discard(conn)
            raise
        self._put(conn)
        return result

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run ``query`` on a pooled connection; its rows."""
        return await self._run("fetch", query, args)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """Run ``query`` on a pooled connection; its first row (None if none)."""
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run ``query`` on a pooled connection; the first column of its first row."""
        return await self._run("fetchval", query, args)

    async def execute(self, query: str, *args: Any) -> str:
        """Run ``query`` on a pooled connection; its status string."""
        return await self._run("execute", query, args)  # type: ignore[no-any-return]

    # -- closing -----------------------------------------------------------------------

    async def close(self) -> None:
        """Close idle connections now and the others when given back; wait for them.

        Callers still waiting for a connection get :class:`PoolClosed`. Wrap in a
        timeout and call :meth:`terminate` if holders may never give theirs back.
        """
        self._begin_close()
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            self._give_slots(1)
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
        if self._size > 0:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()

    def terminate(self) -> None:
        """Close every connection at once, held ones included."""
        self._begin_close()
        held = [*self._idle, *self._in_use, *self._handing]
        for conn in held:
            conn.terminate()
        self._size -= len(held)
        self._give_slots(len(held))
        self._idle = []
        self._in_use = set()
        self._handing = set()
        if self._watchdog is not None:  # every connection is gone
            self._watchdog.cancel()
            self._watchdog = None
        if self._drained is not None:
            self._drained.set()

    def _begin_close(self) -> None:
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))


_UNSAFE = (asyncio.CancelledError, TimeoutError, OSError, pgbase.InterfaceError)
"""Exceptions after which a connection's protocol state is unknown: it is not reused."""


class _Lease:
    """What :meth:`ConnectionPool.acquire` returns: awaitable and an async context."""

    __slots__ = ("_conn", "_pool", "_reset")

    def __init__(self, pool: ConnectionPool, *, reset: bool = False) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._reset = reset

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> asyncpg.Connection:
        pool = self._pool
        idle = pool._idle
        if idle and not pool._closed and not idle[-1].is_closed():
            # The common case without a second coroutine: what _acquire does first.
            conn = self._conn = idle.pop()
            pool._in_use.add(conn)
            return conn
        self._conn = await pool._acquire()
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if kind is not None and issubclass(kind, _UNSAFE):
            self._pool._discard(conn)
            return
        if self._reset and not conn.is_closed() and not conn.is_in_transaction():
            try:
                await conn.reset()
            except Exception:  # the block's work is done: only this connection is lost
                self._pool._discard(conn)
                return
            except BaseException:
                self._pool._discard(conn)
                raise
        self._pool._put(conn)
