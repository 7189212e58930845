"""Versioned event types: upcasters chained on read, aliases for renamed types, and the
cases the issue names (add, rename, remove, retype a field; split a type into others)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from eventcore import MemoryStore, NewEvent
from eventcore.errors import EventDecodeError, InvalidEventType, SerializationError
from eventcore.registry import (
    EventRegistry,
    JsonCodec,
    Retype,
    event,
    split_stored_type,
    stored_type,
    upcaster,
)


def written_by(old: EventRegistry, store: MemoryStore, stream: str, *events: Any) -> None:
    """Append ``events`` as an older deploy (registry ``old``) wrote them."""
    store.append([NewEvent(stream, *old.encode(e)) for e in events])


def old_item_added() -> tuple[EventRegistry, type]:
    old = EventRegistry()

    @event("shop.ItemAdded", registry=old)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        count: int

    return old, ItemAdded


def test_stored_type_keys_carry_the_version_and_version_1_is_the_bare_name() -> None:
    assert stored_type("shop.ItemAdded", 1) == "shop.ItemAdded"
    assert stored_type("shop.ItemAdded", 3) == "shop.ItemAdded@v3"
    assert split_stored_type("shop.ItemAdded@v3") == ("shop.ItemAdded", 3)
    assert split_stored_type("shop.ItemAdded") == ("shop.ItemAdded", 1)
    assert split_stored_type("x@v0") == ("x@v0", 1)
    assert split_stored_type("x@v1") == ("x@v1", 1)


def test_a_name_that_looks_versioned_is_refused() -> None:
    reg = EventRegistry()

    @dataclass(frozen=True)
    class Odd:
        a: int

    with pytest.raises(InvalidEventType, match="@v"):
        reg.register("shop.Odd@v2", Odd)
    with pytest.raises(InvalidEventType, match="@v"):
        reg.register("shop.Odd", Odd, aliases=("shop.Old@v2",))
    with pytest.raises(ValueError, match="version"):
        reg.register("shop.Odd", Odd, version=0)


def test_new_events_are_written_under_the_versioned_key_and_read_back_as_the_name() -> None:
    reg = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=reg)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        qty: int

    name, _ = reg.encode(ItemAdded("a", 1))
    assert name == "shop.ItemAdded@v2"
    assert reg.name_of(ItemAdded) == "shop.ItemAdded"
    assert reg.version_of(ItemAdded) == 2
    store = MemoryStore(registry=reg)
    store.append([NewEvent("cart-1", *reg.encode(ItemAdded("a", 1)))])
    [rec] = store.read_stream("cart-1")
    assert (rec.event_type, rec.event_version, rec.stored_type) == (
        "shop.ItemAdded",
        2,
        "shop.ItemAdded@v2",
    )
    assert rec.data == ItemAdded("a", 1)


def test_adding_a_field_with_a_default_needs_no_upcaster() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        count: int
        gift: bool = False

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", 2))
    store.append([NewEvent("cart-1", *new.encode(ItemAdded("b", 1, gift=True)))])
    events = store.read_stream("cart-1")
    assert [e.data for e in events] == [ItemAdded("a", 2), ItemAdded("b", 1, gift=True)]
    assert [e.event_version for e in events] == [1, 2]
    # No upcaster on the way: the old key decodes with the very same codec decoder.
    assert new.decoders["shop.ItemAdded"] is new.decoders["shop.ItemAdded@v2"]


def test_renaming_a_field() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        qty: int

    @upcaster("shop.ItemAdded", from_version=1, registry=new)
    def count_to_qty(data: dict[str, Any]) -> dict[str, Any]:
        data["qty"] = data.pop("count")
        return data

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", 2))
    assert [e.data for e in store.read_stream("cart-1")] == [ItemAdded("a", 2)]
    assert new.decoders["shop.ItemAdded"] is not new.decoders["shop.ItemAdded@v2"]


def test_removing_a_field() -> None:
    old = EventRegistry()

    @event("shop.ItemAdded", registry=old)
    @dataclass(frozen=True)
    class OldItem:
        sku: str
        note: str

    new = EventRegistry()

    # forbid_unknown_fields: without the upcaster the old payload would not decode.
    @event("shop.ItemAdded", version=2, registry=new)
    class ItemAdded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        sku: str

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", "gift wrap"))
    with pytest.raises(EventDecodeError, match="note"):
        _ = store.read_stream("cart-1")[0].data

    @upcaster("shop.ItemAdded", from_version=1, registry=new)
    def drop_note(data: dict[str, Any]) -> dict[str, Any]:
        del data["note"]
        return data

    assert [e.data for e in store.read_stream("cart-1")] == [ItemAdded("a")]


def test_changing_a_fields_type_and_chaining_versions() -> None:
    old = EventRegistry()

    @event("shop.PriceSet", registry=old)
    @dataclass(frozen=True)
    class PriceV1:
        price: str  # "12.50"

    mid = EventRegistry()

    @event("shop.PriceSet", version=2, registry=mid)
    @dataclass(frozen=True)
    class PriceV2:
        price: str
        currency: str

    new = EventRegistry()

    @event("shop.PriceSet", version=3, registry=new)
    @dataclass(frozen=True)
    class PriceSet:
        cents: int
        currency: str

    calls: list[int] = []

    @upcaster("shop.PriceSet", from_version=1, registry=new)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return {**data, "currency": "EUR"}

    @upcaster("shop.PriceSet", from_version=2, registry=new)
    def to_cents(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        whole, _, frac = data["price"].partition(".")
        return {"cents": int(whole) * 100 + int(frac or 0), "currency": data["currency"]}

    store = MemoryStore(registry=new)
    written_by(old, store, "p-1", PriceV1("12.50"))
    written_by(mid, store, "p-1", PriceV2("3.10", "USD"))
    store.append([NewEvent("p-1", *new.encode(PriceSet(99, "GBP")))])
    events = store.read_stream("p-1")
    assert [e.data for e in events] == [
        PriceSet(1250, "EUR"),
        PriceSet(310, "USD"),
        PriceSet(99, "GBP"),
    ]
    assert calls == [1, 2, 2]  # v1 went through both, v2 through one, v3 through none
    assert [e.event_version for e in events] == [1, 2, 3]
    assert {e.event_type for e in events} == {"shop.PriceSet"}


def test_renaming_a_type_through_an_alias() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ProductAdded", aliases=("shop.ItemAdded",), registry=new)
    @dataclass(frozen=True)
    class ProductAdded:
        sku: str
        count: int

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", 2))
    store.append([NewEvent("cart-1", *new.encode(ProductAdded("b", 1)))])
    events = store.read_stream("cart-1")
    assert [e.data for e in events] == [ProductAdded("a", 2), ProductAdded("b", 1)]
    assert [e.stored_type for e in events] == ["shop.ItemAdded", "shop.ProductAdded"]
    assert [e.event_type for e in events] == ["shop.ProductAdded"] * 2
    assert new.class_of("shop.ItemAdded") is ProductAdded
    assert sorted(new.stored_types(["shop.ProductAdded"])) == [
        "shop.ItemAdded",
        "shop.ProductAdded",
    ]


def test_an_alias_together_with_a_new_version_upcasts_the_old_name() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ProductAdded", version=2, aliases=("shop.ItemAdded",), registry=new)
    @dataclass(frozen=True)
    class ProductAdded:
        sku: str
        quantity: int

    @upcaster("shop.ProductAdded", from_version=1, registry=new)
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return {"sku": data["sku"], "quantity": data["count"]}

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", 2))
    [rec] = store.read_stream("cart-1")
    assert rec.data == ProductAdded("a", 2)
    assert (rec.event_type, rec.event_version) == ("shop.ProductAdded", 1)


def test_splitting_a_retired_type_into_two_types() -> None:
    old = EventRegistry()

    @event("shop.ItemChanged", registry=old)
    @dataclass(frozen=True)
    class ItemChanged:
        field: str
        value: int

    new = EventRegistry()

    @event("shop.PriceChanged", registry=new)
    @dataclass(frozen=True)
    class PriceChanged:
        cents: int

    @event("shop.QuantityChanged", version=2, registry=new)
    @dataclass(frozen=True)
    class QuantityChanged:
        qty: int
        reason: str

    @upcaster("shop.ItemChanged", from_version=1, registry=new)
    def split(data: dict[str, Any]) -> Retype:
        if data["field"] == "price":
            return Retype("shop.PriceChanged", {"cents": data["value"]})
        return Retype("shop.QuantityChanged", {"qty": data["value"]})  # at its version 1

    @upcaster("shop.QuantityChanged", from_version=1, registry=new)
    def add_reason(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "reason": "unknown"}

    store = MemoryStore(registry=new)
    written_by(old, store, "item-1", ItemChanged("price", 500), ItemChanged("qty", 3))
    assert [e.data for e in store.read_stream("item-1")] == [
        PriceChanged(500),
        QuantityChanged(3, "unknown"),
    ]


def test_upcasting_with_the_json_codec() -> None:
    old = EventRegistry(JsonCodec())

    @event("shop.Paid", registry=old)
    @dataclass(frozen=True)
    class PaidV1:
        amount: int
        ref: bytes

    new = EventRegistry(JsonCodec())

    @event("shop.Paid", version=2, registry=new)
    @dataclass(frozen=True)
    class Paid:
        cents: int
        ref: bytes

    @upcaster("shop.Paid", from_version=1, registry=new)
    def cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"cents": data["amount"] * 100, "ref": data["ref"]}

    store = MemoryStore(registry=new)
    written_by(old, store, "pay-1", PaidV1(5, b"\x00\xff"))
    assert store.read_stream("pay-1")[0].data == Paid(500, b"\x00\xff")


def test_a_decode_error_names_the_event_and_says_what_to_do() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        qty: int  # renamed from count, but no upcaster registered

    store = MemoryStore(registry=new)
    store.append([NewEvent("other", *new.encode(ItemAdded("x", 1)))])
    written_by(old, store, "cart-1", OldItem("a", 2))
    rec = store.read_stream("cart-1")[0]
    with pytest.raises(EventDecodeError) as info:
        _ = rec.data
    err = info.value
    assert isinstance(err, SerializationError)
    assert (err.stream_id, err.version, err.position) == ("cart-1", 1, 2)
    assert (err.stored_type, err.stored_version, err.event_type) == (
        "shop.ItemAdded",
        1,
        "shop.ItemAdded",
    )
    text = str(err)
    assert text.startswith("cannot decode event at stream 'cart-1', version 1, position 2")
    assert "stored type 'shop.ItemAdded' version 1" in text
    assert "qty" in text  # the codec's reason
    assert "@upcaster('shop.ItemAdded', from_version=1)" in text
    assert "serialize" not in text
    assert isinstance(err.__cause__, msgspec.ValidationError)


def test_unknown_and_newer_stored_versions_are_explained() -> None:
    reg = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=reg)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str

    store = MemoryStore(registry=reg)
    store.append([NewEvent("s", "shop.ItemAdded@v3", b"\x80"), NewEvent("s", "shop.Gone", b"")])
    newer, gone = store.read_stream("s")
    assert (newer.event_type, newer.event_version) == ("shop.ItemAdded", 3)
    with pytest.raises(EventDecodeError, match="newer than the registered version 2"):
        _ = newer.data
    with pytest.raises(EventDecodeError, match="no event type registered") as info:
        _ = gone.data
    assert (info.value.stream_id, info.value.version) == ("s", 2)


def test_a_retired_type_without_a_retype_is_a_decode_error() -> None:
    reg = EventRegistry()

    @upcaster("shop.Retired", from_version=1, registry=reg)
    def still_retired(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(EventDecodeError, match=r"no class is registered under 'shop\.Retired'"):
        reg.decode("shop.Retired", msgspec.msgpack.encode({"a": 1}))


def test_an_upcaster_returning_something_else_is_a_decode_error() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str

    @upcaster("shop.ItemAdded", from_version=1, registry=new)
    def wrong(data: dict[str, Any]) -> Any:
        return [data]

    payload = old.encode(OldItem("a", 1))[1]
    with pytest.raises(EventDecodeError, match="returned list, not a dict or Retype"):
        new.decode("shop.ItemAdded", payload)


def test_a_second_upcaster_for_the_same_version_is_refused() -> None:
    def first(data: dict[str, Any]) -> dict[str, Any]:
        return data

    def second(data: dict[str, Any]) -> dict[str, Any]:
        return data

    reg = EventRegistry()
    reg.register_upcaster("a.B", 1, first)
    reg.register_upcaster("a.B", 1, first)  # the same function again (a module reload)
    with pytest.raises(ValueError, match="already registered"):
        reg.register_upcaster("a.B", 1, second)
    with pytest.raises(ValueError, match="from_version"):
        reg.register_upcaster("a.B", 0, first)


def test_an_upcaster_registered_after_the_class_takes_effect_in_the_same_dict() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()
    decoders = new.decoders

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str
        qty: int

    new.register_upcaster("shop.ItemAdded", 1, lambda d: {"sku": d["sku"], "qty": d["count"]})
    assert new.decoders is decoders  # the fold loop and running commands hold this dict
    payload = old.encode(OldItem("a", 4))[1]
    assert decoders["shop.ItemAdded"](payload) == ItemAdded("a", 4)


def test_an_upcaster_that_raises_is_named_in_the_decode_error() -> None:
    old, OldItem = old_item_added()
    new = EventRegistry()

    @event("shop.ItemAdded", version=2, registry=new)
    @dataclass(frozen=True)
    class ItemAdded:
        sku: str

    @upcaster("shop.ItemAdded", from_version=1, registry=new)
    def needs_a_field(data: dict[str, Any]) -> dict[str, Any]:
        return {"sku": data["missing"]}

    store = MemoryStore(registry=new)
    written_by(old, store, "cart-1", OldItem("a", 1))
    with pytest.raises(EventDecodeError, match="needs_a_field") as info:
        _ = store.read_stream("cart-1")[0].data
    assert isinstance(info.value.__cause__, KeyError)
    assert (info.value.stream_id, info.value.position) == ("cart-1", 1)
