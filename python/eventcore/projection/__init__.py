"""Projections: read models fed by the global log, checkpointed, caught up, then live.

A projection is your object with a ``name`` and ``apply(event)`` (or ``apply_batch``,
``apply_columns``, ``apply_in_transaction``); see :class:`Projection`. A
:class:`ProjectionRunner` runs several of them over one store, each from its own
checkpoint, with its own :class:`FailureStrategy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventcore.projection.checkpoint import CheckpointStore, DeadLetter, MemoryCheckpointStore
from eventcore.projection.columns import ColumnBatch
from eventcore.projection.projection import FailureStrategy, Projection, ProjectionError
from eventcore.projection.reconnect import ReconnectPolicy
from eventcore.projection.runner import ProjectionRunner
from eventcore.projection.status import Progress, ProjectionStatus
from eventcore.projection.subscription import Page, Subscription

if TYPE_CHECKING:
    from eventcore.postgres.checkpoint import PostgresCheckpointStore

__all__ = [
    "CheckpointStore",
    "ColumnBatch",
    "DeadLetter",
    "FailureStrategy",
    "MemoryCheckpointStore",
    "Page",
    "PostgresCheckpointStore",
    "Progress",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionStatus",
    "ReconnectPolicy",
    "Subscription",
]


def __getattr__(name: str) -> Any:
    # PostgresCheckpointStore lives in eventcore.postgres; this import path is kept.
    if name == "PostgresCheckpointStore":
        from eventcore.postgres.checkpoint import PostgresCheckpointStore

        return PostgresCheckpointStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
