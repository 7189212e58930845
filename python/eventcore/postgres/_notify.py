"""Wake-ups for readers of the global log: post-commit NOTIFY, and LISTEN with a poll.

A :class:`Notifier` announces a store's committed appends (coalesced, from a connection of
its own); a :class:`Listener` waits for them, in any process, polling the store's head as
the fallback. Notifications only wake readers: a lost one costs a poll interval, never an
event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from eventcore.postgres._sql import LISTENED, LISTENING, NOT_LISTENING, NOTIFY

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore

REPLAY_POLL = 0.005
"""Seconds between head polls while a replica replays an announced append."""

NOTIFY_DELAY = 0.002
"""Seconds a post-commit notification waits, so the appends of a burst share ONE NOTIFY."""

NOBODY_RECHECK = 0.1
"""Seconds a notifier trusts that nobody listens (it sends no NOTIFY meanwhile)."""

LISTENERS_RECHECK = 1.0
"""Seconds a notifier trusts that someone listens before it looks again."""


class Notifier:
    """Sends the store's post-commit notifications: at most one in flight, coalesced.

    The notification is sent after the commit, from this notifier's own connection, in a
    transaction of its own: a NOTIFY inside the append transaction would make every commit
    queue on PostgreSQL's database-wide notify lock.

    Only while someone listens: a :class:`Listener` holds a shared session lock keyed by
    its channel (:data:`~eventcore.postgres._sql.LISTENING`), which the notifier looks for
    in ``pg_locks`` at most every :data:`NOBODY_RECHECK` seconds while it found none (and
    every :data:`LISTENERS_RECHECK` seconds while it found one). A NOTIFY nobody hears
    costs a round trip and a transaction on the server; a listener that starts between two
    looks may miss the appends of those moments, which its head poll then finds (a lost
    notification costs a poll interval, never an event).
    """

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel
        """Where notifications go (a listener of the store's schema LISTENs there)."""
        self.head = 0
        """The newest committed position to announce."""
        self.again = False
        self.task: asyncio.Task[None] | None = None
        """The one sender task (None: nothing in flight)."""
        self.conn: asyncpg.Connection | None = None
        """The sender's own connection (None: none open)."""
        self.notify: Callable[[int], Awaitable[None]] = self._notify
        """Sends one notification carrying ``position`` (replaceable in tests)."""
        self.listened = False
        """Whether a listener was found when the notifier last looked."""
        self.looked_at: float | None = None
        """When (event-loop time) it last looked for listeners (None: never)."""

    def announce(self, position: int) -> None:
        """NOTIFY listeners of a committed append at ``position``, without waiting.

        At most one notification is in flight, sent :data:`NOTIFY_DELAY` seconds after the
        append that started it, so the appends of a burst share it; appends that commit
        while it is in flight are announced by ONE more, carrying the newest position. A
        failure is ignored (waiters poll the head as a fallback) and never fails the append.
        """
        if position > self.head:
            self.head = position
        if self.task is None:
            loop = asyncio.get_running_loop()
            looked = self.looked_at
            if not self.listened and looked is not None and loop.time() - looked < NOBODY_RECHECK:
                return  # nobody listened a moment ago: no task, no timer
            self.task = loop.create_task(self._send())
        else:
            self.again = True

    async def _send(self) -> None:
        try:
            again = True
            while again:
                # Wait briefly first: appends committing meanwhile (e.g. the next command
                # of a single client) are announced by this same notification.
                await asyncio.sleep(NOTIFY_DELAY)
                self.again = False
                try:
                    await self.notify(self.head)
                except Exception:  # fire-and-forget: waiters poll as a fallback
                    self._drop_conn()
                    return
                again = self.again
        finally:
            self.task = None

    async def _notify(self, position: int) -> None:
        now = asyncio.get_running_loop().time()
        looked = self.looked_at
        stale = looked is None or now - looked >= (
            LISTENERS_RECHECK if self.listened else NOBODY_RECHECK
        )
        if not stale and not self.listened:
            return  # nobody listened a moment ago: nothing to send
        conn = self.conn
        if conn is None or conn.is_closed():
            if not self.store._owns_connections:  # a borrowed pool: borrow one for a moment
                async with self.store._borrow() as borrowed:
                    await self._send_on(borrowed, position, stale, now)
                return
            conn = self.conn = await self.store._connect("eventcore-notify")
        await self._send_on(conn, position, stale, now)

    async def _send_on(
        self, conn: asyncpg.Connection, position: int, look: bool, now: float
    ) -> None:
        if look:
            self.listened = bool(await conn.fetchval(LISTENED, self.channel))
            self.looked_at = now
            if not self.listened:
                return
        await conn.execute(NOTIFY, self.channel, str(position))

    def _drop_conn(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Let the notification in flight finish (at most 5 s), then close the connection."""
        task = self.task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except Exception:
                task.cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()


class Listener:
    """LISTENs for a store's notifications on a dedicated connection; waits for appends."""

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel
        """The channel it LISTENs on."""
        self.conn: asyncpg.Connection | None = None
        """The listening connection (None: not listening)."""
        self._borrowed = False
        self._waiters: set[asyncio.Event] = set()
        self.announced = 0
        """The newest position a notification announced (committed on the primary)."""
        self.announced_at = 0.0

    async def subscribe(self) -> bool:
        """LISTEN on a dedicated connection; False if that failed (waiters then poll)."""
        if self.conn is not None and not self.conn.is_closed():
            return True
        await self.close()
        try:
            conn, self._borrowed = await self.store._dedicated_connection()
        except Exception:
            return False
        try:
            await conn.add_listener(self.channel, self._on_notify)
            await conn.execute(LISTENING, self.channel)  # notifiers look for it
        except Exception:
            await self.store._release_dedicated(conn, self._borrowed)
            return False
        conn.add_termination_listener(self._on_lost)
        self.conn = conn
        return True

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            position = int(payload)
        except ValueError:
            position = 0
        if position > self.announced:
            self.announced = position
            self.announced_at = asyncio.get_running_loop().time()
        for waiter in self._waiters:
            waiter.set()

    def _on_lost(self, conn: Any) -> None:
        if self.conn is conn:
            self.conn = None
        self._on_notify(conn, 0, self.channel, "")

    async def close(self) -> None:
        """Stop listening and give the connection back (or close it)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self._borrowed:  # back to a pool: leave no LISTEN (nor its lock) behind
            try:
                await conn.remove_listener(self.channel, self._on_notify)
                await conn.execute(NOT_LISTENING, self.channel)
            except Exception:
                conn.terminate()
        await self.store._release_dedicated(conn, self._borrowed)

    def _replaying(self, after_position: int, head: int, now: float) -> bool:
        """Whether an announced append is still on its way to the store's replica reads."""
        replicas = self.store._replicas
        return (
            replicas is not None
            and self.store.read_from == "replica"
            and self.announced > max(after_position, head)
            and now - self.announced_at < replicas.wait
        )

    async def wait(self, after_position: int, timeout: float, poll_interval: float) -> int:
        """Wait until the store's head passes ``after_position`` or ``timeout`` passes.

        Wakes on a notification; polls the head every ``poll_interval`` seconds as the
        fallback (writers that call ``append_events`` directly send none). The head.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.subscribe()
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            while True:
                waiter.clear()
                head = await self.store.head()
                remaining = deadline - loop.time()
                if head > after_position or remaining <= 0:
                    return head
                if self.conn is None:
                    await self.subscribe()
                if self._replaying(after_position, head, loop.time()):
                    # Announced by the primary, not replayed yet by the replica read:
                    # poll briefly rather than wait for a notification already received.
                    await asyncio.sleep(min(remaining, REPLAY_POLL))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), min(remaining, poll_interval))
        finally:
            self._waiters.discard(waiter)
