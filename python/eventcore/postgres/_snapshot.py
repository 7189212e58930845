"""Durable snapshots in PostgreSQL: the ``snapshots`` table of migration 0004."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventcore._core import CacheEntry
from eventcore.snapshot import Snapshot

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore

TAIL_ROWS = 1000
"""The most tail events a snapshot read brings along; with more, fold_tail reads them."""


class PostgresSnapshotStore:
    """An :class:`~eventcore.snapshot.AsyncSnapshotStore` in the event store's schema.

    Uses the event store's pool; a read or write costs one statement. Errors are the
    store's (``StoreUnavailable``, ``StoreError`` for a missing table): the snapshot
    policy turns them into a warning and a full fold.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None.

        The same statement reads the events after the snapshot's versions (at most
        :data:`TAIL_ROWS`) and leaves them with the store for the command's next
        :meth:`~eventcore.postgres.PostgresStore.fold_tail`: starting from a snapshot
        then costs one round trip, not two.
        """
        store = self._store
        rows = await store._fetch(store._q.load_snapshot_tail, key, TAIL_ROWS + 1)
        if not rows or rows[0][0] != 0:
            return None
        _, schema_version, streams, versions, fold_from, rounds, state, taken_at, digest = rows[0][
            :9
        ]
        snap = Snapshot(
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
        if len(rows) <= TAIL_ROWS + 1:
            store._keep_tail(snap.streams, snap.versions, [tuple(r)[9:] for r in rows[1:]])
        return snap

    async def advance(self, command: Any, entry: CacheEntry) -> CacheEntry:
        """``entry`` (just loaded from a snapshot) with the tail :meth:`load` read folded in.

        As :meth:`~eventcore.postgres.PostgresStore.fold_tail` folds it, without a read:
        unchanged when no tail was kept or fold_tail cannot extend the state (a
        truncation, a late commit: the append then conflicts and the executor folds what
        it missed, as without this).
        """
        store = self._store
        streams, versions = entry.streams, entry.versions
        if (tuple(streams), tuple(versions)) not in store._tails:
            return entry
        folded = await store.fold_tail(
            streams, versions, entry.fold_from, entry.state, command.apply, store.registry.decoders
        )
        if folded is None:
            return entry
        state, now = folded
        return CacheEntry(
            state, streams, now, entry.fold_from, sum(now) - sum(versions), entry.rounds
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
