"""Subject keys in PostgreSQL (table ``subject_keys``, migration 0007), for a sync codec.

Decoding is synchronous (the Rust fold loop calls decoders) and asyncpg is not, so the
key store keeps its own connections on a private event loop in a background thread and
a cache of keys in process memory:

- a cached key is used as is; a miss (or an entry older than ``cache_ttl``) costs one
  round trip on the private connection, during which the calling thread waits (in
  async code, the event loop; ``await keys.prefetch(subjects)`` fills the cache first
  without blocking);
- a forgotten mark is cached for good: a forgotten subject never gets a key again;
- ``forget`` destroys the key and sends ``NOTIFY <schema>_forget``; every key store on
  the database LISTENs and drops the key at once. If the listening connection is lost
  the whole cache is dropped. So another process stops using a forgotten key when the
  notification arrives, and in any case within ``cache_ttl`` seconds (default 30).

A subject with no row at all is an error (:class:`~eventcore.errors.SubjectKeyMissing`),
never a forgotten one. Keys never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import asyncpg

from eventcore.errors import StoreUnavailable
from eventcore.postgres._errors import translate
from eventcore.postgres._sql import check_schema_name, quote
from eventcore.shredding._errors import SubjectForgotten, SubjectKeyMissing
from eventcore.shredding._keys import new_key

__all__ = ["PostgresKeyStore", "forget_channel"]

T = TypeVar("T")
_FOREVER = math.inf


def forget_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel a forget on ``schema`` notifies (the subject as payload)."""
    return f"{check_schema_name(schema)}_forget"


class PostgresKeyStore:
    """The subjects' keys in ``<schema>.subject_keys``; see the module docstring.

    Args:
        dsn: the database (the application role needs the README's GRANTs).
        schema: the event store's schema, migrated to version 7 or later.
        cache_ttl: seconds a cached key is trusted before it is read again: the bound on
            how long another process may still use a key forgotten here when the
            notification is lost.
        timeout: seconds a key read, insert or forget may take (StoreUnavailable after).
    """

    def __init__(
        self, dsn: str, *, schema: str = "eventcore", cache_ttl: float = 30.0, timeout: float = 10.0
    ) -> None:
        s = quote(schema)
        self.schema = schema
        """The schema of the key table."""
        self.cache_ttl = cache_ttl
        """Seconds a cached key is trusted (forgotten marks are cached for good)."""
        self._dsn = dsn
        self._timeout = timeout
        self._channel = forget_channel(schema)
        self._select = f"SELECT key FROM {s}.subject_keys WHERE subject = $1"
        self._select_many = (
            f"SELECT subject, key FROM {s}.subject_keys WHERE subject = ANY($1::text[])"
        )
        # One round trip for a new subject and a known one alike: the insert's row if it
        # won, else the row that was there (the statement's snapshot predates the insert).
        self._create = (
            f"WITH won AS (INSERT INTO {s}.subject_keys (subject, key) VALUES ($1, $2)"
            " ON CONFLICT (subject) DO NOTHING RETURNING key)"
            f" SELECT key FROM won UNION ALL SELECT key FROM {s}.subject_keys WHERE subject = $1"
        )
        self._forget = f"SELECT {s}.forget_subject($1)"
        self._cache: dict[str, tuple[float, bytes | None]] = {}  # (trusted until, key)
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._conn_lock: asyncio.Lock | None = None
        self._closed = False

    def __repr__(self) -> str:  # never the DSN (a password) nor a key
        return f"PostgresKeyStore(schema={self.schema!r}, <{len(self._cache)} cached>)"

    # -- the synchronous face, as the codec uses it ------------------------------------

    def key(self, subject: str) -> bytes | None:
        """The subject's key; None once forgotten (SubjectKeyMissing if it has no row)."""
        entry = self._cache.get(subject)
        if entry is not None and (entry[1] is None or entry[0] > time.monotonic()):
            return entry[1]
        found, key = self._call(self._read(subject), "reading a subject key")
        if not found:
            raise SubjectKeyMissing(subject)
        return key

    def key_or_create(self, subject: str) -> bytes:
        """The subject's key, created if it has none (SubjectForgotten if forgotten)."""
        entry = self._cache.get(subject)
        if entry is not None and (entry[1] is None or entry[0] > time.monotonic()):
            key = entry[1]
        else:
            key = self._call(self._read_or_create(subject), "creating a subject key")
        if key is None:
            raise SubjectForgotten(subject)
        return key

    def forget(self, subject: str) -> bool:
        """Destroy the subject's key (keeping a forgotten mark) and tell every process.

        True if a key was destroyed; forgetting an unknown subject marks it forgotten.
        """
        return self._call(self._destroy(subject), "forgetting a subject")

    # -- the asynchronous extras -------------------------------------------------------

    async def prefetch(self, subjects: Iterable[str]) -> None:
        """Load the keys of ``subjects`` into the cache in one round trip, without
        blocking the caller's event loop (subjects with no row are left out)."""
        wanted = [s for s in dict.fromkeys(subjects) if not self._fresh(s)]
        if wanted:
            future = self._submit(self._read_many(wanted))
            await asyncio.wrap_future(future)

    def close(self) -> None:
        """Close the connections and stop the background thread (idempotent)."""
        with self._start_lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._disconnect(), loop).result(self._timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout)
        loop.close()
        self._cache.clear()

    def __enter__(self) -> PostgresKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the private loop --------------------------------------------------------------

    def _fresh(self, subject: str) -> bool:
        entry = self._cache.get(subject)
        return entry is not None and (entry[1] is None or entry[0] > time.monotonic())

    def _remember(self, subject: str, key: bytes | None) -> None:
        if key is None:
            self._cache[subject] = (_FOREVER, None)
        elif self._cache.get(subject, (0.0, b""))[1] is not None:  # a forgotten mark stays
            self._cache[subject] = (time.monotonic() + self.cache_ttl, key)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._start_lock:
            if self._closed:
                coro.close()
                raise StoreUnavailable("the PostgreSQL key store is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="eventcore-subject-keys", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _call(self, coro: Coroutine[Any, Any, T], action: str) -> T:
        future = self._submit(coro)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StoreUnavailable(f"PostgreSQL key store: {action} timed out") from None
        except Exception as exc:
            raise translate(exc, action) from exc

    async def _connection(self) -> asyncpg.Connection:
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        if self._listener is None or self._listener.is_closed():
            self._cache.clear()  # notifications may have been missed
            listener = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                server_settings={"application_name": "eventcore-keys"},
            )
            await listener.add_listener(self._channel, self._on_forget)
            listener.add_termination_listener(self._on_lost)
            self._listener = listener
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={"application_name": "eventcore-keys"},
            )
        return self._conn

    def _on_forget(self, conn: Any, pid: int, channel: str, subject: str) -> None:
        self._cache[subject] = (_FOREVER, None)

    def _on_lost(self, conn: Any) -> None:
        self._cache.clear()

    async def _read(self, subject: str) -> tuple[bool, bytes | None]:
        conn = await self._connection()
        assert self._conn_lock is not None
        async with self._conn_lock:
            row = await conn.fetchrow(self._select, subject)
        if row is None:
            return False, None
        self._remember(subject, row[0])
        return True, self._cache[subject][1]

    async def _read_many(self, subjects: list[str]) -> None:
        conn = await self._connection()
        assert self._conn_lock is not None
        async with self._conn_lock:
            rows = await conn.fetch(self._select_many, subjects)
        for subject, key in rows:
            self._remember(subject, key)

    async def _read_or_create(self, subject: str) -> bytes | None:
        conn = await self._connection()
        assert self._conn_lock is not None
        async with self._conn_lock:
            row = await conn.fetchrow(self._create, subject, new_key())
            while row is None:  # lost to an insert not yet visible to the statement
                row = await conn.fetchrow(self._select, subject)
        self._remember(subject, row[0])
        return self._cache[subject][1]

    async def _destroy(self, subject: str) -> bool:
        conn = await self._connection()
        assert self._conn_lock is not None
        async with self._conn_lock, conn.transaction():
            destroyed: bool = await conn.fetchval(self._forget, subject)
            await conn.execute("SELECT pg_notify($1, $2)", self._channel, subject)
        self._cache[subject] = (_FOREVER, None)
        return destroyed

    async def _disconnect(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), self._timeout)
                except (TimeoutError, OSError, asyncpg.PostgresError):
                    conn.terminate()
        self._conn = self._listener = None
