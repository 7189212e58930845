"""eventcore: event sourcing for Python with multi-stream atomic commands and a Rust core.

Define events (frozen dataclasses or ``msgspec.Struct``) with :func:`event`, commands with
:class:`Command`, and run them with :func:`execute_sync` (in-memory store) or
:func:`execute` (any store, async). See the README for a tour.
"""

from __future__ import annotations

import os
import uuid as _uuid
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from eventcore import _core
from eventcore._pipeline import ExecutionResult
from eventcore.command import Command, require
from eventcore.errors import (
    BusinessRuleViolation,
    CommandError,
    ConcurrencyConflict,
    ConfigurationError,
    DuplicateEventId,
    EventCoreError,
    IdempotencyKeyReused,
    InvalidEventType,
    InvalidMetadata,
    InvalidStreamId,
    LimitExceeded,
    OutcomeUnknown,
    SerializationError,
    StoreError,
    StoreUnavailable,
    StreamConflict,
    UndeclaredStream,
    UsageError,
    ValidationError,
)
from eventcore.executor import execute, execute_sync
from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.metadata import Metadata
from eventcore.observe import CommandReport, Hook, add_hook, remove_hook
from eventcore.projection import (
    CheckpointStore,
    ColumnBatch,
    DeadLetter,
    FailureStrategy,
    MemoryCheckpointStore,
    Page,
    Progress,
    Projection,
    ProjectionError,
    ProjectionRunner,
    ProjectionStatus,
    ReconnectPolicy,
    Subscription,
)
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent, WrittenEvent
from eventcore.registry import (
    Codec,
    EventRegistry,
    JsonCodec,
    MsgpackCodec,
    default_registry,
    event,
)
from eventcore.retry import RetryPolicy
from eventcore.snapshot import MemorySnapshotStore, Snapshot
from eventcore.state_cache import StateCache, StateCacheMismatch
from eventcore.store import EventStore, Expected, SyncEventStore
from eventcore.stream import ANY, NO_STREAM, STREAM_EXISTS, StreamId, stream
from eventcore.value import Value

if TYPE_CHECKING:
    from eventcore.postgres.checkpoint import PostgresCheckpointStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "AsyncMemoryStore",
    "BusinessRuleViolation",
    "CheckpointStore",
    "Codec",
    "ColumnBatch",
    "Command",
    "CommandError",
    "CommandReport",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DeadLetter",
    "DuplicateEventId",
    "EventCoreError",
    "EventRegistry",
    "EventStore",
    "ExecutionResult",
    "Expected",
    "FailureStrategy",
    "Hook",
    "IdempotencyKeyReused",
    "InvalidEventType",
    "InvalidMetadata",
    "InvalidStreamId",
    "JsonCodec",
    "LimitExceeded",
    "MemoryCheckpointStore",
    "MemorySnapshotStore",
    "MemoryStore",
    "Metadata",
    "MsgpackCodec",
    "NewEvent",
    "OutcomeUnknown",
    "Page",
    "PostgresCheckpointStore",
    "Progress",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionStatus",
    "ReconnectPolicy",
    "RecordedEvent",
    "RetryPolicy",
    "SerializationError",
    "Snapshot",
    "StateCache",
    "StateCacheMismatch",
    "StoreError",
    "StoreUnavailable",
    "StreamConflict",
    "StreamId",
    "Subscription",
    "SyncEventStore",
    "UndeclaredStream",
    "UsageError",
    "ValidationError",
    "Value",
    "WrittenEvent",
    "__version__",
    "add_hook",
    "default_registry",
    "event",
    "execute",
    "execute_sync",
    "remove_hook",
    "require",
    "stream",
    "uuid7",
]

#: The installed distribution's version (set once, in Cargo.toml; maturin copies it).
__version__: str = _metadata.version("eventcore-py")


def uuid7() -> _uuid.UUID:
    """A new UUIDv7 (RFC 9562), strictly increasing within this process, as a stdlib UUID."""
    return _core.uuid7()


# A forked child must not repeat its parent's random bits.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core.reseed_after_fork)


def __getattr__(name: str) -> Any:
    # Loaded on first use: it lives in eventcore.postgres, which `import eventcore` skips.
    if name == "PostgresCheckpointStore":
        from eventcore.postgres.checkpoint import PostgresCheckpointStore

        return PostgresCheckpointStore
    raise AttributeError(f"module 'eventcore' has no attribute {name!r}")
