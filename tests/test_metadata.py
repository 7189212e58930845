"""Event metadata: validation, immutability, encoding, and causation chains."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventcore import (
    InvalidMetadata,
    LimitExceeded,
    Metadata,
    RecordedEvent,
    ValidationError,
    default_registry,
)

from .bank_domain import Deposited


def recorded(event_id: uuid.UUID, metadata: Metadata | None) -> RecordedEvent[Any]:
    name, payload = default_registry.encode(Deposited(1))
    return RecordedEvent(1, event_id, "acc-1", 1, name, payload, 0, metadata, default_registry)


def test_defaults_are_empty() -> None:
    meta = Metadata()
    assert meta.causation_id is None
    assert meta.correlation_id is None
    assert meta.user_id is None
    assert dict(meta.custom) == {}
    assert not meta
    assert meta == Metadata()


def test_fields_are_kept() -> None:
    cause, corr = uuid.uuid4(), uuid.uuid4()
    meta = Metadata(causation_id=cause, correlation_id=corr, user_id="u-1", custom={"a": [1, 2]})
    assert meta.causation_id == cause
    assert meta.correlation_id == corr
    assert meta.user_id == "u-1"
    assert meta.custom == {"a": [1, 2]}
    assert meta
    assert "u-1" in repr(meta)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"causation_id": "not-a-uuid"}, "causation_id"),
        ({"correlation_id": 42}, "correlation_id"),
        ({"user_id": 7}, "user_id"),
        ({"custom": {"x": object()}}, "custom"),
        ({"custom": {"nested": [{"k": object()}]}}, "custom"),
    ],
)
def test_invalid_fields_raise_validation_error(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Metadata(**kwargs)
    assert info.value.field == field


def test_custom_keys_must_be_strings() -> None:
    # Documented: custom has str keys; a non-str key must not be silently turned into one.
    with pytest.raises(ValidationError) as info:
        Metadata(custom={1: "a"})  # type: ignore[dict-item]
    assert info.value.field == "custom"


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Metadata(uuid.uuid4())  # type: ignore[misc]


def test_custom_is_normalized_to_json_values() -> None:
    meta = Metadata(custom={"t": ("a", "b"), "n": 1.5, "nested": {"k": None}})
    assert meta.custom == {"t": ["a", "b"], "n": 1.5, "nested": {"k": None}}


def test_custom_is_copied_from_the_callers_mapping() -> None:
    source: dict[str, Any] = {"k": [1]}
    meta = Metadata(custom=source)
    source["k"].append(2)
    source["other"] = 1
    assert meta.custom == {"k": [1]}


def test_metadata_is_immutable() -> None:
    meta = Metadata(user_id="u")
    with pytest.raises(AttributeError):
        meta.user_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        meta.custom = {}  # type: ignore[misc]


def test_custom_mapping_cannot_be_mutated_through_the_metadata() -> None:
    # Metadata is documented as immutable; its custom mapping must not be a live dict.
    meta = Metadata(custom={"k": 1})
    other = Metadata(custom={"k": 1})
    with pytest.raises(TypeError):
        meta.custom["k"] = 2  # type: ignore[index]
    assert meta == other


def test_equality_and_hash() -> None:
    cause = uuid.uuid4()
    a = Metadata(causation_id=cause, user_id="u", custom={"x": 1})
    b = Metadata(causation_id=cause, user_id="u", custom={"x": 1})
    c = Metadata(causation_id=cause, user_id="u", custom={"x": 2})
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != Metadata(causation_id=cause)
    assert (a == "something") is False


@pytest.mark.parametrize(
    "meta",
    [
        Metadata(),
        Metadata(user_id="only-user"),
        Metadata(causation_id=uuid.uuid4()),
        Metadata(
            causation_id=uuid.uuid4(),
            correlation_id=uuid.uuid4(),
            user_id="ü-ser",
            custom={"ip": "10.0.0.1", "tags": ["a"], "n": 3, "f": 0.25, "b": True},
        ),
    ],
)
def test_bytes_round_trip(meta: Metadata) -> None:
    data = meta.to_bytes()
    assert isinstance(data, bytes)
    back = Metadata.from_bytes(data)
    assert back == meta
    assert back.causation_id == meta.causation_id
    assert back.custom == meta.custom


def test_from_json_array_reads_the_postgres_column_form() -> None:
    cause, corr = uuid.uuid4(), uuid.uuid4()
    text = f'["{cause}", "{corr}", "ann", {{"ip": "10.0.0.1", "n": [1, 2]}}]'
    meta = Metadata.from_json_array(text)
    assert meta == Metadata(
        causation_id=cause,
        correlation_id=corr,
        user_id="ann",
        custom={"ip": "10.0.0.1", "n": [1, 2]},
    )
    assert Metadata.from_json_array("[null, null, null, null]") == Metadata()
    with pytest.raises(ValueError):
        Metadata.from_json_array('["not-a-uuid", null, null, null]')


def test_from_nothing_is_empty() -> None:
    assert Metadata.from_bytes(None) == Metadata()
    assert Metadata.from_bytes(b"") == Metadata()


def test_caused_by_starts_a_correlation_chain() -> None:
    root_id = uuid.uuid4()
    root = recorded(root_id, None)
    child = Metadata.caused_by(root)
    assert child.causation_id == root_id
    assert child.correlation_id == root_id
    assert child.user_id is None


def test_caused_by_carries_correlation_and_user() -> None:
    corr = uuid.uuid4()
    parent_meta = Metadata(causation_id=uuid.uuid4(), correlation_id=corr, user_id="ann")
    parent_id = uuid.uuid4()
    parent = recorded(parent_id, parent_meta.to_bytes())
    child = Metadata.caused_by(parent)
    assert child.causation_id == parent_id
    assert child.correlation_id == corr
    assert child.user_id == "ann"
    assert dict(child.custom) == {}

    override = Metadata.caused_by(parent, user_id="bob", custom={"why": "saga"})
    assert override.user_id == "bob"
    assert override.custom == {"why": "saga"}
    assert override.correlation_id == corr

    grandchild = Metadata.caused_by(recorded(uuid.uuid4(), child))
    assert grandchild.correlation_id == corr


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"user_id": "a\x00b"}, InvalidMetadata, "user_id: must not contain control characters"),
        ({"user_id": "\ud800"}, InvalidMetadata, "surrogate code points (U+D800 at index 0)"),
        ({"user_id": "u" * 256}, InvalidMetadata, "at most 255 characters (got 256)"),
        ({"custom": {"a": {"b": ["x\x00"]}}}, InvalidMetadata, "at custom['a']['b'][0]"),
        ({"custom": {"a": "\udfff"}}, InvalidMetadata, "surrogate code points"),
        ({"custom": {"inf": float("inf")}}, InvalidMetadata, "floats must be finite"),
        ({"custom": {"a": b"bytes"}}, InvalidMetadata, "not bytes"),
        ({"custom": "not a mapping"}, InvalidMetadata, "must be a mapping"),
        ({"custom": {"x": "y" * 70_000}}, LimitExceeded, "over the limit of 65536 bytes"),
    ],
)
def test_metadata_no_store_can_keep_is_refused_when_built(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Regression: NUL was a StoreError on PostgreSQL and accepted in memory; surrogates
    leaked UnicodeEncodeError; size was unbounded."""
    with pytest.raises(error) as info:
        Metadata(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_deep_or_cyclic_custom_is_invalid_metadata_not_recursion_error() -> None:
    """Regression: deep or self-referencing custom values raised RecursionError."""
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"d": deep}
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad in (deep, {"c": cyclic}):
        with pytest.raises(InvalidMetadata, match="nested more than 32 levels"):
            Metadata(custom=bad)
    ok: dict[str, Any] = {}
    for _ in range(30):
        ok = {"d": ok}
    assert Metadata(custom={"top": ok}).custom == {"top": ok}  # 32 levels: allowed
    with pytest.raises(InvalidMetadata):
        Metadata(custom={"top": {"d": ok}})  # 33 levels


def test_custom_size_is_checked_before_a_huge_value_is_scanned() -> None:
    with pytest.raises(LimitExceeded) as info:
        Metadata(custom={"big": "x" * 40_000_000})
    assert info.value.value >= 40_000_000
    assert len(str(info.value)) < 300
    just = "x" * (64 * 1024 - len('{"k":""}'))
    assert len(Metadata(custom={"k": just}).custom["k"]) == len(just)


def test_an_empty_user_id_is_metadata() -> None:
    """Regression: ``user_id=""`` made the metadata falsy, and the in-memory store then
    stored no metadata at all (PostgreSQL kept the empty string)."""
    meta = Metadata(user_id="")
    assert meta
    assert Metadata.from_bytes(meta.to_bytes()).user_id == ""


def test_whole_floats_are_ints_as_in_postgresql() -> None:
    meta = Metadata(custom={"big": 4.5e16, "small": 1.5, "nested": [[-1e300]]})
    assert meta.custom["big"] == 45_000_000_000_000_000 and type(meta.custom["big"]) is int
    assert type(meta.custom["small"]) is float
    assert meta.custom["nested"][0][0] == -1e300 and type(meta.custom["nested"][0][0]) is int
