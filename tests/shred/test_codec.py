"""The shredding codec by itself: sealing, placeholders, forgetting, tampering, errors."""

from __future__ import annotations

import base64
import dataclasses
from typing import Annotated, Any

import msgspec
import pytest

from eventcore import EventRegistry, SerializationError, Value
from eventcore.registry import JsonCodec, MsgpackCodec
from eventcore.shredding import (
    CiphertextTampered,
    MemoryKeyStore,
    Personal,
    ShreddingCodec,
    Subject,
    SubjectForgotten,
    SubjectKeyMissing,
)
from tests.shred.domain import Moved, Ordered, Registered, make_registry

ANN = Registered("c-1", "Ann Smith", "ann@example.com", 41, plan="gold")


@pytest.fixture(params=["msgpack", "json"])
def inner(request: pytest.FixtureRequest) -> Any:
    return MsgpackCodec() if request.param == "msgpack" else JsonCodec()


def test_personal_fields_round_trip_and_are_not_stored_in_clear(inner: Any) -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys, inner)
    name, payload = registry.encode(ANN)
    assert registry.decode(name, payload) == ANN
    for secret in (b"Ann Smith", b"ann@example.com"):
        assert secret not in payload
    assert b"gold" in payload and b"c-1" in payload  # the rest stays readable
    moved = Moved("c-1", "1 High Street", ["vip"])
    assert registry.decode(*registry.encode(moved)) == moved


def test_every_event_gets_a_fresh_nonce() -> None:
    registry = make_registry(MemoryKeyStore())
    assert registry.encode(ANN)[1] != registry.encode(ANN)[1]


def test_classes_without_personal_fields_use_the_inner_codec_untouched() -> None:
    plain = EventRegistry()
    plain.register("crm.Ordered", Ordered)
    registry = make_registry(MemoryKeyStore())
    assert registry.encode(Ordered(5)) == plain.encode(Ordered(5))
    codec = registry.codec
    assert isinstance(codec, ShreddingCodec)
    # the decoder IS the inner codec's, nothing wrapped around it
    assert type(registry.decoders["crm.Ordered"]) is type(plain.decoders["crm.Ordered"])
    assert registry.decoders["crm.Ordered"].__self__.type is Ordered  # type: ignore[attr-defined]


def test_forget_turns_personal_fields_into_placeholders(inner: Any) -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys, inner)
    stored = [registry.encode(ANN), registry.encode(Moved("c-1", "1 High Street", ["vip"]))]
    other = registry.encode(Registered("c-2", "Bob", "bob@example.com", 30))
    assert keys.forget("c-1") is True
    assert keys.forget("c-1") is False  # already forgotten
    assert [registry.decode(*s) for s in stored] == [
        # str -> "", int -> 0, a declared placeholder, non-personal fields untouched
        Registered("c-1", "", "forgotten@invalid", 0, plan="gold"),
        # str | None -> None, list -> []
        Moved("c-1", None, []),
    ]
    assert registry.decode(*other).name == "Bob"  # other subjects keep their data


def test_a_forgotten_subject_gets_no_new_events() -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys)
    keys.forget("c-1")  # never seen: marked forgotten all the same
    with pytest.raises(SubjectForgotten) as info:
        registry.encode(ANN)
    assert info.value.subject == "c-1"
    registry.encode(Ordered(1))  # events without personal data are not concerned


def test_tampered_ciphertext_is_a_typed_error(inner: Any) -> None:
    registry = make_registry(MemoryKeyStore(), inner)
    name, payload = registry.encode(ANN)
    envelope: dict[str, Any] = inner.decoder(dict[str, Any])(payload)
    sealed = envelope["sealed"]
    if isinstance(inner, JsonCodec):
        sealed = base64.b64decode(sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    registry.encode(Registered("c-2", "Bob", "bob@example.com", 30))  # c-2 has a key
    forgeries = [
        dict(envelope, sealed=bytes(flipped)),  # a bit flipped
        dict(envelope, sealed=sealed[:-1]),  # truncated
        dict(envelope, sealed=b"\x02" + sealed[1:]),  # an unknown format
        dict(envelope, subject="c-2"),  # a valid ciphertext moved to another subject
    ]
    for forged in forgeries:
        with pytest.raises(SerializationError) as info:
            registry.decode(name, inner.encode(forged))
        cause = info.value.__cause__
        assert isinstance(cause, CiphertextTampered)
        assert cause.subject == forged["subject"]
    assert registry.decode(name, inner.encode(envelope)) == ANN  # the untouched one opens


def test_a_missing_key_is_an_error_never_a_placeholder() -> None:
    registry = make_registry(MemoryKeyStore())
    name, payload = registry.encode(ANN)
    elsewhere = make_registry(MemoryKeyStore())  # another key store: no row for c-1
    with pytest.raises(SerializationError) as info:
        elsewhere.decode(name, payload)
    assert isinstance(info.value.__cause__, SubjectKeyMissing)
    assert info.value.__cause__.subject == "c-1"


def test_keys_are_never_in_reprs_or_errors() -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys)
    registry.encode(ANN)
    key = keys.key("c-1")
    assert key is not None and len(key) == 32
    texts = [repr(keys), repr(registry.codec), str(SubjectForgotten("c-1"))]
    for text in texts:
        assert key.hex() not in text and repr(key) not in text and "Ann" not in text


def test_class_declarations_are_checked_at_registration() -> None:
    registry = EventRegistry(ShreddingCodec(MemoryKeyStore()))

    @dataclasses.dataclass(frozen=True)
    class NoSubject:
        name: Annotated[str, Personal]

    with pytest.raises(TypeError, match="no subject"):
        registry.register("x.NoSubject", NoSubject)

    @dataclasses.dataclass(frozen=True)
    class NoPlaceholder:
        who: Annotated[str, Subject]
        card: Annotated[Ordered, Personal]

    with pytest.raises(TypeError, match="no default placeholder"):
        registry.register("x.NoPlaceholder", NoPlaceholder)

    @dataclasses.dataclass(frozen=True)
    class BadPlaceholder:
        who: Annotated[str, Subject]
        age: Annotated[int, Personal(placeholder="n/a")]

    with pytest.raises(TypeError, match="not a valid value"):
        registry.register("x.BadPlaceholder", BadPlaceholder)

    @dataclasses.dataclass(frozen=True)
    class Declared:
        who: Annotated[str, Subject]
        card: Annotated[Ordered, Personal(placeholder=Ordered(0))]

    registry.register("x.Declared", Declared)
    assert registry.decode(*registry.encode(Declared("w", Ordered(7)))) == Declared("w", Ordered(7))


def test_subject_must_be_a_sensible_length() -> None:
    registry = make_registry(MemoryKeyStore())
    for bad in ("", "x" * 1025):
        with pytest.raises(SerializationError, match="subject"):
            registry.encode(dataclasses.replace(ANN, customer=bad))


def test_msgspec_struct_events_keep_their_class() -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys)
    decoded = registry.decode(*registry.encode(Moved("c-9", "x")))
    assert type(decoded) is Moved and isinstance(decoded, msgspec.Struct)


def test_placeholders_the_class_itself_rejects_fail_the_first_encode() -> None:
    registry = EventRegistry(ShreddingCodec(MemoryKeyStore()))

    @dataclasses.dataclass(frozen=True)
    class Strict:
        who: Annotated[str, Subject]
        name: Annotated[str, Personal]

        def __post_init__(self) -> None:
            if not self.name:
                raise ValueError("a name is required")

    registry.register("x.Strict", Strict)  # the type alone cannot tell
    with pytest.raises(SerializationError, match="rejects its personal fields' placeholders"):
        registry.encode(Strict("w", "Ann"))


class Email(Value, str, pattern=r"[^@]+@[^@]+"):
    """An email address."""


def test_frozen_slotted_dataclasses_and_value_types() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Contact:
        who: Annotated[str, Subject]
        email: Annotated[Email, Personal(placeholder="erased@invalid")]

    keys = MemoryKeyStore()
    registry = EventRegistry(ShreddingCodec(keys))
    registry.register("x.Contact", Contact)
    contact = Contact("w", Email("a@b.c"))
    stored = registry.encode(contact)
    decoded = registry.decode(*stored)
    assert decoded == contact and type(decoded.email) is Email
    keys.forget("w")
    forgotten = registry.decode(*stored)
    assert forgotten.email == "erased@invalid" and type(forgotten.email) is Email

    @dataclasses.dataclass(frozen=True)
    class Undeclared:
        who: Annotated[str, Subject]
        email: Annotated[Email, Personal]  # "" is no Email

    with pytest.raises(TypeError, match="not a valid value"):
        registry.register("x.Undeclared", Undeclared)


def test_the_codec_drops_a_forgotten_key_at_the_subjects_next_read() -> None:
    keys = MemoryKeyStore()
    registry = make_registry(keys)
    stored = registry.encode(ANN)
    registry.decode(*stored)
    codec: Any = registry.codec
    key = keys.key("c-1")
    assert any(kept == key for kept, _ in codec._aeads.values())
    keys.forget("c-1")
    registry.decode(*stored)
    assert not any(kept == key for kept, _ in codec._aeads.values())
