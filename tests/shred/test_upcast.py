"""Upcasters and crypto-shredding together: an old version of a class with personal
fields is opened first, then upcast, so upcasters see plain fields, never the envelope."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import pytest

from eventcore import EventRegistry, MemoryStore, NewEvent
from eventcore.registry import JsonCodec, MsgpackCodec
from eventcore.shredding import MemoryKeyStore, Personal, ShreddingCodec, Subject


@dataclasses.dataclass(frozen=True)
class SignedUpV1:
    customer: Annotated[str, Subject]
    name: Annotated[str, Personal]
    age: Annotated[int, Personal]


@dataclasses.dataclass(frozen=True)
class SignedUp:
    """Version 3: ``name`` became ``full_name`` (v2), ``age`` became ``birth_year`` (v3)."""

    customer: Annotated[str, Subject]
    full_name: Annotated[str, Personal]
    birth_year: Annotated[int, Personal]
    plan: str = "free"


@dataclasses.dataclass(frozen=True)
class Plain:
    amount: int


@pytest.fixture(params=["msgpack", "json"])
def inner(request: pytest.FixtureRequest) -> Any:
    return MsgpackCodec() if request.param == "msgpack" else JsonCodec()


def registries(keys: MemoryKeyStore, inner: Any) -> tuple[EventRegistry, EventRegistry]:
    """The registry an earlier deploy wrote with, and today's with its upcasters."""
    old = EventRegistry(ShreddingCodec(keys, type(inner)()))
    old.register("crm.SignedUp", SignedUpV1)
    new = EventRegistry(ShreddingCodec(keys, inner))
    new.register("crm.SignedUp", SignedUp, version=3)
    new.register("crm.Plain", Plain)

    def rename(data: dict[str, Any]) -> dict[str, Any]:
        data["full_name"] = data.pop("name")
        return data

    def birth_year(data: dict[str, Any]) -> dict[str, Any]:
        age = data.pop("age")
        data["birth_year"] = 2026 - age if age else 0
        return data

    new.register_upcaster("crm.SignedUp", 1, rename)
    new.register_upcaster("crm.SignedUp", 2, birth_year)
    return old, new


def test_an_old_personal_event_is_opened_then_upcast(inner: Any) -> None:
    keys = MemoryKeyStore()
    old, new = registries(keys, inner)
    key, payload = old.encode(SignedUpV1("c-9", "Ada Lovelace", 36))
    assert key == "crm.SignedUp" and b"Ada" not in payload
    store = MemoryStore(registry=new)
    store.append([NewEvent("customer-c-9", key, payload)])
    (recorded,) = store.read_stream("customer-c-9")
    assert recorded.event_version == 1
    assert recorded.data == SignedUp("c-9", "Ada Lovelace", 1990)
    # The Rust fold loop gets the same decoder.
    assert new.decoders[key](payload) == SignedUp("c-9", "Ada Lovelace", 1990)
    # Today's events of the class still take the direct (no upcast) path and round-trip.
    now_key, now_payload = new.encode(SignedUp("c-9", "Ada L.", 1990, plan="gold"))
    assert now_key == "crm.SignedUp@v3" and b"Ada" not in now_payload
    assert new.decode(now_key, now_payload) == SignedUp("c-9", "Ada L.", 1990, plan="gold")


def test_after_a_forget_the_upcast_event_carries_placeholders(inner: Any) -> None:
    keys = MemoryKeyStore()
    old, new = registries(keys, inner)
    key, payload = old.encode(SignedUpV1("c-9", "Ada Lovelace", 36))
    keys.forget("c-9")
    # The upcasters get the placeholders ("" and 0) in the personal fields' place.
    assert new.decode(key, payload) == SignedUp("c-9", "", 0)


def test_events_without_personal_fields_upcast_as_before(inner: Any) -> None:
    keys = MemoryKeyStore()
    _, new = registries(keys, inner)
    plain_key, plain_payload = new.encode(Plain(5))
    assert new.decode(plain_key, plain_payload) == Plain(5)
    fields = new.codec.decoder(dict)(plain_payload)
    assert fields == {"amount": 5}  # what an upcaster of a plain class would see
