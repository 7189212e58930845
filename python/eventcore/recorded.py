"""What goes into a store (NewEvent) and what comes back (RecordedEvent, AppendResult)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import starmap
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from eventcore._core import validate_stream_id
from eventcore.errors import EventDecodeError
from eventcore.metadata import EMPTY_METADATA, Metadata

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from eventcore.registry import EventRegistry

__all__ = ["AppendResult", "NewEvent", "RecordedEvent", "WriteToken", "WrittenEvent"]

E = TypeVar("E")
_new = object.__new__


def as_uuid(value: int | uuid.UUID) -> uuid.UUID:
    """Return ``value`` as a stdlib UUID (ints are the UUID's 128-bit value)."""
    if not isinstance(value, int):
        return value
    import uuid  # here, not at the top: importing eventcore does not load uuid

    obj = _new(uuid.UUID)
    object.__setattr__(obj, "int", value)
    object.__setattr__(obj, "is_safe", uuid.SafeUUID.unknown)
    return obj


class NewEvent(NamedTuple):
    """An encoded event ready to append.

    ``event_id`` is a UUID (or its 128-bit int); when ``None`` the store assigns a UUIDv7.
    Appending the same ids again is idempotent (see :meth:`MemoryStore.append`).
    """

    stream_id: str
    event_type: str
    payload: bytes
    event_id: uuid.UUID | int | None = None
    tags: Sequence[str] = ()
    """Tags for query reads and append conditions (see :mod:`eventcore.query`)."""


class WrittenEvent(NamedTuple):
    """Where one appended event landed."""

    event_id: uuid.UUID
    stream_id: str
    version: int
    position: int


class WriteToken(NamedTuple):
    """What a read must see to include a write: the write's last global position and the
    timeline of the PostgreSQL primary that committed it.

    Every command result carries one (:attr:`ExecutionResult.write_token
    <eventcore.ExecutionResult.write_token>`, :attr:`AppendResult.write_token`), at no cost.
    A PostgreSQL read routed to a replica with ``after=token`` waits until the replica's
    log horizon has passed ``position`` (so the read shows the write and, in the global
    log, everything before it), at most ``replica_wait`` seconds, then reads from the
    primary. ``position == 0`` means nothing to wait for (the command wrote nothing).
    ``timeline == 0`` means not known (another store, a borrowed pool, an idempotent
    replay): the position alone is checked. A token from another timeline than the
    primary's now (one before a failover) sends the read to the primary at once.

    ``str(token)`` is ``"timeline:position"`` (for an HTTP header or the CLI's
    ``--after-token``); :meth:`parse` reads it back.
    """

    timeline: int
    position: int

    def __str__(self) -> str:
        return f"{self.timeline}:{self.position}"

    @classmethod
    def parse(cls, text: str) -> WriteToken:
        """The token ``str(token)`` gave.

        Raises:
            ValidationError: not two non-negative integers ``"timeline:position"``.
        """
        timeline, sep, position = text.strip().partition(":")
        if sep and timeline.isdigit() and position.isdigit():
            return cls(int(timeline), int(position))
        from eventcore.errors import ValidationError

        raise ValidationError("write_token", "must be 'timeline:position' (two integers)", text)


NO_WRITE = WriteToken(0, 0)
"""The token of a command that wrote nothing: nothing to wait for."""


class AppendResult:
    """The result of one atomic append.

    Stores build it cheaply: ``positions`` may be given as the first position of a
    contiguous run and ``stream_versions`` as ``(stream, version)`` pairs; both are
    expanded on first access.
    """

    __slots__ = ("_new", "_positions", "_timeline", "_versions", "_written")

    def __init__(
        self,
        positions: Sequence[int] | int,
        stream_versions: Mapping[str, int] | list[tuple[str, int]],
        events: Sequence[Sequence[Any]],
        timeline: int = 0,
    ) -> None:
        self._positions = positions
        self._versions = stream_versions
        self._new = events
        self._timeline = timeline
        self._written: list[WrittenEvent] | None = None

    @property
    def positions(self) -> Sequence[int]:
        """The global position of each event, in the order given."""
        positions = self._positions
        if type(positions) is int:
            positions = self._positions = range(positions, positions + len(self._new))
        return positions  # type: ignore[return-value]

    @property
    def stream_versions(self) -> Mapping[str, int]:
        """Each stream's version after the append (read-only streams too)."""
        versions = self._versions
        if type(versions) is list:
            versions = self._versions = dict(versions)
        return versions  # type: ignore[return-value]

    @property
    def events(self) -> list[WrittenEvent]:
        """Every event written: id, stream, version and position, in order."""
        if self._written is None:
            streams = [validate_stream_id(e[0]) for e in self._new]  # as the store keyed them
            counts: dict[str, int] = {}
            for s in streams:
                counts[s] = counts.get(s, 0) + 1
            next_version = {s: self.stream_versions[s] - n + 1 for s, n in counts.items()}
            written = []
            for e, s, position in zip(self._new, streams, self.positions, strict=True):
                version = next_version[s]
                next_version[s] = version + 1
                written.append(WrittenEvent(as_uuid(e[3]), s, version, position))
            self._written = written
        return self._written

    @property
    def event_types(self) -> list[str]:
        """The type name of each event written, in order."""
        return [e[1] for e in self._new]

    @property
    def event_ids(self) -> list[uuid.UUID]:
        """The ids of the events written, in order."""
        return [as_uuid(e[3]) for e in self._new]

    @property
    def last_position(self) -> int:
        """The highest global position written (0 when nothing was written)."""
        return max(self.positions, default=0)

    @property
    def write_token(self) -> WriteToken:
        """The token a replica read takes to show this write (see :class:`WriteToken`);
        :data:`NO_WRITE` when nothing was written."""
        last = self.last_position
        return WriteToken(self._timeline, last) if last else NO_WRITE

    def __len__(self) -> int:
        return len(self._new)

    def __repr__(self) -> str:
        return f"AppendResult(events={len(self)}, stream_versions={dict(self.stream_versions)!r})"


class RecordedEvent(Generic[E]):
    """A stored event: the payload plus its envelope. Immutable.

    Conversions (UUID, datetime, metadata, payload decoding) happen on first access.
    """

    __slots__ = (
        "_data",
        "_id",
        "_meta",
        "_registry",
        "_tags",
        "_ts",
        "payload",
        "position",
        "stored_type",
        "stream_id",
        "version",
    )

    _id: int | bytes | uuid.UUID
    _ts: int | datetime
    _meta: bytes | str | Metadata | None
    _registry: EventRegistry
    _data: Any
    _tags: tuple[str, ...]
    position: int
    """The global position: strictly increasing in the order the global log delivers."""
    stream_id: str
    """The stream the event belongs to."""
    version: int
    """The stream version this event made (the first event of a stream is version 1)."""
    stored_type: str
    """The type key as stored: ``name`` for version 1, ``name@vN`` from version 2 on."""
    payload: bytes
    """The encoded payload."""

    def __init__(
        self,
        position: int,
        event_id: int | bytes | uuid.UUID,
        stream_id: str,
        version: int,
        event_type: str,
        payload: bytes,
        recorded_at: int | datetime,
        metadata: bytes | str | Metadata | None,
        registry: EventRegistry,
    ) -> None:
        s = object.__setattr__
        s(self, "position", position)
        s(self, "_id", event_id)
        s(self, "stream_id", stream_id)
        s(self, "version", version)
        s(self, "stored_type", event_type)
        s(self, "payload", payload)
        s(self, "_ts", recorded_at)
        s(self, "_meta", metadata)
        s(self, "_registry", registry)
        s(self, "_data", _UNSET)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("RecordedEvent is immutable")

    @property
    def event_id(self) -> uuid.UUID:
        """The event's UUIDv7."""
        value = self._id
        if isinstance(value, (int, bytes)):  # not yet a UUID
            if isinstance(value, bytes):  # the 16 bytes, as the PostgreSQL reads send it
                value = int.from_bytes(value)
            value = as_uuid(value)
            object.__setattr__(self, "_id", value)
        return value

    @property
    def tags(self) -> tuple[str, ...]:
        """The event's tags, sorted (empty when it has none)."""
        try:
            return self._tags
        except AttributeError:  # builders set it only on tagged events
            return ()

    @property
    def recorded_at(self) -> datetime:
        """When the store recorded the event (UTC)."""
        value = self._ts
        if isinstance(value, int):  # microseconds since the epoch, not yet a datetime
            from datetime import UTC, datetime, timedelta  # here: eventcore loads it late

            value = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
            object.__setattr__(self, "_ts", value)
        return value

    @property
    def metadata(self) -> Metadata:
        """Causation, correlation, user and custom metadata."""
        value = self._meta
        if not isinstance(value, Metadata):
            if not value:
                value = EMPTY_METADATA
            elif isinstance(value, str):
                value = Metadata.from_json_array(value)
            else:
                value = Metadata.from_bytes(value)
            object.__setattr__(self, "_meta", value)
        return value

    @property
    def event_type(self) -> str:
        """The registered type name (an alias's events show the name it is an alias of)."""
        return self._registry.resolve(self.stored_type)[0]

    @property
    def event_version(self) -> int:
        """The version of the event type the payload was written at (1 before versions)."""
        return self._registry.resolve(self.stored_type)[1]

    @property
    def data(self) -> E:
        """The decoded event object (SerializationError if its type is unknown here)."""
        value = self._data
        if value is _UNSET:
            value = self._decode()
        return value  # type: ignore[no-any-return]

    def _decode(self) -> Any:
        decoder = self._registry.decoders.get(self.stored_type)
        try:
            value = decoder(self.payload)  # type: ignore[misc]
        except Exception:  # unknown type (decoder None) or a bad payload
            try:
                value = self._registry.decode(self.stored_type, self.payload)  # raises, typed
            except EventDecodeError as exc:
                raise exc.at(
                    stream_id=self.stream_id, version=self.version, position=self.position
                ) from exc.__cause__
        object.__setattr__(self, "_data", value)
        return value

    def _key(self) -> tuple[Any, ...]:
        return (
            self.position,
            self.event_id,
            self.stream_id,
            self.version,
            self.stored_type,
            self.payload,
            self.recorded_at,
            self.metadata,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(position={self.position}, stream_id={self.stream_id!r}, "
            f"version={self.version}, event_type={self.event_type!r}, "
            f"event_version={self.event_version}, event_id={self.event_id})"
        )


_UNSET: Any = object()


def _builder(registry: EventRegistry) -> Any:
    """A RecordedEvent factory bound to ``registry``, for the read paths (no per-slot calls).

    ``RecordedEvent.__setattr__`` raises, so its constructor must set each slot through
    ``object.__setattr__``. This subclass has the same layout and the generic
    ``__setattr__``, so the interpreter's fast slot stores are used; then the instance's
    class is switched to :class:`RecordedEvent`, immutable again.
    """

    class _Builder(RecordedEvent[Any]):
        __slots__ = ()
        __setattr__ = object.__setattr__  # type: ignore[assignment]

        def __init__(  # type: ignore[no-untyped-def]
            self, position, event_id, stream_id, version, event_type, payload, ts, meta, tags=None
        ) -> None:
            self.position = position
            self._id = event_id
            self.stream_id = stream_id
            self.version = version
            self.stored_type = event_type
            self.payload = payload
            self._ts = ts
            self._meta = meta
            self._registry = registry
            self._data = _UNSET
            if tags:
                self._tags = tuple(tags)
            self.__class__ = RecordedEvent  # type: ignore[assignment]

    return _Builder


_builders: dict[int, tuple[EventRegistry, Any]] = {}


def set_tags(events: Sequence[RecordedEvent[Any]], tags: Iterable[Sequence[str]]) -> None:
    """Give each of ``events`` its tags (as read by a store; empty ones are left unset)."""
    for event, t in zip(events, tags, strict=True):
        if t:
            object.__setattr__(event, "_tags", tuple(t))


def recorded_events(
    rows: Iterable[Sequence[Any]], registry: EventRegistry
) -> list[RecordedEvent[Any]]:
    """Build RecordedEvents from rows ``(position, event_id, stream_id, version, event_type,
    payload, recorded_at, metadata[, tags])`` (tags: a sequence, empty or ``None`` when
    none); ids may be ints, UUIDs or their 16 bytes, times
    micros or datetimes, metadata ``None``, :class:`Metadata`, :meth:`Metadata.to_bytes`
    bytes or a :meth:`Metadata.from_json_array` str (each converted on first access)."""
    entry = _builders.get(id(registry))
    if entry is None or entry[0] is not registry:
        entry = _builders[id(registry)] = (registry, _builder(registry))
    return list(starmap(entry[1], rows))
