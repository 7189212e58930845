"""Projection test helpers: the ``store`` fixture over the in-memory store and PostgreSQL.

The PostgreSQL server fixtures come from ``tests/pgserver.py`` (loaded by ``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from eventcore import MemoryStore, NewEvent

STORES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-pgbouncer", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An empty async event store: the in-memory or SQLite store's async view, or PostgreSQL."""
    if request.param == "memory":
        return MemoryStore().aio
    if request.param == "sqlite":
        from eventcore.sqlite import SqliteStore

        sqlite = SqliteStore(tmp_path / "events.db")
        request.addfinalizer(sqlite.close)
        return sqlite.aio
    if request.param == "postgres-pgbouncer":  # every connection through PgBouncer
        pg = request.getfixturevalue("pgbouncer_store")
        pg.poll_interval = 0.2
        return pg
    pg = request.getfixturevalue("postgres_store")
    pg.poll_interval = 0.2
    return pg


def new_events(n: int, *, streams: int = 10, offset: int = 0) -> list[NewEvent]:
    """``n`` events spread over ``streams`` streams, with types T0..T2."""
    return [
        NewEvent(f"s-{(offset + i) % streams}", f"T{(offset + i) % 3}", b"%d" % (offset + i))
        for i in range(n)
    ]


async def write(store: Any, n: int, *, per_append: int = 50, offset: int = 0, **kw: Any) -> int:
    """Append ``n`` events in appends of ``per_append``; the last position written."""
    last = 0
    for start in range(0, n, per_append):
        batch = new_events(min(per_append, n - start), offset=offset + start, **kw)
        last = (await store.append(batch)).last_position
    return last


async def all_events(store: Any) -> list[Any]:
    """Every event of the global log (paged)."""
    out: list[Any] = []
    cursor = 0
    while True:
        page = await store.read_all(after_position=cursor, limit=5000)
        out += page
        if len(page) < 5000:
            return out
        cursor = page[-1].position


class Recorder:
    """A projection that records what it saw: positions in order, duplicates counted."""

    def __init__(self, name: str = "recorder", **attrs: Any) -> None:
        self.name = name
        self.seen: dict[int, tuple[str, str]] = {}
        self.order: list[int] = []
        self.applied = 0
        for k, v in attrs.items():
            setattr(self, k, v)

    def apply(self, event: Any) -> None:
        self.applied += 1
        self.order.append(event.position)
        self.seen[event.position] = (event.stream_id, event.event_type)

    def reset(self) -> None:
        self.seen.clear()
        self.order.clear()
        self.applied = 0

    @property
    def duplicates(self) -> int:
        return self.applied - len(self.seen)
