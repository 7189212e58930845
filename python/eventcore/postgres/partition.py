"""Partitioning a PostgreSQL store's events table by position range (migration 0012).

Opt-in and the schema owner's: :func:`partition_events` turns ``events`` into a table
partitioned by ``RANGE (position)`` (the existing table becomes the first partition, no
row is copied), :func:`add_partitions` creates the next partitions ahead of the appends
(run it from a scheduled job), :func:`detach_partition` takes an old partition out of
the store to archive it and :func:`attach_partition` puts it back. Appends, reads and
their guarantees stay as they are; see the production guide for the design and its
costs.

>>> await partition_events(store, span=10_000_000)  # doctest: +SKIP
>>> await add_partitions(store, ahead=2)             # doctest: +SKIP

A partition covers a range of transaction ids (``span`` ids; positions are
``transaction id * 2**20 + index``), so how many events it holds depends on how many
transactions the whole server runs between appends: size ``span`` from
``SELECT pg_current_xact_id()`` read a day apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from eventcore.errors import ConfigurationError, StoreError
from eventcore.postgres._sql import quote

if TYPE_CHECKING:
    from eventcore.postgres.store import PostgresStore

__all__ = [
    "Partition",
    "PartitionRefused",
    "add_partitions",
    "attach_partition",
    "detach_partition",
    "partition_events",
    "partitions",
]

_NOT_PARTITIONED = "EC010"
_BAD_ARGUMENT = "EC011"
_REFUSED = "EC012"


class PartitionRefused(StoreError):
    """A partition cannot be detached: it may still receive appends, or it holds events
    that stream reads still return (truncate or delete those streams first, or force)."""


@dataclass(frozen=True)
class Partition:
    """One partition of the events table (attached or detached by :func:`detach_partition`).

    Bounds are positions: ``lower`` inclusive (None: from the start), ``upper``
    exclusive (None: no end; both None for the DEFAULT partition, which takes appends no
    other partition covers). ``rows`` is PostgreSQL's estimate (``reltuples``: 0 until the
    table was first vacuumed or analyzed).
    """

    name: str
    lower: int | None
    upper: int | None
    is_default: bool
    attached: bool
    rows: int
    table_bytes: int
    index_bytes: int


async def _call(store: PostgresStore, sql: str, *args: Any) -> list[Any]:
    # DDL on a large table may outlast the store's statement timeout: none here.
    try:
        pool = await store._open_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")
            return list(await conn.fetch(sql.format(s=quote(store.schema)), *args))
    except asyncpg.PostgresError as exc:
        code = getattr(exc, "sqlstate", None)
        message = str(exc).removeprefix("eventcore: ")
        if code == _REFUSED:
            raise PartitionRefused(message) from exc
        if code in (_NOT_PARTITIONED, _BAD_ARGUMENT):
            raise ConfigurationError(message) from exc
        if code == "42501":  # insufficient_privilege
            raise StoreError(
                f"partitioning {store.schema} is the schema owner's work: {message}"
            ) from exc
        raise StoreError(f"partitioning {store.schema}: {exc}") from exc


async def partitions(store: PostgresStore) -> list[Partition]:
    """The partitions of ``store``'s events table, attached first, in position order
    (an empty list: the table is not partitioned)."""
    rows = await _call(store, "SELECT * FROM {s}.event_partitions()")
    return [Partition(*row) for row in rows]


async def partition_events(store: PostgresStore, *, span: int, ahead: int = 2) -> list[str]:
    """Turn ``store``'s events table into a partitioned one; return the partitions made.

    The existing table becomes the first partition (``events_from_0``); partitions of
    ``span`` transaction ids then cover the next ``ahead`` spans, and a DEFAULT partition
    the rest. One transaction, under an exclusive lock on the events table (appends and
    reads wait): it scans the existing table once to check its bound. Stores opened
    before it (in other processes) read every partition, correctly but without pruning,
    until they are reopened.

    Raises:
        ConfigurationError: the table is partitioned already, or ``span`` is not positive.
        StoreError: the role is not the schema's owner (nor may it act for it).
    """
    rows = await _call(store, "SELECT * FROM {s}.partition_events($1, $2)", span, ahead)
    store._q.bound_stream_reads(True)  # other stores see it when they next open
    return [row[0] for row in rows]


async def add_partitions(
    store: PostgresStore, *, ahead: int = 2, span: int | None = None
) -> list[str]:
    """Create the partitions that cover the next ``ahead`` spans of transaction ids;
    return their names (none: enough exist). ``span`` defaults to the newest partition's.

    Run it regularly (a partition must exist before the appends reach its range, or they
    land in the DEFAULT partition, which then stays as large as it grew).

    Raises:
        ConfigurationError: the table is not partitioned, or a bad ``ahead``/``span``.
    """
    rows = await _call(store, "SELECT * FROM {s}.add_partitions($1, $2)", ahead, span)
    return [row[0] for row in rows]


async def detach_partition(store: PostgresStore, name: str, *, force: bool = False) -> None:
    """Detach partition ``name`` from the events table, keeping it as a table of its own.

    Only a partition wholly below the readers' horizon (nothing in flight may still land
    in it). Unless ``force``, only one whose events are all hidden (truncated or deleted
    streams): stream reads and folds would otherwise silently miss them. Readers of the
    global log read past its range as past a purge; its event ids stay taken. Archive the
    table (``pg_dump -t``) and drop it, or :func:`attach_partition` it again.

    Raises:
        PartitionRefused: it may still receive appends, or holds visible events.
        ConfigurationError: no such partition.
    """
    await _call(store, "SELECT {s}.detach_partition($1, $2)", name, force)


async def attach_partition(store: PostgresStore, name: str) -> None:
    """Attach a partition :func:`detach_partition` detached, at its former range.

    Raises:
        ConfigurationError: ``name`` was not detached by :func:`detach_partition`.
    """
    await _call(store, "SELECT {s}.attach_partition($1)", name)
