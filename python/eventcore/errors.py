"""The exceptions eventcore raises, all rooted at :class:`EventCoreError`.

Which errors the executor retries:

==========================  =========================================  ========
error                       raised when                                retried
==========================  =========================================  ========
``ValidationError``         a value or command field fails validation  never
``InvalidStreamId``         a stream id breaks the stream-id rules     never
``BusinessRuleViolation``   ``require(...)`` fails inside ``handle``   never
``UndeclaredStream``        ``handle`` emits to a stream not declared  never
``CommandError``            a command is defined or behaves wrongly    never
``SerializationError``      a payload cannot be encoded or decoded     never
``ConcurrencyConflict``     expected versions did not match            yes, then raised
``StoreUnavailable``        the store could not be reached             yes, then raised
``DuplicateEventId``        an event id was reused for other content   never
``StoreError``              any other store failure                    never
``ConfigurationError``      a set-up mistake: a malformed DSN, a       never
                            refused schema name, an append inside a
                            caller's transaction
==========================  =========================================  ========
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = [
    "BusinessRuleViolation",
    "CommandError",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DuplicateEventId",
    "EventCoreError",
    "InvalidStreamId",
    "SerializationError",
    "StoreError",
    "StoreUnavailable",
    "StreamConflict",
    "UndeclaredStream",
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
        super().__init__(f"{field}: {reason} (got {value!r})")


class InvalidStreamId(ValidationError):
    """A stream id broke the rules (see :class:`eventcore.StreamId`); also a ``ValueError``."""

    def __init__(self, value: Any, reason: str, field: str = "stream_id") -> None:
        super().__init__(field, reason, value)


class BusinessRuleViolation(EventCoreError):
    """A business rule checked with :func:`eventcore.require` failed; never retried."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class CommandError(EventCoreError):
    """A command is defined wrongly or returned something the executor cannot use."""


class UndeclaredStream(EventCoreError):
    """``handle`` emitted an event to a stream the command neither declared nor discovered.

    Nothing is written. Never retried.
    """

    def __init__(self, stream_id: str, command: str) -> None:
        self.stream_id = stream_id
        self.command = command
        super().__init__(
            f"{command} emitted an event to stream {stream_id!r}, "
            "which it did not declare or discover"
        )


class SerializationError(EventCoreError):
    """A payload could not be encoded or decoded; names the event type. Nothing is written."""

    def __init__(self, event_type: str, reason: str) -> None:
        self.event_type = event_type
        self.reason = reason
        super().__init__(f"cannot serialize event type {event_type!r}: {reason}")


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
    """

    def __init__(self, conflicts: Iterable[tuple[str, int, int]], attempts: int = 1) -> None:
        self.conflicts = tuple(StreamConflict._make(c) for c in conflicts)
        self.attempts = attempts
        detail = ", ".join(
            f"{c.stream_id!r} expected {c.expected} but is at {c.actual}" for c in self.conflicts
        )
        super().__init__(f"concurrency conflict after {attempts} attempt(s): {detail}")


class StoreError(EventCoreError):
    """The event store failed in a way retrying will not fix."""


class StoreUnavailable(StoreError):
    """The store could not be reached or timed out; retried by the executor's policy.

    Nothing half-written is ever visible: the append either happened whole or not at all,
    and retrying it with the same event ids is idempotent.
    """


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
