"""Subscriptions: read the global log from a position in pages, then follow it live."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from eventcore.errors import ValidationError
from eventcore.memory import MemoryStore
from eventcore.projection.columns import ColumnBatch, ColumnBuilder
from eventcore.query import Query
from eventcore.recorded import RecordedEvent
from eventcore.store import AsyncView, ColumnBuffers, ProjectionStore

__all__ = ["Page", "Subscription"]


def projection_store(store: ProjectionStore | MemoryStore) -> ProjectionStore:
    """The async face of ``store`` projections read (a synchronous store's ``.aio``: the
    in-memory or SQLite store's)."""
    if isinstance(store, MemoryStore | AsyncView):
        return cast("ProjectionStore", store.aio)
    return store


@dataclass(slots=True)
class Page:
    """One delivery of a subscription.

    Attributes:
        events: the events, in delivery order (empty in columnar mode, or when only the
            position moved past events the filters drop).
        position: where to resume after this page (the checkpoint to save once it is
            applied); at least the last event's position.
        head: the store's head when the page was read.
        caught_up: the page reached the head (the next one comes from live delivery).
        columns: the columnar view, in columnar mode.
    """

    events: list[RecordedEvent[Any]]
    position: int
    head: int
    caught_up: bool
    columns: ColumnBatch | None = field(default=None)

    def __len__(self) -> int:
        return len(self.columns) if self.columns is not None else len(self.events)


class Subscription:
    """An async iterator of :class:`Page` objects over the global log.

    Reads from ``after_position`` in pages of ``page_size`` (catch-up), and once a page
    comes back short (caught up), waits for appends (the store's ``wait_for_append``:
    LISTEN/NOTIFY for PostgreSQL, an in-process signal for the in-memory store; at most
    ``poll_interval`` seconds at a time) and reads again. The cursor is the
    last position delivered, and each read asks for events strictly after it in the
    store's delivery order, so the switch from catch-up to live neither skips nor repeats
    an event (the PostgreSQL store's ``read_all`` never passes over an event that commits
    late).

    Args:
        store: the store to read (in-memory, its ``.aio`` view, PostgreSQL: any
            :class:`~eventcore.store.ProjectionStore`).
        after_position: deliver events after this position.
        page_size: events per read.
        event_types: deliver only these types (registered names: every stored version
            and alias of each is delivered).
        stream_prefix: deliver only streams whose id starts with this.
        query: deliver only events matching this :class:`~eventcore.query.Query` (of
            event types and tags), read with the store's ``read_query``; the filters
            above then narrow it further.
        live: keep following the log (False: stop once caught up).
        poll_interval: the longest wait for an append before reading again.
        columns: deliver :class:`ColumnBatch` pages (needs numpy) instead of events.
    """

    def __init__(
        self,
        store: ProjectionStore | MemoryStore,
        *,
        after_position: int = 0,
        page_size: int = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        query: Query | None = None,
        live: bool = True,
        poll_interval: float = 1.0,
        columns: bool = False,
    ) -> None:
        if page_size < 1:
            raise ValidationError("page_size", "must be at least 1", page_size)
        if after_position < 0:
            raise ValidationError("after_position", "must not be negative", after_position)
        self.store = projection_store(store)
        """The store read."""
        self.position = after_position
        """The position delivered so far (the next page starts after it)."""
        self.head = 0
        """The head seen by the last read."""
        self.caught_up = False
        """Whether the last page reached the head."""
        self.page_size = page_size
        self.event_types = list(event_types) if event_types is not None else None
        registry = self.store.registry
        # The store filters by stored type key: each version and alias of the names given.
        self._stored_types = (
            registry.stored_types(self.event_types) if self.event_types is not None else None
        )
        self.stream_prefix = stream_prefix
        if query is not None and not isinstance(query, Query):
            raise TypeError(f"query must be an eventcore.query.Query, not {type(query).__name__}")
        self.query = query
        self.live = live
        self.poll_interval = poll_interval
        self._columns = ColumnBuilder(registry) if columns else None
        self._stop = asyncio.Event()
        self.on_caught_up: Callable[[], None] | None = None
        """Called when a read reaches the head and finds nothing new to deliver."""

    def stop(self) -> None:
        """End the iteration after the current page (wakes a live wait at once)."""
        self._stop.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Page:
        while True:
            if self._stop.is_set():
                raise StopAsyncIteration
            if self.caught_up:
                if not self.live:
                    raise StopAsyncIteration
                await self._wait()
                if self._stop.is_set():
                    raise StopAsyncIteration
            page = await self.read_page()
            if len(page) or page.position > self.position:
                self.position = page.position
                return page
            if self.on_caught_up is not None:
                self.on_caught_up()
            if not self.live:
                raise StopAsyncIteration

    async def _wait(self) -> None:
        """Wait for the head to pass what was read, or for stop()."""
        waiter = asyncio.ensure_future(
            self.store.wait_for_append(self.position, self.poll_interval)
        )
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def read_page(self) -> Page:
        """Read the next page after :attr:`position` (does not move the position)."""
        store = self.store
        after = self.position
        # The head is read BEFORE the events: every event up to it is in the store's
        # delivery order by the time of the read, so a short page covers it all.
        head = await store.head()
        builder = self._columns
        if self.query is not None:
            return await self._query_page(after, head)
        if builder is not None:
            raw = await store.read_columns(
                after, self.page_size, builder.store_types, len(builder.stream_names)
            )
            if raw is not None:
                return self._columns_page(raw, after, head)
        events = await store.read_all(
            after_position=after,
            limit=self.page_size,
            event_types=self._stored_types,
            stream_prefix=self.stream_prefix,
        )
        last = events[-1].position if events else after
        full = len(events) >= self.page_size
        position = last if full else max(last, head, after)
        self.caught_up = not full
        self.head = max(head, last)
        if builder is not None:
            batch = builder.from_events(events)
            return Page([], position, self.head, self.caught_up, batch)
        return Page(events, position, self.head, self.caught_up)

    async def _query_page(self, after: int, head: int) -> Page:
        """A page of the events matching :attr:`query` (then the other filters)."""
        assert self.query is not None
        found = await self.store.read_query(self.query, after=after, limit=self.page_size)
        full = len(found.events) >= self.page_size
        events = [
            e
            for e in found.events
            if (self.event_types is None or e.event_type in self.event_types)
            and (self.stream_prefix is None or e.stream_id.startswith(self.stream_prefix))
        ]
        position = max(found.position, after)
        self.caught_up = not full
        self.head = max(head, position)
        if self._columns is not None:
            return Page([], position, self.head, self.caught_up, self._columns.from_events(events))
        return Page(events, position, self.head, self.caught_up)

    def _columns_page(self, raw: ColumnBuffers, after: int, head: int) -> Page:
        """A columnar page from the store's own columns (filtered here)."""
        builder = self._columns
        assert builder is not None
        n = len(raw[0]) // 8
        full = n >= self.page_size
        batch = builder.from_buffers(raw)
        last = int(batch.positions[-1]) if n else after
        if self.event_types is not None or self.stream_prefix is not None:
            keep = builder.mask(
                batch.type_codes, batch.stream_codes, self.event_types, self.stream_prefix
            )
            batch = builder.from_buffers((raw[0], raw[1], raw[2], raw[3], [], []), keep)
        position = last if full else max(last, head, after)
        self.caught_up = not full
        self.head = max(head, last)
        return Page([], position, self.head, self.caught_up, batch)
