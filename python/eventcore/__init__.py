"""eventcore: event sourcing for Python with multi-stream atomic commands and a Rust core.

Define events (frozen dataclasses or ``msgspec.Struct``) with :func:`event`, commands with
:class:`Command`, and run them with :func:`execute_sync` (in-memory store) or
:func:`execute` (any store, async). See the README for a tour.

What is here: the names an application author writes with. Events and their registry
(``event``, ``EventRegistry``, ``default_registry``), value types (``Value``), commands
(``Command``, ``stream``, ``StreamId``, ``require``, the expected-version constants),
running them (``execute``, ``execute_sync``, ``ExecutionResult``, ``Metadata``,
``RetryPolicy``), the in-memory store and the events a store takes and returns
(``MemoryStore``, ``NewEvent``, ``RecordedEvent``), ``uuid7``, and every error of
:mod:`eventcore.errors`. Everything else lives in the module of its concept:
:mod:`eventcore.projection` (read models and their runner), :mod:`eventcore.postgres`
(the PostgreSQL store), :mod:`eventcore.testing` (scenarios, fault injection),
:mod:`eventcore.observe` (hooks), :mod:`eventcore.store` (the store protocols),
:mod:`eventcore.snapshot`, :mod:`eventcore.state_cache`, :mod:`eventcore.registry`
(codecs), :mod:`eventcore.memory` (the async face of the in-memory store) and
:mod:`eventcore.recorded` (the store's result types). The names that used to be here
still import from here, with a ``DeprecationWarning`` naming their place.

Each name loads with its module on first use, so ``import eventcore`` stays light.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import TYPE_CHECKING, Any

from eventcore import _core

# Imported now, not on first use: the function ``stream`` shares its name with the module
# ``eventcore.stream``, and importing that module sets the package's ``stream`` to it.
from eventcore.stream import ANY, NO_STREAM, STREAM_EXISTS, StreamId, stream

if TYPE_CHECKING:
    import uuid as _uuid

    from eventcore._pipeline import ExecutionResult
    from eventcore.command import Command, require
    from eventcore.errors import (
        BusinessRuleViolation,
        CommandError,
        ConcurrencyConflict,
        ConditionFailed,
        ConfigurationError,
        DuplicateEventId,
        EventCoreError,
        EventDecodeError,
        IdempotencyKeyReused,
        InvalidEventType,
        InvalidMetadata,
        InvalidStreamId,
        InvalidTag,
        LimitExceeded,
        OutcomeUnknown,
        ProjectionError,
        SerializationError,
        StoreError,
        StoreUnavailable,
        StreamConflict,
        UndeclaredStream,
        UsageError,
        ValidationError,
    )
    from eventcore.executor import execute, execute_sync
    from eventcore.memory import MemoryStore
    from eventcore.metadata import Metadata
    from eventcore.recorded import NewEvent, RecordedEvent
    from eventcore.registry import EventRegistry, default_registry, event
    from eventcore.retry import RetryPolicy
    from eventcore.value import Value

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "BusinessRuleViolation",
    "Command",
    "CommandError",
    "ConcurrencyConflict",
    "ConditionFailed",
    "ConfigurationError",
    "DuplicateEventId",
    "EventCoreError",
    "EventDecodeError",
    "EventRegistry",
    "ExecutionResult",
    "IdempotencyKeyReused",
    "InvalidEventType",
    "InvalidMetadata",
    "InvalidStreamId",
    "InvalidTag",
    "LimitExceeded",
    "MemoryStore",
    "Metadata",
    "NewEvent",
    "OutcomeUnknown",
    "ProjectionError",
    "RecordedEvent",
    "RetryPolicy",
    "SerializationError",
    "StoreError",
    "StoreUnavailable",
    "StreamConflict",
    "StreamId",
    "UndeclaredStream",
    "UsageError",
    "ValidationError",
    "Value",
    "__version__",
    "default_registry",
    "event",
    "execute",
    "execute_sync",
    "require",
    "stream",
    "uuid7",
]

if TYPE_CHECKING:
    #: The installed distribution's version (set once, in Cargo.toml; maturin copies it).
    __version__: str

_ERRORS = (
    "BusinessRuleViolation CommandError ConcurrencyConflict ConfigurationError DuplicateEventId "
    "EventCoreError IdempotencyKeyReused InvalidEventType InvalidMetadata InvalidStreamId "
    "EventDecodeError LimitExceeded OutcomeUnknown ProjectionError SerializationError StoreError "
    "StoreUnavailable StreamConflict UndeclaredStream UsageError ValidationError"
    " ConditionFailed InvalidTag"
)

# Where each public name is defined.
_WHERE: dict[str, str] = {
    **dict.fromkeys(_ERRORS.split(), "eventcore.errors"),
    **dict.fromkeys(("Command", "require"), "eventcore.command"),
    **dict.fromkeys(("EventRegistry", "default_registry", "event"), "eventcore.registry"),
    **dict.fromkeys(("execute", "execute_sync"), "eventcore.executor"),
    **dict.fromkeys(("NewEvent", "RecordedEvent"), "eventcore.recorded"),
    "ExecutionResult": "eventcore._pipeline",
    "MemoryStore": "eventcore.memory",
    "Metadata": "eventcore.metadata",
    "RetryPolicy": "eventcore.retry",
    "Value": "eventcore.value",
}

# Names that left the top level, and the public module each lives in now.
_MOVED: dict[str, str] = {
    **dict.fromkeys(("CommandReport", "Hook", "add_hook", "remove_hook"), "eventcore.observe"),
    **dict.fromkeys(("AppendResult", "WrittenEvent"), "eventcore.recorded"),
    **dict.fromkeys(("Codec", "JsonCodec", "MsgpackCodec"), "eventcore.registry"),
    **dict.fromkeys(("MemorySnapshotStore", "Snapshot"), "eventcore.snapshot"),
    **dict.fromkeys(("StateCache", "StateCacheMismatch"), "eventcore.state_cache"),
    **dict.fromkeys(("EventStore", "Expected", "SyncEventStore"), "eventcore.store"),
    **dict.fromkeys(
        (
            "CheckpointStore",
            "ColumnBatch",
            "DeadLetter",
            "FailureStrategy",
            "MemoryCheckpointStore",
            "Page",
            "Progress",
            "Projection",
            "ProjectionRunner",
            "ProjectionStatus",
            "ReconnectPolicy",
            "Subscription",
        ),
        "eventcore.projection",
    ),
    "AsyncMemoryStore": "eventcore.memory",
    "PostgresCheckpointStore": "eventcore.postgres",
}


def uuid7() -> _uuid.UUID:
    """A new UUIDv7 (RFC 9562), strictly increasing within this process, as a stdlib UUID."""
    return _core.uuid7()


# A forked child must not repeat its parent's random bits.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core.reseed_after_fork)


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read on first use: importlib.metadata is slow to import
        from importlib import metadata

        version = globals()["__version__"] = metadata.version("eventcore-py")
        return version
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    module = _MOVED.get(name)
    if module is not None:
        warnings.warn(
            f"eventcore.{name} moved: import it from {module} (from {module} import {name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'eventcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
