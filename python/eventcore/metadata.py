"""Event metadata: causation, correlation, user and custom fields."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from eventcore.errors import ValidationError

if TYPE_CHECKING:
    from eventcore.recorded import RecordedEvent

__all__ = ["Metadata"]

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Metadata:
    """What an event carries besides its payload; immutable.

    Attributes:
        causation_id: the id of the event (or message) that caused this one.
        correlation_id: the id shared by every event of one business transaction.
        user_id: who asked for it.
        custom: JSON-compatible extra fields (str keys), read-only; stored as JSON (so
            tuples come back as lists, identically in every store).
    """

    __slots__ = ("causation_id", "correlation_id", "custom", "user_id")

    causation_id: uuid.UUID | None
    correlation_id: uuid.UUID | None
    user_id: str | None
    custom: Mapping[str, Any]

    def __init__(
        self,
        *,
        causation_id: uuid.UUID | None = None,
        correlation_id: uuid.UUID | None = None,
        user_id: str | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> None:
        for field, value in (("causation_id", causation_id), ("correlation_id", correlation_id)):
            if value is not None and not isinstance(value, uuid.UUID):
                raise ValidationError(field, "must be a uuid.UUID or None", value)
        if user_id is not None and not isinstance(user_id, str):
            raise ValidationError("user_id", "must be a str or None", user_id)
        if custom:
            if not all(isinstance(k, str) for k in custom):
                raise ValidationError("custom", "keys must be strings", custom)
            try:
                # Round-trip through JSON so both stores hand back exactly the same values.
                custom = _json_decode(_json_encode(dict(custom)))
            except (TypeError, msgspec.MsgspecError) as exc:
                raise ValidationError("custom", f"must be JSON-compatible: {exc}", custom) from None
            custom = MappingProxyType(custom)
        set_ = object.__setattr__
        set_(self, "causation_id", causation_id)
        set_(self, "correlation_id", correlation_id)
        set_(self, "user_id", user_id)
        set_(self, "custom", custom or _EMPTY)

    @classmethod
    def caused_by(
        cls,
        event: RecordedEvent[Any],
        *,
        user_id: str | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> Metadata:
        """Metadata for events written in reaction to ``event``.

        The causation id is that event's id; the correlation id is carried over (or is that
        event's id when it had none); the user id is carried over unless given.
        """
        parent = event.metadata
        return cls(
            causation_id=event.event_id,
            correlation_id=parent.correlation_id or event.event_id,
            user_id=user_id if user_id is not None else parent.user_id,
            custom=custom,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Metadata is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metadata):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.causation_id, self.correlation_id, self.user_id))

    def __repr__(self) -> str:
        return (
            f"Metadata(causation_id={self.causation_id!r}, correlation_id={self.correlation_id!r}, "
            f"user_id={self.user_id!r}, custom={dict(self.custom)!r})"
        )

    def __bool__(self) -> bool:
        return bool(self.causation_id or self.correlation_id or self.user_id or self.custom)

    def _key(self) -> tuple[Any, ...]:
        return (self.causation_id, self.correlation_id, self.user_id, dict(self.custom))

    def to_bytes(self) -> bytes:
        """Compact encoding used by the in-memory store (msgpack; custom as JSON)."""
        return msgspec.msgpack.encode(
            (
                self.causation_id.bytes if self.causation_id else None,
                self.correlation_id.bytes if self.correlation_id else None,
                self.user_id,
                _json_encode(dict(self.custom)) if self.custom else None,
            )
        )

    @classmethod
    def from_json_array(cls, text: str | bytes) -> Metadata:
        """Metadata from the JSON array ``[causation, correlation, user_id, custom]``.

        The form the PostgreSQL store's read queries return (ids as strings, custom as an
        object or null).
        """
        causation, correlation, user_id, custom = _json_decode(text)
        meta = object.__new__(cls)
        set_ = object.__setattr__
        set_(meta, "causation_id", uuid.UUID(causation) if causation is not None else None)
        set_(meta, "correlation_id", uuid.UUID(correlation) if correlation is not None else None)
        set_(meta, "user_id", user_id)
        set_(meta, "custom", MappingProxyType(custom) if custom else _EMPTY)
        return meta

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Metadata:
        """Inverse of :meth:`to_bytes`; ``None`` gives empty metadata."""
        if not data:
            return EMPTY_METADATA
        causation, correlation, user_id, custom = msgspec.msgpack.decode(data)
        meta = object.__new__(cls)
        set_ = object.__setattr__
        set_(meta, "causation_id", uuid.UUID(bytes=causation) if causation else None)
        set_(meta, "correlation_id", uuid.UUID(bytes=correlation) if correlation else None)
        set_(meta, "user_id", user_id)
        set_(meta, "custom", MappingProxyType(_json_decode(custom)) if custom else _EMPTY)
        return meta


EMPTY_METADATA = Metadata()
