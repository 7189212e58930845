"""The embedded in-memory event store (Rust), with a sync API and an async view."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventcore import _core
from eventcore import registry as _registry  # its default_registry is made on first use
from eventcore._aio import SyncStoreView
from eventcore._lifecycle import check_before, check_expected, check_purge, out_of_range
from eventcore.errors import InvalidMetadata, ValidationError
from eventcore.metadata import Metadata
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult, query_arg
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent, recorded_events, set_tags
from eventcore.registry import EventRegistry
from eventcore.snapshot import SNAPSHOT_EVERY, SnapshotStore, Snapshotter
from eventcore.state_cache import DEFAULT_MAX_ENTRIES, StateCache, make_state_cache

if TYPE_CHECKING:
    import asyncio
    import uuid

    from eventcore.projection.checkpoint import MemoryCheckpointStore
    from eventcore.store import (
        ColumnBuffers,
        Expected,
        FoldRows,
        LogHoldback,
        PurgeRecord,
        StreamBounds,
    )

__all__ = ["AsyncMemoryStore", "MemoryStore"]


def _checks(expected: Expected) -> Sequence[tuple[str, int]]:
    """Expected versions as ``(stream, version)`` pairs."""
    if isinstance(expected, str):
        raise TypeError("expected must be a mapping or a sequence of pairs, not a str")
    return list(expected.items()) if isinstance(expected, Mapping) else expected


def _check_metadata(metadata: object) -> None:
    """InvalidMetadata unless ``metadata`` is a :class:`Metadata` (a subclass is fine)."""
    if not isinstance(metadata, Metadata):
        raise InvalidMetadata("metadata", "must be an eventcore.Metadata or None", metadata)


def _metadata_bytes(metadata: Any) -> bytes | None:
    """``metadata`` as the in-memory store keeps it (checked like :meth:`MemoryStore.append`)."""
    if metadata is not None and type(metadata) is not Metadata:
        _check_metadata(metadata)
    return metadata.to_bytes() if metadata else None


_EFFECT_METHODS = frozenset(
    ("append", "read_events_by_id", "read_fold", "read_query", "read_streams", "read_tail")
)
"""The methods the executor runs natively on an in-memory store (``CommandRun.drive``)
unless an instance replaces one of them (a test double): then it calls them."""


class MemoryStore:
    """The embedded event store: all data in process memory, guarded by one lock in Rust.

    Thread-safe: appends check every stream and write under one lock; reads and folds
    release the GIL while they copy data out. Used by :func:`~eventcore.execute_sync`
    directly; async code (and :func:`~eventcore.execute`) uses :attr:`aio`, which has the
    same API as the PostgreSQL store. Nothing is persisted.

    ``state_cache`` bounds the folded-state cache of the executor (see
    :class:`~eventcore.state_cache.StateCache`): a number of entries, a cache of your own, or ``0``
    / ``None`` to turn it off. ``snapshots`` (a :class:`~eventcore.snapshot.MemorySnapshotStore`,
    none by default) keeps durable snapshots there, one per ``snapshot_every`` events
    folded (see :mod:`eventcore.snapshot`): for tests, or shared between two stores.
    """

    def __init__(
        self,
        *,
        registry: EventRegistry | None = None,
        state_cache: int | StateCache | None = DEFAULT_MAX_ENTRIES,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int | None = SNAPSHOT_EVERY,
    ) -> None:
        # On the instance too: the executor's per-command read of it is then a plain
        # instance attribute (the interpreter specializes that, not a class attribute).
        self._fused = True
        self._core = _core.MemoryStore()
        self.registry = registry if registry is not None else _registry.default_registry
        """The registry that decodes payloads for :attr:`RecordedEvent.data`."""
        self.state_cache: StateCache | None = make_state_cache(state_cache)
        """The executor's folded-state cache for this store (``None``: off)."""
        self.snapshots: Snapshotter | None = (
            Snapshotter(snapshots, self.registry.codec, snapshot_every)
            if snapshots is not None
            else None
        )
        """The store's snapshot policy (:mod:`eventcore.snapshot`); None: no snapshots."""
        self._purges: list[PurgeRecord] = []
        self._purges_lock = threading.Lock()
        self.aio = AsyncMemoryStore(self)
        """The same store with the async :class:`~eventcore.store.EventStore` API."""

    _fused = True
    """Whether the executor may run commands natively on this store (see
    :data:`_EFFECT_METHODS`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EFFECT_METHODS:
            object.__setattr__(self, "_fused", False)
        object.__setattr__(self, name, value)

    def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append atomically across streams; see :meth:`EventStore.append`.

        Raises:
            ConcurrencyConflict: an expected version did not match; nothing written.
            ConditionFailed: an event matching ``condition`` lies after its position;
                nothing written.
            DuplicateEventId: an event id was already used for other content (or tags).
            InvalidTag: a tag broke the rules.
            InvalidStreamId: a stream id broke the rules.
            InvalidEventType: an event type name broke the rules.
            InvalidMetadata: ``metadata`` is not a :class:`Metadata` (or None).
            LimitExceeded: a payload, the number of events or the append's size is over
                its cap (see :class:`~eventcore.LimitExceeded`).
            TypeError: an event is not a ``(stream, type, payload, id)`` tuple of the
                right types.
        """
        checks = expected if type(expected) is list else _checks(expected)
        if metadata is not None and type(metadata) is not Metadata:
            _check_metadata(metadata)
        first, versions, ids = self._core.append(
            checks,
            events,
            metadata.to_bytes() if metadata else None,
            None if condition is None else (query_arg(condition.query), condition.after),
        )
        if ids is not None:  # the store assigned ids to events given without one
            return AppendResult(
                first, versions, [(e[0], e[1], e[2], i) for e, i in zip(events, ids, strict=True)]
            )
        return AppendResult(first, versions, events)

    def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """See :meth:`EventStore.read_fold`."""
        return self._core.read_fold(streams)

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """See :meth:`EventStore.read_tail`."""
        return self._core.read_tail(streams, versions, fold_from, hint)

    def _wrap(self, rows: list[Any]) -> list[RecordedEvent[Any]]:
        events = recorded_events(rows, self.registry)
        if events and self._core.has_tags():
            set_tags(events, self._core.tags_at([e.position for e in events]))
        return events

    def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """The events after position ``after`` matching ``query``, in position order (at
        most ``limit``), and the position the read is consistent with; see
        :meth:`EventStore.read_query <eventcore.store.EventStore.read_query>`.

        Raises:
            InvalidTag: a tag of the query broke the rules.
            InvalidEventType: a type name of the query broke the rules.
        """
        rows, position = self._core.read_query(query_arg(query), after, limit)
        return QueryResult(self._wrap(rows), position)

    def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version > ``after_version``, oldest first."""
        return self._wrap(self._core.read_streams([stream_id], after_version, limit))

    def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of several streams with version > ``after_version``, in global order.

        Raises:
            TypeError: ``stream_ids`` is a str (one id), not a sequence of ids.
        """
        return self._wrap(self._core.read_streams(stream_ids, after_version, limit))

    def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version < ``before_version``, newest first."""
        return self._wrap(self._core.read_stream_backwards(stream_id, before_version, limit))

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The global log after ``after_position`` in position order, optionally filtered.

        Raises:
            TypeError: ``event_types`` is a str, not a sequence of type names.
        """
        # The core refuses a str here (TypeError): iterating it would filter by letters.
        return self._wrap(self._core.read_all(after_position, limit, event_types, stream_prefix))

    def read_events_by_id(self, event_ids: Sequence[uuid.UUID | int]) -> list[RecordedEvent[Any]]:
        """The stored events with these ids, in position order; ids not stored are left out."""
        return self._wrap(self._core.read_by_ids(event_ids))

    def stream_version(self, stream_id: str) -> int:
        """A stream's version: its number of events, plus one per truncation (0 = no stream)."""
        return self._core.stream_version(stream_id)

    def head(self) -> int:
        """The position of the last event (0 when empty)."""
        return self._core.head()

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by stream id, optionally by prefix."""
        return self._core.list_streams(prefix, after, limit)

    def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Block until the head passes ``after_position`` or ``timeout`` seconds pass; the head."""
        return self._core.wait_for_append(after_position, timeout)

    def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers:
        """Envelope columns of up to ``limit`` events after ``after_position``.

        See :meth:`ProjectionStore.read_columns <eventcore.store.ProjectionStore.read_columns>`;
        copied in Rust with the GIL released.
        """
        return self._core.read_columns(after_position, limit, known_types, known_streams)

    # -- stream lifecycle (eventcore.store.SyncStreamLifecycle) ------------------------

    def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """Hide every event ``stream_id`` has now (a soft delete); its version.

        See :class:`~eventcore.store.StreamLifecycle`: the version stays, an append
        recreates the stream, the global log keeps the events until they are purged.

        Raises:
            ConcurrencyConflict: ``expected`` (as for an append) did not match.
        """
        return self._core.truncate_stream(stream_id, None, check_expected(expected))

    def truncate_stream(self, stream_id: str, before_version: int, *, expected: int = -1) -> int:
        """Hide the events of ``stream_id`` below ``before_version``; its version.

        Raises:
            ConcurrencyConflict: ``expected`` did not match; nothing hidden.
            ValueError: ``before_version`` is not between 1 and the version + 1.
        """
        check_expected(expected)
        try:
            return self._core.truncate_stream(stream_id, check_before(before_version), expected)
        except ValueError as exc:
            if isinstance(exc, ValidationError):  # an invalid stream id
                raise
            version = self._core.stream_version(stream_id)
            raise out_of_range(stream_id, before_version, version) from None

    def stream_bounds(self, stream_id: str) -> StreamBounds:
        """The first visible version and the version of ``stream_id``."""
        from eventcore.store import StreamBounds  # here: an application may never load store

        return StreamBounds(*self._core.stream_bounds(stream_id))

    def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """Erase the hidden events of ``stream_id`` and record who, when, what and why.

        Their payloads, metadata and ids are dropped (an id may be used again); the global
        log skips their positions from now on.
        """
        from datetime import UTC, datetime  # here: importing eventcore does not load these

        from eventcore.store import PurgeRecord

        check_purge(actor, reason)
        with self._purges_lock:
            n, first, last, low, high = self._core.purge_stream(stream_id)
            record = PurgeRecord(
                stream_id.strip(),
                n,
                first,
                last,
                low,
                high,
                actor,
                None,
                reason,
                datetime.now(UTC),
            )
            self._purges.append(record)
        return record

    def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """Every purge's audit record (of ``stream_id`` only), oldest first."""
        with self._purges_lock:
            return [p for p in self._purges if stream_id is None or p.stream_id == stream_id]

    def memory_usage(self) -> int:
        """Approximate bytes held by the store's data structures."""
        return self._core.memory_usage()

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return f"MemoryStore(events={len(self)})"


class _MemoryWatcher:
    """One thread per in-memory store wakes every asyncio waiter on append."""

    def __init__(self, store: MemoryStore) -> None:
        # Weak: this watcher is the value of a WeakKeyDictionary keyed by the store, and a
        # strong reference would keep its own key (the store and all its data) alive.
        self.store = weakref.ref(store)
        self.lock = threading.Lock()
        self.waiters: dict[asyncio.Future[None], tuple[asyncio.AbstractEventLoop, int]] = {}
        self.thread: threading.Thread | None = None

    async def wait(self, store: MemoryStore, after: int, timeout: float) -> int:
        import asyncio  # loaded on first use: sync-only code never needs it

        if store.head() > after:
            return store.head()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self.lock:
            self.waiters[fut] = (loop, after)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="eventcore-memory-watcher", daemon=True
                )
                self.thread.start()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self.lock:
                self.waiters.pop(fut, None)
        return store.head()

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.waiters:
                    self.thread = None
                    return
                low = min(after for _, after in self.waiters.values())
            store = self.store()
            if store is None:  # cannot happen while a waiter holds it; stop anyway
                with self.lock:
                    self.thread = None
                return
            head = store.wait_for_append(low, 0.1)
            del store  # hold the store only while blocked on it
            if head <= low:
                continue
            with self.lock:
                ready = [(f, lp) for f, (lp, after) in self.waiters.items() if head > after]
                for f, _ in ready:
                    del self.waiters[f]
            for f, lp in ready:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    lp.call_soon_threadsafe(_resolve, f)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_watchers: weakref.WeakKeyDictionary[MemoryStore, _MemoryWatcher] = weakref.WeakKeyDictionary()
_watchers_lock = threading.Lock()


def _watcher(store: MemoryStore) -> _MemoryWatcher:
    """The one watcher thread of ``store`` (created on first use)."""
    with _watchers_lock:
        w = _watchers.get(store)
        if w is None:
            w = _watchers[store] = _MemoryWatcher(store)
        return w


class AsyncMemoryStore(SyncStoreView["MemoryStore"]):
    """The async view of a :class:`MemoryStore` (same data, :class:`EventStore` API)."""

    _fused = True
    """Whether the executor may run commands natively on this store (see
    :data:`_EFFECT_METHODS`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EFFECT_METHODS:
            object.__setattr__(self, "_fused", False)
        object.__setattr__(self, name, value)

    async def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Wait until the head passes ``after_position`` or ``timeout`` passes; the head.

        One watcher thread per store blocks in Rust (GIL released) and wakes every waiting
        task of every event loop; waiting is cancellable and uses no thread per waiter.
        """
        return await _watcher(self.sync).wait(self.sync, after_position, timeout)

    # -- what projections need (eventcore.store.ProjectionStore) --------------------

    @property
    def dense_positions(self) -> bool:
        """Whether positions are 1, 2, 3... without gaps: until a purge erases events."""
        return not self.sync._core.has_holes()

    async def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (purged ones are not counted)."""
        return self.sync._core.count_events(max(after_position, 0), max(upto, 0))

    async def log_holdback(self) -> LogHoldback | None:
        """None: an in-memory append is visible the moment it returns."""
        return None

    async def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers:
        """See :meth:`MemoryStore.read_columns`."""
        return self.sync.read_columns(after_position, limit, known_types, known_streams)

    def checkpoint_store(self) -> MemoryCheckpointStore:
        """Checkpoints in process memory (they live as long as the runner)."""
        from eventcore.projection.checkpoint import MemoryCheckpointStore

        return MemoryCheckpointStore()

    async def close(self) -> None:
        """Nothing to release; present so code can treat every store alike."""

    async def __aenter__(self) -> AsyncMemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
