"""The exceptions eventcore raises, all rooted at :class:`EventCoreError`.

Which errors the executor retries:

==========================  =========================================  ========
error                       raised when                                retried
==========================  =========================================  ========
``ValidationError``         a value or command field fails validation  never
``InvalidStreamId``         a stream id breaks the stream-id rules     never
``InvalidEventType``        an event type name breaks the name rules   never
``InvalidTag``              a tag breaks the stream-id rules           never
``InvalidMetadata``         metadata is not storable as given          never
``LimitExceeded``           an event or an append is over a size cap   never
``BusinessRuleViolation``   ``require(...)`` fails inside ``handle``   never
``UndeclaredStream``        ``handle`` emits to a stream not declared  never
``CommandError``            a command is defined or behaves wrongly    never
``SerializationError``      a payload cannot be encoded or decoded     never
``EventDecodeError``        a stored event does not decode (a          never
                            ``SerializationError``; names where)
``ConcurrencyConflict``     expected versions did not match            yes, then raised
``ConditionFailed``         an event matching an append's condition    yes, then raised
                            lies after its position
``StoreUnavailable``        the store could not be reached             yes, then raised
``OutcomeUnknown``          an append's reply was lost (a              yes, then raised
                            ``StoreUnavailable``; carries the ids)
``IdempotencyKeyReused``    an idempotency key names another command   never
``UsageError``              an API is called the wrong way             never
``DuplicateEventId``        an event id was reused for other content   never
``StoreError``              any other store failure                    never
``ConfigurationError``      a set-up mistake: a malformed DSN, a       never
                            refused schema name, an append inside a
                            caller's transaction
``ProjectionError``         a projection's ``apply`` failed and its    never
                            failure strategy said stop
==========================  =========================================  ========
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from eventcore.query import QueryResult

__all__ = [
    "BusinessRuleViolation",
    "CommandError",
    "ConcurrencyConflict",
    "ConditionFailed",
    "ConfigurationError",
    "DuplicateEventId",
    "EventCoreError",
    "EventDecodeError",
    "IdempotencyKeyReused",
    "InvalidEventType",
    "InvalidMetadata",
    "InvalidStreamId",
    "InvalidTag",
    "LimitExceeded",
    "OutcomeUnknown",
    "ProjectionError",
    "SerializationError",
    "StoreError",
    "StoreUnavailable",
    "StreamConflict",
    "UndeclaredStream",
    "UsageError",
    "ValidationError",
]


class EventCoreError(Exception):
    """Base class of every error eventcore raises on purpose."""


class ValidationError(EventCoreError, ValueError):
    """A value failed validation at construction; never retried.

    Attributes:
        field: the field (or value type) that was invalid.
        reason: why it was rejected.
        value: the rejected input.
    """

    def __init__(self, field: str, reason: str, value: Any = None) -> None:
        self.field = field
        self.reason = reason
        self.value = value
        super().__init__(f"{field}: {reason} (got {_short_repr(value)})")


def _short_repr(value: Any) -> str:
    """``repr(value)``, abbreviated when long or deeply nested (rejected input can be huge)."""
    if not (isinstance(value, str | bytes) and len(value) > _REPR_MAX):
        try:
            text = repr(value)
        except RecursionError:
            text = ""
        if text and len(text) <= _REPR_MAX:
            return text
    return _reprlib.repr(value)


_REPR_MAX = 400
_reprlib = reprlib.Repr()
_reprlib.maxstring = _reprlib.maxother = 200


class InvalidStreamId(ValidationError):
    """A stream id broke the rules (see :class:`eventcore.StreamId`); also a ``ValueError``."""

    def __init__(self, value: Any, reason: str, field: str = "stream_id") -> None:
        super().__init__(field, reason, value)


class InvalidTag(ValidationError):
    """An event tag or a query's tag broke the rules; also a ``ValueError``.

    Tags follow the stream-id rules (see :class:`eventcore.StreamId`): trimmed of
    surrounding whitespace, then 1 to 255 characters without control characters.
    """

    def __init__(self, value: Any, reason: str, field: str = "tag") -> None:
        super().__init__(field, reason, value)


class InvalidEventType(ValidationError):
    """An event type name broke the rules; also a ``ValueError``. Never retried.

    A type name is an identifier: non-empty, at most 255 characters, no control characters
    (Unicode category Cc) and no leading or trailing whitespace (refused, not trimmed).
    """

    def __init__(self, value: Any, reason: str, field: str = "event_type") -> None:
        super().__init__(field, reason, value)


class InvalidMetadata(ValidationError):
    """Metadata that no store can keep as given (see :class:`eventcore.Metadata`).

    Never retried; nothing is written.
    """


class LimitExceeded(ValidationError):
    """An event or an append is over a size cap; never retried, nothing is written.

    Caps, the same on every store: a payload of 16 MiB, an append of 64 MiB (payloads
    plus the encoded metadata once) and 1,048,576 events, metadata encoded as JSON of
    64 KiB.
    """


class BusinessRuleViolation(EventCoreError):
    """A business rule checked with :func:`eventcore.require` failed; never retried."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class CommandError(EventCoreError):
    """A command is defined wrongly or returned something the executor cannot use."""


class UsageError(EventCoreError, TypeError):
    """eventcore was called the wrong way, e.g. ``execute_sync`` with an async store.

    The message says what to call instead. Never retried; also a ``TypeError``.
    """


class UndeclaredStream(EventCoreError):
    """``handle`` emitted an event to a stream the command neither declared nor discovered.

    Nothing is written. Never retried.
    """

    def __init__(self, stream_id: str, command: str, hint: str = "") -> None:
        self.stream_id = stream_id
        self.command = command
        super().__init__(
            f"{command} emitted an event to stream {stream_id!r}, "
            "which it did not declare or discover" + (f"; {hint}" if hint else "")
        )


class SerializationError(EventCoreError):
    """A payload could not be encoded or decoded; names the event type. Nothing is written."""

    def __init__(self, event_type: str, reason: str) -> None:
        self.event_type = event_type
        self.reason = reason
        super().__init__(f"event type {event_type!r}: {reason}")


class EventDecodeError(SerializationError):
    """A stored event could not be decoded with the current registry.

    Names where the event is (stream, stream version, global position when known) and
    what was stored (type key and version), and says what to do: register an upcaster
    from the stored version, or an alias for a renamed type. A
    :class:`SerializationError`, so existing handlers keep catching it.
    """

    def __init__(
        self,
        stored_type: str,
        reason: str,
        *,
        stream_id: str | None = None,
        version: int | None = None,
        position: int | None = None,
    ) -> None:
        from eventcore.registry import split_stored_type  # errors must not import eagerly

        name, stored_version = split_stored_type(stored_type)
        self.stored_type = stored_type
        """The type key as stored (``name`` for version 1, else ``name@vN``)."""
        self.stored_version = stored_version
        """The event type version the payload was written with."""
        self.stream_id = stream_id
        """The stream of the event (None where the decoder was called without one)."""
        self.version = version
        """The event's stream version (None when not known at the failure)."""
        self.position = position
        """The event's global position (None when not known at the failure)."""
        where = []
        if stream_id is not None:
            where.append(f"stream {stream_id!r}")
        if version is not None:
            where.append(f"version {version}")
        if position is not None:
            where.append(f"position {position}")
        at = f" at {', '.join(where)}" if where else ""
        SerializationError.__init__(self, name, reason)
        self.args = (
            f"cannot decode event{at}: stored type {name!r} version {stored_version}: "
            f"{reason}. If the event class changed, give it a new version and register "
            f"an upcaster from this one (@upcaster({name!r}, from_version={stored_version}));"
            f" if the type was renamed, register its old name as an alias "
            f"(@event(NEW_NAME, aliases=({name!r},)))",
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def at(
        self, *, stream_id: str | None, version: int | None, position: int | None
    ) -> EventDecodeError:
        """A copy with the event's place filled in (what the caller knows and this lacks)."""
        return EventDecodeError(
            self.stored_type,
            self.reason,
            stream_id=self.stream_id if self.stream_id is not None else stream_id,
            version=self.version if self.version is not None else version,
            position=self.position if self.position is not None else position,
        )


class StreamConflict(NamedTuple):
    """One stream whose version did not match: the data of a :class:`ConcurrencyConflict`."""

    stream_id: str
    """The stream that conflicted."""
    expected: int
    """The expected version (``ANY`` = -1, ``STREAM_EXISTS`` = -2, else the exact version)."""
    actual: int
    """The stream's version in the store when the append was tried (0 = no stream)."""


class ConcurrencyConflict(EventCoreError):
    """Expected stream versions did not match; nothing was written.

    A store raises it for one append (``attempts == 1``); the executor retries with fresh
    state and raises it once its :class:`~eventcore.RetryPolicy` is exhausted.

    Attributes:
        conflicts: every conflicting stream with its expected and actual versions.
        attempts: how many attempts were made.
        tail: the events after the expected versions of the conflicting streams, as
            ``(stream_id, event_type, payload, version, position)`` rows in log order,
            when the store returned them with the conflict (PostgreSQL does, up to 256);
            None when it did not (read them).
        tail_base: with ``tail``, what it continues from: each checked stream (expected
            version >= 0) with its expected version and the position of its event at
            that version (0: none), so a caller can tell the tail follows its fold in
            log order; None without a tail.
    """

    tail: tuple[tuple[str, str, bytes, int, int], ...] | None
    tail_base: dict[str, tuple[int, int]] | None

    def __init__(self, conflicts: Iterable[tuple[str, int, int]], attempts: int = 1) -> None:
        self.conflicts = tuple(StreamConflict._make(c) for c in conflicts)
        self.attempts = attempts
        self.tail = None
        self.tail_base = None
        detail = ", ".join(
            f"{c.stream_id!r} expected {c.expected} but is at {c.actual}" for c in self.conflicts
        )
        super().__init__(f"concurrency conflict after {attempts} attempt(s): {detail}")

    def _set_tail(
        self,
        checks: Iterable[tuple[str, int]],
        rows: Iterable[tuple[str, str, bytes, int, int]],
    ) -> None:
        """Put a store's tail on this conflict: ``rows`` are each checked stream's events
        from its expected version on, in log order; the event at that version (the
        caller's last one) places the ones after it (``tail_base``)."""
        base = {s: (v, 0) for s, v in checks if v >= 0}
        tail = []
        for r in rows:
            if r[3] > base[r[0]][0]:
                tail.append(r)
            else:
                base[r[0]] = (r[3], r[4])
        self.tail = tuple(tail)
        self.tail_base = base


class ConditionFailed(EventCoreError):
    """An append's condition failed: an event matching its query lies after its position.

    Nothing was written. Like a :class:`ConcurrencyConflict` it is data, not a fault: the
    executor retries a command with a query boundary from fresh state, and raises it once
    its :class:`~eventcore.RetryPolicy` is exhausted.

    Attributes:
        after: the position the condition was read at.
        position: the first matching event after it (0 when the store does not say).
        attempts: how many attempts were made.
        read: what ``read_query(query, after=after)`` returned when the condition failed
            (the matching events after ``after`` and the position the read is consistent
            with), or None when the store does not say (PostgreSQL says for a
            one-stream append matching a few events). A query command's retry folds it
            instead of reading again.
    """

    def __init__(self, after: int, position: int = 0, attempts: int = 1) -> None:
        self.after = after
        self.position = position
        self.attempts = attempts
        self.read: QueryResult | None = None
        at = f" (at position {position})" if position else ""
        super().__init__(
            f"append condition failed after {attempts} attempt(s): an event matching "
            f"the query was appended after position {after}{at}"
        )


class StoreError(EventCoreError):
    """The event store failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The store could not be reached or timed out; retried by the executor's policy.

    Nothing half-written is ever visible: the append either happened whole or not at all,
    and retrying it with the same event ids is idempotent.
    """


class OutcomeUnknown(StoreUnavailable):
    """An append was sent but its reply was lost: it may or may not have been written.

    Retried by the executor like :class:`StoreUnavailable` (the resend carries the same
    event ids, so it writes nothing twice). Raised once the retry policy is used up; the
    caller can then look the ids up (``read_events_by_id``) or, better, retry the command
    with the same ``idempotency_key``, which returns the first outcome if there was one.

    Attributes:
        event_ids: the ids of the events the append tried to write (``uuid.UUID``).
    """

    def __init__(self, message: str, event_ids: Iterable[Any] = ()) -> None:
        import uuid  # here, not at the top: importing eventcore does not load uuid

        self.event_ids = [i if isinstance(i, uuid.UUID) else uuid.UUID(int=i) for i in event_ids]
        super().__init__(message)


class IdempotencyKeyReused(EventCoreError):
    """An idempotency key already wrote the events of a different command; nothing written.

    Never retried. A key names one request: use a new key for a new command.

    Attributes:
        key: the idempotency key.
        command: the command given now (``module.Class``).
        stored: what the key's events were written by (``module.Class``, or ``None`` when
            they carry no idempotency record).
    """

    def __init__(self, key: str, command: str, stored: str | None) -> None:
        self.key = key
        self.command = command
        self.stored = stored
        by = f"a different {stored} command" if stored == command else (stored or "another writer")
        super().__init__(
            f"idempotency key {key!r} was already used by {by}; "
            f"{command} was not run (use a new key for a new request)"
        )


class DuplicateEventId(StoreError):
    """An event id was reused for different content (or only part of a batch was replayed)."""

    def __init__(self, event_id: Any, reason: str) -> None:
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"event id {event_id}: {reason}")


class ConfigurationError(EventCoreError, ValueError):
    """A set-up mistake that retrying will not fix; never retried.

    Raised for a malformed DSN, a schema name that is not allowed (a system schema such
    as ``pg_catalog`` or ``information_schema``), and for an append that PostgreSQL was
    asked to run inside a caller's transaction that already wrote something.
    """


class ProjectionError(EventCoreError):
    """A projection stopped: its ``apply`` failed and its strategy said stop.

    Attributes:
        projection: the projection's name.
        position: the position of the event (or first event of the batch) that failed.
    """

    def __init__(self, projection: str, position: int, message: str) -> None:
        super().__init__(f"projection {projection!r} stopped at position {position}: {message}")
        self.projection = projection
        self.position = position
