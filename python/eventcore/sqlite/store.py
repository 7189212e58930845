"""The SQLite event store: durable, one file, several processes on one machine.

Driver
    The standard library's ``sqlite3`` (no dependency). ``apsw`` was measured against it
    on the same appends (a single-event command and a batch of 1,000, WAL): about 1.2x
    faster with ``synchronous=NORMAL`` and no faster with ``FULL`` (the fsync dominates),
    not enough to add a dependency.

Durability and ``synchronous``
    The file is in WAL mode. ``synchronous="FULL"`` (the default) syncs the WAL on every
    commit: an acknowledged append survives a crash of the process AND of the machine
    (power loss). ``"NORMAL"`` syncs only at checkpoints: an acknowledged append survives
    a crash of the process, but the last appends before a power loss may be lost (the
    file stays consistent); commits are several times faster on a disk with a slow fsync.

Several processes
    Every process (and every thread) has its own connection. Writers serialize on
    SQLite's write lock (``BEGIN IMMEDIATE``; a writer waits up to ``busy_timeout``
    seconds, then the append fails with :class:`~eventcore.StoreUnavailable`, which the
    executor retries). Readers never wait for writers and never block them (WAL: a read
    sees the last commit before it started).

Dense positions that never skip
    An append takes the write lock first, then numbers its events ``max(position) + 1``
    on: with one writer at a time, the positions of a committed append follow those of the
    append committed before it, and a rolled-back append leaves no hole (nothing was
    committed). Commit order IS position order, so a reader paging through the global log
    with ``after_position = last position seen`` never passes over an event that commits
    later, and lag in events is ``head - position``.

Waiting for appends
    :meth:`SqliteStore.wait_for_append` wakes at once on an append of the same store
    object (a condition variable) and polls the head (the last segment's position: one
    seek in the primary key) for other processes' appends, backing off from 1 ms to
    ``poll_interval`` seconds while nothing arrives.

Layout
    Events are stored by segment (migration 0005, :mod:`eventcore.sqlite._segments`): one
    row per run of consecutive events of one stream within an append, whose positions and
    versions are ranges. A batch costs SQLite a few rows whatever its size; every read
    unpacks the segments it finds by position, stream and version, or id range.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from eventcore import _core
from eventcore._aio import SyncStoreView
from eventcore._lifecycle import check_before, check_expected, check_purge, out_of_range
from eventcore.errors import (
    ConcurrencyConflict,
    ConditionFailed,
    ConfigurationError,
    DuplicateEventId,
    StoreError,
    StoreUnavailable,
    UsageError,
    ValidationError,
)
from eventcore.metadata import Metadata
from eventcore.postgres._input import (
    check_event_types,
    check_limit,
    check_stream_ids,
    prepare_events,
    prepare_expected,
    prepare_tags,
)
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult, query_arg
from eventcore.recorded import (
    AppendResult,
    NewEvent,
    RecordedEvent,
    as_uuid,
    recorded_events,
    set_tags,
)
from eventcore.registry import EventRegistry, default_registry
from eventcore.snapshot import SNAPSHOT_EVERY, Snapshot, Snapshotter
from eventcore.sqlite import _query, _segments
from eventcore.sqlite import _schema as q
from eventcore.state_cache import DEFAULT_MAX_ENTRIES, StateCache, make_state_cache
from eventcore.store import (
    ColumnBuffers,
    Expected,
    FoldRows,
    LogHoldback,
    PurgeRecord,
    StreamBounds,
)

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from eventcore.sqlite.checkpoint import SqliteCheckpointStore

__all__ = ["AsyncSqliteStore", "SqliteSnapshotStore", "SqliteStore"]

R = TypeVar("R")

validate_stream_id = _core.validate_stream_id
_NO_LIMIT = -1  # SQLite's LIMIT -1: no upper bound
_MAX_VERSION = (1 << 63) - 1
_TAIL_ROWS = 256  # a conflict returns at most this many missed events (as PostgreSQL)
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_NO_SYNC = ("OFF", "NORMAL")  # settings whose commits do not sync the WAL
_json = msgspec.json.encode
_stream_of, _type_of, _payload_of, _id_of = (itemgetter(i) for i in range(4))


_last_position = itemgetter(0)


def _json_list(values: Sequence[str]) -> str:
    """A list of str as a JSON array, for ``IN (SELECT value FROM json_each(?))``."""
    return _json([str(v) for v in values]).decode()


def _fits(expected: int, actual: int) -> bool:
    """Whether a stream at version ``actual`` satisfies the ``expected`` check."""
    return expected == -1 or (expected == -2 and actual > 0) or expected == actual


def _id_bytes(event_id: Any) -> bytes:
    """An event id (a UUID or its 128-bit int) as its 16 bytes."""
    return event_id.to_bytes(16, "big") if type(event_id) is int else as_uuid(event_id).bytes


def _utc(micros: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _begin(conn: sqlite3.Connection, action: str, immediate: bool = True) -> None:
    """BEGIN IMMEDIATE (wait for the write lock, at most ``busy_timeout``), or BEGIN."""
    try:
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    except sqlite3.Error as exc:
        raise q.translate(exc, action) from exc


def _commit(conn: sqlite3.Connection, action: str) -> None:
    """COMMIT (with ``synchronous=FULL``, the WAL's sync); rolled back when it fails."""
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise q.translate(exc, action) from exc


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if one is open (never raises)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _same_metadata(stored: bytes | None, given: bytes | None) -> bool:
    return stored == given or Metadata.from_bytes(stored) == Metadata.from_bytes(given)


class _Busy(Exception):
    """A connection that does not wait found the write lock taken: nothing was done."""


class _Replay(Exception):
    """An event id of the batch is stored already: roll back and answer as a replay."""


class SqliteStore:
    """The SQLite event store: one durable file, safe for several processes on one machine.

    Synchronous like :class:`~eventcore.MemoryStore` (it implements
    :class:`~eventcore.store.SyncEventStore`: use it with :func:`~eventcore.execute_sync`);
    :attr:`aio` is the same store with the async API, a full
    :class:`~eventcore.store.ProjectionStore` whose checkpoints live in the same file.
    The file and its tables are created on first open; see the module for durability,
    locking and positions. Use it as a context manager, or call :meth:`close`.

    Args:
        path: the database file (created if missing; its directory must exist).
            ``":memory:"`` is refused: use :class:`~eventcore.MemoryStore`.
        registry: decodes payloads for :attr:`RecordedEvent.data` (default registry).
        synchronous: SQLite's ``synchronous`` setting: ``"FULL"`` (default: an
            acknowledged append survives a power loss) or ``"NORMAL"`` (survives a crash
            of the process only; faster commits). ``"OFF"`` and ``"EXTRA"`` are passed on.
        busy_timeout: seconds a writer waits for another's write lock before the append
            fails with :class:`~eventcore.StoreUnavailable` (retried by the executor).
        poll_interval: the longest pause between head polls in :meth:`wait_for_append`
            (appends of other processes are seen by polling).
        state_cache: the executor's folded-state cache: a bound in entries, a
            :class:`~eventcore.state_cache.StateCache`, or ``0``/``None`` to turn it off.
        snapshots: keep durable snapshots of commands' folded states in the file's
            ``snapshots`` table (see :mod:`eventcore.snapshot`); False: none.
        snapshot_every: events folded beyond a command's last snapshot before the next is
            written, for command classes that do not set ``snapshot_every``.

    Raises:
        ConfigurationError: ``path`` is ``":memory:"``, empty or not a path; an unknown
            ``synchronous``; or the file system cannot hold a WAL-mode database.
        ValidationError: a negative ``busy_timeout`` or ``poll_interval``.
        StoreError: the file is not an SQLite database, or was made by a newer eventcore.
        StoreUnavailable: the file is locked or cannot be read now.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: EventRegistry | None = None,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.02,
        state_cache: int | StateCache | None = DEFAULT_MAX_ENTRIES,
        snapshots: bool = True,
        snapshot_every: int | None = SNAPSHOT_EVERY,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"path: must be a str or a path, got {type(path).__name__}")
        path = os.fspath(path)
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ConfigurationError(
                f"path: {path!r} is not a database file; for a store in memory use "
                "eventcore.MemoryStore"
            )
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous: one of {', '.join(_SYNCHRONOUS)}")
        if busy_timeout < 0:
            raise ValidationError("busy_timeout", "must be >= 0", busy_timeout)
        if poll_interval <= 0:
            raise ValidationError("poll_interval", "must be > 0", poll_interval)
        self.path = os.path.abspath(path)
        """The database file."""
        self.synchronous = synchronous.upper()
        """SQLite's ``synchronous`` setting on every connection (see the class)."""
        self.busy_timeout = float(busy_timeout)
        """Seconds a writer waits for the write lock."""
        self.poll_interval = float(poll_interval)
        """The longest pause between head polls while waiting for appends."""
        self.registry = registry if registry is not None else default_registry
        """The registry that decodes payloads for :attr:`RecordedEvent.data`."""
        self.state_cache: StateCache | None = make_state_cache(state_cache)
        """The executor's folded-state cache for this store (``None``: off)."""
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._worker: tuple[ThreadPoolExecutor, int] | None = None  # the async view's (pid)
        self._aio_locks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # read_columns' codes: each type's and stream's, in the order first met.
        self._codes_lock = threading.Lock()
        self._types: tuple[dict[str, int], list[str]] = ({}, [])
        self._streams: tuple[dict[str, int], list[str]] = ({}, [])
        # Wakes waiters of this store object on its own appends (others' are polled).
        self._appended = threading.Condition()
        self._generation = 0
        self._waiting = 0  # waiters registered (sync and async): appends skip the wake-up
        self._async_waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self._open()
        self.snapshots: Snapshotter | None = (
            Snapshotter(SqliteSnapshotStore(self), self.registry.codec, snapshot_every)
            if snapshots
            else None
        )
        """The store's snapshot policy (:mod:`eventcore.snapshot`); None: no snapshots."""
        self.aio = AsyncSqliteStore(self)
        """The same store with the async :class:`~eventcore.store.ProjectionStore` API."""

    # -- connections ---------------------------------------------------------------

    def _connect(self, *, wait: bool = True) -> sqlite3.Connection:
        """A new connection (autocommit: transactions are begun explicitly); one that
        does not ``wait`` fails at once on another connection's write lock."""
        if self._closed:
            raise UsageError(f"the SQLite store {self.path!r} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout if wait else 0.0,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as exc:
            raise q.translate(exc, "open") from exc
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a process forked from this one opens its own)."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._connect()
            local.pid = os.getpid()
        return conn

    def _nowait_conn(self) -> sqlite3.Connection:
        """This thread's connection that never waits for the write lock (the async
        view's first try of an append, on the loop's thread)."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "nowait", None)
        if conn is None or local.nowait_pid != os.getpid():
            conn = local.nowait = self._connect(wait=False)
            local.nowait_pid = os.getpid()
        return conn

    def _open(self) -> None:
        """Switch the file to WAL and create the tables (once, under the write lock)."""
        conn = self._conn()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"{self.path!r}: SQLite could not use WAL mode here (journal mode "
                    f"{mode!r}); put the file on a local file system"
                )
            if conn.execute("PRAGMA user_version").fetchone()[0] < q.SCHEMA_VERSION:
                with self._write(conn, "migrate"):  # one process migrates, the others wait
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for number, _name, statements in q.MIGRATIONS[version:]:
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {number}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            self.close()
            raise q.translate(exc, "open") from exc
        except BaseException:
            self.close()
            raise
        if version > q.SCHEMA_VERSION:
            self.close()
            raise StoreError(
                f"{self.path!r} has schema version {version}; this eventcore knows "
                f"{q.SCHEMA_VERSION}: upgrade eventcore"
            )

    @contextmanager
    def _write(self, conn: sqlite3.Connection, action: str, *, immediate: bool = True) -> Any:
        """A write transaction: BEGIN IMMEDIATE (the write lock), COMMIT, or ROLLBACK."""
        _begin(conn, action, immediate)
        try:
            yield
        except BaseException:
            _rollback(conn)
            raise
        _commit(conn, action)

    def _blocking(self) -> ThreadPoolExecutor:
        """The thread the async view runs blocking calls on (one per store and process)."""
        worker = self._worker
        if worker is None or worker[1] != os.getpid():
            from concurrent.futures import ThreadPoolExecutor  # the async view's only

            with self._conns_lock:
                if self._closed:
                    raise UsageError(f"the SQLite store {self.path!r} is closed")
                worker = self._worker
                if worker is None or worker[1] != os.getpid():
                    pool = ThreadPoolExecutor(1, thread_name_prefix="eventcore-sqlite")
                    worker = self._worker = (pool, os.getpid())
        return worker[0]

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        """This process's turn to write through the async view (on this event loop).

        Writes wait for it on the loop, not on the store's thread: a transaction whose
        block runs on the loop holds it until its COMMIT, which then finds the thread
        free (no other writer is queued there, waiting for the lock the transaction
        holds). Like SQLite's own lock it is waited for at most ``busy_timeout``.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        lock = self._aio_locks.get(loop)
        if lock is None:
            with self._conns_lock:
                lock = self._aio_locks.setdefault(loop, asyncio.Lock())
        try:
            if lock.locked():
                async with asyncio.timeout(self.busy_timeout):
                    await lock.acquire()
            else:
                await lock.acquire()  # free: taken without a pause
        except TimeoutError:
            raise StoreUnavailable(
                f"SQLite unavailable: another write of this process held {self.path!r} for"
                f" busy_timeout ({self.busy_timeout} s)"
            ) from None
        try:
            yield
        finally:
            lock.release()

    async def _off_loop(self, call: Callable[[], R]) -> R:
        """``call()`` on the store's blocking thread (its own connection), awaited without
        blocking the event loop. A cancelled caller waits for the call's end (at most
        ``busy_timeout`` and a commit), so nothing of it runs on once it has moved on."""
        import asyncio

        fut = asyncio.get_running_loop().run_in_executor(self._blocking(), call)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            while not fut.done():
                with suppress(asyncio.CancelledError):
                    await asyncio.wait((fut,))
            if not fut.cancelled():
                fut.exception()  # retrieved: the caller was cancelled, it is not raised
            raise

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise q.translate(exc, "read") from exc

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self._conn().execute(sql, args).fetchone()[0]
        except sqlite3.Error as exc:
            raise q.translate(exc, "read") from exc

    def close(self) -> None:
        """Close every connection of this store; it cannot be used afterwards (a write of
        the async view under way ends first)."""
        self._closed = True
        with self._conns_lock:
            worker, self._worker = self._worker, None
        if worker is not None and worker[1] == os.getpid():
            worker[0].shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- append --------------------------------------------------------------------

    def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append atomically across streams, in one transaction; see
        :meth:`EventStore.append <eventcore.store.EventStore.append>`.

        Events without an id get a UUIDv7. Appending the same ids again (same streams,
        types, payloads and metadata, stored as one run of the log) returns the original
        positions and versions, whatever the expected versions say.

        Raises:
            ConcurrencyConflict: an expected version did not match; nothing written. Its
                ``tail`` holds the events after the expected versions (at most 256).
            ConditionFailed: an event matching ``condition`` lies after its position
                (checked under the write lock); nothing written.
            DuplicateEventId: an event id is stored with other content (or tags),
                appears twice in the batch, or only part of the batch was stored before.
            InvalidStreamId, InvalidEventType, InvalidMetadata, LimitExceeded: bad input,
                refused before anything is written.
            TypeError: an event is not a ``(stream, type, payload, id)`` tuple.
            StoreUnavailable: the write lock was not granted within ``busy_timeout``, or
                an I/O error; nothing written.
            OutcomeUnknown: the COMMIT itself failed: the events may be written.
            StoreError: any other failure.
        """
        return self._append(self._conn(), events, expected, metadata, condition)

    def _append(
        self,
        conn: sqlite3.Connection,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        expected: Expected,
        metadata: Metadata | None,
        condition: AppendCondition | None,
        *,
        nowait: bool = False,
    ) -> AppendResult:
        """:meth:`append` on ``conn``; with ``nowait``, :class:`_Busy` when another
        connection holds the write lock (nothing done yet)."""
        batch = prepare_events(events, metadata)
        checks = prepare_expected(expected)
        tags = prepare_tags(events)
        items = None if condition is None else query_arg(condition.query)
        meta = metadata.to_bytes() if metadata else None
        ids = [
            i.to_bytes(16, "big") if type(i) is int else _id_bytes(i) for i in map(_id_of, batch)
        ]
        try:
            conn.execute("BEGIN IMMEDIATE" if batch or items is not None else "BEGIN")
        except sqlite3.Error as exc:
            if nowait and q.is_transient(exc):
                raise _Busy from exc
            raise q.translate(exc, "append") from exc
        try:
            if items is not None and condition is not None:
                # Under the write lock: no append can land between this check and ours.
                if batch and self._stored(conn, ids):
                    raise _Replay  # idempotency answers before the condition
                found = _query.matching(conn, items, condition.after)
                if found:
                    raise ConditionFailed(condition.after, found[0])
            result = self._append_locked(conn, batch, checks, ids, meta)
            if tags is not None:
                first = result.positions[0]
                conn.executemany(
                    "INSERT INTO event_tags (position, tag) VALUES (?, ?)",
                    [(first + i, tag) for i, event_tags in enumerate(tags) for tag in event_tags],
                )
        except _Replay as signal:
            _rollback(conn)
            replay = self._replay(conn, batch, checks, ids, meta)
            if replay is None:
                raise StoreError("append: a unique constraint failed, but no id is stored") from (
                    signal.__cause__
                )
            stored = self._tags_at(list(replay.positions))
            for e, given, have in zip(batch, tags or [()] * len(batch), stored, strict=True):
                if tuple(given) != have:
                    raise DuplicateEventId(
                        as_uuid(e[3]), "already stored with different tags"
                    ) from None
            return replay
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise q.translate(exc, "append", [e[3] for e in batch] if batch else None) from exc
        if batch:
            self._wake()
        return result

    def _append_locked(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[str, str, bytes, Any]],
        checks: list[tuple[str, int]],
        ids: list[bytes],
        meta: bytes | None,
    ) -> AppendResult:
        """The append, under the write lock (or in a read transaction for checks only)."""
        counts = dict.fromkeys(map(_stream_of, batch))  # the batch's streams, first-seen order
        streams = [*dict.fromkeys([*(c[0] for c in checks), *counts])]
        head = None
        runs = _segments.id_runs(ids)  # the ranges a stored id of the batch would lie in
        clash = None
        if len(streams) == 1 and len(runs) == 1:  # the common command: one statement
            version, head, clash = conn.execute(
                q.VERSION_HEAD_CLASH, (streams[0], *runs[0])
            ).fetchone()
            current = {streams[0]: version}
        elif (
            1 < len(streams) <= _segments.STREAMS_PER_CHECK
            and 0 < len(runs) <= _segments.RUNS_PER_STATEMENT
        ):
            # Several streams (a transfer): their versions, the head and the id check.
            *found, head, clash = conn.execute(
                _segments.versions_head_clash(len(streams), len(runs)),
                [*streams, *[x for run in runs for x in run]],
            ).fetchone()
            current = dict(zip(streams, found, strict=True))
        else:
            current = self._versions(conn, streams)
        conflicts = [(s, v, current[s]) for s, v in checks if not _fits(v, current[s])]
        if conflicts:
            if batch and self._stored(conn, ids):
                raise _Replay  # idempotency answers before the expected versions
            raise self._conflict(conn, conflicts, checks)
        if not batch:
            return AppendResult([], [(s, current[s]) for s, _ in checks], [])
        if head is None or clash is None:
            head, clash = _segments.head_and_clash(conn, runs)
        if clash and self._stored(conn, ids):
            raise _Replay  # an event id is stored
        # Positions: max + 1 on, under the write lock (see the module: dense, never skip).
        first = head + 1
        now = time.time_ns() // 1000
        version = {s: current[s] for s in counts}
        n = len(batch)
        types = list(map(_type_of, batch))
        # One segment per run of consecutive events of one stream (migration 0005). Its
        # triggers index a segment of one event by id and one of one type by type; the
        # id runs of longer segments and the type runs of mixed ones are written here.
        segments: list[tuple[Any, ...]] = []
        id_runs: list[tuple[bytes, bytes, bytes, int]] = []
        type_runs: list[tuple[str, int, int]] = []
        if len(version) == 1:  # one stream: one segment, the batch's id runs are its own
            [(sid, v)] = version.items()
            version[sid] = v + n
            packed = _segments.encode(types, list(map(_payload_of, batch)))
            last = first + n - 1
            segments.append((last, n, sid, v + n, *packed, b"".join(ids), now, meta))
            if n > 1:
                id_runs = [(b, hi, lo, last) for b, lo, hi in runs]
            if type(packed[0]) is not str:
                type_runs = _type_runs(types, first)
        else:
            start = 0
            while start < n:
                sid, end = batch[start][0], start + 1
                while end < n and batch[end][0] == sid:
                    end += 1
                v = version[sid] = version[sid] + end - start
                last = first + end - 1
                if end - start == 1:  # one event (a transfer's): its row as it is
                    e = batch[start]
                    segments.append((last, 1, sid, v, e[1], e[2], ids[start], now, meta))
                    start = end
                    continue
                packed = _segments.encode(types[start:end], [e[2] for e in batch[start:end]])
                blob = b"".join(ids[start:end])
                segments.append((last, end - start, sid, v, *packed, blob, now, meta))
                id_runs += _segments.run_rows(blob, last)
                if type(packed[0]) is not str:
                    type_runs += _type_runs(types[start:end], first + start)
                start = end
        try:
            if len(segments) == 1:
                conn.execute(q.INSERT_SEGMENT, segments[0])
            else:
                conn.executemany(q.INSERT_SEGMENT, segments)
            if id_runs:
                conn.executemany(q.INSERT_RUN, id_runs)
            if type_runs:
                conn.executemany(q.TYPE_RUN, type_runs)
        except sqlite3.IntegrityError as exc:
            raise _Replay from exc  # cannot happen under the lock; _replay says what it was
        versions = list(version.items())
        versions += [(s, current[s]) for s, _ in checks if s not in counts]
        return AppendResult(first, versions, batch)

    def _versions(self, conn: sqlite3.Connection, streams: list[str]) -> dict[str, int]:
        """The current version of each stream (0: none)."""
        if len(streams) == 1:
            return {streams[0]: conn.execute(q.STREAM_VERSION, streams).fetchone()[0]}
        found = dict.fromkeys(streams, 0)
        if streams:
            found.update(conn.execute(q.VERSIONS, (_json_list(streams),)).fetchall())
        return found

    def _stored(self, conn: sqlite3.Connection, ids: list[bytes]) -> list[Any]:
        """The stored events with these ids: (position, id, stream, version, type,
        payload, metadata), in position order."""
        rows = _segments.stored_ids(conn, ids)
        rows.sort()
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in rows]

    def _replay(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[str, str, bytes, Any]],
        checks: list[tuple[str, int]],
        ids: list[bytes],
        meta: bytes | None,
    ) -> AppendResult | None:
        """The original result of a batch stored before, or DuplicateEventId; None when
        no id of the batch is stored."""
        try:
            with self._write(conn, "append", immediate=False):  # a consistent read
                stored = {r[1]: r for r in self._stored(conn, ids)}
                if not stored:
                    return None
                current = self._versions(conn, [s for s, _ in checks])
        except sqlite3.Error as exc:
            raise q.translate(exc, "append") from exc
        # The very same events, stored as one run of the log in this order (consecutive
        # positions), with the same content and metadata. The first event (in order)
        # that is not decides: a missing one means only part of the batch was stored.
        previous = None
        versions: dict[str, int] = {}
        for e, i in zip(batch, ids, strict=True):
            if i not in stored:
                first = next(j for j in ids if j in stored)
                raise DuplicateEventId(
                    uuid.UUID(bytes=first), "only part of this batch was stored before"
                )
            pos, _, sid, version, etype, payload, stored_meta = stored[i]
            if (
                (sid, etype, payload) != (e[0], e[1], e[2])
                or not _same_metadata(stored_meta, meta)
                or (previous is not None and pos != previous + 1)
            ):
                raise DuplicateEventId(as_uuid(e[3]), "already stored with different content")
            previous = pos
            versions[sid] = max(versions.get(sid, 0), version)
        for s, _ in checks:
            versions.setdefault(s, current[s])
        return AppendResult([stored[i][0] for i in ids], list(versions.items()), batch)

    def _conflict(
        self,
        conn: sqlite3.Connection,
        conflicts: list[tuple[str, int, int]],
        checks: list[tuple[str, int]],
    ) -> ConcurrencyConflict:
        """The conflict, with what the caller missed: each checked stream's events from
        its expected version on, read under the same lock (none when over 256)."""
        exc = ConcurrencyConflict(conflicts)
        base = {s: (v, 0) for s, v in checks if v >= 0}
        if (
            base
            and conn.execute(
                "SELECT 1 FROM json_each(?) AS t JOIN stream_lifecycle l"
                " ON l.stream_id = json_extract(t.value, '$[0]')"
                " AND l.truncated_at > json_extract(t.value, '$[1]') LIMIT 1",
                (_json([[str(s), v] for s, (v, _) in base.items()]).decode(),),
            ).fetchone()
        ):
            return exc  # truncated after the expected version: the caller folds in full
        rows: list[Any] = []
        for s, (v, _) in base.items():
            for seg in conn.execute(q.STREAM_FROM, (s, v, _TAIL_ROWS + 1)):
                rows += _segments.fold_rows(seg, v - 1)
                if len(rows) > _TAIL_ROWS:
                    return exc
        rows.sort(key=lambda r: r[4])
        exc._set_tail(checks, rows)
        return exc

    def _wake(self) -> None:
        """Wake this store object's waiters (after a committed append), if any wait."""
        if not self._waiting:
            return
        with self._appended:
            self._generation += 1
            self._appended.notify_all()
            waiters = list(self._async_waiters.items())
        for fut, loop in waiters:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(_resolve, fut)

    # -- folds -----------------------------------------------------------------------

    def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """Every visible event of ``streams`` as fold rows (global order), and each
        stream's version; see :meth:`EventStore.read_fold <eventcore.store.EventStore.read_fold>`.

        One query reads every stream's visible events (hidden ones, below a truncation or
        deletion, are not read), after a row for each stream ever truncated that says
        the version its last truncation took.
        """
        ids = check_stream_ids(streams)
        if len(ids) == 1:
            segs = self._all(q.FOLD_ONE, ids)
        else:
            segs = []
            for start in range(0, len(ids), q.MAX_VARIABLES):  # each stream listed once
                chunk = ids[start : start + q.MAX_VARIABLES]
                segs += self._all(q.fold_many(len(chunk)), chunk)
        versions = dict.fromkeys(ids, 0)
        hidden = dict.fromkeys(ids, 0)
        marks = [seg for seg in segs if seg[1] is None]  # (stream, NULL, truncated_at, hidden)
        if marks:
            for seg in marks:
                versions[seg[0]], hidden[seg[0]] = seg[2], seg[3]
            segs = [seg for seg in segs if seg[1] is not None]
        segs.sort(key=_last_position)
        rows: list[Any] = []
        for seg in segs:
            # A stream's version: its last visible event's, or its last truncation's.
            sid = seg[2]
            if seg[3] > versions[sid]:
                versions[sid] = seg[3]
            if seg[1] == 1:  # one event, visible (the query's bound): its row as it is
                rows.append((sid, seg[4], seg[5], seg[3], seg[0]))
            else:
                rows += _segments.fold_rows(seg, hidden[sid])
        return rows, [versions[s] for s in ids]

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """The events after ``versions`` as fold rows; see
        :meth:`EventStore.read_tail <eventcore.store.EventStore.read_tail>`.

        The same rules as the PostgreSQL store's (a conflict's tail is used instead of a
        read when it continues these versions); here positions are commit order, so a
        tail never lands below an event already folded.
        """
        ids = check_stream_ids(streams)
        if len(versions) != len(ids):
            raise ValueError("versions must have one entry per stream")
        after = dict(zip(ids, versions, strict=True))
        rows: Any = None
        if isinstance(hint, ConcurrencyConflict) and hint.tail_base is not None:
            base = hint.tail_base
            if all(base.get(s, (-1, 0))[0] == v for s, v in after.items()):
                last = set(ids[fold_from:])
                rows = [(s, "", b"", v, p) for s, (v, p) in base.items() if p and s in last]
                rows += [r for r in hint.tail or () if r[0] in after]
        if rows is None:
            # Each stream from its last folded event on (earlier rounds' streams: after
            # it), after a row for each stream truncated since its state was folded.
            rounds = [
                [str(s), v, i >= fold_from]
                for i, (s, v) in enumerate(zip(ids, versions, strict=True))
            ]
            segs = self._all(q.FOLD_TAIL, (_json(rounds).decode(),))
            if any(seg[1] is None for seg in segs):
                return None  # truncated since the state was folded: it may hold hidden events
            segs.sort(key=_last_position)
            last_round = set(ids[fold_from:])
            rows = []
            for seg in segs:
                # The last round's streams from their last folded event on (the last event
                # of a segment before it), earlier rounds' after it.
                v = after[seg[2]]
                rows += _segments.fold_rows(seg, min(v, seg[3]) - 1 if seg[2] in last_round else v)
        slot = {sid: i for i, sid in enumerate(ids)}
        now = dict(after)
        seen: set[str] = set()  # streams whose last folded event was found
        folded_up_to = 0
        tail: list[Any] = []
        for row in rows:
            sid, version, position = row[0], row[3], row[4]
            if version <= after[sid]:
                seen.add(sid)
                folded_up_to = max(folded_up_to, position)
                continue
            if slot[sid] < fold_from:
                return None  # an earlier round's stream moved: discovery may differ
            now[sid] = max(now[sid], version)
            tail.append(row)
        if any(after[sid] and sid not in seen for sid in ids[fold_from:]):
            return None  # fewer events than the state was folded from
        if tail and tail[0][4] <= folded_up_to:
            return None
        return tail, [now[s] for s in ids]

    # -- reads -----------------------------------------------------------------------

    def _wrap(self, rows: list[Any]) -> list[RecordedEvent[Any]]:
        # (position, id as 16 bytes, stream, version, type, payload, micros, metadata
        # bytes or NULL): converted on first access.
        events = recorded_events(rows, self.registry)
        if events:
            set_tags(events, self._tags_at([e.position for e in events]))
        return events

    def _tags_at(self, positions: list[int]) -> list[tuple[str, ...]]:
        """The tags of the events at ``positions`` (sorted; empty for none)."""
        found: dict[int, list[str]] = {}
        for position, tag in self._all(*_query.tags_of(positions)):
            found.setdefault(position, []).append(tag)
        return [tuple(found.get(p, ())) for p in positions]

    def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """The events after position ``after`` matching ``query``, in position order (at
        most ``limit``), and the position the read is consistent with (the head, or the
        last event returned when ``limit`` cut the read short); see
        :meth:`EventStore.read_query <eventcore.store.EventStore.read_query>`.

        Raises:
            InvalidTag: a tag of the query broke the rules.
            InvalidEventType: a type name of the query broke the rules.
        """
        items = query_arg(query)
        limit = check_limit(limit)
        if not isinstance(after, int) or after < 0:
            raise ValidationError("after", "must be a non-negative int", after)
        conn = self._conn()
        try:
            with self._write(conn, "read", immediate=False):  # one consistent snapshot
                head = conn.execute(q.HEAD).fetchone()[0]
                rows = []
                if items and limit != 0:
                    positions = _query.matching(conn, items, after)
                    rows = _segments.events_at(conn, positions[:limit])
        except sqlite3.Error as exc:
            raise q.translate(exc, "read") from exc
        position = rows[-1][0] if limit and len(rows) == limit else head
        return QueryResult(self._wrap(rows), position)

    def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version > ``after_version``, oldest first."""
        sid = validate_stream_id(stream_id)
        limit = check_limit(limit)
        segs = self._all(q.READ_STREAM, (sid, after_version, _NO_LIMIT if limit is None else limit))
        return self._wrap(_events(segs, after_version, limit))

    def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of several streams with version > ``after_version``, in global order.

        Raises:
            TypeError: ``stream_ids`` is a str (one id), not a sequence of ids.
        """
        ids = check_stream_ids(stream_ids)
        limit = check_limit(limit)
        segs = self._all(
            q.READ_STREAMS, (_json_list(ids), after_version, _NO_LIMIT if limit is None else limit)
        )
        return self._wrap(_events(segs, after_version, limit))

    def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version < ``before_version``, newest first."""
        sid = validate_stream_id(stream_id)
        limit = check_limit(limit)
        before = _MAX_VERSION if before_version is None else before_version
        segs = self._all(q.READ_BACKWARDS, (sid, before, _NO_LIMIT if limit is None else limit))
        rows: list[Any] = []
        for seg in segs:
            rows += reversed([r for r in _segments.expand(seg[:9]) if seg[9] < r[3] < before])
        return self._wrap(rows[:limit])

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The global log after ``after_position`` in position order, optionally filtered.

        ``event_types`` keeps only those types; ``stream_prefix`` only streams whose id
        starts with it.

        Raises:
            TypeError: ``event_types`` is a str, not a sequence of type names.
        """
        types = check_event_types(event_types)
        limit = check_limit(limit)
        if limit == 0:
            return []
        sql = f"SELECT {q.SEG} FROM segments WHERE last_position > ?"
        args: list[Any] = [after_position]
        if types is not None:  # a segment of mixed types is filtered here
            sql += " AND (typeof(types) <> 'text' OR types IN (SELECT value FROM json_each(?)))"
            args.append(_json_list(types))
        if stream_prefix:
            sql += " AND substr(stream_id, 1, ?) = ?"
            args += [len(stream_prefix), stream_prefix]
        sql += " ORDER BY last_position"
        if types is None and limit is not None:
            sql += " LIMIT ?"  # each segment holds at least one event
            args.append(limit)
        wanted = None if types is None else set(types)
        rows: list[Any] = []
        conn = self._conn()
        try:
            cursor = conn.execute(sql, args)
            try:
                for seg in cursor:
                    # The events after after_position (the first segment may hold more).
                    events = _segments.expand(seg, after_position - seg[0] + seg[1])
                    if wanted is not None and type(seg[4]) is not str:
                        events = [r for r in events if r[4] in wanted]
                    rows += events
                    if limit is not None and len(rows) >= limit:
                        del rows[limit:]
                        break
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise q.translate(exc, "read") from exc
        return self._wrap(rows)

    def iter_all(
        self,
        *,
        after_position: int = 0,
        page_size: int = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Iterator[RecordedEvent[Any]]:
        """Iterate the global log from ``after_position`` in pages of ``page_size``."""
        if page_size < 1:
            raise ValidationError("page_size", "must be at least 1", page_size)
        cursor = after_position
        while True:
            page = self.read_all(
                after_position=cursor,
                limit=page_size,
                event_types=event_types,
                stream_prefix=stream_prefix,
            )
            yield from page
            if len(page) < page_size:
                return
            cursor = page[-1].position

    def read_columns(
        self,
        after_position: int = 0,
        limit: int | None = None,
        known_types: int = 0,
        known_streams: int = 0,
    ) -> ColumnBuffers:
        """The envelopes of up to ``limit`` events after ``after_position`` as columns
        (what a columnar projection reads: no payload, no event object).

        Returns ``(positions, type_codes, stream_codes, recorded_at, type_names,
        stream_names)`` as :meth:`MemoryStore.read_columns <eventcore.MemoryStore.read_columns>`
        does: little-endian ``int64``, ``int32``, ``int32`` and ``int64`` (microseconds
        since the epoch, UTC) buffers in position order. Codes are this store object's,
        numbered in the order it first met each type and stream; ``type_names`` holds the
        names of codes ``known_types`` and up, ``stream_names`` those of codes
        ``known_streams`` up to the largest returned.
        """
        limit = check_limit(limit)
        segs = self._all(
            "SELECT last_position, n, types, stream_id, recorded_at FROM segments"
            " WHERE last_position > ? ORDER BY last_position LIMIT ?",
            (after_position, _NO_LIMIT if limit is None else limit),
        )
        rows: list[Any] = []
        for last, n, seg_types, sid, at in segs:
            first = max(last - n + 1, after_position + 1)
            each = _segments.types_of(seg_types, n)[first - last + n - 1 :]
            rows += zip(range(first, last + 1), each, repeat(sid), repeat(at))
        if limit is not None:
            del rows[limit:]
        positions, types, streams, recorded = zip(*rows, strict=True) if rows else ((),) * 4
        with self._codes_lock:
            (type_codes, type_list), (stream_codes, stream_list) = self._types, self._streams
            for codes, names, column in (
                (type_codes, type_list, types),
                (stream_codes, stream_list, streams),
            ):
                for name in dict.fromkeys(column):
                    if name not in codes:
                        codes[name] = len(names)
                        names.append(name)
            tcodes = array("i", map(type_codes.__getitem__, types))
            scodes = array("i", map(stream_codes.__getitem__, streams))
            type_names = type_list[known_types:]
            stream_names = stream_list[known_streams : max(scodes, default=-1) + 1]
        arrays = [array("q", positions), tcodes, scodes, array("q", recorded)]
        if sys.byteorder == "big":
            for each in arrays:
                each.byteswap()
        buffers = [a.tobytes() for a in arrays]
        return buffers[0], buffers[1], buffers[2], buffers[3], type_names, stream_names

    def read_events_by_id(self, event_ids: Sequence[uuid.UUID | int]) -> list[RecordedEvent[Any]]:
        """The stored events with these ids, in position order; ids not stored are left out."""
        ids = [as_uuid(i).bytes for i in event_ids]
        try:
            rows = _segments.stored_ids(self._conn(), ids)
        except sqlite3.Error as exc:
            raise q.translate(exc, "read") from exc
        rows.sort()
        return self._wrap(rows)

    def stream_version(self, stream_id: str) -> int:
        """A stream's version: its number of events (0 = no stream)."""
        return int(self._one(q.STREAM_VERSION, (validate_stream_id(stream_id),)))

    def head(self) -> int:
        """The position of the last event (0 when empty)."""
        return int(self._one(q.HEAD))

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by stream id (code points), by prefix.

        A deleted stream is listed, with its version (also once its events are purged).
        """
        limit = check_limit(limit)
        where = "WHERE 1"
        args: list[Any] = []
        if prefix:
            where += " AND substr(stream_id, 1, ?) = ?"
            args += [len(prefix), prefix]
        if after is not None:
            where += " AND stream_id > ?"
            args.append(after)
        sql = (
            f"SELECT stream_id, max(v) FROM (SELECT stream_id, max(last_version) AS v FROM segments"
            f" {where} GROUP BY stream_id UNION ALL SELECT stream_id, truncated_at"
            f" FROM stream_lifecycle {where}) GROUP BY stream_id ORDER BY stream_id LIMIT ?"
        )
        args += [*args, _NO_LIMIT if limit is None else limit]
        return [(r[0], r[1]) for r in self._all(sql, args)]

    @property
    def dense_positions(self) -> bool:
        """Whether positions are 1, 2, 3... without gaps: until a purge erases events."""
        return not self._one(q.PURGED)

    def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (purged ones are not counted)."""
        if upto <= after_position:
            return 0
        if self.dense_positions:
            return max(0, min(upto, self.head()) - after_position)
        return int(self._one(q.COUNT_BETWEEN, (after_position, upto)))

    def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Block until the head passes ``after_position`` or ``timeout`` seconds pass; the head.

        Wakes at once on an append through this store object; appends of other processes
        (or other store objects) are seen by polling the head, from every millisecond
        backing off to every :attr:`poll_interval` seconds.
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        with self._appended:
            self._waiting += 1  # before the first head read: no append is missed
        try:
            while True:
                with self._appended:
                    generation = self._generation
                head = self.head()
                left = deadline - time.monotonic()
                if head > after_position or left <= 0:
                    return head
                with self._appended:
                    if self._generation == generation:
                        self._appended.wait(min(delay, left))
                delay = min(delay * 2, self.poll_interval)
        finally:
            with self._appended:
                self._waiting -= 1

    def __len__(self) -> int:
        """The number of events in the log (purged ones are not counted)."""
        return self.count_events(0, self.head())

    # -- stream lifecycle (eventcore.store.SyncStreamLifecycle, migration 0002) --------

    def _truncate(self, stream_id: str, before: int | None, expected: int) -> int:
        """Hide the versions of ``stream_id`` below ``before`` (None: all), under the
        write lock; the stream's version after it (see migration 0002)."""
        sid = validate_stream_id(stream_id)
        conn = self._conn()
        with self._write(conn, "truncate"):
            version = conn.execute(q.STREAM_VERSION, (sid,)).fetchone()[0]
            if not _fits(expected, version):
                raise ConcurrencyConflict([(sid, expected, version)])
            if before is not None and before > version + 1:
                raise out_of_range(sid, before, version)
            hide = version if before is None else before - 1
            # Only a truncation that hides an event takes a version (and moves the point).
            if conn.execute(q.HIDES_AN_EVENT, (sid, hide)).fetchone() is None:
                return int(version)
            conn.execute(q.TRUNCATE, (sid, hide, version + 1))
        return int(version) + 1

    def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """Hide every event ``stream_id`` has now (a soft delete); its version.

        See :class:`~eventcore.store.StreamLifecycle`: the version stays, an append
        recreates the stream, the global log keeps the events until they are purged.

        Raises:
            ConcurrencyConflict: ``expected`` (as for an append) did not match.
        """
        return self._truncate(stream_id, None, check_expected(expected))

    def truncate_stream(self, stream_id: str, before_version: int, *, expected: int = -1) -> int:
        """Hide the events of ``stream_id`` below ``before_version``; its version.

        Raises:
            ConcurrencyConflict: ``expected`` did not match; nothing hidden.
            ValidationError: ``before_version`` is not between 1 and the version + 1.
        """
        check_expected(expected)
        return self._truncate(stream_id, check_before(before_version), expected)

    def stream_bounds(self, stream_id: str) -> StreamBounds:
        """The first visible version and the version of ``stream_id``."""
        sid = validate_stream_id(stream_id)
        hidden, version, visible = self._all(q.STREAM_BOUNDS, (sid,))[0]
        return StreamBounds(hidden + 1, version, hidden > 0 and not visible)

    def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """Erase the hidden events of ``stream_id`` and record who, when, what and why.

        Their payloads, metadata and ids are deleted (an id may be used again); the
        global log skips their positions from now on, and no append takes them again.
        Anyone who can write the file can purge: guard it like the file.
        """
        check_purge(actor, reason)
        sid = validate_stream_id(stream_id)
        conn = self._conn()
        now = time.time_ns() // 1000
        with self._write(conn, "purge"):
            found = conn.execute(q.PURGEABLE, (sid,)).fetchone()
            n, first, last, low, high = 0, 0, 0, 0, 0
            if found is not None:
                purged, hidden = found
                n, first, last, low, high = _purge_segments(conn, sid, purged, hidden)
                conn.execute(q.PURGE_MARK, (sid,))
            conn.execute(q.PURGE_RECORD, (sid, n, first, last, low, high, actor, reason, now))
        return PurgeRecord(sid, n, first, last, low, high, actor, None, reason, _utc(now))

    def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """Every purge's audit record (of ``stream_id`` only), oldest first."""
        rows = self._all(q.PURGE_LOG, (stream_id,))
        return [
            PurgeRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], None, r[7], _utc(r[8]))
            for r in rows
        ]


def _type_runs(types: list[str], first: int) -> list[tuple[str, int, int]]:
    """The type index's rows ``(type, last position, first position)`` of a segment of
    mixed ``types`` whose first event is at ``first``: each type's first and last."""
    spans: dict[str, list[int]] = {}
    for i, t in enumerate(types, first):
        span = spans.get(t)
        if span is None:
            spans[t] = [i, i]
        else:
            span[1] = i
    return [(t, hi, lo) for t, (lo, hi) in spans.items()]


def _events(segs: list[Any], above: int, limit: int | None) -> list[Any]:
    """The events of segments ``(*segment, hidden_upto)`` with versions above ``above``
    and ``hidden_upto``, at most ``limit``."""
    rows: list[Any] = []
    for seg in segs:
        # Skip the events at or below both versions.
        rows += _segments.expand(seg[:9], max(above, seg[9]) - (seg[3] - seg[1]))
    return rows[:limit]


def _purge_segments(
    conn: sqlite3.Connection, sid: str, purged: int, hidden: int
) -> tuple[int, int, int, int, int]:
    """Erase the events of ``sid`` with versions in ``(purged, hidden]``, their tags and
    their ids' runs: the segments holding only such events are deleted, the one holding
    more is trimmed from the front (a purge erases a prefix of the stream). Returns
    ``(events, first version, last version, first position, last position)`` erased."""
    n, first, last, low, high = 0, 0, 0, 0, 0
    for seg in conn.execute(q.PURGE_SEGMENTS, (sid, purged, hidden)).fetchall():
        end, size, version, ids = seg[0], seg[1], seg[3], seg[6]
        start_version = version - size + 1  # > purged: earlier purges trimmed the rest
        erased = min(version, hidden) - start_version + 1
        start = end - size + 1
        n += erased
        first = first or start_version
        last = start_version + erased - 1
        low = low or start
        high = start + erased - 1
        conn.executemany(q.PURGE_RUN, [r[:2] + r[3:] for r in _segments.run_rows(ids, end)])
        conn.execute(q.PURGE_TAGS, (start, start + erased - 1))
        if erased == size:
            conn.execute(q.PURGE_SEGMENT, (end,))
            continue
        kept = _segments.expand(seg)[erased:]
        blob = ids[16 * erased :]
        packed = _segments.encode([r[4] for r in kept], [r[5] for r in kept])
        conn.execute(q.PURGE_TRIM, (len(kept), *packed, blob, end))
        conn.executemany(q.INSERT_RUN, _segments.run_rows(blob, end))
    return n, first, last, low, high


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SqliteSnapshotStore:
    """A :class:`~eventcore.snapshot.SnapshotStore` in the event store's file (one row a key)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None."""
        rows = self._store._all(q.SNAPSHOT_LOAD, (key,))
        if not rows:
            return None
        schema_version, streams, versions, fold_from, rounds, state, taken_at, digest = rows[0]
        return Snapshot(
            key,
            tuple(msgspec.json.decode(streams)),
            tuple(msgspec.json.decode(versions)),
            fold_from,
            rounds,
            schema_version,
            state,
            taken_at,
            digest,
        )

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a snapshot of more events (same schema) is stored."""
        store = self._store
        conn = store._conn()
        with store._write(conn, "save snapshot"):
            conn.execute(
                q.SNAPSHOT_SAVE,
                (
                    snapshot.key,
                    snapshot.schema_version,
                    _json_list(snapshot.streams),
                    _json(list(snapshot.versions)).decode(),
                    snapshot.fold_from,
                    snapshot.rounds,
                    snapshot.events,
                    snapshot.state,
                    snapshot.taken_at,
                    snapshot.checksum,
                ),
            )

    def __repr__(self) -> str:
        return f"SqliteSnapshotStore({self._store.path!r})"


class AsyncSqliteStore(SyncStoreView["SqliteStore"]):
    """The async view of a :class:`SqliteStore`: same data, the
    :class:`~eventcore.store.ProjectionStore` API.

    Writes (appends, stream lifecycle, checkpoints) run on a thread of the store's own,
    so that waiting for another process's write lock (at most ``busy_timeout``) and the
    commit's sync never block the event loop; the loop stays free meanwhile. Reads and
    folds run on the loop's thread: in WAL mode they never wait for a lock, and they
    answer from the local file. :meth:`wait_for_append` does not block the loop.
    """

    async def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """See :meth:`SqliteStore.append`; the lock and the sync are waited for off the loop."""
        sync = self.sync
        async with sync._writer():
            if sync.synchronous in _NO_SYNC and type(sync).append is SqliteStore.append:
                # No sync at commit: tried on the loop's thread, without waiting for the
                # write lock; when another process holds it, waited for off the loop.
                with suppress(_Busy):
                    conn = sync._nowait_conn()
                    return sync._append(conn, events, expected, metadata, condition, nowait=True)
            if condition is None:  # as the base view: a subclass's append may predate it
                return await sync._off_loop(
                    lambda: sync.append(events, expected=expected, metadata=metadata)
                )
            return await sync._off_loop(
                lambda: sync.append(
                    events, expected=expected, metadata=metadata, condition=condition
                )
            )

    async def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """See :meth:`SqliteStore.delete_stream` (run on the store's thread for writes)."""
        sync = self.sync
        async with sync._writer():
            return await sync._off_loop(lambda: sync.delete_stream(stream_id, expected=expected))

    async def truncate_stream(
        self, stream_id: str, before_version: int, *, expected: int = -1
    ) -> int:
        """See :meth:`SqliteStore.truncate_stream` (run on the store's thread for writes)."""
        sync = self.sync
        async with sync._writer():
            return await sync._off_loop(
                lambda: sync.truncate_stream(stream_id, before_version, expected=expected)
            )

    async def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """See :meth:`SqliteStore.purge_stream` (run on the store's thread for writes)."""
        sync = self.sync
        async with sync._writer():
            return await sync._off_loop(
                lambda: sync.purge_stream(stream_id, actor=actor, reason=reason)
            )

    @property
    def path(self) -> str:
        """The database file."""
        return self.sync.path

    async def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Wait until the head passes ``after_position`` or ``timeout`` passes; the head.

        As :meth:`SqliteStore.wait_for_append`, without blocking the event loop: an
        append through this store wakes the task at once, other processes' are polled.
        """
        import asyncio  # loaded on first use: sync-only code never needs it

        sync = self.sync
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        with sync._appended:
            sync._waiting += 1  # before the first head read: no append is missed
        try:
            while True:
                fut: asyncio.Future[None] = loop.create_future()
                with sync._appended:
                    sync._async_waiters[fut] = loop
                try:
                    head = sync.head()
                    left = deadline - loop.time()
                    if head > after_position or left <= 0:
                        return head
                    await asyncio.wait((fut,), timeout=min(delay, left))
                finally:
                    with sync._appended:
                        sync._async_waiters.pop(fut, None)
                    fut.cancel()
                delay = min(delay * 2, sync.poll_interval)
        finally:
            with sync._appended:
                sync._waiting -= 1

    async def iter_all(
        self,
        *,
        after_position: int = 0,
        page_size: int = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Iterate the global log in pages (see :meth:`SqliteStore.iter_all`)."""
        for event in self.sync.iter_all(
            after_position=after_position,
            page_size=page_size,
            event_types=event_types,
            stream_prefix=stream_prefix,
        ):
            yield event

    # -- what projections need (eventcore.store.ProjectionStore) --------------------

    @property
    def dense_positions(self) -> bool:
        """Whether positions are 1, 2, 3... without gaps: until a purge erases events."""
        return self.sync.dense_positions

    async def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (purged ones are not counted)."""
        return self.sync.count_events(after_position, upto)

    # -- stream lifecycle (eventcore.store.StreamLifecycle) --------------------------

    async def log_holdback(self) -> LogHoldback | None:
        """None: an append is visible to every reader the moment it commits."""
        return None

    async def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers:
        """See :meth:`SqliteStore.read_columns`."""
        return self.sync.read_columns(after_position, limit, known_types, known_streams)

    def checkpoint_store(self) -> SqliteCheckpointStore:
        """Checkpoints, dead letters and leader leases in this store's file."""
        from eventcore.sqlite.checkpoint import SqliteCheckpointStore

        return SqliteCheckpointStore(self.sync)

    async def close(self) -> None:
        """Close the store (see :meth:`SqliteStore.close`)."""
        self.sync.close()

    async def __aenter__(self) -> AsyncSqliteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncSqliteStore({self.sync.path!r})"
