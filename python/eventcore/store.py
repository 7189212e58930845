"""The protocols every store implements: what the layers above a store may use.

What a store must implement
    - :class:`EventStore` (async): appends, stream and global-log reads, the two fold reads
      the command executor needs (rows: the executor folds them, a store never calls the
      user's ``apply`` or decoders), lookups by event id. A synchronous store also offers
      :class:`SyncEventStore` (the in-memory store does; its ``.aio`` view is the async one).
    - :class:`ProjectionStore` (async, an :class:`EventStore` plus what projections need):
      waiting for appends, counting events between positions, what holds the log back,
      columnar pages (or ``None``: the runner builds columns from :meth:`~EventStore.read_all`),
      and its default :class:`CheckpointStore`.
    - :class:`CheckpointStore`: where projections keep their positions and dead letters. One
      kept in the store's own database may also offer a leadership :class:`Lease` per
      projection (``exclusive``) and a :class:`CheckpointTransaction` in which a batch and
      its checkpoint commit together (``transactional``).

Optional faces: :class:`StreamCatalog` (listing streams), :class:`AsyncView` (a
synchronous store's async view), :class:`LoopThreadStore` (a synchronous store whose
async face lives on an event loop thread of its own) and :class:`StreamLifecycle`
(deleting, truncating and purging streams; :class:`SyncStreamLifecycle` on a synchronous
store).

The executor, the projection runner and the command line use only these; a new store
implements them and passes the contract suite (``tests/contract``) and ``tests/projection``. A store
raises only eventcore's errors (its driver's are translated where they arise):
``StoreUnavailable`` for a transient failure (retried: by the executor, or by a projection
runner that reconnects), another ``StoreError`` for the rest.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from eventcore.errors import StoreUnavailable
from eventcore.metadata import Metadata
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent
from eventcore.registry import EventRegistry

if TYPE_CHECKING:
    import asyncio
    import uuid
    from datetime import datetime

    from eventcore.projection.checkpoint import DeadLetter

__all__ = [
    "AsyncView",
    "CheckpointStore",
    "CheckpointTransaction",
    "ColumnBuffers",
    "EventStore",
    "Expected",
    "FoldRows",
    "Lease",
    "LogHoldback",
    "LoopThreadStore",
    "ProjectionStore",
    "PurgeRecord",
    "StreamBounds",
    "StreamCatalog",
    "StreamLifecycle",
    "SyncEventStore",
    "SyncStreamLifecycle",
]

T = TypeVar("T")
Expected = Mapping[str, int] | Sequence[tuple[str, int]]
"""Expected versions: stream id to an exact version, ``NO_STREAM``, ``STREAM_EXISTS`` or ``ANY``."""
FoldRows = Sequence[Sequence[Any]]
"""Events to fold, in order: each ``(stream_id, event_type, payload, version, position)``
(what :func:`eventcore._core.fold` takes; a database record with these columns will do)."""


@runtime_checkable
class EventStore(Protocol):
    """An asynchronous event store (PostgreSQL, or the in-memory store's ``.aio`` view).

    Every store passes the same contract test suite (``tests/contract``).
    """

    registry: EventRegistry

    async def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append atomically across streams, checking every expected version first.

        Raises ConcurrencyConflict (with every mismatching stream) and writes nothing on
        any mismatch; appending the same event ids again returns the original result.
        With a ``condition``, raises ConditionFailed and writes nothing when an event
        matching its query lies after its position (checked atomically with the write;
        a replay of stored ids is not checked again). Events keep their tags.
        """
        ...

    async def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """The events after position ``after`` matching ``query`` in global order (at most
        ``limit``), and the position the read is consistent with: every matching event up
        to it is in the result (the head, or the last event returned when ``limit`` cut
        the read short), so it is the ``after`` of an :class:`AppendCondition` that
        guards a decision made on the result."""
        ...

    async def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """Every event of ``streams`` as fold rows (global order), and each stream's version.

        Only visible events (none below a truncation or deletion); a stream with no events
        has version 0. The executor folds the rows into the command's state itself.
        """
        ...

    async def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """The events of ``streams[fold_from:]`` after ``versions`` as fold rows.

        A state was folded from every stream up to ``versions`` (one per stream); this
        returns the events after them in global order (what extends that state) and the
        streams' versions now. Returns ``None`` when that tail cannot extend the state: a
        stream before ``fold_from`` (an earlier discovery round) has new events, a stream
        has fewer events than ``versions`` says (truncated since), or a tail event lies at
        or before the last folded event of any stream from ``fold_from`` on (a late commit
        landing below it, possible where positions are not commit order). ``hint`` is the
        ``ConcurrencyConflict`` that made the executor retry, what a snapshot load read
        with its snapshot, or ``None``; a store may use what it carries instead of reading.
        """
        ...

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version > ``after_version``, oldest first."""
        ...

    async def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of several streams with version > ``after_version``, in global order."""
        ...

    async def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version < ``before_version``, newest first."""
        ...

    async def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The global log after ``after_position``, in delivery order, optionally filtered."""
        ...

    async def read_events_by_id(
        self, event_ids: Sequence[uuid.UUID | int]
    ) -> list[RecordedEvent[Any]]:
        """The stored events with these ids, in position order; ids not stored are left out.

        One indexed lookup; the executor uses it for idempotency keys, and after an
        ``OutcomeUnknown`` it tells whether the append was written.
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """A stream's version: its number of events, plus one per truncation (0 = no stream)."""
        ...

    async def head(self) -> int:
        """The position of the last event in the global log (0 when empty)."""
        ...


@runtime_checkable
class SyncEventStore(Protocol):
    """A synchronous event store: the same operations as :class:`EventStore`, not async."""

    registry: EventRegistry

    def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """See :meth:`EventStore.append`."""
        ...

    def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """See :meth:`EventStore.read_query`."""
        ...

    def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """See :meth:`EventStore.read_fold`."""
        ...

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """See :meth:`EventStore.read_tail`."""
        ...

    def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See :meth:`EventStore.read_stream`."""
        ...

    def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See :meth:`EventStore.read_streams`."""
        ...

    def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See :meth:`EventStore.read_stream_backwards`."""
        ...

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """See :meth:`EventStore.read_all`."""
        ...

    def read_events_by_id(self, event_ids: Sequence[uuid.UUID | int]) -> list[RecordedEvent[Any]]:
        """See :meth:`EventStore.read_events_by_id`."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """See :meth:`EventStore.stream_version`."""
        ...

    def head(self) -> int:
        """See :meth:`EventStore.head`."""
        ...


ColumnBuffers = tuple[bytes, bytes, bytes, bytes, list[str], list[str]]
"""Envelope columns of a page of the global log (see :meth:`ProjectionStore.read_columns`)."""


@runtime_checkable
class StreamCatalog(Protocol):
    """A store that lists its streams (both stores' async faces; ``eventcore streams``)."""

    async def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by stream id, optionally by prefix."""
        ...


class StreamBounds(NamedTuple):
    """Which versions of a stream reads and folds see (see :class:`StreamLifecycle`)."""

    first_version: int
    """The first version reads and folds may see: 1 when nothing is hidden."""
    version: int
    """The stream's version: the last version taken, by an event or a truncation."""
    deleted: bool
    """Whether the stream had events and every one of them is hidden (a tombstone)."""


class PurgeRecord(NamedTuple):
    """One hard deletion: the audit row :meth:`StreamLifecycle.purge_stream` writes."""

    stream_id: str
    """The stream whose hidden events were erased."""
    events: int
    """How many events were erased (0: nothing was hidden that was not erased already)."""
    from_version: int
    """The first version erased (0 when nothing was)."""
    to_version: int
    """The last version erased (0 when nothing was)."""
    first_position: int
    """The lowest global position erased: the deleted range readers of the log skip."""
    last_position: int
    """The highest global position erased."""
    actor: str
    """Who asked for it (given by the caller)."""
    database_user: str | None
    """The database role that ran it (PostgreSQL's ``session_user``; None in memory)."""
    reason: str
    """Why (given by the caller: a retention rule, a request's reference...)."""
    purged_at: datetime
    """When (UTC)."""


@runtime_checkable
class StreamLifecycle(Protocol):
    """Deleting and truncating streams (both soft), and purging (hard deletion).

    - Hidden events: :meth:`truncate_stream` hides the events below a version and
      :meth:`delete_stream` every event a stream has (a tombstone). Stream reads, folds and
      therefore commands, state caches and snapshots see only the visible events.
    - A truncation or deletion that hides something takes the stream's next version (no
      event has it): a command that folded the stream before it (its state cached
      anywhere, or in a snapshot) expects an older version, conflicts and folds again.
      Versions never go back: after a delete ``NO_STREAM`` fails, the version,
      ``STREAM_EXISTS`` or ``ANY`` passes, and an append recreates the stream after it.
    - The global log (``read_all``, projections, ``read_events_by_id``) keeps hidden events
      until :meth:`purge_stream` erases them: their positions then stay empty, a deleted
      range readers pass over without waiting.
    - :meth:`purge_stream` is the privileged path: on PostgreSQL only the schema's owner
      may run it (never the application role), and each purge writes a
      :class:`PurgeRecord`.
    """

    async def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """Hide every event ``stream_id`` has now (a soft delete); its version after it.

        Raises:
            ConcurrencyConflict: ``expected`` (as for an append) did not match; nothing hidden.
        """
        ...

    async def truncate_stream(
        self, stream_id: str, before_version: int, *, expected: int = -1
    ) -> int:
        """Hide the events of ``stream_id`` with a version below ``before_version``.

        The hidden point only moves forward (an earlier one changes nothing, and takes no
        version). Returns the stream's version after it.

        Raises:
            ConcurrencyConflict: ``expected`` did not match; nothing hidden.
            ValueError: ``before_version`` is not between 1 and the version + 1.
        """
        ...

    async def stream_bounds(self, stream_id: str) -> StreamBounds:
        """The first visible version and the version of ``stream_id``."""
        ...

    async def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """Erase (hard-delete) the hidden events of ``stream_id``, with an audit record.

        Raises:
            StoreError: the caller may not purge (PostgreSQL: not the schema's owner).
        """
        ...

    async def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """The audit records of every purge (of ``stream_id`` only), oldest first."""
        ...


@runtime_checkable
class SyncStreamLifecycle(Protocol):
    """:class:`StreamLifecycle` on a synchronous store (same semantics, not async)."""

    def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """See :meth:`StreamLifecycle.delete_stream`."""
        ...

    def truncate_stream(self, stream_id: str, before_version: int, *, expected: int = -1) -> int:
        """See :meth:`StreamLifecycle.truncate_stream`."""
        ...

    def stream_bounds(self, stream_id: str) -> StreamBounds:
        """See :meth:`StreamLifecycle.stream_bounds`."""
        ...

    def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """See :meth:`StreamLifecycle.purge_stream`."""
        ...

    def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """See :meth:`StreamLifecycle.purge_log`."""
        ...


@runtime_checkable
class AsyncView(Protocol):
    """A synchronous store with an async view of the same data (``MemoryStore().aio``)."""

    @property
    def aio(self) -> EventStore:
        """The :class:`EventStore` face of this store."""
        ...


class LogHoldback(NamedTuple):
    """The oldest in-flight append of a store: what holds its global log's readers back.

    See :meth:`ProjectionStore.log_holdback`.
    """

    transaction_id: int
    """Its transaction id (PostgreSQL: 64-bit, as ``pg_current_xact_id()``)."""
    pid: int | None
    """The backend process id holding it (None: a prepared transaction)."""
    started: datetime | None
    """When its transaction started (prepared: when it was prepared); None if hidden."""
    seconds: float | None
    """Seconds since ``started``: how long readers have waited for it at most."""
    xid_age: int
    """Transaction ids handed out since its own."""


@runtime_checkable
class ProjectionStore(EventStore, Protocol):
    """An :class:`EventStore` that projections can follow (PostgreSQL, ``MemoryStore().aio``).

    The projection runner and :class:`~eventcore.projection.Subscription` use only this
    protocol and the :class:`CheckpointStore` it hands out.
    """

    @property
    def dense_positions(self) -> bool:
        """Whether positions are 1, 2, 3... without gaps (lag in events = head - position)."""
        ...

    async def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Wait until :meth:`~EventStore.head` passes ``after_position`` or ``timeout``
        seconds pass; the head (``<= after_position`` on timeout)."""
        ...

    async def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (exact; may be capped at 10
        million)."""
        ...

    async def log_holdback(self) -> LogHoldback | None:
        """The store's oldest append still in flight that holds global-log readers back
        (None: none does, or the store's appends never hold readers back)."""
        ...

    async def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers | None:
        """The envelopes of up to ``limit`` events after ``after_position`` as columns.

        Returns ``(positions, type_codes, stream_codes, recorded_at, type_names,
        stream_names)``: little-endian ``int64``, ``int32``, ``int32`` and ``int64``
        (microseconds since the unix epoch, UTC) buffers, one item per event in position
        order, unfiltered; codes are the store's own, stable for its lifetime, and the name
        lists hold the names of codes ``known_types`` and ``known_streams`` on. ``None``:
        the store has no columnar read, and the reader builds columns from
        :meth:`~EventStore.read_all`.
        """
        ...

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoints a projection runner keeps by default for this store."""
        ...


@runtime_checkable
class LoopThreadStore(Protocol):
    """A synchronous store whose async face runs on an event loop of its own, in a thread
    of its own (:class:`~eventcore.postgres.SyncPostgresStore`).

    The async face may be awaited only on that loop: :meth:`run_on_loop` runs a
    coroutine there (a :class:`~eventcore.projection.ProjectionRunner`'s ``*_sync``
    methods do).
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the async face lives on (this process's)."""
        ...

    @property
    def loop_store(self) -> ProjectionStore:
        """The async face: await it only on :attr:`loop`."""
        ...

    def run_on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on :attr:`loop` and block until it ends; its result.

        Raises:
            UsageError: called from inside a running event loop.
        """
        ...


@runtime_checkable
class Lease(Protocol):
    """A projection's leadership: held by one process at a time (see
    :meth:`CheckpointStore.lease`)."""

    async def acquire(self) -> bool:
        """Take the lease if it is free; False while another process holds it.

        Raises:
            StoreUnavailable: the store could not be reached.
        """
        ...

    async def check(self) -> None:
        """Check that the lease is still held.

        Raises:
            StoreUnavailable: the lease's link to the store is gone (so is the lease).
        """
        ...

    async def release(self) -> None:
        """Give the lease up, and what holds it; never raises (a lost link already
        released it). It may be acquired again."""
        ...


@runtime_checkable
class CheckpointTransaction(Protocol):
    """One transaction on the read model's database that also moves a checkpoint."""

    connection: Any
    """What ``apply_in_transaction(events, connection)`` is given (PostgreSQL: the
    asyncpg connection of the transaction)."""

    async def move(self, name: str, expected: int, position: int) -> bool:
        """Move the checkpoint of ``name`` from ``expected`` to ``position``.

        Returns False (changing nothing) when the saved position is not ``expected``:
        another runner moved it, and the transaction must roll back.
        """
        ...

    async def reset(self, name: str, position: int) -> None:
        """Set the checkpoint of ``name`` to ``position``."""
        ...

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a skipped event in this transaction."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: rolled back alone when its block raises."""
        ...

    def failure(self, exc: BaseException) -> StoreUnavailable | None:
        """``exc``, raised in this transaction (by the projection's code or the store), as
        the store's transient failure; None when it is the projection's own.

        It is the store's when the link under the transaction is gone (whatever the
        projection's code then raised) or the driver reports the server unavailable.
        """
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Where projections keep their positions and dead letters."""

    @property
    def exclusive(self) -> bool:
        """Whether :meth:`lease` gives leases that exclude other processes."""
        ...

    @property
    def transactional(self) -> bool:
        """Whether :meth:`transaction` opens transactions on the read model's database."""
        ...

    async def check(self) -> None:
        """Check that the checkpoints can be used (the runner calls it before it starts).

        Raises:
            StoreError: they cannot (e.g. the tables are missing); the message says why.
            StoreUnavailable: the store could not be reached.
        """
        ...

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

    def lease(self, name: str) -> Lease:
        """The leadership of projection ``name``, not taken yet.

        Raises:
            UsageError: the checkpoints are not ``exclusive``.
        """
        ...

    def transaction(self) -> AbstractAsyncContextManager[CheckpointTransaction]:
        """A transaction on the read model's database (committed when the block ends).

        Raises:
            UsageError: the checkpoints are not ``transactional``.
        """
        ...
