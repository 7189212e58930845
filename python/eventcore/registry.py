"""Event types: the user's own immutable classes, registered under stable names."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from eventcore._core import dec_hook, enc_hook, validate_event_type
from eventcore.errors import EventDecodeError, InvalidEventType, SerializationError

__all__ = [
    "Codec",
    "EventRegistry",
    "JsonCodec",
    "MsgpackCodec",
    "Retype",
    "default_registry",
    "event",
    "split_stored_type",
    "stored_type",
    "upcaster",
]

T = TypeVar("T")
Decoder = Callable[[bytes], Any]
Upcaster = Callable[[dict[str, Any]], "dict[str, Any] | Retype"]

# The stored type key carries the version: ``name`` for version 1 (so every event written
# before versions existed reads as version 1), ``name@vN`` from version 2 on. The registry
# maps each stored key to its decoder: the current key keeps the direct codec decoder, an
# old version's key gets an upcasting one.
_VERSIONED = re.compile(r"(.*)@v([1-9][0-9]*)", re.DOTALL)
_MAX_UPCASTS = 1000  # a chain longer than this is a Retype cycle


def stored_type(name: str, version: int) -> str:
    """The type key an event of ``name`` at ``version`` is stored under."""
    return name if version == 1 else f"{name}@v{version}"


def split_stored_type(key: str) -> tuple[str, int]:
    """``(logical name, version)`` of a stored type key (a key without ``@vN`` is v1)."""
    m = _VERSIONED.fullmatch(key)
    if m is None or m.group(2) == "1":
        return key, 1
    return m.group(1), int(m.group(2))


class Retype(NamedTuple):
    """What an upcaster returns to turn a stored event into another event type.

    The payload ``data`` is then version ``version`` of type ``name``, and that type's
    upcasters continue the chain from there (to split a retired type into others).
    """

    name: str
    """The type name (or alias) the payload now belongs to."""
    data: dict[str, Any]
    """The payload's fields, as that type's version ``version`` has them."""
    version: int = 1
    """The version of ``name`` that ``data`` is."""


# Value types and StreamId subclass a builtin: they encode as that builtin and validate
# themselves when rebuilt from it on decoding. Native hooks: msgspec calls them per field.
_enc_hook = enc_hook
_dec_hook = dec_hook


class Codec(Protocol):
    """Turns event objects into bytes and back; one codec per registry.

    Upcasting uses ``decoder(dict)`` for a stored payload's plain fields, then turns the
    upcast fields into the event class with the codec's ``converter(event_class)`` when it
    has one (else it encodes them and decodes them with ``decoder(event_class)``).
    """

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
        import msgspec  # here, not at the top: importing eventcore does not load it

        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self.encode: Callable[[Any], bytes] = self._encoder.encode

    def decoder(self, event_class: type) -> Decoder:
        """Return ``msgspec.msgpack.Decoder(event_class).decode``."""
        import msgspec

        return msgspec.msgpack.Decoder(event_class, dec_hook=_dec_hook).decode

    def converter(self, event_class: type) -> Callable[[Any], Any]:
        """Return a callable that builds ``event_class`` from plain (upcast) fields."""
        return _converter(event_class)


class JsonCodec:
    """A JSON codec through msgspec, for stores whose payloads people read by eye."""

    name = "json"

    def __init__(self) -> None:
        import msgspec  # here, not at the top: importing eventcore does not load it

        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self.encode: Callable[[Any], bytes] = self._encoder.encode

    def decoder(self, event_class: type) -> Decoder:
        """Return ``msgspec.json.Decoder(event_class).decode``."""
        import msgspec

        return msgspec.json.Decoder(event_class, dec_hook=_dec_hook).decode

    def converter(self, event_class: type) -> Callable[[Any], Any]:
        """Return a callable that builds ``event_class`` from plain (upcast) fields."""
        return _converter(event_class)


def _converter(event_class: type) -> Callable[[Any], Any]:
    """``msgspec.convert`` into ``event_class``: typed and validated like a decode."""
    import msgspec

    def convert(data: Any) -> Any:
        return msgspec.convert(data, event_class, dec_hook=_dec_hook)

    return convert


def _is_immutable(cls: type) -> bool:
    import msgspec

    if dataclasses.is_dataclass(cls):
        params = getattr(cls, "__dataclass_params__", None)
        return bool(params is not None and params.frozen)
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return bool(cls.__struct_config__.frozen)
    return False


def _mutable_reason(cls: type) -> str:
    """Why ``cls`` cannot be an event class, pointing at the fix."""
    import msgspec

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

    A class may be registered at a ``version`` above 1 with ``aliases`` (its former
    names); stored payloads of older versions or names are upcast on read by the
    upcasters registered with :meth:`register_upcaster`, chained one version at a time
    (a version step with no upcaster decodes the payload as it is).
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        """The codec payloads are written with (fixed once events are registered)."""
        self._encode = self.codec.encode
        self._names: dict[type, str] = {}  # class -> the stored key new events are written as
        self._logical: dict[type, str] = {}  # class -> its registered name
        self._classes: dict[str, type] = {}  # registered name -> class
        self._versions: dict[str, int] = {}  # registered name -> current version
        self._aliases: dict[str, str] = {}  # former name -> registered name
        self._direct: dict[str, Decoder] = {}  # registered name -> the codec's decoder
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._keys: dict[str, tuple[str, int]] = {}  # stored key -> (name, version)
        self._converters: dict[str, Callable[[Any], Any]] = {}  # name -> plain fields to class
        self.decoders: dict[str, Decoder] = {}
        """Stored type key to decoder; handed to the Rust fold loop as is."""

    def register(
        self,
        name: str,
        event_class: type[T],
        *,
        version: int = 1,
        aliases: Iterable[str] = (),
    ) -> type[T]:
        """Register ``event_class`` under ``name`` at ``version``.

        The name is checked here, once, by the rules every store applies (so appending
        registered events pays nothing for it). New events are stored under
        ``stored_type(name, version)``; events stored under an alias (a former name)
        decode to ``event_class``.

        Raises:
            InvalidEventType: ``name`` or an alias is not a str, breaks the type-name
                rules, or ends like a version suffix (``@v2``) (also a ValueError).
            TypeError: ``event_class`` is not immutable.
            ValueError: ``name`` or an alias is already used by another class, or
                ``version`` is not a positive int.
        """
        _check_name(name)
        if type(version) is not int or version < 1:
            raise ValueError(f"version must be a positive int, not {version!r}")
        former = [_check_name(a) for a in ((aliases,) if isinstance(aliases, str) else aliases)]
        key = stored_type(name, version)
        validate_event_type(key)
        if not _is_immutable(event_class):
            raise TypeError(_mutable_reason(event_class))
        for taken in (name, *former):
            known = self._classes.get(taken) or self._classes.get(self._aliases.get(taken, ""))
            redefined = known is not None and known.__qualname__ == event_class.__qualname__
            if known is not None and not redefined:
                raise ValueError(f"event type name {taken!r} is already used by {known!r}")
        # The codec checks the class (a shredding codec its declarations) before anything
        # changes: a class it refuses leaves the registry as it was.
        decoder = self.codec.decoder(event_class)
        known = self._classes.get(name)
        if known is not None:
            self._forget(known)  # the same class redefined (module reload) or re-registered
        if event_class in self._names:
            self._forget(event_class)
        self._names[event_class] = key
        self._logical[event_class] = name
        self._classes[name] = event_class
        self._versions[name] = version
        for alias in former:
            self._aliases[alias] = name
        self._direct[name] = decoder
        self._rebuild()
        return event_class

    def _forget(self, event_class: type) -> None:
        name = self._logical.pop(event_class)
        del self._names[event_class]
        self._classes.pop(name, None)
        self._versions.pop(name, None)
        self._direct.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]

    def register_upcaster(self, name: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster``: it turns the fields of a stored ``name`` payload at
        ``from_version`` into those of ``from_version + 1`` (or returns a :class:`Retype`).

        ``name`` may be a registered name, an alias, or a retired type name that no
        class has any more (its upcasters must end in a :class:`Retype`).

        Raises:
            InvalidEventType: ``name`` breaks the type-name rules.
            ValueError: ``from_version`` is not a positive int, or an upcaster is already
                registered for that name and version.
        """
        _check_name(name)
        if type(from_version) is not int or from_version < 1:
            raise ValueError(f"from_version must be a positive int, not {from_version!r}")
        known = self._upcasters.get((name, from_version))
        if known is not None and getattr(known, "__qualname__", None) != getattr(
            upcaster, "__qualname__", None
        ):
            raise ValueError(
                f"an upcaster for {name!r} from version {from_version} is already registered"
            )
        self._upcasters[(name, from_version)] = upcaster
        self._rebuild()

    def _canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def _upcaster(self, name: str, version: int) -> Upcaster | None:
        """The upcaster of (``name``, ``version``), registered under the name or an alias."""
        up = self._upcasters.get((name, version))
        if up is None:
            for alias, canonical in self._aliases.items():
                if canonical == name:
                    up = self._upcasters.get((alias, version))
                    if up is not None:
                        break
        return up

    def _rebuild(self) -> None:
        """Map every stored key this registry can read to its decoder.

        The current version's key (and an alias's at that version) gets the codec's
        decoder itself; an older version gets it too when no upcaster lies between (no
        cost), else an upcasting decoder. Updated in place: the Rust fold loop and
        running commands hold this very dict.
        """
        self._converters = {}
        decoders: dict[str, Decoder] = {}
        keys: dict[str, tuple[str, int]] = {}
        former: dict[str, list[str]] = {}
        for alias, canonical in self._aliases.items():
            former.setdefault(canonical, []).append(alias)
        for name, current in self._versions.items():
            direct = self._direct[name]
            for written in (name, *former.get(name, ())):
                for v in range(1, current + 1):
                    key = stored_type(written, v)
                    keys[key] = (name, v)
                    upcast = any(self._upcaster(name, u) for u in range(v, current))
                    decoders[key] = self._upcasting(key) if upcast else direct
        for rname, v in self._upcasters:
            canonical = self._canonical(rname)
            if canonical not in self._versions:  # a retired name: only upcasting reads it
                key = stored_type(rname, v)
                keys[key] = (rname, v)
                decoders[key] = self._upcasting(key)
        self._keys = keys
        self.decoders.update(decoders)
        for stale in [k for k in self.decoders if k not in decoders]:
            del self.decoders[stale]

    def _upcasting(self, key: str) -> Decoder:
        """A decoder for the stored key ``key``: plain fields, the upcaster chain, then
        the event class.

        The chain from the key's version to its class's current one is planned here
        (the registry rebuilds its decoders on every registration, so the plan stays
        current); a :class:`Retype` continues through :meth:`_chain`, looked up then.
        """
        plain = self.codec.decoder(dict)
        name, version = split_stored_type(key)
        name = self._canonical(name)
        current = self._versions.get(name)
        if current is None or version > current:
            return lambda payload: self._chain(key, name, version, plain(payload))
        steps = [(v, up) for v in range(version, current) if (up := self._upcaster(name, v))]
        convert = self._convert(name)

        def decode(payload: bytes) -> Any:
            data: Any = plain(payload)
            for v, up in steps:
                out = _call(up, key, name, v, data)
                if type(out) is dict:
                    data = out
                elif isinstance(out, Retype):
                    return self._chain(key, out.name, out.version, out.data)
                else:
                    data = _mapping(out, key, name, v)
            return convert(data)

        return decode

    def _chain(self, key: str, name: str, version: int, data: Any) -> Any:
        """Upcast ``data`` (``name`` at ``version``) to a registered class and build it."""
        for _ in range(_MAX_UPCASTS):
            name = self._canonical(name)
            current = self._versions.get(name)
            if current is not None and version >= current:
                if version > current:
                    raise EventDecodeError(key, _newer(name, version, current))
                return self._convert(name)(data)
            up = self._upcaster(name, version)
            if up is None:
                if current is None:
                    raise EventDecodeError(
                        key,
                        f"no class is registered under {name!r} and no upcaster "
                        f"from its version {version}",
                    )
                version += 1  # no upcaster: the payload is decoded as it is
                continue
            out = _call(up, key, name, version, data)
            if isinstance(out, Retype):
                name, data, version = out.name, out.data, out.version
            else:
                data, version = _mapping(out, key, name, version), version + 1
        raise EventDecodeError(key, f"more than {_MAX_UPCASTS} upcasts: a Retype cycle")

    def _convert(self, name: str) -> Callable[[Any], Any]:
        converter = self._converters.get(name)
        if converter is None:
            event_class = self._classes[name]
            make = getattr(self.codec, "converter", None)
            if make is not None:
                converter = make(event_class)
            else:
                typed, encode = self._direct[name], self.codec.encode
                converter = lambda data: typed(encode(data))  # noqa: E731
            self._converters[name] = converter
        return converter

    def name_of(self, event_class: type) -> str:
        """The registered name of ``event_class``; SerializationError if unregistered."""
        try:
            return self._logical[event_class]
        except KeyError:
            raise SerializationError(
                getattr(event_class, "__qualname__", repr(event_class)),
                "not a registered event type (decorate it with @event(...))",
            ) from None

    def version_of(self, event_class: type) -> int:
        """The current version of ``event_class``; SerializationError if unregistered."""
        return self._versions[self.name_of(event_class)]

    def class_of(self, name: str) -> type:
        """The class registered under ``name`` (or an alias); SerializationError if unknown."""
        try:
            return self._classes[self._canonical(name)]
        except KeyError:
            raise SerializationError(name, "no event type registered under this name") from None

    def resolve(self, key: str) -> tuple[str, int]:
        """``(registered name, version)`` of a stored type key.

        An alias's key resolves to the name it is an alias of; a key this registry does
        not know resolves by its form (``name@vN``, else version 1).
        """
        found = self._keys.get(key)
        return found if found is not None else split_stored_type(key)

    def stored_types(self, names: Iterable[str]) -> list[str]:
        """Every stored type key that reads as one of ``names`` (registered names or
        aliases): each version, under the name and its aliases. For store-side filters."""
        wanted = {self._canonical(n) for n in names}
        out = [k for k, (n, _) in self._keys.items() if n in wanted]
        out.extend(n for n in wanted if n not in self._keys)
        return out

    def encode(self, event: Any) -> tuple[str, bytes]:
        """Return ``(stored type key, payload)``; SerializationError names the type."""
        name = self._names.get(event.__class__)
        if name is None:
            self.name_of(type(event))
        try:
            return name, self._encode(event)  # type: ignore[return-value]
        except (TypeError, ValueError, NotImplementedError, _msgspec_error()) as exc:
            raise SerializationError(str(name), f"cannot encode: {exc}") from exc

    def decode(self, name: str, payload: bytes) -> Any:
        """Decode one payload stored under type key ``name``.

        Raises:
            EventDecodeError: the key is unknown here or the payload does not decode (a
                SerializationError; the caller adds where the event is).
        """
        decoder = self.decoders.get(name)
        if decoder is None:
            raise EventDecodeError(name, self._unknown(name))
        try:
            return decoder(payload)
        except EventDecodeError:
            raise
        except Exception as exc:
            raise EventDecodeError(name, f"cannot decode payload: {exc}") from exc

    def _unknown(self, key: str) -> str:
        """Why the stored key ``key`` has no decoder here."""
        name, version = split_stored_type(key)
        current = self._versions.get(self._canonical(name))
        if current is not None and version > current:
            return _newer(name, version, current)
        return "no event type registered under this name"

    def __contains__(self, item: object) -> bool:
        return item in self._classes or item in self._names


def _call(up: Upcaster, key: str, name: str, version: int, data: dict[str, Any]) -> Any:
    """``up(data)``; an exception from it becomes an EventDecodeError naming it."""
    try:
        return up(data)
    except Exception as exc:
        raise EventDecodeError(
            key,
            f"the upcaster {getattr(up, '__qualname__', up)!r} of {name!r} from "
            f"version {version} raised {exc!r}",
        ) from exc


def _mapping(out: Any, key: str, name: str, version: int) -> dict[str, Any]:
    """An upcaster's result as a dict, or the EventDecodeError for what it returned."""
    if isinstance(out, Mapping):
        return dict(out)
    raise EventDecodeError(
        key,
        f"the upcaster for {name!r} from version {version} returned "
        f"{type(out).__name__}, not a dict or Retype",
    )


def _newer(name: str, version: int, current: int) -> str:
    return (
        f"stored version {version} is newer than the registered version {current} of "
        f"{name!r} (written by a newer deploy: register that version here)"
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidEventType(name, f"must be a str, not {type(name).__name__}")
    validate_event_type(name)
    if _VERSIONED.fullmatch(name):
        raise InvalidEventType(
            name, "must not end with @v and a number (that suffix is the stored version)"
        )
    return name


if TYPE_CHECKING:
    default_registry: EventRegistry
    """The registry :func:`event` uses unless given another."""


def __getattr__(name: str) -> Any:
    # ``default_registry`` is made on first use: its codec loads msgspec (and msgspec
    # loads uuid and datetime), which ``import eventcore`` does not need.
    if name == "default_registry":
        return _default_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _default_registry() -> EventRegistry:
    registry: EventRegistry | None = globals().get("default_registry")
    if registry is None:  # setdefault: threads that race here all get the one stored first
        registry = globals().setdefault("default_registry", EventRegistry())
    return registry


def _msgspec_error() -> type[Exception]:
    # Named in ``except`` clauses, so it runs only when an error is being handled.
    import msgspec

    return msgspec.MsgspecError


def event(
    name: str,
    *,
    version: int = 1,
    aliases: Iterable[str] | Sequence[str] = (),
    registry: EventRegistry | None = None,
) -> Callable[[type[T]], type[T]]:
    """Class decorator: register an immutable event class under a stable type name.

    ``version`` is the class's current version (stored payloads of older versions are
    upcast on read, see :func:`upcaster`); ``aliases`` are former names whose stored
    events decode to this class.

    >>> @event("bank.Deposited")
    ... @dataclasses.dataclass(frozen=True)
    ... class Deposited:
    ...     amount: int
    """
    target = registry if registry is not None else _default_registry()
    former = (aliases,) if isinstance(aliases, str) else tuple(aliases)

    def decorate(cls: type[T]) -> type[T]:
        return target.register(name, cls, version=version, aliases=former)

    return decorate


def upcaster(
    name: str, *, from_version: int, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Function decorator: register an upcaster of ``name``'s stored payloads.

    The function takes the payload's fields at ``from_version`` (a dict) and returns
    them as version ``from_version + 1`` has them, or a :class:`Retype`.

    >>> @upcaster("bank.Deposited", from_version=1)
    ... def cents(data):
    ...     return {**data, "cents": data.pop("amount") * 100}
    """
    target = registry if registry is not None else _default_registry()

    def decorate(fn: Upcaster) -> Upcaster:
        target.register_upcaster(name, from_version, fn)
        return fn

    return decorate
