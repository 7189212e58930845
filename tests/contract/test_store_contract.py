"""The event store contract: every store (in-memory, PostgreSQL) must pass all of it."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventcore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    BusinessRuleViolation,
    ConcurrencyConflict,
    DuplicateEventId,
    InvalidEventType,
    InvalidMetadata,
    InvalidStreamId,
    LimitExceeded,
    Metadata,
    NewEvent,
    SerializationError,
    StreamConflict,
    ValidationError,
    default_registry,
    execute,
)
from eventcore._core import MAX_APPEND_EVENTS

from ..bank_domain import AccountOpened, Deposited, EmitTo, Noted, Transfer, Withdrawn
from ..folds import fold_streams

encode = default_registry.encode


def new(stream_id: str, event: object, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(stream_id, *encode(event), event_id)


async def test_empty_store(store: Any) -> None:
    assert await store.head() == 0
    assert await store.stream_version("nobody") == 0
    assert await store.read_stream("nobody") == []
    assert await store.read_all() == []


async def test_append_and_read_back_the_envelope(store: Any) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    result = await store.append([new("acc-1", AccountOpened("ann"))], expected={"acc-1": NO_STREAM})
    [written] = result.events
    assert written.stream_id == "acc-1" and written.version == 1
    assert result.stream_versions == {"acc-1": 1}
    [recorded] = await store.read_stream("acc-1")
    assert recorded.event_id == written.event_id
    assert recorded.event_id.version == 7
    assert recorded.position == written.position == await store.head()
    assert recorded.stream_id == "acc-1"
    assert recorded.version == 1
    assert recorded.event_type == "demo.bank.AccountOpened"
    assert recorded.data == AccountOpened("ann")
    assert recorded.recorded_at.tzinfo is not None
    assert before <= recorded.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert recorded.metadata == Metadata()


async def test_multi_stream_append_is_one_ordered_write(store: Any) -> None:
    await store.append([new("a", Deposited(1))])
    result = await store.append(
        [new("a", Withdrawn(5)), new("b", Deposited(5)), new("a", Deposited(2))],
        expected={"a": 1, "b": NO_STREAM},
    )
    assert result.stream_versions == {"a": 3, "b": 1}
    assert [(w.stream_id, w.version) for w in result.events] == [("a", 2), ("b", 1), ("a", 3)]
    positions = [w.position for w in result.events]
    assert positions == sorted(positions) and len(set(positions)) == 3
    log = await store.read_all()
    assert [(e.stream_id, e.version) for e in log] == [("a", 1), ("a", 2), ("b", 1), ("a", 3)]
    assert [e.position for e in log] == sorted(e.position for e in log)


@pytest.mark.parametrize(
    ("existing", "expected", "ok"),
    [
        (0, NO_STREAM, True),
        (1, NO_STREAM, False),
        (0, STREAM_EXISTS, False),
        (2, STREAM_EXISTS, True),
        (0, ANY, True),
        (3, ANY, True),
        (2, 2, True),
        (2, 1, False),
        (2, 3, False),
    ],
)
async def test_expected_version_variants(
    store: Any, existing: int, expected: int, ok: bool
) -> None:
    for _ in range(existing):
        await store.append([new("s", Deposited(1))])
    head = await store.head()
    if ok:
        result = await store.append([new("s", Deposited(9))], expected={"s": expected})
        assert result.stream_versions == {"s": existing + 1}
    else:
        with pytest.raises(ConcurrencyConflict) as info:
            await store.append([new("s", Deposited(9))], expected={"s": expected})
        assert info.value.conflicts == (StreamConflict("s", expected, existing),)
        assert await store.head() == head
        assert await store.stream_version("s") == existing


async def test_conflict_reports_every_stream_and_writes_nothing(store: Any) -> None:
    await store.append([new("a", Deposited(1)), new("b", Deposited(1))])
    head = await store.head()
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append(
            [new("a", Deposited(1)), new("b", Deposited(1)), new("c", Deposited(1))],
            expected=[("a", 0), ("b", 5), ("c", NO_STREAM)],
        )
    assert info.value.conflicts == (StreamConflict("a", 0, 1), StreamConflict("b", 5, 1))
    assert await store.head() == head
    assert await store.stream_version("c") == 0
    assert len(await store.read_all()) == 2


async def test_read_only_streams_are_checked(store: Any) -> None:
    await store.append([new("limits", Deposited(100))])
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append([new("acc", Deposited(1))], expected={"limits": 0, "acc": NO_STREAM})
    assert info.value.conflicts == (StreamConflict("limits", 0, 1),)
    result = await store.append([new("acc", Deposited(1))], expected={"limits": 1, "acc": 0})
    assert result.stream_versions == {"limits": 1, "acc": 1}


async def test_append_without_events_only_checks(store: Any) -> None:
    await store.append([new("a", Deposited(1))])
    head = await store.head()
    result = await store.append([], expected={"a": 1})
    assert list(result.events) == [] and await store.head() == head
    with pytest.raises(ConcurrencyConflict):
        await store.append([], expected={"a": 0})


async def test_idempotent_append_returns_the_original_result(store: Any) -> None:
    batch = [
        new("a", Deposited(1), uuid.UUID(int=(7 << 76) | 1)),
        new("b", Deposited(2), uuid.UUID(int=(7 << 76) | 2)),
    ]
    first = await store.append(batch, expected={"a": NO_STREAM, "b": NO_STREAM})
    await store.append([new("a", Deposited(3))])
    again = await store.append(batch, expected={"a": NO_STREAM, "b": NO_STREAM})
    assert [w.position for w in again.events] == [w.position for w in first.events]
    assert [w.event_id for w in again.events] == [w.event_id for w in first.events]
    assert await store.stream_version("a") == 2
    assert len(await store.read_all()) == 3


async def test_a_replay_is_a_run_of_the_log_even_across_appends(store: Any) -> None:
    # A replay is the same events stored consecutively, in this order: one append or a
    # run of several. A gap (another event between) or another order is not a replay.
    a, b, c, d = (new("s", Deposited(i), uuid.UUID(int=(7 << 76) | 50 + i)) for i in range(4))
    first = await store.append([a])
    second = await store.append([b])
    await store.append([new("t", Deposited(9))])
    await store.append([c, d])
    head = await store.head()
    again = await store.append([a, b])
    assert [w.position for w in again.events] == [
        first.events[0].position,
        second.events[0].position,
    ]
    assert dict(again.stream_versions) == {"s": 2}
    with pytest.raises(DuplicateEventId) as gap:
        await store.append([b, c])  # the event of "t" lies between them
    assert gap.value.event_id == c.event_id
    with pytest.raises(DuplicateEventId) as order:
        await store.append([b, a])
    assert order.value.event_id == a.event_id
    assert await store.head() == head


async def test_event_id_reused_for_other_content_is_an_error(store: Any) -> None:
    event_id = uuid.UUID(int=(7 << 76) | 99)
    await store.append([new("a", Deposited(1), event_id)])
    head = await store.head()
    with pytest.raises(DuplicateEventId):
        await store.append([new("a", Deposited(2), event_id)])
    with pytest.raises(DuplicateEventId):
        await store.append([new("a", Deposited(1), event_id), new("a", Deposited(5))])
    with pytest.raises(DuplicateEventId):
        other = uuid.UUID(int=(7 << 76) | 100)
        await store.append([new("b", Deposited(1), other), new("b", Deposited(1), other)])
    assert await store.head() == head


async def test_stream_reads_with_versions_limits_and_backwards(store: Any) -> None:
    await store.append([new("s", Deposited(i)) for i in range(1, 6)])
    await store.append([new("other", Deposited(100))])
    events = await store.read_stream("s", after_version=2)
    assert [e.version for e in events] == [3, 4, 5]
    assert [e.data.amount for e in events] == [3, 4, 5]
    assert [e.version for e in await store.read_stream("s", limit=2)] == [1, 2]
    assert [e.version for e in await store.read_stream_backwards("s")] == [5, 4, 3, 2, 1]
    back = await store.read_stream_backwards("s", before_version=4, limit=2)
    assert [e.version for e in back] == [3, 2]
    both = await store.read_streams(["other", "s"])
    assert [e.stream_id for e in both] == ["s"] * 5 + ["other"]


async def test_global_log_paging_and_filters(store: Any) -> None:
    for i in range(10):
        stream_id = f"order-{i % 3}" if i % 2 else f"cart-{i % 3}"
        event = Deposited(i) if i % 3 else Withdrawn(i)
        await store.append([new(stream_id, event)])
    everything = await store.read_all()
    assert len(everything) == 10
    cursor, pages = 0, []
    while page := await store.read_all(after_position=cursor, limit=3):
        assert all(e.position > cursor for e in page)
        pages.extend(page)
        cursor = page[-1].position
    assert pages == everything
    deposits = await store.read_all(event_types=["demo.bank.Deposited"])
    assert [e.data.amount for e in deposits] == [i for i in range(10) if i % 3]
    orders = await store.read_all(stream_prefix="order-")
    assert {e.stream_id for e in orders} == {"order-0", "order-1", "order-2"}
    assert len(orders) == 5
    both = await store.read_all(stream_prefix="cart-", event_types=["demo.bank.Withdrawn"], limit=1)
    assert [(e.stream_id, e.data) for e in both] == [("cart-0", Withdrawn(0))]


async def test_invalid_stream_ids_are_rejected_and_nothing_is_written(store: Any) -> None:
    for bad in ["", "   ", "x" * 256, "tab\there", "nul\x00"]:
        with pytest.raises(InvalidStreamId) as info:
            await store.append([new("ok", Deposited(1)), NewEvent(bad, *encode(Deposited(1)))])
        assert isinstance(info.value, ValueError)
    assert await store.head() == 0


async def test_stream_ids_are_trimmed(store: Any) -> None:
    await store.append([new("  padded ", Deposited(1))])
    assert await store.stream_version("padded") == 1
    [e] = await store.read_all()
    assert e.stream_id == "padded"


async def test_metadata_round_trips(store: Any) -> None:
    cause, correlation = uuid.uuid4(), uuid.uuid4()
    meta = Metadata(
        causation_id=cause,
        correlation_id=correlation,
        user_id="u-1",
        custom={"ip": "10.0.0.1", "tags": ["a", "b"], "n": 3},
    )
    await store.append([new("a", Deposited(1)), new("b", Deposited(2))], metadata=meta)
    for e in await store.read_all():
        assert e.metadata == meta
        assert e.metadata.custom["tags"] == ["a", "b"]
    [first, _] = await store.read_all()
    child = Metadata.caused_by(first)
    assert child.causation_id == first.event_id
    assert child.correlation_id == correlation
    assert child.user_id == "u-1"


async def test_unknown_event_type_fails_on_decode_not_on_read(store: Any) -> None:
    await store.append([NewEvent("a", "contract.NeverRegistered", b"\x80")])
    [e] = await store.read_stream("a")
    assert e.event_type == "contract.NeverRegistered"
    with pytest.raises(SerializationError, match="NeverRegistered"):
        _ = e.data


async def test_read_fold_rows_fold_to_the_state_with_the_versions(store: Any) -> None:
    await store.append([new("a", Deposited(5)), new("b", Deposited(7)), new("a", Withdrawn(2))])
    seen: list[tuple[str, object]] = []

    def apply(state: int, event: Any, stream_id: str) -> int:
        seen.append((stream_id, event))
        return state + (event.amount if isinstance(event, Deposited) else -event.amount)

    state, versions = await fold_streams(
        store, ["a", "b", "none"], 0, apply, default_registry.decoders
    )
    assert state == 10
    assert versions == [2, 1, 0]
    assert seen == [("a", Deposited(5)), ("b", Deposited(7)), ("a", Withdrawn(2))]


async def test_read_fold_returns_rows_with_versions_and_positions(store: Any) -> None:
    result = await store.append(
        [new("a", Deposited(5)), new("b", Deposited(7)), new("a", Withdrawn(2))]
    )
    p = list(result.positions)
    rows, versions = await store.read_fold(["b", "a"])
    assert [tuple(r) for r in rows] == [
        ("a", *default_registry.encode(Deposited(5)), 1, p[0]),
        ("b", *default_registry.encode(Deposited(7)), 1, p[1]),
        ("a", *default_registry.encode(Withdrawn(2)), 2, p[2]),
    ]
    assert versions == [1, 2]


async def test_read_tail_returns_the_rows_after_the_versions(store: Any) -> None:
    await store.append([new("a", Deposited(5)), new("b", Deposited(7))])
    result = await store.append([new("a", Withdrawn(2)), new("b", Deposited(1))])
    p = list(result.positions)
    read = await store.read_tail(["a", "b"], [1, 1], 0)
    assert read is not None
    rows, versions = read
    assert [tuple(r) for r in rows] == [
        ("a", *default_registry.encode(Withdrawn(2)), 2, p[0]),
        ("b", *default_registry.encode(Deposited(1)), 2, p[1]),
    ]
    assert versions == [2, 2]
    read = await store.read_tail(["a", "b"], [2, 2], 0)
    assert read is not None and list(read[0]) == [] and read[1] == [2, 2]
    # a stream of an earlier discovery round moved: the tail cannot extend the state
    assert await store.read_tail(["a", "b"], [1, 2], 1) is None


async def test_fold_of_unknown_type_is_a_serialization_error(store: Any) -> None:
    await store.append([NewEvent("a", "contract.Unknown", b"\x80")])
    with pytest.raises(SerializationError, match=r"contract\.Unknown"):
        await fold_streams(store, ["a"], 0, lambda s, e, i: s, default_registry.decoders)


async def test_executor_runs_a_transfer_atomically(store: Any) -> None:
    await store.append(
        [
            new("from", AccountOpened("f")),
            new("from", Deposited(100)),
            new("to", AccountOpened("t")),
        ]
    )
    result = await execute(store, Transfer(source="from", target="to", amount=40))
    assert result.attempts == 1
    assert result.stream_versions == {"from": 3, "to": 2}
    assert [(w.stream_id, w.version) for w in result.events] == [("from", 3), ("to", 2)]
    head = await store.head()
    with pytest.raises(BusinessRuleViolation):
        await execute(store, Transfer(source="from", target="to", amount=61))
    assert await store.head() == head
    log = await store.read_all()
    assert [e.data for e in log[-2:]] == [Withdrawn(40), Deposited(40)]


async def test_executor_retries_a_conflict_with_fresh_state(store: Any) -> None:
    await store.append(
        [
            new("from", AccountOpened("f")),
            new("from", Deposited(100)),
            new("to", AccountOpened("t")),
        ]
    )
    command = Transfer(source="from", target="to", amount=80)
    real_fold, real_tail = store.read_fold, store.read_tail
    calls = 0

    async def fold_then_race(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real_fold(*args)
        if calls == 1:  # a competing writer lands between our read and our append
            await store.append([new("from", Withdrawn(30))])
        return result

    async def tail(*args: Any) -> Any:  # the retry may read only what is new (state cache)
        nonlocal calls
        calls += 1
        return await real_tail(*args)

    store.read_fold = fold_then_race
    store.read_tail = tail
    try:
        with pytest.raises(BusinessRuleViolation):
            await execute(store, command)
    finally:
        del store.read_fold
        del store.read_tail
    assert calls == 2
    assert await store.stream_version("to") == 1  # only its opening: the transfer wrote nothing


# -- bad input: a typed error, the same on every store, before any I/O, nothing written ------

_MIB = 1024 * 1024
_FULL_PAYLOAD = bytes(16 * _MIB)  # exactly the per-event cap: allowed on its own


def _cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


def _deep(levels: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for _ in range(levels - 1):
        d = {"d": d}
    return d


def _typed(event_type: str) -> list[NewEvent]:
    return [new("acc-1", Deposited(1)), NewEvent("acc-1", event_type, b"\x01")]


def _meta(**fields: Any) -> Any:
    """Append one good event with ``Metadata(**fields)``: refused when Metadata is built."""
    return lambda store: store.append(_typed("demo.Ok"), metadata=Metadata(**fields))


BAD_APPENDS: dict[str, tuple[Any, type[Exception], str]] = {
    # event type names: the stream-id rules, but never trimmed
    "type-empty": (lambda s: s.append(_typed("")), InvalidEventType, "must not be empty"),
    "type-leading-space": (
        lambda s: s.append(_typed(" demo.T")),
        InvalidEventType,
        "must not start or end with whitespace",
    ),
    "type-trailing-newline": (
        lambda s: s.append(_typed("demo.T\n")),
        InvalidEventType,
        "control characters (U+000A at index 6)",
    ),
    "type-nul": (
        lambda s: s.append(_typed("demo.\x00T")),
        InvalidEventType,
        "control characters (U+0000 at index 5)",
    ),
    "type-too-long": (
        lambda s: s.append(_typed("T" * 1_000_000)),
        InvalidEventType,
        "at most 255 characters (got 1000000)",
    ),
    "type-surrogate": (
        lambda s: s.append(_typed("demo.\ud800")),
        InvalidEventType,
        "surrogate",
    ),
    # sizes
    "payload-over-16MiB": (
        lambda s: s.append(
            [new("acc-1", Deposited(1)), NewEvent("acc-2", "demo.Big", bytes(16 * _MIB + 1))]
        ),
        LimitExceeded,
        "event 1 (demo.Big) has a payload of 16777217 bytes, over the limit of 16777216",
    ),
    "append-over-64MiB": (
        lambda s: s.append([NewEvent(f"big-{i}", "demo.Big", _FULL_PAYLOAD) for i in range(5)]),
        LimitExceeded,
        "83886080 bytes of payloads and metadata in one append, over the limit of 67108864",
    ),
    "append-over-64MiB-with-metadata": (
        lambda s: s.append(
            [NewEvent(f"big-{i}", "demo.Big", _FULL_PAYLOAD) for i in range(4)],
            metadata=Metadata(user_id="u"),
        ),
        LimitExceeded,
        "over the limit of 67108864 bytes (64 MiB)",
    ),
    "too-many-events": (
        lambda s: s.append([NewEvent("many", "demo.T", b"")] * (MAX_APPEND_EVENTS + 1)),
        LimitExceeded,
        f"{MAX_APPEND_EVENTS + 1} events in one append, over the limit of {MAX_APPEND_EVENTS}",
    ),
    # metadata
    "metadata-not-metadata": (
        lambda s: s.append(_typed("demo.Ok"), metadata={"user_id": "u"}),
        InvalidMetadata,
        "must be an eventcore.Metadata or None",
    ),
    "user-id-nul": (_meta(user_id="ann\x00"), InvalidMetadata, "user_id: must not contain"),
    "user-id-control": (_meta(user_id="ann\n"), InvalidMetadata, "control characters"),
    "user-id-surrogate": (_meta(user_id="\udc80"), InvalidMetadata, "surrogate"),
    "user-id-too-long": (_meta(user_id="u" * 256), InvalidMetadata, "at most 255"),
    "custom-nul-value": (
        _meta(custom={"a": ["ok", "b\x00"]}),
        InvalidMetadata,
        "U+0000 at index 1) at custom['a'][1]",
    ),
    "custom-nul-key": (_meta(custom={"k\x00": 1}), InvalidMetadata, "keys must not contain"),
    "custom-surrogate": (_meta(custom={"a": "\ud800"}), InvalidMetadata, "surrogate"),
    "custom-cyclic": (_meta(custom=_cyclic()), InvalidMetadata, "contains itself"),
    "custom-too-deep": (_meta(custom=_deep(33)), InvalidMetadata, "more than 32 levels"),
    "custom-nan": (_meta(custom={"x": float("nan")}), InvalidMetadata, "finite"),
    "custom-not-json": (_meta(custom={"x": {1, 2}}), InvalidMetadata, "not set"),
    "custom-int-key": (_meta(custom={1: "x"}), InvalidMetadata, "keys must be str"),
    "custom-not-a-mapping": (_meta(custom=[("a", 1)]), InvalidMetadata, "must be a mapping"),
    "custom-over-64KiB": (
        _meta(custom={"big": "x" * 40_000_000}),
        LimitExceeded,
        "over the limit of 65536 bytes (64 KiB)",
    ),
    "custom-over-64KiB-many-values": (
        _meta(custom={f"k{i}": 1 for i in range(20_000)}),
        LimitExceeded,
        "bytes as JSON, over the limit of 65536 bytes",
    ),
    # a str where a sequence is expected
    "events-str": (lambda s: s.append("acc-1"), TypeError, "not a str"),
    "expected-str": (
        lambda s: s.append(_typed("demo.Ok"), expected="acc-1"),
        TypeError,
        "not a str",
    ),
}


async def _snapshot(store: Any) -> tuple[Any, ...]:
    """What a refused call must leave unchanged: the head, versions and stream rows."""
    sync = getattr(store, "sync", store)  # the in-memory async view lists through its store
    listed = await store.list_streams() if hasattr(store, "list_streams") else None
    return (
        await store.head(),
        await store.stream_version("acc-1"),
        await store.stream_version("acc-2"),
        await store.stream_version("many"),
        listed if listed is not None else sync.list_streams(),
    )


@pytest.mark.parametrize("case", list(BAD_APPENDS))
async def test_bad_input_is_refused_with_a_typed_error_and_writes_nothing(
    store: Any, case: str
) -> None:
    """Regression (issue 10, section 5): each kind of bad input gets its typed, never
    retried error on every store, naming the problem, and nothing is written."""
    call, error, message = BAD_APPENDS[case]
    await store.append([new("acc-1", Deposited(1))], metadata=Metadata(user_id="ann"))
    before = await _snapshot(store)
    with pytest.raises(error) as info:
        await call(store)
    assert message in str(info.value)
    assert len(str(info.value)) < 2000  # the rejected value is not repeated in full
    if error is not TypeError:
        assert isinstance(info.value, ValidationError)  # never retried by execute
    assert await _snapshot(store) == before


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda s: s.read_all(event_types="demo.bank.Deposited"), "event_types"),
        (lambda s: s.read_streams("acc-1"), "not a str"),
    ],
    ids=["read_all-event_types-str", "read_streams-str"],
)
async def test_a_str_where_a_sequence_is_expected_is_a_type_error(
    store: Any, read: Any, message: str
) -> None:
    """Regression: ``read_all(event_types="x")`` silently returned nothing (it filtered by
    the letters of the str)."""
    await store.append([new("acc-1", Deposited(1))])
    with pytest.raises(TypeError, match=message):
        await read(store)
    [deposited] = await store.read_all(event_types=["demo.bank.Deposited"])
    assert deposited.stream_id == "acc-1"


async def test_type_names_at_the_limits_are_stored_as_given(store: Any) -> None:
    names = ["T" * 255, "é" * 255, "a b", "Überweisung.erfasst", "x.y-z_1"]
    await store.append([NewEvent("acc-1", name, b"") for name in names])
    assert [e.event_type for e in await store.read_all()] == names
    await store.append([NewEvent("big", "demo.Big", _FULL_PAYLOAD)])
    [big] = await store.read_stream("big")
    assert len(big.payload) == 16 * _MIB


async def test_zero_events_with_read_checks_write_nothing(store: Any) -> None:
    """Regression: appending no events with only read checks created version-0 streams."""
    await store.append([new("acc-1", Deposited(1))])
    before = await _snapshot(store)
    result = await store.append([], expected={"acc-1": 1, "acc-2": NO_STREAM, "many": ANY})
    assert list(result.events) == []
    assert dict(result.stream_versions) == {"acc-1": 1, "acc-2": 0, "many": 0}
    assert await _snapshot(store) == before


# -- random type names and metadata: stored exactly, or refused with the typed error ---------

_ANY_CHAR = st.characters(exclude_categories=())  # controls, whitespace and surrogates too
_EDGE_CHARS = st.sampled_from(["\x00", "\t", "\n", " ", "\u3000", "\x85", "\x1c", "\ud800", "é"])
_TEXT = st.text(st.one_of(_ANY_CHAR, _EDGE_CHARS), max_size=12)
_TYPE_NAMES = st.one_of(
    _TEXT,
    st.text(st.sampled_from("aé. \t"), min_size=250, max_size=260),
    st.builds(lambda a, b: f"demo.{a}{b}", _TEXT, st.sampled_from(["", " ", "\x00", "x"])),
)
_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_CUSTOM = st.one_of(
    st.none(),
    st.dictionaries(
        _TEXT,
        st.recursive(
            _JSON_LEAVES,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
    st.integers(min_value=28, max_value=36).map(lambda n: {"deep": _deep(n)}),
)


def _valid_type_name(name: str) -> bool:
    """The documented rules in plain Python."""
    return (
        0 < len(name) <= 255
        and not name[0].isspace()
        and not name[-1].isspace()
        and not any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
    )


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event_type=_TYPE_NAMES, user_id=st.none() | _TEXT, custom=_CUSTOM)
async def test_random_type_names_and_metadata_round_trip_or_are_refused(
    store: Any, event_type: str, user_id: str | None, custom: dict[str, Any] | None
) -> None:
    """Whatever the input, a store either keeps it exactly or refuses it with the typed
    error before writing anything: never a driver error, a RecursionError or
    UnicodeEncodeError, and never a silently changed value."""
    stream = f"h-{uuid.uuid4()}"
    try:
        meta = Metadata(user_id=user_id, custom=custom)
    except (InvalidMetadata, LimitExceeded):
        meta = Metadata()
    head = await store.head()
    try:
        await store.append([NewEvent(stream, event_type, b"p")], metadata=meta)
    except InvalidEventType as exc:
        assert not _valid_type_name(event_type), exc
        assert await store.head() == head
        assert await store.stream_version(stream) == 0
        return
    assert _valid_type_name(event_type)
    [recorded] = await store.read_stream(stream)
    assert recorded.event_type == event_type
    assert recorded.metadata == meta
    assert recorded.metadata.user_id == meta.user_id
    assert _typed_json(recorded.metadata.custom) == _typed_json(meta.custom)


def _typed_json(value: Any) -> Any:
    """``value`` with each scalar tagged by its type, so ``1 == 1.0 == True`` cannot hide a
    changed value."""
    if isinstance(value, Mapping):
        return {k: _typed_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed_json(v) for v in value]
    return (type(value).__name__, value)


async def test_an_append_over_a_cap_is_not_retried_by_execute(store: Any) -> None:
    """Regression: an oversized batch became StoreUnavailable on PostgreSQL and ``execute``
    sent it again and again; a cap is a LimitExceeded, raised at the first attempt."""
    real_append = store.append
    appends = 0

    async def counting_append(*args: Any, **kwargs: Any) -> Any:
        nonlocal appends
        appends += 1
        return await real_append(*args, **kwargs)

    store.append = counting_append
    try:
        command = EmitTo(declared=("big",), emit=(("big", Noted("x" * (16 * _MIB))),))
        with pytest.raises(LimitExceeded, match="over the limit of 16777216 bytes"):
            await execute(store, command)
    finally:
        del store.append
    assert appends == 1
    assert await store.head() == 0


async def test_a_conflict_carries_the_missed_events_or_none(store: Any) -> None:
    """``ConcurrencyConflict.tail``: None, or exactly the events after the expected
    versions of the conflicting streams, in log order, with ``tail_base`` (each checked
    stream's expected version and the position of its event at it). PostgreSQL returns
    them on every path of its function: one stream, several written, checked-only ones."""
    from eventcore.postgres import PostgresStore

    await store.append([new("a", Deposited(1)), new("a", Deposited(2)), new("b", Deposited(3))])
    await store.append([new("b", Withdrawn(1))])
    await store.append([new("c", Deposited(4))])
    cases: list[tuple[list[NewEvent], list[tuple[str, int]]]] = [
        ([new("a", Deposited(9))], [("a", 1)]),  # one stream
        ([new("a", Deposited(9))], [("a", 0)]),  # one stream, expected none
        ([new("a", Deposited(9)), new("b", Deposited(9))], [("a", 0), ("b", 1)]),  # several
        ([new("a", Deposited(9))], [("a", 2), ("b", 1), ("c", 0)]),  # checked-only streams
        ([], [("b", 0)]),  # checks alone
        ([new("a", Deposited(9))], [("a", 7)]),  # expected ahead: nothing missed
        ([new("c", Deposited(9))], [("c", STREAM_EXISTS), ("z", STREAM_EXISTS)]),
    ]
    log = await store.read_all()
    for events, expected in cases:
        with pytest.raises(ConcurrencyConflict) as info:
            await store.append(events, expected=expected)
        conflict = info.value
        after = {c.stream_id: c.expected for c in conflict.conflicts if c.expected >= 0}
        want = [
            (e.stream_id, e.event_type, e.payload, e.version, e.position)
            for e in log
            if e.stream_id in after and e.version > after[e.stream_id]
        ]
        if isinstance(store, PostgresStore):
            assert conflict.tail is not None
        if conflict.tail is not None:
            assert list(conflict.tail) == want, (events, expected)
            at = {(e.stream_id, e.version): e.position for e in log}
            assert conflict.tail_base == {s: (v, at.get((s, v), 0)) for s, v in expected if v >= 0}
    assert await store.read_all() == log
