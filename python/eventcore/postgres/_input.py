"""Checking what callers hand the PostgreSQL store, and building Metadata from a column."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from eventcore import _core
from eventcore.errors import DuplicateEventId, InvalidMetadata, LimitExceeded, ValidationError
from eventcore.metadata import Metadata
from eventcore.query import check_tags
from eventcore.recorded import as_uuid
from eventcore.store import Expected

MAX_PAYLOAD_BYTES: int = _core.MAX_PAYLOAD_BYTES
"""The largest payload of one event (16 MiB), the same cap as every store's."""
MAX_EVENTS_PER_APPEND: int = _core.MAX_APPEND_EVENTS
"""The most events one append may write (positions hold ``2**20`` per transaction)."""
MAX_APPEND_BYTES: int = _core.MAX_APPEND_BYTES
"""The most one append may carry: payloads plus the encoded metadata once (64 MiB)."""

_json_decode = msgspec.json.decode
validate_stream_id = _core.validate_stream_id
validate_event_type = _core.validate_event_type


def check_event_types(event_types: Sequence[str] | None) -> list[str] | None:
    """``event_types`` as a list; a str is refused (iterating it would filter by letters)."""
    if event_types is None:
        return None
    if isinstance(event_types, str):
        raise TypeError("event_types must be a sequence of str, not a str")
    types = list(event_types)
    for name in types:
        if not isinstance(name, str):
            raise TypeError("event_types must contain only str")
    return types


def check_limit(limit: int | None) -> int | None:
    """Return ``limit`` if it is None or a non-negative int."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValidationError("limit", "must be a non-negative int or None", limit)
    return limit


def check_stream_ids(streams: Sequence[str]) -> list[str]:
    """Validate a list of stream ids (each listed once)."""
    if isinstance(streams, str):
        raise TypeError("streams must be a sequence of stream ids, not a str")
    ids = [validate_stream_id(s) for s in streams]
    if len(set(ids)) != len(ids):
        raise ValidationError("streams", "a stream is listed more than once", ids)
    return ids


def prepare_events(
    events: Sequence[Any], metadata: Metadata | None = None
) -> list[tuple[str, str, bytes, Any]]:
    """Validate the events, normalize stream ids and give missing ids a UUIDv7.

    The same rules and caps as the in-memory store (type names, payload and append size,
    event count), checked before any I/O; ``metadata`` counts once towards the append's
    size.
    """
    if type(events) is not list and isinstance(events, str | bytes):
        raise TypeError("events must be a sequence of NewEvent, not a str")
    if metadata is not None and not isinstance(metadata, Metadata):
        raise InvalidMetadata("metadata", "must be an eventcore.Metadata or None", metadata)
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise LimitExceeded(
            "events",
            f"{len(events)} events in one append, over the limit of {MAX_EVENTS_PER_APPEND}",
            len(events),
        )
    total = len(metadata.to_bytes()) if metadata else 0
    missing = 0
    for e in events:
        if e[3] is None:
            missing += 1
    new_ids = iter(_core.uuid7_ints(missing)) if missing else iter(())
    streams: dict[str, str] = {}
    types: set[str] = set()
    seen: set[int] = set()
    out = []
    for i, e in enumerate(events):
        stream_id, event_type, payload, event_id = e[0], e[1], e[2], e[3]
        sid = streams.get(stream_id)
        if sid is None:
            sid = streams[stream_id] = validate_stream_id(stream_id)
        if event_type not in types:
            if type(event_type) is not str:
                raise TypeError(f"event type must be a str, got {type(event_type).__name__}")
            types.add(validate_event_type(event_type))
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        total += len(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise LimitExceeded(
                "payload",
                f"event {i} ({event_type}) has a payload of {len(payload)} bytes, over the "
                f"limit of {MAX_PAYLOAD_BYTES} bytes (16 MiB)",
                len(payload),
            )
        if event_id is None:
            event_id = key = next(new_ids)
        elif isinstance(event_id, int) and not isinstance(event_id, bool):
            key = int(event_id)
        elif isinstance(event_id, uuid.UUID):
            key = event_id.int
        else:
            raise TypeError(f"event id must be a UUID, an int or None, got {event_id!r}")
        if key in seen:  # compared as ints: no UUID object per event
            raise DuplicateEventId(as_uuid(key), "appears more than once in this batch")
        seen.add(key)
        out.append((sid, event_type, payload, event_id))
    if total > MAX_APPEND_BYTES:
        raise LimitExceeded(
            "append",
            f"{total} bytes of payloads and metadata in one append, over the limit of "
            f"{MAX_APPEND_BYTES} bytes (64 MiB)",
            total,
        )
    return out


def prepare_tags(events: Sequence[Any]) -> list[tuple[str, ...]] | None:
    """Each event's tags, checked (see :func:`eventcore.query.check_tags`); None when no
    event carries one."""
    for e in events:
        if len(e) > 4 and e[4]:
            return [check_tags(e[4]) if len(e) > 4 else () for e in events]
    return None


def prepare_expected(expected: Expected) -> list[tuple[str, int]]:
    """Validate expected versions; stream ids normalized, each listed once."""
    if isinstance(expected, str):
        raise TypeError("expected must be a mapping or a sequence of pairs, not a str")
    if type(expected) is list or type(expected) is tuple:
        items: Any = expected  # the executor's list of pairs: no ABC check
    elif isinstance(expected, Mapping):
        items = expected.items()
    else:
        items = expected
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
