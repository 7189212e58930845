"""Event types: the user's own immutable classes, registered under stable names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import msgspec

from eventcore._core import dec_hook, enc_hook, validate_event_type
from eventcore.errors import InvalidEventType, SerializationError

__all__ = ["Codec", "EventRegistry", "JsonCodec", "MsgpackCodec", "default_registry", "event"]

T = TypeVar("T")
Decoder = Callable[[bytes], Any]

# Value types and StreamId subclass a builtin: they encode as that builtin and validate
# themselves when rebuilt from it on decoding. Native hooks: msgspec calls them per field.
_enc_hook = enc_hook
_dec_hook = dec_hook


class Codec(Protocol):
    """Turns event objects into bytes and back; one codec per registry."""

    name: str

    def encode(self, event: Any) -> bytes:
        """Encode one event object."""
        ...

    def decoder(self, event_class: type) -> Decoder:
        """Return a fast callable that decodes bytes into an instance of ``event_class``."""
        ...


class MsgpackCodec:
    """The default codec: MessagePack through msgspec (typed decoding, validated)."""

    name = "msgpack"

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self.encode: Callable[[Any], bytes] = self._encoder.encode

    def decoder(self, event_class: type) -> Decoder:
        """Return ``msgspec.msgpack.Decoder(event_class).decode``."""
        return msgspec.msgpack.Decoder(event_class, dec_hook=_dec_hook).decode


class JsonCodec:
    """A JSON codec through msgspec, for stores whose payloads people read by eye."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self.encode: Callable[[Any], bytes] = self._encoder.encode

    def decoder(self, event_class: type) -> Decoder:
        """Return ``msgspec.json.Decoder(event_class).decode``."""
        return msgspec.json.Decoder(event_class, dec_hook=_dec_hook).decode


def _is_immutable(cls: type) -> bool:
    if dataclasses.is_dataclass(cls):
        params = getattr(cls, "__dataclass_params__", None)
        return bool(params is not None and params.frozen)
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return bool(cls.__struct_config__.frozen)
    return False


def _mutable_reason(cls: type) -> str:
    """Why ``cls`` cannot be an event class, pointing at the fix."""
    if dataclasses.is_dataclass(cls):
        return f"{cls!r} must be immutable: declare it with @dataclass(frozen=True)"
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return f"{cls!r} must be immutable: declare it with frozen=True"
    return (
        f"{cls!r} is neither a frozen dataclass nor a frozen msgspec.Struct. If it is "
        "declared with @dataclass(frozen=True), @event(...) must be the outermost "
        "decorator (above @dataclass), so that it sees the finished dataclass"
    )


class EventRegistry:
    """Maps event classes to stable type names and encodes/decodes their payloads.

    The name is what is stored, so classes can be renamed or moved freely as long as
    their registered name stays. Only immutable types are accepted: frozen dataclasses
    and ``msgspec.Struct`` classes with ``frozen=True``.
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        """The codec payloads are written with (fixed once events are registered)."""
        self._encode = self.codec.encode
        self._names: dict[type, str] = {}
        self._classes: dict[str, type] = {}
        self.decoders: dict[str, Decoder] = {}
        """Type name to decoder; handed to the Rust fold loop as is."""

    def register(self, name: str, event_class: type[T]) -> type[T]:
        """Register ``event_class`` under ``name``.

        The name is checked here, once, by the rules every store applies (so appending
        registered events pays nothing for it).

        Raises:
            InvalidEventType: ``name`` is not a str or breaks the type-name rules (also a
                ValueError).
            TypeError: ``event_class`` is not immutable.
            ValueError: ``name`` is already used by another class.
        """
        if not isinstance(name, str):
            raise InvalidEventType(name, f"must be a str, not {type(name).__name__}")
        validate_event_type(name)
        if not _is_immutable(event_class):
            raise TypeError(_mutable_reason(event_class))
        known = self._classes.get(name)
        if known is not None and known is not event_class:
            if known.__qualname__ != event_class.__qualname__:
                raise ValueError(f"event type name {name!r} is already used by {known!r}")
            del self._names[known]  # the same class redefined (module reload)
        self._names[event_class] = name
        self._classes[name] = event_class
        self.decoders[name] = self.codec.decoder(event_class)
        return event_class

    def name_of(self, event_class: type) -> str:
        """The registered name of ``event_class``; SerializationError if unregistered."""
        try:
            return self._names[event_class]
        except KeyError:
            raise SerializationError(
                getattr(event_class, "__qualname__", repr(event_class)),
                "not a registered event type (decorate it with @event(...))",
            ) from None

    def class_of(self, name: str) -> type:
        """The class registered under ``name``; SerializationError if unknown."""
        try:
            return self._classes[name]
        except KeyError:
            raise SerializationError(name, "no event type registered under this name") from None

    def encode(self, event: Any) -> tuple[str, bytes]:
        """Return ``(type name, payload)``; SerializationError names the type on failure."""
        name = self._names.get(event.__class__)
        if name is None:
            self.name_of(type(event))
        try:
            return name, self._encode(event)  # type: ignore[return-value]
        except (TypeError, ValueError, NotImplementedError, msgspec.MsgspecError) as exc:
            raise SerializationError(str(name), str(exc)) from exc

    def decode(self, name: str, payload: bytes) -> Any:
        """Decode one payload of type ``name``; SerializationError on failure."""
        decoder = self.decoders.get(name)
        if decoder is None:
            self.class_of(name)
        try:
            return decoder(payload)  # type: ignore[misc]
        except Exception as exc:
            raise SerializationError(name, f"cannot decode payload: {exc}") from exc

    def __contains__(self, item: object) -> bool:
        return item in self._classes or item in self._names


default_registry = EventRegistry()
"""The registry :func:`event` uses unless given another."""


def event(name: str, *, registry: EventRegistry | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator: register an immutable event class under a stable type name.

    >>> @event("bank.Deposited")
    ... @dataclasses.dataclass(frozen=True)
    ... class Deposited:
    ...     amount: int
    """
    target = registry if registry is not None else default_registry

    def decorate(cls: type[T]) -> type[T]:
        return target.register(name, cls)

    return decorate
