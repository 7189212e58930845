"""Test-only: a synchronous store seen through the async :class:`EventStore` protocol.

:class:`Threaded` runs each call of a synchronous store (``SyncPostgresStore``, the
in-memory store itself) in a worker thread, so the async contract suite exercises the
synchronous face unchanged. It is not a store of the library: an async application uses
``PostgresStore`` or ``MemoryStore().aio``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.pgserver import drop_schema, new_schema_name


class Threaded:
    """The async face of a synchronous store: every call in a worker thread."""

    def __init__(self, sync: Any) -> None:
        self.sync = sync
        self.registry = sync.registry
        self.state_cache = sync.state_cache
        self.snapshots = None  # a snapshot store's async loads belong to its own loop

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("append", *args, **kwargs)

    async def read_fold(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_fold", *args, **kwargs)

    async def read_tail(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_tail", *args, **kwargs)

    async def read_stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_stream", *args, **kwargs)

    async def read_streams(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_streams", *args, **kwargs)

    async def read_stream_backwards(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_stream_backwards", *args, **kwargs)

    async def read_all(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_all", *args, **kwargs)

    async def read_query(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_query", *args, **kwargs)

    async def read_events_by_id(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("read_events_by_id", *args, **kwargs)

    async def stream_version(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("stream_version", *args, **kwargs)

    async def head(self) -> Any:
        return await self._call("head")

    async def list_streams(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("list_streams", *args, **kwargs)

    async def count_events(self, after_position: int, upto: int) -> Any:
        aio = getattr(self.sync, "aio", None)  # MemoryStore counts on its async view
        if aio is not None:
            return await aio.count_events(after_position, upto)
        return await self._call("count_events", after_position, upto)

    # The stream lifecycle (SyncStreamLifecycle on the synchronous store).

    async def delete_stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("delete_stream", *args, **kwargs)

    async def truncate_stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("truncate_stream", *args, **kwargs)

    async def stream_bounds(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("stream_bounds", *args, **kwargs)

    async def purge_stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("purge_stream", *args, **kwargs)

    async def purge_log(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("purge_log", *args, **kwargs)


def sync_postgres_store(request: pytest.FixtureRequest, **options: Any) -> Any:
    """A migrated SyncPostgresStore on a fresh schema, closed and dropped after the test."""
    from eventcore.postgres import SyncPostgresStore

    dsn = request.getfixturevalue("postgres_dsn")
    options.setdefault("schema", new_schema_name())
    store = SyncPostgresStore(dsn, **options)

    def cleanup() -> None:
        try:
            store.close()
        finally:
            asyncio.run(drop_schema(dsn, store.schema))

    request.addfinalizer(cleanup)
    store.migrate()
    return store
