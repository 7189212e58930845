"""How a codec that wraps another composes with upcasters: the upcasting decoder asks the
codec for ``decoder(dict)`` (plain fields: a wrapper decrypts here, before any upcaster
runs) and ``converter(cls)`` (or, without one, encode + ``decoder(cls)``)."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from eventcore import MemoryStore, NewEvent
from eventcore.registry import EventRegistry, MsgpackCodec, event, upcaster


def _hide(value: str) -> dict[str, str]:
    return {"__hidden__": codecs.encode(value, "rot13")}


def _reveal(data: Any) -> Any:
    if isinstance(data, dict):
        if set(data) == {"__hidden__"}:
            return codecs.decode(data["__hidden__"], "rot13")
        return {k: _reveal(v) for k, v in data.items()}
    return data


class HidingCodec:
    """A stand-in for an encrypting codec: fields a class lists in ``__personal__`` are
    stored as envelopes, and every envelope is opened when a payload is decoded."""

    name = "hiding"

    def __init__(self) -> None:
        self.inner = MsgpackCodec()
        self.plain_decodes = 0

    def encode(self, event: Any) -> bytes:
        data = msgspec.to_builtins(event)
        for name in getattr(type(event), "__personal__", ()):
            data[name] = _hide(data[name])
        return self.inner.encode(data)

    def decoder(self, event_class: type) -> Callable[[bytes], Any]:
        plain = self.inner.decoder(dict)
        if event_class is dict:

            def decode_plain(payload: bytes) -> Any:
                self.plain_decodes += 1
                return _reveal(plain(payload))  # open the envelopes first

            return decode_plain
        convert = self.inner.converter(event_class)
        return lambda payload: convert(_reveal(plain(payload)))

    def converter(self, event_class: type) -> Callable[[Any], Any]:
        return self.inner.converter(event_class)


def test_a_wrapping_codec_opens_envelopes_before_the_upcaster_runs() -> None:
    old = EventRegistry(HidingCodec())

    @event("pii.SignedUp", registry=old)
    @dataclass(frozen=True)
    class SignedUpV1:
        __personal__ = ("mail",)
        mail: str

    codec = HidingCodec()
    new = EventRegistry(codec)

    @event("pii.SignedUp", version=2, registry=new)
    @dataclass(frozen=True)
    class SignedUp:
        __personal__ = ("email",)
        email: str
        domain: str

    seen: list[dict[str, Any]] = []

    @upcaster("pii.SignedUp", from_version=1, registry=new)
    def split_domain(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(data))
        mail = data.pop("mail")
        return {"email": mail, "domain": mail.split("@")[1]}

    store = MemoryStore(registry=new)
    store.append([NewEvent("user-1", *old.encode(SignedUpV1("ada@example.org")))])
    store.append([NewEvent("user-1", *new.encode(SignedUp("bob@example.com", "example.com")))])
    assert b"ada@example.org" not in store.read_stream("user-1")[0].payload  # stored hidden
    assert [e.data for e in store.read_stream("user-1")] == [
        SignedUp("ada@example.org", "example.org"),
        SignedUp("bob@example.com", "example.com"),
    ]
    assert seen == [{"mail": "ada@example.org"}]  # the upcaster saw the opened value
    assert codec.plain_decodes == 1  # the current version went through decoder(cls) only


def test_a_codec_without_converter_goes_through_encode_and_decoder() -> None:
    class Minimal:
        name = "minimal"

        def __init__(self) -> None:
            self.inner = MsgpackCodec()
            self.encode = self.inner.encode

        def decoder(self, event_class: type) -> Callable[[bytes], Any]:
            return self.inner.decoder(event_class)

    new = EventRegistry(Minimal())

    @event("min.Renamed", version=2, registry=new)
    @dataclass(frozen=True)
    class Renamed:
        b: int

    @upcaster("min.Renamed", from_version=1, registry=new)
    def a_to_b(data: dict[str, Any]) -> dict[str, Any]:
        return {"b": data["a"]}

    assert new.decode("min.Renamed", msgspec.msgpack.encode({"a": 4})) == Renamed(4)
