"""Stream ids: trimmed, non-empty, at most 255 code points, no control characters."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventcore import EventCoreError, InvalidStreamId, StreamId, ValidationError
from eventcore._core import stream_id, validate_stream_id


def reference(value: str) -> str | None:
    """The documented rules in plain Python: the valid stream id, or None."""
    trimmed = value.strip()
    if not trimmed or len(trimmed) > 255:
        return None
    if any(unicodedata.category(c) == "Cc" for c in trimmed):
        return None
    return trimmed


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("account-1", "account-1"),
        ("  account-1 ", "account-1"),
        ("\t\naccount-1\r\n", "account-1"),
        ("\u00a0padded\u3000", "padded"),
        ("with inner  spaces", "with inner  spaces"),
        ("ünïcødé/ストリーム", "ünïcødé/ストリーム"),
        ("a" * 255, "a" * 255),
        ("é" * 255, "é" * 255),
        ("  " + "x" * 255 + "  ", "x" * 255),
        ("emoji-😀", "emoji-😀"),
    ],
)
def test_valid_ids_are_trimmed(raw: str, clean: str) -> None:
    sid = StreamId(raw)
    assert sid == clean
    assert isinstance(sid, str)
    assert type(sid) is StreamId
    assert validate_stream_id(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "\t\n \u3000",
        "a" * 256,
        "é" * 256,
        "tab\there",
        "new\nline",
        "nul\x00",
        "del\x7f",
        "c1\x85inside",
        "c1-\x9f",
        "sep\x1finside",
    ],
)
def test_invalid_ids_raise_invalid_stream_id_naming_the_value(raw: str) -> None:
    with pytest.raises(InvalidStreamId) as info:
        StreamId(raw)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, ValidationError)
    assert isinstance(err, EventCoreError)
    assert err.value == raw
    assert err.reason
    assert err.field == "stream_id"
    assert repr(raw) in str(err)


def test_reasons_say_what_is_wrong() -> None:
    with pytest.raises(InvalidStreamId, match="empty"):
        StreamId("   ")
    with pytest.raises(InvalidStreamId, match="255"):
        StreamId("x" * 300)
    with pytest.raises(InvalidStreamId, match="control"):
        StreamId("a\x01b")


def test_streamid_of_a_streamid_is_the_same_object() -> None:
    sid = StreamId("abc")
    assert StreamId(sid) is sid
    assert repr(sid) == "StreamId('abc')"
    assert hash(sid) == hash("abc")
    assert {sid: 1}["abc"] == 1


def test_non_strings_are_rejected() -> None:
    for bad in (None, 42, b"bytes", ["a"]):
        with pytest.raises((TypeError, ValueError)):
            StreamId(bad)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_rules_match_the_python_reference(value: str) -> None:
    expected = reference(value)
    if expected is None:
        with pytest.raises(InvalidStreamId):
            validate_stream_id(value)
    else:
        assert validate_stream_id(value) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2000\u2028\u3000\ufeffa"
        ),
        max_size=12,
    )
)
def test_whitespace_edges_match_python_strip(value: str) -> None:
    expected = reference(value)
    if expected is None:
        with pytest.raises(InvalidStreamId):
            validate_stream_id(value)
    else:
        assert validate_stream_id(value) == expected


class _Text(str):
    """A str subclass, as an enum or a framework's string type would be."""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_streamid_builds_an_exact_streamid_by_the_same_rules(value: str) -> None:
    expected = reference(value)
    for given_value in (value, _Text(value)):
        if expected is None:
            with pytest.raises(InvalidStreamId) as info:
                StreamId(given_value)
            assert info.value.field == "stream_id"
            with pytest.raises(InvalidStreamId) as info:
                stream_id(given_value, "account")
            assert info.value.field == "account"
        else:
            for made in (StreamId(given_value), stream_id(given_value, "account")):
                assert type(made) is StreamId
                assert made == expected


def test_streamid_refuses_surrogates_and_non_strings_by_field() -> None:
    with pytest.raises(InvalidStreamId, match="surrogate") as info:
        stream_id("a\ud800", "account")
    assert info.value.field == "account"
    with pytest.raises(TypeError, match="must be str, not int"):
        stream_id(42, "account")  # type: ignore[arg-type]
    sid = StreamId("abc")
    assert stream_id(sid, "account") is sid


def test_subclasses_of_streamid_are_still_validated() -> None:
    class Tenant(StreamId):
        __slots__ = ()

    made = Tenant("  t-1 ")
    assert type(made) is Tenant
    assert made == "t-1"
    with pytest.raises(InvalidStreamId):
        Tenant("a\x00")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=12), st.booleans())
def test_the_memory_store_takes_a_streamid_as_the_str_it_was_built_from(
    value: str, expect_new: bool
) -> None:
    """The in-memory store does not check a StreamId (exactly that type) again: it was
    validated and trimmed when built. Appending and folding under it does what the same
    id given as a plain str does, and a plain str is still checked and trimmed."""
    from eventcore import MemoryStore

    clean = reference(value)
    plain, typed = MemoryStore(), MemoryStore()
    expected = [(value, 0)] if expect_new else []
    if clean is None:
        with pytest.raises(InvalidStreamId):
            plain._core.append([(value, 0)], [(value, "T", b"\xc0", None)], None)
        with pytest.raises(InvalidStreamId):
            plain.read_fold([value])
        assert plain._core.head() == 0
        return
    sid = StreamId(value)
    expected_sid = [(sid, 0)] if expect_new else []
    a = plain._core.append(expected, [(value, "T", b"\xc0", 1)], None)
    b = typed._core.append(expected_sid, [(sid, "T", b"\xc0", 1)], None)
    assert a == b
    assert [s for s, _ in b[1]] == [clean]
    assert all(stream is sid for stream, _ in b[1])  # the caller's own StreamId comes back
    rows_a, versions_a = plain.read_fold([value])
    rows_b, versions_b = typed.read_fold([sid])
    assert versions_a == versions_b == [1]
    assert [r[0] for r in rows_a] == [r[0] for r in rows_b] == [clean]
