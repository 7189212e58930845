"""Event metadata: causation, correlation, user and custom fields."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from eventcore.errors import InvalidMetadata, LimitExceeded

if TYPE_CHECKING:
    import uuid

    from eventcore.recorded import RecordedEvent

__all__ = ["Metadata"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

MAX_USER_ID_LENGTH = 255
"""The longest ``user_id``, in characters (code points)."""
MAX_CUSTOM_DEPTH = 32
"""How deep ``custom`` may nest (the object itself is level 1)."""
MAX_CUSTOM_BYTES = 64 * 1024
"""The most bytes ``custom`` may take encoded as JSON (64 KiB)."""

# A control character (Unicode Cc) or a lone surrogate (not encodable as UTF-8).
_BAD_USER_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# NUL (PostgreSQL's jsonb and text cannot hold it) or a lone surrogate.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _is_uuid(value: object) -> bool:
    import uuid  # here, not at the top: importing eventcore does not load uuid

    return isinstance(value, uuid.UUID)


def _check_user_id(user_id: object) -> None:
    """InvalidMetadata unless ``user_id`` is a str a store can keep."""
    if not isinstance(user_id, str):
        raise InvalidMetadata("user_id", "must be a str or None", user_id)
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise InvalidMetadata(
            "user_id", f"must be at most {MAX_USER_ID_LENGTH} characters", len(user_id)
        )
    bad = _BAD_USER_ID.search(user_id)
    if bad is not None:
        raise InvalidMetadata("user_id", f"{_char_reason(bad.group(), bad.start())}", user_id)


def _char_reason(char: str, index: int) -> str:
    kind = "surrogate code points" if "\ud800" <= char <= "\udfff" else "control characters"
    return f"must not contain {kind} (U+{ord(char):04X} at index {index})"


def _bad(path: tuple[Any, ...] | None, reason: str, value: Any = None) -> InvalidMetadata:
    """InvalidMetadata for ``custom``; the reason ends with where, e.g. ``custom['a'][0]``."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(f"[{key!r}]")
    where = f" at custom{''.join(reversed(keys))}" if keys else ""
    return InvalidMetadata("custom", reason + where, value)


def _check_custom(custom: object) -> Mapping[str, Any]:
    """``custom`` as stored (a read-only JSON round trip), or InvalidMetadata/LimitExceeded.

    Walks the value once without recursion (so deep or self-referencing values are refused
    by the depth cap instead of overflowing the stack) and stops after as many values as
    the size cap could hold, then encodes it.
    """
    if not isinstance(custom, Mapping):
        raise InvalidMetadata("custom", "must be a mapping with str keys (a JSON object)", custom)
    if not custom:
        return _EMPTY
    budget = MAX_CUSTOM_BYTES
    whole = False  # saw a float that is stored as an int
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(custom, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        # Every JSON value takes at least one byte, a string one per character: stop
        # before scanning or encoding anything that cannot fit.
        budget -= len(value) + 1 if isinstance(value, str) else 1
        if budget < 0:
            size = MAX_CUSTOM_BYTES - budget
            raise LimitExceeded(
                "custom",
                f"is at least {size} bytes as JSON, over the limit of {MAX_CUSTOM_BYTES} "
                "bytes (64 KiB)",
                size,
            )
        if isinstance(value, str):
            bad = _BAD_TEXT.search(value)
            if bad is not None:
                raise _bad(path, _char_reason(bad.group(), bad.start()), value)
        elif value is None or isinstance(value, bool | int):
            pass
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _bad(path, "floats must be finite", value)
            whole |= abs(value) >= _WHOLE_FLOAT
        elif isinstance(value, Mapping | list | tuple):
            if depth > MAX_CUSTOM_DEPTH:
                raise _bad(
                    path,
                    f"nested more than {MAX_CUSTOM_DEPTH} levels deep (or contains itself)",
                    value,
                )
            if isinstance(value, Mapping):
                if depth > 1 and not isinstance(value, dict):
                    raise _bad(path, "nested objects must be dicts", value)
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise _bad(path, "keys must be str", key)
                    bad = _BAD_TEXT.search(key)
                    if bad is not None:
                        reason = "keys " + _char_reason(bad.group(), bad.start())
                        raise _bad((path, key), reason, key)
                    stack.append((item, depth + 1, (path, key)))
            else:
                stack.extend((item, depth + 1, (path, i)) for i, item in enumerate(value))
        else:
            raise _bad(
                path,
                "values must be str, int, float, bool, None, list or dict, "
                f"not {type(value).__name__}",
                value,
            )
    import msgspec  # here, not at the top: importing eventcore does not load it

    try:
        encoded = msgspec.json.encode(dict(custom))
    except (TypeError, ValueError, msgspec.MsgspecError) as exc:  # e.g. an odd str subclass
        raise InvalidMetadata("custom", f"must be JSON-compatible: {exc}", custom) from None
    if len(encoded) > MAX_CUSTOM_BYTES:
        raise LimitExceeded(
            "custom",
            f"is {len(encoded)} bytes as JSON, over the limit of {MAX_CUSTOM_BYTES} bytes (64 KiB)",
            len(encoded),
        )
    # Stored as decoded JSON, so every store hands back exactly the same values.
    decoded = msgspec.json.decode(encoded)
    return MappingProxyType(_whole_floats_as_ints(decoded) if whole else decoded)


# Every float of this magnitude is a whole number, and JSON writes it with an exponent
# (1e+16); PostgreSQL's jsonb turns that into an integer. Metadata does the same up front
# so every store hands back an int (equal to the float given).
_WHOLE_FLOAT = 1e16


def _whole_floats_as_ints(value: Any) -> Any:
    """``value`` with every float of magnitude >= 1e16 as the int it equals (depth <= 32)."""
    if isinstance(value, float):
        return int(value) if abs(value) >= _WHOLE_FLOAT else value
    if isinstance(value, dict):
        return {k: _whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_floats_as_ints(v) for v in value]
    return value


class Metadata:
    """What an event carries besides its payload; immutable.

    Attributes:
        causation_id: the id of the event (or message) that caused this one.
        correlation_id: the id shared by every event of one business transaction.
        user_id: who asked for it: at most 255 characters, no control characters.
        custom: JSON-compatible extra fields, read-only; stored as JSON (so tuples come
            back as lists, identically in every store). A JSON object: str keys; values
            str, int, finite float, bool, None, list/tuple or dict; nested at most 32
            levels deep; no NUL character in any key or string; at most 64 KiB as JSON.
            A float of magnitude 1e16 or more (always a whole number) is kept as the int
            it equals, as PostgreSQL's jsonb would.

    It is checked once, here, so every store accepts or refuses the same metadata.

    Raises:
        InvalidMetadata: a field breaks the rules above (the message names the field,
            and for ``custom`` the path to the bad value).
        LimitExceeded: ``custom`` is over 64 KiB as JSON.
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
            if value is not None and not _is_uuid(value):
                raise InvalidMetadata(field, "must be a uuid.UUID or None", value)
        if user_id is not None:
            _check_user_id(user_id)
        if custom is not None:
            custom = _check_custom(custom)
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
        return bool(
            self.causation_id or self.correlation_id or self.user_id is not None or self.custom
        )

    def _key(self) -> tuple[Any, ...]:
        return (self.causation_id, self.correlation_id, self.user_id, dict(self.custom))

    def to_bytes(self) -> bytes:
        """Compact encoding used by the in-memory store (msgpack; custom as JSON)."""
        import msgspec  # here, not at the top: importing eventcore does not load it

        return msgspec.msgpack.encode(
            (
                self.causation_id.bytes if self.causation_id else None,
                self.correlation_id.bytes if self.correlation_id else None,
                self.user_id,
                msgspec.json.encode(dict(self.custom)) if self.custom else None,
            )
        )

    @classmethod
    def from_json_array(cls, text: str | bytes) -> Metadata:
        """Metadata from the JSON array ``[causation, correlation, user_id, custom]``.

        The form the PostgreSQL store's read queries return (ids as strings, custom as an
        object or null).
        """
        import uuid

        import msgspec  # here, not at the top: importing eventcore does not load it

        causation, correlation, user_id, custom = msgspec.json.decode(text)
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
        import uuid

        import msgspec  # here, not at the top: importing eventcore does not load it

        causation, correlation, user_id, custom = msgspec.msgpack.decode(data)
        meta = object.__new__(cls)
        set_ = object.__setattr__
        set_(meta, "causation_id", uuid.UUID(bytes=causation) if causation else None)
        set_(meta, "correlation_id", uuid.UUID(bytes=correlation) if correlation else None)
        set_(meta, "user_id", user_id)
        set_(meta, "custom", MappingProxyType(msgspec.json.decode(custom)) if custom else _EMPTY)
        return meta


EMPTY_METADATA = Metadata()
