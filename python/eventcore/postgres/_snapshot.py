"""Durable snapshots in PostgreSQL: the ``snapshots`` table of migration 0004."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventcore.snapshot import Snapshot

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore


class PostgresSnapshotStore:
    """An :class:`~eventcore.snapshot.AsyncSnapshotStore` in the event store's schema.

    Uses the event store's pool; a read or write costs one statement. Errors are the
    store's (``StoreUnavailable``, ``StoreError`` for a missing table): the snapshot
    policy turns them into a warning and a full fold.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None."""
        store = self._store
        row = await store._fetchrow(store._q.load_snapshot, key)
        if row is None:
            return None
        schema_version, streams, versions, fold_from, rounds, state, taken_at, digest = row
        return Snapshot(
            key,
            tuple(streams),
            tuple(versions),
            fold_from,
            rounds,
            schema_version,
            state,
            taken_at,
            digest,
        )

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a snapshot of more events (same schema) is stored."""
        store = self._store
        await store._fetchval(
            store._q.save_snapshot,
            snapshot.key,
            snapshot.schema_version,
            list(snapshot.streams),
            list(snapshot.versions),
            snapshot.fold_from,
            snapshot.rounds,
            snapshot.events,
            snapshot.state,
            snapshot.taken_at,
            snapshot.checksum,
        )

    def __repr__(self) -> str:
        return f"PostgresSnapshotStore(schema={self._store.schema!r})"
