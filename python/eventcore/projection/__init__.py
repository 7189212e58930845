"""Projections: read models fed by the global log, checkpointed, caught up, then live.

A projection is your object with a ``name`` and ``apply(event)`` (or ``apply_batch``,
``apply_columns``, ``apply_in_transaction``); see :class:`Projection`. A
:class:`ProjectionRunner` runs several of them over one store, each from its own
checkpoint, with its own :class:`FailureStrategy`.
"""

from __future__ import annotations

from eventcore.projection.checkpoint import (
    CheckpointStore,
    DeadLetter,
    MemoryCheckpointStore,
    PostgresCheckpointStore,
)
from eventcore.projection.columns import ColumnBatch
from eventcore.projection.projection import FailureStrategy, Projection, ProjectionError
from eventcore.projection.reconnect import ReconnectPolicy
from eventcore.projection.runner import ProjectionRunner
from eventcore.projection.status import Progress, ProjectionStatus
from eventcore.projection.subscription import Page, Subscription

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
