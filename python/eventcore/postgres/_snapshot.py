"""Durable snapshots in PostgreSQL: the ``snapshots`` table of migration 0004."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from eventcore.snapshot import Snapshot

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore

TAIL_ROWS = 1000
"""The most tail events a snapshot read brings along; with more, read_tail reads them."""


class SnapshotTail(NamedTuple):
    """The events a snapshot load read after the snapshot's versions, for the command's
    next :meth:`~eventcore.postgres.PostgresStore.read_tail` (its ``hint``): that read
    then returns these rows instead of reading, when its streams and versions are these.
    """

    streams: tuple[str, ...]
    versions: tuple[int, ...]
    rows: list[Any]
    """Rows as the store's tail statement returns them (each stream from its last folded
    event on)."""


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
        return (await self.load_with_tail(key))[0]

    async def load_with_tail(self, key: str) -> tuple[Snapshot | None, SnapshotTail | None]:
        """The snapshot stored under ``key`` (or None), and the events after its versions.

        One statement reads both (at most :data:`TAIL_ROWS` events; with more, the tail is
        None). The command machine hands the tail to its next TAIL effect, so starting
        from a snapshot costs one round trip, not two; nothing is kept here.
        """
        store = self._store
        rows = await store._fetch(store._q.load_snapshot_tail, key, TAIL_ROWS + 1)
        if not rows or rows[0][0] != 0:
            return None, None
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
        if len(rows) > TAIL_ROWS + 1:
            return snap, None
        return snap, SnapshotTail(snap.streams, snap.versions, [tuple(r)[9:] for r in rows[1:]])

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
