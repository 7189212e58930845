"""Checkpoints (where each projection is) and dead letters; the in-memory checkpoint store.

The protocol every checkpoint store implements is :class:`eventcore.store.CheckpointStore`
(re-exported here); PostgreSQL's is :class:`eventcore.postgres.PostgresCheckpointStore`
(re-exported here for the import path it had).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventcore.errors import UsageError
from eventcore.recorded import RecordedEvent
from eventcore.store import CheckpointStore, CheckpointTransaction, Lease

if TYPE_CHECKING:
    from eventcore.postgres.checkpoint import PostgresCheckpointStore

__all__ = [
    "CheckpointStore",
    "DeadLetter",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a projection skipped after it failed (strategy ``skip``).

    Attributes:
        projection: the projection's name.
        position: the event's global position.
        event_id: the event's id (None for a failed columnar batch).
        stream_id: the event's stream ('' for a columnar batch).
        event_type: the event's type ('' for a columnar batch).
        error: ``repr`` of the exception.
        failed_at: when it was recorded (UTC).
    """

    projection: str
    position: int
    event_id: Any
    stream_id: str
    event_type: str
    error: str
    failed_at: datetime


def dead_letter(
    projection: str, event: RecordedEvent[Any] | int, error: BaseException
) -> DeadLetter:
    """A DeadLetter for ``event`` (or a bare position) that failed with ``error``."""
    now = datetime.now(UTC)
    if isinstance(event, int):
        return DeadLetter(projection, event, None, "", "", repr(error), now)
    return DeadLetter(
        projection,
        event.position,
        event.event_id,
        event.stream_id,
        event.event_type,
        repr(error),
        now,
    )


class MemoryCheckpointStore:
    """Checkpoints and dead letters in process memory (tests, in-memory read models)."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        """Saved position per projection name."""
        self.letters: list[DeadLetter] = []
        """Every dead letter, oldest first."""

    @property
    def exclusive(self) -> bool:
        """False: process memory is no lease between processes."""
        return False

    @property
    def transactional(self) -> bool:
        """False: there is no database to share a transaction with."""
        return False

    async def check(self) -> None:
        """Nothing to check."""

    async def load(self, name: str) -> int:
        """See :meth:`CheckpointStore.load`."""
        return self.positions.get(name, 0)

    async def save(self, name: str, position: int) -> None:
        """See :meth:`CheckpointStore.save`."""
        self.positions[name] = position

    async def reset(self, name: str, position: int = 0) -> None:
        """See :meth:`CheckpointStore.reset`."""
        self.positions[name] = position

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """See :meth:`CheckpointStore.add_dead_letter`."""
        self.letters.append(letter)

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """See :meth:`CheckpointStore.dead_letters`."""
        return [d for d in self.letters if d.projection == name]

    def lease(self, name: str) -> Lease:
        """Not offered (``exclusive`` is False).

        Raises:
            UsageError: always.
        """
        raise UsageError("checkpoints in memory offer no leases between processes")

    def transaction(self) -> AbstractAsyncContextManager[CheckpointTransaction]:
        """Not offered (``transactional`` is False).

        Raises:
            UsageError: always.
        """
        raise UsageError(
            "checkpoints in memory offer no transaction: apply_in_transaction needs "
            "checkpoints in the read model's database (PostgresCheckpointStore)"
        )


def __getattr__(name: str) -> Any:
    # The old import path of PostgresCheckpointStore (it lives in eventcore.postgres).
    if name == "PostgresCheckpointStore":
        from eventcore.postgres.checkpoint import PostgresCheckpointStore

        return PostgresCheckpointStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
