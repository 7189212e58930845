"""One face for every store a subscription reads: pages, head, waiting, counting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.recorded import RecordedEvent
from eventcore.registry import EventRegistry

__all__ = ["Source"]


class Source:
    """The store a subscription reads, with the extras projections need.

    Accepts a :class:`MemoryStore`, its ``.aio`` view, the PostgreSQL store, or any
    :class:`~eventcore.EventStore` (waiting then falls back to polling :meth:`head`).
    """

    def __init__(self, store: Any, *, poll_interval: float = 1.0) -> None:
        if isinstance(store, MemoryStore):
            store = store.aio
        self.store = store
        self.memory: MemoryStore | None = (
            store.sync if isinstance(store, AsyncMemoryStore) else None
        )
        self.registry: EventRegistry = store.registry
        self.poll_interval = poll_interval

    @property
    def positions_are_dense(self) -> bool:
        """Whether positions are 1, 2, 3... (lag in events = head - position)."""
        return self.memory is not None

    async def head(self) -> int:
        """The position a reader may read up to now."""
        if self.memory is not None:
            return self.memory.head()
        return int(await self.store.head())

    async def holdback(self) -> Any:
        """The store's oldest append still in flight that holds the log back, or None.

        Only a store whose readers can be held back by its own appends has one
        (PostgreSQL's ``log_holdback``); the in-memory store's appends are instant.
        """
        holdback = getattr(self.store, "log_holdback", None)
        return None if holdback is None else await holdback()

    async def read(
        self,
        after: int,
        limit: int,
        event_types: Sequence[str] | None,
        stream_prefix: str | None,
    ) -> list[RecordedEvent[Any]]:
        """Up to ``limit`` events after ``after`` in delivery order, filtered."""
        memory = self.memory
        if memory is not None:
            return memory.read_all(
                after_position=after,
                limit=limit,
                event_types=event_types,
                stream_prefix=stream_prefix,
            )
        return await self.store.read_all(  # type: ignore[no-any-return]
            after_position=after,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )

    async def wait(self, after: int, timeout: float) -> int:
        """Wait until the head passes ``after`` (or ``timeout``); the head."""
        wait = getattr(self.store, "wait_for_append", None)
        if wait is not None:
            return int(await wait(after, timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            head = await self.head()
            remaining = deadline - loop.time()
            if head > after or remaining <= 0:
                return head
            await asyncio.sleep(min(remaining, self.poll_interval))

    async def pool(self) -> Any:
        """The asyncpg pool of a PostgreSQL store (None for other stores)."""
        pool = getattr(self.store, "pool", None)
        if pool is not None and not callable(pool):
            return pool
        get = getattr(self.store, "_get_pool", None)
        if get is not None:
            return await get()
        return None

    @property
    def schema(self) -> str | None:
        """The PostgreSQL store's schema (None for other stores)."""
        return getattr(self.store, "schema", None)

    async def count_between(self, after: int, upto: int) -> int:
        """How many events lie in ``(after, upto]`` (exact; capped at 10 million)."""
        if upto <= after:
            return 0
        if self.memory is not None:
            return upto - after
        pool = await self.pool()
        if pool is None or self.schema is None:
            return upto - after
        sql = (
            f'SELECT count(*) FROM (SELECT 1 FROM "{self.schema}".events'
            " WHERE position > $1 AND position <= $2 LIMIT 10000000) c"
        )
        return int(await pool.fetchval(sql, after, upto))

    async def first_after(self, position: int) -> RecordedEvent[Any] | None:
        """The first event after ``position`` (None when there is none yet)."""
        events = await self.read(position, 1, None, None)
        return events[0] if events else None
