"""The async view of a synchronous store: the one delegation both the in-memory and the
SQLite store's ``.aio`` are built on (each adds only what differs: waiting, columns,
checkpoints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import uuid

    from eventcore.metadata import Metadata
    from eventcore.query import AppendCondition, Query, QueryItem, QueryResult
    from eventcore.recorded import AppendResult, NewEvent, RecordedEvent
    from eventcore.registry import EventRegistry
    from eventcore.snapshot import Snapshotter
    from eventcore.state_cache import StateCache
    from eventcore.store import (
        Expected,
        FoldRows,
        PurgeRecord,
        StreamBounds,
        SyncEventStore,
        SyncStreamLifecycle,
    )


class SyncStore(Protocol):
    """What the view delegates to: a synchronous store with stream lifecycle and a
    stream listing, its registry, state cache and snapshot policy."""

    registry: EventRegistry
    state_cache: StateCache | None

    @property
    def snapshots(self) -> Snapshotter | None: ...

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]: ...


if TYPE_CHECKING:

    class _Store(SyncStore, SyncEventStore, SyncStreamLifecycle, Protocol): ...


T = TypeVar("T", bound="_Store")


class SyncStoreView(Generic[T]):
    """The :class:`~eventcore.store.EventStore` API of synchronous store ``sync``: each
    call runs the synchronous one on the caller's thread (the store answers without
    waiting on I/O of the loop's)."""

    def __init__(self, store: T) -> None:
        self.sync = store
        """The synchronous store behind this view."""
        self.registry = store.registry
        self.state_cache: StateCache | None = store.state_cache
        """The folded-state cache, shared with the synchronous store."""

    @property
    def snapshots(self) -> Snapshotter | None:
        """The synchronous store's snapshot policy."""
        return self.sync.snapshots

    async def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """See the synchronous store's ``append``."""
        if condition is None:  # as before conditions existed: test doubles override append
            return self.sync.append(events, expected=expected, metadata=metadata)
        return self.sync.append(events, expected=expected, metadata=metadata, condition=condition)

    async def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """See the synchronous store's ``read_query``."""
        return self.sync.read_query(query, after=after, limit=limit)

    async def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """See :meth:`EventStore.read_fold <eventcore.store.EventStore.read_fold>`."""
        return self.sync.read_fold(streams)

    async def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """See :meth:`EventStore.read_tail <eventcore.store.EventStore.read_tail>`."""
        return self.sync.read_tail(streams, versions, fold_from, hint)

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See the synchronous store's ``read_stream``."""
        return self.sync.read_stream(stream_id, after_version=after_version, limit=limit)

    async def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See the synchronous store's ``read_streams``."""
        return self.sync.read_streams(stream_ids, after_version=after_version, limit=limit)

    async def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """See the synchronous store's ``read_stream_backwards``."""
        return self.sync.read_stream_backwards(
            stream_id, before_version=before_version, limit=limit
        )

    async def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """See the synchronous store's ``read_all``."""
        return self.sync.read_all(
            after_position=after_position,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )

    async def read_events_by_id(
        self, event_ids: Sequence[uuid.UUID | int]
    ) -> list[RecordedEvent[Any]]:
        """See the synchronous store's ``read_events_by_id``."""
        return self.sync.read_events_by_id(event_ids)

    async def stream_version(self, stream_id: str) -> int:
        """See the synchronous store's ``stream_version``."""
        return self.sync.stream_version(stream_id)

    async def head(self) -> int:
        """See the synchronous store's ``head``."""
        return self.sync.head()

    async def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """See the synchronous store's ``list_streams``."""
        return self.sync.list_streams(prefix=prefix, after=after, limit=limit)

    async def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """See the synchronous store's ``delete_stream``."""
        return self.sync.delete_stream(stream_id, expected=expected)

    async def truncate_stream(
        self, stream_id: str, before_version: int, *, expected: int = -1
    ) -> int:
        """See the synchronous store's ``truncate_stream``."""
        return self.sync.truncate_stream(stream_id, before_version, expected=expected)

    async def stream_bounds(self, stream_id: str) -> StreamBounds:
        """See the synchronous store's ``stream_bounds``."""
        return self.sync.stream_bounds(stream_id)

    async def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """See the synchronous store's ``purge_stream``."""
        return self.sync.purge_stream(stream_id, actor=actor, reason=reason)

    async def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """See the synchronous store's ``purge_log``."""
        return self.sync.purge_log(stream_id)
