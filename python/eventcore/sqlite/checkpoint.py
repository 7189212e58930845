"""Projection checkpoints, dead letters and leader leases in the SQLite store's file.

Checkpoints and dead letters are tables of the event store's file, so a projection whose
read model lives there too (``apply_in_transaction``) gets its batch and its checkpoint
committed in one transaction: exactly once.

A projection's leadership is an OS lock on one byte of the file ``<database>-leases``
(POSIX ``fcntl`` record locks; the byte is a hash of the projection's name). The OS drops
it when its process ends, however it ends, so a killed leader never blocks its standby.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from eventcore.errors import StoreUnavailable, UsageError
from eventcore.projection.checkpoint import DeadLetter
from eventcore.recorded import as_uuid
from eventcore.sqlite import _schema as q
from eventcore.sqlite.store import _begin, _commit, _rollback

if TYPE_CHECKING:
    from eventcore.sqlite.store import SqliteStore

try:
    import fcntl
except ImportError:  # Windows: no POSIX record locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["SqliteCheckpointStore", "SqliteCheckpointTransaction", "SqliteLease"]


def _now_micros() -> int:
    return time.time_ns() // 1000


class SqliteCheckpointStore:
    """Checkpoints and dead letters in the SQLite event store's file.

    ``exclusive`` (leader leases between processes, see the module) where the OS has
    POSIX record locks, and ``transactional``: :meth:`transaction` is a write transaction
    on the file, whose connection ``apply_in_transaction(events, connection)`` gets (a
    ``sqlite3.Connection``: write the read model's tables with it, and do not commit).

    While the transaction is open it holds the file's write lock: appends (from any
    process) wait for it, up to their ``busy_timeout``. Keep ``apply_in_transaction``
    short, and do not await other I/O inside it.

    Args:
        store: the SQLite event store whose file holds the checkpoints.
    """

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._free: list[sqlite3.Connection] = []
        self._free_lock = threading.Lock()

    @property
    def exclusive(self) -> bool:
        """True where the OS has POSIX record locks (not on Windows)."""
        return fcntl is not None

    @property
    def transactional(self) -> bool:
        """True: :meth:`transaction` is a transaction on the event store's file."""
        return True

    async def check(self) -> None:
        """Check that the tables exist (they are created with the store)."""
        self.store._one("SELECT count(*) FROM projection_checkpoints")

    async def load(self, name: str) -> int:
        """See :meth:`CheckpointStore.load <eventcore.store.CheckpointStore.load>`."""
        rows = self.store._all(q.CHECKPOINT_LOAD, (name,))
        return int(rows[0][0]) if rows else 0

    async def save(self, name: str, position: int) -> None:
        """See :meth:`CheckpointStore.save <eventcore.store.CheckpointStore.save>`."""
        store = self.store

        def save() -> None:
            conn = store._conn()
            with store._write(conn, "save checkpoint"):
                conn.execute(q.CHECKPOINT_SAVE, (name, position, _now_micros()))

        async with store._writer():
            await store._off_loop(save)  # the write lock and the commit: off the loop

    async def reset(self, name: str, position: int = 0) -> None:
        """See :meth:`CheckpointStore.reset <eventcore.store.CheckpointStore.reset>`."""
        await self.save(name, position)

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """See :meth:`CheckpointStore.add_dead_letter
        <eventcore.store.CheckpointStore.add_dead_letter>`."""
        store = self.store

        def add() -> None:
            conn = store._conn()
            with store._write(conn, "record dead letter"):
                conn.execute(q.DEAD_LETTER_ADD, _row(letter))

        async with store._writer():
            await store._off_loop(add)

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """See :meth:`CheckpointStore.dead_letters
        <eventcore.store.CheckpointStore.dead_letters>`."""
        rows = self.store._all(q.DEAD_LETTERS, (name,))
        return [
            DeadLetter(
                r[0],
                r[1],
                uuid.UUID(bytes=r[2]) if r[2] is not None else None,
                r[3],
                r[4],
                r[5],
                datetime.fromtimestamp(r[6], UTC),
            )
            for r in rows
        ]

    def lease(self, name: str) -> SqliteLease:
        """The leadership of projection ``name`` (not taken yet: see :meth:`SqliteLease.acquire`).

        Raises:
            UsageError: the OS has no POSIX record locks (``exclusive`` is False).
        """
        if fcntl is None:
            raise UsageError("SQLite leader leases need POSIX record locks (not on Windows)")
        return SqliteLease(self.store.path, name)

    def transaction(self) -> AbstractAsyncContextManager[SqliteCheckpointTransaction]:
        """A write transaction on the store's file, on a connection of its own (committed
        when the block ends, rolled back when it raises)."""
        return self._transaction()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of this checkpoint store's own (never a thread's read connection,
        which the event loop's other tasks use meanwhile)."""
        with self._free_lock:
            conn = self._free.pop() if self._free else None
        if conn is None:
            conn = self.store._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.close()
            else:
                with self._free_lock:
                    self._free.append(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqliteCheckpointTransaction]:
        # What the block raises goes on as it is (the runner asks the transaction whose
        # failure it is); BEGIN and COMMIT fail as store errors.
        # BEGIN IMMEDIATE (the write lock) and COMMIT (the sync) run off the loop; the
        # block runs on it, on this connection of the checkpoint store's own.
        store = self.store
        async with store._writer():
            with self._connection() as conn:
                await store._off_loop(lambda: _begin(conn, "apply_in_transaction"))
                try:
                    yield SqliteCheckpointTransaction(conn)
                except BaseException:
                    _rollback(conn)
                    raise
                await store._off_loop(lambda: _commit(conn, "apply_in_transaction"))


class SqliteLease:
    """A projection's leadership: an OS record lock on one byte of ``<database>-leases``.

    Excludes other processes, and other leases of the same name in this process.
    """

    _files: ClassVar[dict[str, int]] = {}  # lock file -> its descriptor (kept open)
    _held: ClassVar[set[tuple[str, int]]] = set()  # (lock file, byte) held by this process
    _lock = threading.Lock()
    _pid = os.getpid()

    def __init__(self, path: str, name: str) -> None:
        self._file = f"{path}-leases"
        self._byte = zlib.crc32(name.encode())  # two names may share a byte: they take turns
        self._holding = False

    def _fd(self) -> int:
        # POSIX record locks belong to the process and go when ANY descriptor of the file
        # is closed: one descriptor per file and process, kept open.
        cls = SqliteLease
        if cls._pid != os.getpid():  # a forked child holds none of its parent's locks
            cls._files, cls._held, cls._pid = {}, set(), os.getpid()
        fd = cls._files.get(self._file)
        if fd is None:
            fd = cls._files[self._file] = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    async def acquire(self) -> bool:
        """Take the lease if it is free; False while another process (or lease) holds it.

        Raises:
            StoreUnavailable: the lock file could not be opened.
        """
        if self._holding:
            return True
        key = (self._file, self._byte)
        with SqliteLease._lock:
            try:
                fd = self._fd()
            except OSError as exc:
                raise StoreUnavailable(f"cannot open the lease file {self._file!r}: {exc}") from exc
            if key in SqliteLease._held:
                return False
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._byte)
            except OSError:
                return False  # another process holds it
            SqliteLease._held.add(key)
            self._holding = True
            return True

    async def check(self) -> None:
        """The lock lives as long as this process: only a released lease is not held.

        Raises:
            StoreUnavailable: the lease is not held.
        """
        if not self._holding:
            raise StoreUnavailable("the leader lease is not held")

    async def release(self) -> None:
        """Unlock (if held); never raises."""
        if not self._holding:
            return
        self._holding = False
        with SqliteLease._lock:
            SqliteLease._held.discard((self._file, self._byte))
            fd = SqliteLease._files.get(self._file)
            if fd is not None:
                with suppress(OSError):
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, self._byte)


class SqliteCheckpointTransaction:
    """One write transaction on the store's file that also moves a checkpoint."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        """The ``sqlite3.Connection`` of the transaction (given to ``apply_in_transaction``)."""
        self._savepoints = 0

    async def move(self, name: str, expected: int, position: int) -> bool:
        """Move the checkpoint from ``expected`` to ``position`` in this transaction.

        Returns False (changing nothing) when the saved position is not ``expected``.
        """
        try:
            now = _now_micros()
            self.connection.execute(q.CHECKPOINT_CREATE, (name, expected, now))
            cur = self.connection.execute(q.CHECKPOINT_MOVE, (position, now, name, expected))
            return cur.rowcount == 1
        except sqlite3.Error as exc:
            raise q.translate(exc, "save checkpoint") from exc

    async def reset(self, name: str, position: int) -> None:
        """Set the checkpoint of ``name`` to ``position`` in this transaction."""
        try:
            self.connection.execute(q.CHECKPOINT_SAVE, (name, position, _now_micros()))
        except sqlite3.Error as exc:
            raise q.translate(exc, "reset checkpoint") from exc

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a skipped event in this transaction."""
        try:
            self.connection.execute(q.DEAD_LETTER_ADD, _row(letter))
        except sqlite3.Error as exc:
            raise q.translate(exc, "record dead letter") from exc

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A savepoint: its block is rolled back alone when it raises."""
        return self._savepoint()

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"eventcore_{self._savepoints}"
        conn = self.connection
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")

    def failure(self, exc: BaseException) -> StoreUnavailable | None:
        """``exc`` as the store's transient failure (busy, I/O), or None when it is the
        projection's own."""
        if isinstance(exc, StoreUnavailable):
            return exc
        if q.is_transient(exc):
            return StoreUnavailable(f"SQLite unavailable during apply_in_transaction: {exc!r}")
        return None


def _row(letter: DeadLetter) -> tuple[Any, ...]:
    event_id = letter.event_id
    return (
        letter.projection,
        letter.position,
        as_uuid(event_id).bytes if event_id is not None else None,
        letter.stream_id,
        letter.event_type,
        letter.error,
        letter.failed_at.timestamp(),
    )
