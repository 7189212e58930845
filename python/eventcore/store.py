"""The event store protocols every store implements (in-memory and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from eventcore.metadata import Metadata
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent
from eventcore.registry import EventRegistry

__all__ = ["EventStore", "Expected", "SyncEventStore"]

S = TypeVar("S")
Expected = Mapping[str, int] | Sequence[tuple[str, int]]
"""Expected versions: stream id to an exact version, ``NO_STREAM``, ``STREAM_EXISTS`` or ``ANY``."""
Apply = Callable[[Any, Any, str], Any]
Decoders = Mapping[str, Callable[[bytes], Any]]


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
    ) -> AppendResult:
        """Append atomically across streams, checking every expected version first.

        Raises ConcurrencyConflict (with every mismatching stream) and writes nothing on
        any mismatch; appending the same event ids again returns the original result.
        """
        ...

    async def fold_streams(
        self, streams: Sequence[str], state: S, apply: Apply, decoders: Decoders
    ) -> tuple[S, list[int]]:
        """Fold the events of ``streams`` (global order) into ``state``; also their versions."""
        ...

    async def fold_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        state: S,
        apply: Apply,
        decoders: Decoders,
        hint: object = None,
    ) -> tuple[S, list[int]] | None:
        """Fold the events of ``streams[fold_from:]`` after ``versions`` into ``state``.

        ``state`` was folded from every stream up to ``versions`` (one per stream); the
        events after them are folded in global order and the streams' versions now are
        returned with the state. Returns ``None``, folding nothing, when that tail cannot
        extend the state: a stream before ``fold_from`` (an earlier discovery round) has
        new events, or a tail event lies at or before the last folded event of any stream
        from ``fold_from`` on (a late commit landing below it, possible where positions
        are not commit order). ``hint`` is the ``ConcurrencyConflict`` that made the
        executor retry, or ``None``; a store may use what it carries instead of reading.
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
        """A stream's version: its number of events (0 = no stream)."""
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
    ) -> AppendResult:
        """See :meth:`EventStore.append`."""
        ...

    def fold_streams(
        self, streams: Sequence[str], state: S, apply: Apply, decoders: Decoders
    ) -> tuple[S, list[int]]:
        """See :meth:`EventStore.fold_streams`."""
        ...

    def fold_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        state: S,
        apply: Apply,
        decoders: Decoders,
        hint: object = None,
    ) -> tuple[S, list[int]] | None:
        """See :meth:`EventStore.fold_tail`."""
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
