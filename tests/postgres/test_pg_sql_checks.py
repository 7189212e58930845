"""The SQL append function enforces the API's input rules itself (issue 10, section 5).

A role granted EXECUTE on ``append_events`` can call it without eventcore: it must not
be able to store what the API refuses, and a refused call writes nothing. Appending no
events with only read checks writes no stream rows either.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from eventcore import NO_STREAM, ConcurrencyConflict, NewEvent, StoreError, ValidationError

pytestmark = pytest.mark.postgres

APPEND = (
    "SELECT status, positions FROM {s}.append_events($1::text[], $2::bigint[], $3::uuid[],"
    " $4::text[], $5::text[], $6::bytea[], NULL, NULL, $7::text, $8::jsonb)"
)

MiB = 1024 * 1024


def call(stream="s", event_type="t", payload=b"p", expected=(), user_id=None, custom=None):
    checks = list(expected)
    return (
        [c[0] for c in checks],
        [c[1] for c in checks],
        [uuid.uuid4()],
        [stream],
        [event_type],
        [payload],
        user_id,
        custom,
    )


REFUSED = {
    "empty stream id": call(stream=""),
    "control char in stream id": call(stream="a\x01b"),
    "DEL in stream id": call(stream="a\x7fb"),
    "C1 control in stream id": call(stream="a\x85b"),
    "leading space": call(stream=" a"),
    "trailing space": call(stream="a "),
    "leading no-break space": call(stream="\u00a0a"),
    "trailing ideographic space": call(stream="a\u3000"),
    "stream id of 256 code points": call(stream="é" * 256),
    "bad checked stream id": call(expected=[(" x", NO_STREAM)]),
    "empty type": call(event_type=""),
    "type with a newline": call(event_type="t\n"),
    "type with a leading space": call(event_type=" t"),
    "type of 256 code points": call(event_type="t" * 256),
    "payload over 16 MiB": call(payload=b"x" * (20 * MiB)),
    "user_id with a control char": call(user_id="u\x1b"),
    "user_id of 256 code points": call(user_id="u" * 256),
    "custom not an object": call(custom="[1, 2]"),
    "custom over 96 KiB": call(custom='{"k": "' + "x" * (97 * 1024) + '"}'),
}


@pytest.mark.parametrize("args", list(REFUSED.values()), ids=list(REFUSED))
async def test_a_direct_call_with_bad_input_is_refused_and_writes_nothing(
    postgres_store, postgres_dsn, args
):
    store = postgres_store
    conn = await asyncpg.connect(postgres_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.fetchrow(APPEND.format(s=f'"{store.schema}"'), *args)
        assert info.value.sqlstate == "EC002"
        assert "eventcore:" in str(info.value)
        s = f'"{store.schema}"'
        assert await conn.fetchval(f"SELECT count(*) FROM {s}.events") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {s}.streams") == 0
    finally:
        await conn.close()


async def test_an_append_over_64_mib_in_total_is_refused(postgres_store, postgres_dsn):
    store = postgres_store
    conn = await asyncpg.connect(postgres_dsn)
    payload = b"x" * (16 * MiB)
    try:
        with pytest.raises(asyncpg.PostgresError, match="64 MiB") as info:
            await conn.fetchrow(
                APPEND.format(s=f'"{store.schema}"'),
                [],
                [],
                [uuid.uuid4() for _ in range(5)],
                ["big"] * 5,
                ["t"] * 5,
                [payload] * 5,
                None,
                None,
            )
        assert info.value.sqlstate == "EC002"
    finally:
        await conn.close()
    assert await store.read_all() == []


async def test_the_limits_themselves_are_accepted(postgres_store, postgres_dsn):
    store = postgres_store
    conn = await asyncpg.connect(postgres_dsn)
    try:
        row = await conn.fetchrow(
            APPEND.format(s=f'"{store.schema}"'),
            *call(
                stream="é" * 255,
                event_type="Typ\u00e9 mit Leerzeichen",
                payload=b"x" * (16 * MiB),
                user_id="u" * 255,
                # Just under 64 KiB as compact JSON (what the API measures), which
                # jsonb's text form spreads to just under 96 KiB.
                custom='{"k":[' + ",".join(["0"] * 32760) + "]}",
            ),
        )
        assert row["status"] == "ok"
    finally:
        await conn.close()
    [event] = await store.read_all()
    assert event.stream_id == "é" * 255 and len(event.payload) == 16 * MiB


async def test_no_events_with_read_checks_writes_no_stream_rows(postgres_store, postgres_dsn):
    """Before schema 3 each checked stream got a version-0 row (issue 10, section 5)."""
    store = postgres_store
    await store.append([NewEvent("old", "t", b"")])
    result = await store.append([], expected={"fresh": NO_STREAM, "other": 0, "old": 1})
    assert result.stream_versions == {"fresh": 0, "other": 0, "old": 1}
    with pytest.raises(ConcurrencyConflict):
        await store.append([], expected={"fresh": 1})
    # Events for one stream, another stream only checked: no row for the checked one.
    result = await store.append([NewEvent("new", "t", b"")], expected={"absent": NO_STREAM})
    assert result.stream_versions == {"new": 1, "absent": 0}
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch(
            f'SELECT stream_id, version FROM "{store.schema}".streams ORDER BY stream_id'
        )
        assert (
            await conn.fetchval(f'SELECT count(*) FROM "{store.schema}".streams WHERE version = 0')
            == 0
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("new", 1), ("old", 1)]


@pytest.mark.parametrize("event_type", ["", " padded", "new\nline", "t" * 256])
async def test_a_bad_type_name_through_the_api_is_a_validation_error(postgres_store, event_type):
    """Whichever check refuses it (Python first, else the SQL function's EC002), the
    caller gets a ValidationError, never the retried StoreUnavailable, and nothing is
    written."""
    store = postgres_store
    with pytest.raises(ValidationError) as info:
        await store.append([NewEvent("s", event_type, b"")])
    assert not isinstance(info.value, StoreError)
    assert await store.read_all() == []
    assert await store.stream_version("s") == 0
