"""Checking what callers hand the PostgreSQL store, and building Metadata from a column."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from eventcore import _core
from eventcore.errors import DuplicateEventId, ValidationError
from eventcore.recorded import as_uuid
from eventcore.store import Expected

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""The largest payload the PostgreSQL store accepts (16 MiB); larger ones are refused."""
MAX_EVENTS_PER_APPEND = 1 << 20
"""The most events one append may write (positions hold ``2**20`` per transaction)."""

_json_decode = msgspec.json.decode
validate_stream_id = _core.validate_stream_id


def check_limit(limit: int | None) -> int | None:
    """Return ``limit`` if it is None or a non-negative int."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValidationError("limit", "must be a non-negative int or None", limit)
    return limit


def check_stream_ids(streams: Sequence[str]) -> list[str]:
    """Validate a list of stream ids (each listed once)."""
    if isinstance(streams, str):
        raise TypeError("streams must be a sequence of stream ids, not one str")
    ids = [validate_stream_id(s) for s in streams]
    if len(set(ids)) != len(ids):
        raise ValidationError("streams", "a stream is listed more than once", ids)
    return ids


def prepare_events(events: Sequence[Any]) -> list[tuple[str, str, bytes, Any]]:
    """Validate the events, normalize stream ids and give missing ids a UUIDv7."""
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValidationError(
            "events", f"at most {MAX_EVENTS_PER_APPEND} events per append", len(events)
        )
    missing = sum(1 for e in events if e[3] is None)
    new_ids = iter(_core.uuid7_ints(missing)) if missing else iter(())
    streams: dict[str, str] = {}
    seen: set[uuid.UUID] = set()
    out = []
    for e in events:
        stream_id, event_type, payload, event_id = e
        sid = streams.get(stream_id)
        if sid is None:
            sid = streams[stream_id] = validate_stream_id(stream_id)
        if type(event_type) is not str:
            raise TypeError(f"event type must be a str, got {type(event_type).__name__}")
        if "\x00" in event_type:
            raise ValidationError("event_type", "must not contain NUL characters", event_type)
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValidationError(
                "payload",
                f"{len(payload)} bytes is over the PostgreSQL store's limit of "
                f"{MAX_PAYLOAD_BYTES} bytes (16 MiB)",
                event_type,
            )
        if event_id is None:
            event_id = next(new_ids)
        elif not isinstance(event_id, int | uuid.UUID) or isinstance(event_id, bool):
            raise TypeError(f"event id must be a UUID, an int or None, got {event_id!r}")
        key = as_uuid(event_id)
        if key in seen:
            raise DuplicateEventId(key, "appears more than once in this batch")
        seen.add(key)
        out.append((sid, event_type, payload, event_id))
    return out


def prepare_expected(expected: Expected) -> list[tuple[str, int]]:
    """Validate expected versions; stream ids normalized, each listed once."""
    items = expected.items() if isinstance(expected, Mapping) else expected
    checks = []
    seen = set()
    for stream_id, version in items:
        if not isinstance(version, int) or isinstance(version, bool) or version < -2:
            raise ValidationError(
                "expected", "a version >= 0, NO_STREAM, STREAM_EXISTS or ANY", version
            )
        sid = validate_stream_id(stream_id)
        if sid in seen:
            raise ValidationError("expected", "a stream is listed more than once", sid)
        seen.add(sid)
        checks.append((sid, version))
    return checks
