"""Checkpoints (where each projection is) and dead letters, in memory or in PostgreSQL."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from eventcore.errors import StoreError, StoreUnavailable
from eventcore.recorded import RecordedEvent

__all__ = [
    "CheckpointStore",
    "DeadLetter",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a projection skipped after it failed (strategy ``skip``).

    Attributes:
        projection: the projection's name.
        position: the event's global position.
        event_id: the event's id (None for a failed columnar batch).
        stream_id: the event's stream ('' for a columnar batch).
        event_type: the event's type ('' for a columnar batch).
        error: ``repr`` of the exception.
        failed_at: when it was recorded (UTC).
    """

    projection: str
    position: int
    event_id: Any
    stream_id: str
    event_type: str
    error: str
    failed_at: datetime


def dead_letter(
    projection: str, event: RecordedEvent[Any] | int, error: BaseException
) -> DeadLetter:
    """A DeadLetter for ``event`` (or a bare position) that failed with ``error``."""
    now = datetime.now(UTC)
    if isinstance(event, int):
        return DeadLetter(projection, event, None, "", "", repr(error), now)
    return DeadLetter(
        projection,
        event.position,
        event.event_id,
        event.stream_id,
        event.event_type,
        repr(error),
        now,
    )


@runtime_checkable
class CheckpointStore(Protocol):
    """Where projections keep their positions and dead letters."""

    async def load(self, name: str) -> int:
        """The saved position of projection ``name`` (0 when none)."""
        ...

    async def save(self, name: str, position: int) -> None:
        """Save the position of projection ``name``."""
        ...

    async def reset(self, name: str, position: int = 0) -> None:
        """Set the position of ``name`` back (or forward) to ``position``."""
        ...

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a skipped event."""
        ...

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """The dead letters of projection ``name``, oldest first."""
        ...


class MemoryCheckpointStore:
    """Checkpoints and dead letters in process memory (tests, in-memory read models)."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        """Saved position per projection name."""
        self.letters: list[DeadLetter] = []
        """Every dead letter, oldest first."""

    async def load(self, name: str) -> int:
        """See :meth:`CheckpointStore.load`."""
        return self.positions.get(name, 0)

    async def save(self, name: str, position: int) -> None:
        """See :meth:`CheckpointStore.save`."""
        self.positions[name] = position

    async def reset(self, name: str, position: int = 0) -> None:
        """See :meth:`CheckpointStore.reset`."""
        self.positions[name] = position

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """See :meth:`CheckpointStore.add_dead_letter`."""
        self.letters.append(letter)

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """See :meth:`CheckpointStore.dead_letters`."""
        return [d for d in self.letters if d.projection == name]


def lock_key(schema: str, name: str) -> int:
    """The advisory-lock key of projection ``name`` in ``schema`` (a positive bigint)."""
    return (0x50524F4A << 31) | zlib.crc32(f"{schema}\x00{name}".encode())


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
        store: the PostgreSQL event store (its pool and schema are used).
        schema: the schema of the two tables (default: the store's).
    """

    def __init__(self, store: Any, *, schema: str | None = None) -> None:
        from eventcore.postgres._sql import quote

        self.store = store
        self.schema: str = schema if schema is not None else store.schema
        """The schema holding the checkpoint tables."""
        self._s = quote(self.schema)
        self._migrated = False

    async def pool(self) -> Any:
        """The store's asyncpg pool."""
        pool = getattr(self.store, "pool", None)
        if pool is not None and not callable(pool):
            return pool
        return await self.store._get_pool()

    async def migrate(self) -> int:
        """Apply eventcore's versioned migrations to :attr:`schema`; the schema version.

        The same migrations as :meth:`PostgresStore.migrate
        <eventcore.postgres.PostgresStore.migrate>` (idempotent, safe from many processes
        at once); needed only when the checkpoints live in another schema than the store.
        """
        from eventcore.postgres._migrate import migrate
        from eventcore.postgres._sql import Queries

        pool = await self.pool()
        try:
            async with pool.acquire() as conn:
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
        sql = "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
        tables = [f"{self._s}.projection_checkpoints", f"{self._s}.projection_dead_letters"]
        pool = await self.pool()
        try:
            found = await pool.fetchval(sql, *tables)
        except Exception as exc:
            raise _translate(exc, "check projection tables") from exc
        if not found:
            raise StoreError(
                f"the projection checkpoint tables are missing in schema {self.schema!r}: "
                "run `await store.migrate()` (or `eventcore migrate --dsn ... --schema "
                f"{self.schema}`) as the schema's owner; the application role cannot create them"
            )
        self._migrated = True

    async def _run(self, what: str, method: str, sql: str, *args: Any) -> Any:
        pool = await self.pool()
        try:
            return await getattr(pool, method)(sql, *args)
        except Exception as exc:
            raise _translate(exc, what) from exc

    async def load(self, name: str) -> int:
        """See :meth:`CheckpointStore.load`."""
        sql = f"SELECT position FROM {self._s}.projection_checkpoints WHERE name = $1"
        value = await self._run("load checkpoint", "fetchval", sql, name)
        return int(value or 0)

    async def save(self, name: str, position: int) -> None:
        """See :meth:`CheckpointStore.save`."""
        await self._run("save checkpoint", "execute", self._upsert, name, position)

    async def reset(self, name: str, position: int = 0) -> None:
        """See :meth:`CheckpointStore.reset`."""
        await self.save(name, position)

    @property
    def _upsert(self) -> str:
        return (
            f"INSERT INTO {self._s}.projection_checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
        )

    async def save_in(self, conn: Any, name: str, expected: int, position: int) -> bool:
        """Move the checkpoint from ``expected`` to ``position`` inside ``conn``'s transaction.

        Returns False (and changes nothing) when the saved position is not ``expected``:
        another runner moved it, so this transaction must roll back. The row lock taken
        here also serializes two runners that both think they are active.
        """
        await conn.execute(
            f"INSERT INTO {self._s}.projection_checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            expected,
        )
        done = await conn.fetchval(
            f"UPDATE {self._s}.projection_checkpoints SET position = $3, updated_at = now()"
            " WHERE name = $1 AND position = $2 RETURNING 1",
            name,
            expected,
            position,
        )
        return done is not None

    async def add_dead_letter(self, letter: DeadLetter, conn: Any = None) -> None:
        """See :meth:`CheckpointStore.add_dead_letter` (inside ``conn``'s transaction if given)."""
        sql = (
            f"INSERT INTO {self._s}.projection_dead_letters"
            " (projection, position, event_id, stream_id, event_type, error, failed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        args = (
            letter.projection,
            letter.position,
            letter.event_id,
            letter.stream_id,
            letter.event_type,
            letter.error,
            letter.failed_at,
        )
        if conn is not None:
            await conn.execute(sql, *args)
        else:
            await self._run("record dead letter", "execute", sql, *args)

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """See :meth:`CheckpointStore.dead_letters`."""
        sql = (
            "SELECT projection, position, event_id, stream_id, event_type, error, failed_at"
            f" FROM {self._s}.projection_dead_letters WHERE projection = $1 ORDER BY id"
        )
        rows = await self._run("read dead letters", "fetch", sql, name)
        return [DeadLetter(*r) for r in rows]


def _translate(exc: BaseException, action: str) -> Exception:
    """Map a driver error to eventcore's store errors (by class)."""
    from eventcore.postgres._errors import translate

    err = translate(exc, action)
    return err if isinstance(err, StoreError | StoreUnavailable) else StoreError(str(err))
