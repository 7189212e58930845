"""Event metadata: validation, immutability, encoding, and causation chains."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventcore import Metadata, RecordedEvent, ValidationError, default_registry

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
