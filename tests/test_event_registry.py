"""The event registry: stable type names, immutable classes, codecs, SerializationError."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from eventcore import (
    EventRegistry,
    InvalidEventType,
    SerializationError,
    StreamId,
    ValidationError,
    Value,
    default_registry,
    event,
)
from eventcore._core import dec_hook, enc_hook
from eventcore.registry import JsonCodec, MsgpackCodec

from .bank_domain import AccountNo, Catalogued, Money, Noted


@dataclass(frozen=True)
class Shipped:
    order: str
    items: tuple[str, ...] = ()


class Packed(msgspec.Struct, frozen=True):
    order: str
    weight: float


@dataclass
class Mutable:
    x: int


class MutableStruct(msgspec.Struct):
    x: int


class Opaque:
    pass


@pytest.fixture(params=[MsgpackCodec, JsonCodec])
def registry(request: pytest.FixtureRequest) -> EventRegistry:
    reg = EventRegistry(request.param())
    reg.register("reg.Shipped", Shipped)
    reg.register("reg.Packed", Packed)
    return reg


def test_round_trip_dataclass_and_struct(registry: EventRegistry) -> None:
    for ev in (Shipped("o-1", ("a", "b")), Packed("o-2", 1.5)):
        name, payload = registry.encode(ev)
        assert isinstance(payload, bytes)
        assert registry.decode(name, payload) == ev
        assert registry.decoders[name](payload) == ev
    assert registry.encode(Shipped("o"))[0] == "reg.Shipped"
    assert registry.encode(Packed("o", 0.0))[0] == "reg.Packed"


def test_names_and_classes_map_both_ways(registry: EventRegistry) -> None:
    assert registry.name_of(Shipped) == "reg.Shipped"
    assert registry.class_of("reg.Packed") is Packed
    assert "reg.Shipped" in registry
    assert Shipped in registry
    assert "reg.Nothing" not in registry
    assert Opaque not in registry


def test_json_codec_writes_json() -> None:
    reg = EventRegistry(JsonCodec())
    reg.register("reg.Shipped", Shipped)
    _, payload = reg.encode(Shipped("o-1", ("x",)))
    assert json.loads(payload) == {"order": "o-1", "items": ["x"]}
    assert reg.codec.name == "json"
    assert EventRegistry().codec.name == "msgpack"


def test_only_immutable_classes_are_accepted() -> None:
    reg = EventRegistry()
    for cls in (Mutable, MutableStruct, Opaque, int):
        with pytest.raises(TypeError):
            reg.register("reg.Bad", cls)
    assert "reg.Bad" not in reg


def test_bad_names_are_rejected() -> None:
    reg = EventRegistry()
    for name in ("", "   ", None, 3):
        with pytest.raises(ValueError):
            reg.register(name, Shipped)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty"),
        (" reg.Padded", "must not start or end with whitespace"),
        ("reg.Padded\u3000", "must not start or end with whitespace"),
        ("reg.\nNewline", "control characters (U+000A at index 4)"),
        ("reg.Nul\x00", "control characters (U+0000 at index 7)"),
        ("reg.\ud800", "surrogate"),
        ("x" * 256, "at most 255 characters (got 256)"),
        ("x" * 1_000_000, "at most 255 characters (got 1000000)"),
        (3, "must be a str"),
    ],
)
def test_type_names_follow_the_rules_of_every_store(name: Any, reason: str) -> None:
    """Regression: empty names, control characters and a million characters were accepted."""
    reg = EventRegistry()
    with pytest.raises(InvalidEventType) as info:
        event(name, registry=reg)(Shipped)
    assert reason in str(info.value)
    assert len(str(info.value)) < 1000  # a huge name is not repeated in full
    assert Shipped not in reg


def test_type_names_are_identifiers_not_trimmed() -> None:
    reg = EventRegistry()
    for name in ("reg.Shipped", "Überweisung erfasst", "x" * 255):
        reg.register(name, Shipped)
        assert reg.name_of(Shipped) == name


def test_event_under_dataclass_says_it_must_be_the_outermost_decorator() -> None:
    """Regression: ``@event`` applied before ``@dataclass(frozen=True)`` said the class
    "must be immutable", though the user had declared it frozen."""
    reg = EventRegistry()
    with pytest.raises(TypeError, match=r"@event\(\.\.\.\) must be the outermost decorator"):

        @dataclass(frozen=True)
        @event("reg.Inverted", registry=reg)
        class Inverted:
            n: int

    with pytest.raises(TypeError, match=r"frozen=True"):

        @event("reg.Mutable", registry=reg)
        @dataclass
        class NotFrozen:
            n: int


def test_a_name_cannot_be_taken_by_another_class() -> None:
    reg = EventRegistry()
    reg.register("reg.Shipped", Shipped)
    with pytest.raises(ValueError, match="already used"):
        reg.register("reg.Shipped", Packed)
    assert reg.class_of("reg.Shipped") is Shipped


def test_redefining_the_same_class_replaces_it() -> None:
    reg = EventRegistry()

    def make() -> type:
        @dataclass(frozen=True)
        class Reloaded:
            v: int

        return Reloaded

    old, new = make(), make()
    reg.register("reg.Reloaded", old)
    reg.register("reg.Reloaded", new)
    assert reg.class_of("reg.Reloaded") is new
    assert old not in reg
    assert type(reg.decode("reg.Reloaded", reg.encode(new(1))[1])) is new


def test_unregistered_class_is_a_serialization_error_naming_it(registry: EventRegistry) -> None:
    with pytest.raises(SerializationError) as info:
        registry.encode(Opaque())
    assert "Opaque" in info.value.event_type
    assert "Opaque" in str(info.value)
    with pytest.raises(SerializationError):
        registry.name_of(Opaque)


def test_unknown_name_on_decode_is_a_serialization_error(registry: EventRegistry) -> None:
    with pytest.raises(SerializationError) as info:
        registry.decode("reg.Unknown", b"\x80")
    assert info.value.event_type == "reg.Unknown"
    with pytest.raises(SerializationError):
        registry.class_of("reg.Unknown")


def test_unencodable_payload_names_the_event_type() -> None:
    reg = EventRegistry()
    reg.register("reg.Noted", Noted)
    with pytest.raises(SerializationError) as info:
        reg.encode(Noted(Opaque()))
    assert info.value.event_type == "reg.Noted"
    assert "reg.Noted" in str(info.value)
    # The default registry knows the shared domain's event under its own name.
    with pytest.raises(SerializationError) as info:
        default_registry.encode(Noted(object()))
    assert info.value.event_type == "tbank.Noted"


def test_undecodable_payload_names_the_event_type(registry: EventRegistry) -> None:
    for garbage in (b"", b"\xc1\xc1", b"not a payload"):
        with pytest.raises(SerializationError) as info:
            registry.decode("reg.Shipped", garbage)
        assert info.value.event_type == "reg.Shipped"
    # Well-formed, but the wrong shape for the type.
    wrong = registry.codec.encode({"order": "o", "weight": "heavy"})
    with pytest.raises(SerializationError):
        registry.decode("reg.Packed", wrong)
    with pytest.raises(SerializationError) as info:
        registry.decode("reg.Packed", registry.encode(Shipped("o"))[1])
    assert info.value.event_type == "reg.Packed"


def test_event_decorator_registers_in_the_given_or_default_registry() -> None:
    reg = EventRegistry()

    @event("reg.Decorated", registry=reg)
    @dataclass(frozen=True)
    class Decorated:
        v: int

    assert reg.name_of(Decorated) == "reg.Decorated"
    assert Decorated not in default_registry
    # ``@event`` without ``registry=``: the shared test domain's own events (its accounts
    # are the shipped example's, registered by hand) are in the default registry.
    assert default_registry.name_of(Noted) == "tbank.Noted"
    assert default_registry.class_of("tbank.Catalogued") is Catalogued


def test_decoded_events_are_immutable(registry: EventRegistry) -> None:
    name, payload = registry.encode(Shipped("o-1"))
    decoded: Any = registry.decode(name, payload)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.order = "changed"


class Grams(Value, float, gt=0):
    """A positive weight."""


@dataclass(frozen=True)
class Weighed:
    parcel: StreamId
    count: Money
    code: AccountNo
    grams: Grams


@dataclass(frozen=True)
class Plain:
    parcel: str
    count: int
    code: str
    grams: float


@pytest.mark.parametrize("codec", [MsgpackCodec, JsonCodec])
def test_value_types_are_stored_as_their_builtin_and_validated_when_read(codec: type) -> None:
    reg = EventRegistry(codec())
    reg.register("reg.Weighed", Weighed)
    reg.register("reg.Plain", Plain)
    weighed = Weighed(StreamId("p-1"), Money(3), AccountNo("acc-7"), Grams(2.5))
    name, payload = reg.encode(weighed)
    assert name == "reg.Weighed"
    assert payload == reg.encode(Plain("p-1", 3, "acc-7", 2.5))[1]  # stored as the builtins
    back = reg.decode("reg.Weighed", payload)
    assert back == weighed
    kinds = [type(back.parcel), type(back.count), type(back.code), type(back.grams)]
    assert kinds == [StreamId, Money, AccountNo, Grams]
    # a stored value that breaks the value type's rules is refused when read
    for plain in (Plain("p-1", 0, "acc-7", 2.5), Plain("p\x00", 3, "acc-7", 2.5)):
        _, bad = reg.encode(plain)
        with pytest.raises(SerializationError, match=r"reg\.Weighed"):
            reg.decode("reg.Weighed", bad)


def test_codec_hooks_turn_subclasses_into_exact_builtins() -> None:
    class Blob(bytes):
        pass

    for value, builtin in [
        (Money(3), int),
        (AccountNo("acc-1"), str),
        (StreamId("s"), str),
        (Grams(1.5), float),
        (Blob(b"\x00"), bytes),
    ]:
        made = enc_hook(value)
        assert type(made) is builtin and made == value
        assert type(dec_hook(type(value), made)) is type(value)
    for bad in (object(), [1], None):
        with pytest.raises(NotImplementedError, match="cannot be encoded"):
            enc_hook(bad)
    with pytest.raises(NotImplementedError, match=r"^objects of type list cannot be encoded$"):
        enc_hook([1])
    with pytest.raises(NotImplementedError, match="not supported"):
        dec_hook(list, [1])
    with pytest.raises(ValidationError):
        dec_hook(Money, 0)
