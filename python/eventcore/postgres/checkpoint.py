"""Projection checkpoints, dead letters and leader leases in a PostgreSQL schema.

The tables ``projection_checkpoints`` and ``projection_dead_letters`` come from the
versioned migrations (0002); nothing here creates a table. A projection's leadership is a
session-level advisory lock held on a dedicated connection.

Imports no driver at module level: ``eventcore.projection`` re-exports
:class:`PostgresCheckpointStore` without needing asyncpg.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from eventcore.errors import StoreError, StoreUnavailable
from eventcore.postgres._sql import (
    PING,
    TRY_LOCK,
    UNLOCK_ALL,
    CheckpointQueries,
    check_schema_name,
    projection_lock_key,
)
from eventcore.projection.checkpoint import DeadLetter

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore

__all__ = ["PostgresCheckpointStore"]


class PostgresCheckpointStore:
    """Checkpoints and dead letters in two tables of the event store's PostgreSQL schema.

    Tables ``projection_checkpoints`` and ``projection_dead_letters`` come from the
    store's versioned migrations (``await store.migrate()`` or ``eventcore migrate``, run
    as the schema's owner); the runner only checks that they exist (:meth:`check`), so
    the application role needs no DDL privilege. Give it the
    :class:`~eventcore.postgres.PostgresStore` whose database holds the read models: the
    runner then offers projections with ``apply_in_transaction`` a transaction on that
    database in which it also saves the checkpoint (exactly once), and holds one advisory
    lock per projection so that only one process runs it.

    Args:
        store: the PostgreSQL event store (its connections and schema are used).
        schema: the schema of the two tables (default: the store's).
    """

    def __init__(self, store: PostgresStore, *, schema: str | None = None) -> None:
        self.store = store
        self.schema: str = check_schema_name(schema if schema is not None else store.schema)
        """The schema holding the checkpoint tables."""
        self._q = CheckpointQueries(self.schema)
        self._migrated = False

    @property
    def exclusive(self) -> bool:
        """True: :meth:`try_lead` holds an advisory lock that excludes other processes
        (False through PgBouncer without a ``direct_dsn``: no session to hold it)."""
        return self.store._has_sessions

    @property
    def transactional(self) -> bool:
        """True: :meth:`transaction` is a transaction on the store's database."""
        return True

    async def migrate(self) -> int:
        """Apply eventcore's versioned migrations to :attr:`schema`; the schema version.

        The same migrations as :meth:`PostgresStore.migrate
        <eventcore.postgres.PostgresStore.migrate>` (idempotent, safe from many processes
        at once); needed only when the checkpoints live in another schema than the store.
        """
        from eventcore.postgres._migrate import migrate
        from eventcore.postgres._sql import Queries

        try:
            async with self.store._borrow() as conn:
                version = await migrate(conn, Queries(self.schema), self.schema)
        except Exception as exc:
            raise _translate(exc, "migrate projection tables") from exc
        self._migrated = True
        return version

    async def check(self) -> None:
        """Check that the checkpoint tables exist (the runner calls it before it starts).

        Raises:
            StoreError: the schema is not migrated to a version with checkpoint tables;
                the message says how to migrate.
            StoreUnavailable: the server could not be reached.
        """
        if self._migrated:
            return
        if not await self._run("check projection tables", "fetchval", self._q.tables_exist):
            raise StoreError(
                f"the projection checkpoint tables are missing in schema {self.schema!r}: "
                "run `await store.migrate()` (or `eventcore migrate --dsn ... --schema "
                f"{self.schema}`) as the schema's owner; the application role cannot create them"
            )
        self._migrated = True

    async def _run(self, what: str, method: str, sql: str, *args: Any) -> Any:
        try:
            async with self.store._borrow() as conn:
                return await getattr(conn, method)(sql, *args)
        except Exception as exc:
            raise _translate(exc, what) from exc

    async def load(self, name: str) -> int:
        """See :meth:`CheckpointStore.load <eventcore.store.CheckpointStore.load>`."""
        return int(await self._run("load checkpoint", "fetchval", self._q.load, name) or 0)

    async def save(self, name: str, position: int) -> None:
        """See :meth:`CheckpointStore.save <eventcore.store.CheckpointStore.save>`."""
        await self._run("save checkpoint", "execute", self._q.save, name, position)

    async def reset(self, name: str, position: int = 0) -> None:
        """See :meth:`CheckpointStore.reset <eventcore.store.CheckpointStore.reset>`."""
        await self.save(name, position)

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """See :meth:`CheckpointStore.add_dead_letter
        <eventcore.store.CheckpointStore.add_dead_letter>`."""
        await self._run("record dead letter", "execute", self._q.add_dead_letter, *_row(letter))

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """See :meth:`CheckpointStore.dead_letters
        <eventcore.store.CheckpointStore.dead_letters>`."""
        rows = await self._run("read dead letters", "fetch", self._q.dead_letters, name)
        return [DeadLetter(*r) for r in rows]

    def lease(self, name: str) -> PostgresLease:
        """The leadership of projection ``name`` (not taken yet: see
        :meth:`PostgresLease.acquire`)."""
        return PostgresLease(self.store, projection_lock_key(self.schema, name))

    def transaction(self) -> AbstractAsyncContextManager[PostgresCheckpointTransaction]:
        """A transaction on a pooled connection of the store (see
        :class:`PostgresCheckpointTransaction`); the connection's session is reset after."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PostgresCheckpointTransaction]:
        # What the block raises goes on as it is (the runner asks the transaction whose
        # failure it is); taking the connection, BEGIN and COMMIT fail as store errors.
        in_block = False
        try:
            async with self.store._lend() as conn, conn.transaction():
                in_block = True
                yield PostgresCheckpointTransaction(conn, self._q)
                in_block = False
        except Exception as exc:
            if in_block:
                raise
            raise _translate(exc, "apply_in_transaction") from exc


class PostgresLease:
    """A projection's leadership: a session advisory lock held by a dedicated connection.

    The connection is kept between attempts (a runner in standby retries every
    ``takeover_interval``) and closed by :meth:`release`.
    """

    def __init__(self, store: PostgresStore, key: int) -> None:
        self._store = store
        self._key = key
        self._conn: Any = None
        self._borrowed = False

    async def acquire(self) -> bool:
        """Take the lock if it is free; False while another session holds it.

        Raises:
            StoreUnavailable: the server could not be reached (the connection is dropped).
            StoreError: any other failure.
        """
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn, self._borrowed = await self._store._dedicated_connection()
            return bool(await self._conn.fetchval(TRY_LOCK, self._key))
        except Exception as exc:
            await self.release()
            raise _translate(exc, "take the leader lock") from exc

    async def check(self) -> None:
        """Ping the lock's connection (5 s at most).

        Raises:
            StoreUnavailable: the connection is gone, and the lock with it.
        """
        if self._conn is None:
            raise StoreUnavailable("the leader lock is not held")
        try:
            await asyncio.wait_for(self._conn.fetchval(PING), 5)
        except Exception as exc:
            err = _translate(exc, "check the leader lock")
            if isinstance(err, StoreUnavailable):
                raise err from exc
            raise StoreUnavailable(f"leader lock lost: {exc!r}") from exc

    async def release(self) -> None:
        """Unlock (if held) and give the connection back or close it; never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.is_closed():
                await conn.execute(UNLOCK_ALL)
        except Exception:
            conn.terminate()
            return
        await self._store._release_dedicated(conn, self._borrowed)


class PostgresCheckpointTransaction:
    """One transaction on the read model's database that also moves a checkpoint."""

    def __init__(self, connection: Any, queries: CheckpointQueries) -> None:
        self.connection = connection
        """The asyncpg connection of the transaction (given to ``apply_in_transaction``)."""
        self._q = queries

    async def move(self, name: str, expected: int, position: int) -> bool:
        """Move the checkpoint from ``expected`` to ``position`` in this transaction.

        Returns False (and changes nothing) when the saved position is not ``expected``:
        another runner moved it, so this transaction must roll back. The row lock taken
        here also serializes two runners that both think they are active.
        """
        conn = self.connection
        try:
            await conn.execute(self._q.create, name, expected)
            return await conn.fetchval(self._q.move, name, expected, position) is not None
        except Exception as exc:
            raise _translate(exc, "save checkpoint") from exc

    async def reset(self, name: str, position: int) -> None:
        """Set the checkpoint of ``name`` to ``position`` in this transaction."""
        try:
            await self.connection.execute(self._q.save, name, position)
        except Exception as exc:
            raise _translate(exc, "reset checkpoint") from exc

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a skipped event in this transaction."""
        try:
            await self.connection.execute(self._q.add_dead_letter, *_row(letter))
        except Exception as exc:
            raise _translate(exc, "record dead letter") from exc

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A savepoint: its block is rolled back alone when it raises."""
        return self._savepoint()

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        async with self.connection.transaction():
            yield

    def failure(self, exc: BaseException) -> StoreUnavailable | None:
        """``exc`` as the store's transient failure, or None when it is the projection's.

        The connection died (whatever the projection's code then raised), or the driver
        reported a connection-level failure. An ``OSError`` on a live connection is the
        projection's own (it may write files), so it goes to its failure strategy.
        """
        if self.connection.is_closed():
            if isinstance(exc, StoreUnavailable):
                return exc
            err = _driver_error(exc, "apply_in_transaction")
            if isinstance(err, StoreUnavailable):
                return err
            return StoreUnavailable(f"connection lost during apply_in_transaction: {exc!r}")
        if isinstance(exc, StoreUnavailable):
            return exc
        err = _driver_error(exc, "apply_in_transaction")
        return err if isinstance(err, StoreUnavailable) else None


def _row(letter: DeadLetter) -> tuple[Any, ...]:
    return (
        letter.projection,
        letter.position,
        letter.event_id,
        letter.stream_id,
        letter.event_type,
        letter.error,
        letter.failed_at,
    )


def _driver_error(exc: BaseException, action: str) -> Exception | None:
    """An asyncpg error mapped to eventcore's classes (None: not the driver's)."""
    if not type(exc).__module__.startswith("asyncpg"):
        return None
    from eventcore.postgres._errors import translate

    return translate(exc, action)


def _translate(exc: BaseException, action: str) -> Exception:
    """Map a driver error to eventcore's store errors (by class)."""
    from eventcore.postgres._errors import translate

    err = translate(exc, action)
    return err if isinstance(err, StoreError | StoreUnavailable) else StoreError(str(err))
