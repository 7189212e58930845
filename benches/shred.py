"""Crypto-shredding workloads: the same work with personal fields encrypted, and without.

Both sides use the same event classes; "on" registers them in a registry whose codec is
a ``ShreddingCodec`` over an in-memory key store, "off" in a plain ``EventRegistry``
(msgspec ignores the ``Personal`` annotations, so the payload is the plain event). Each
workload returns ``(on, off)``: one timed repetition of each side, as rates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from typing import Annotated, Any

from benches.core import timed
from eventcore import (
    Command,
    EventRegistry,
    MemoryStore,
    NewEvent,
    StreamId,
    execute,
    execute_sync,
)
from eventcore import stream as stream_field
from eventcore.shredding import MemoryKeyStore, Personal, ShreddingCodec, Subject

Once = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Signed:
    """A customer event with three personal fields (two str, one int)."""

    customer: Annotated[str, Subject]
    name: Annotated[str, Personal]
    email: Annotated[str, Personal]
    age: Annotated[int, Personal]
    plan: str


@dataclasses.dataclass(frozen=True)
class Paid:
    """No personal field: what a ShreddingCodec must pass through at no cost."""

    amount: int


def registries() -> tuple[EventRegistry, EventRegistry]:
    """``(encrypting, plain)`` registries holding the same two classes."""
    on = EventRegistry(ShreddingCodec(MemoryKeyStore()))
    off = EventRegistry()
    for registry in (on, off):
        registry.register("bench.shred.Signed", Signed)
        registry.register("bench.shred.Paid", Paid)
    return on, off


def signed(customer: str, i: int = 0) -> Signed:
    """A Signed event for ``customer``."""
    return Signed(customer, f"Customer {i}", f"customer{i}@example.com", 20 + i % 50, "gold")


class SignUp(Command[int, Any]):
    """Appends one Signed event to a new customer stream (encodes personal fields)."""

    state_cache = False
    customer: StreamId = stream_field()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + 1

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.customer, signed(str(self.customer)))]


class Update(Command[int, Any]):
    """Folds a customer stream of Signed events in full (no state cache) and appends one."""

    state_cache = False
    customer: StreamId = stream_field()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + event.age

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.customer, signed(str(self.customer), state))]


class Pay(Command[int, Any]):
    """A command whose event has no personal field, on a new stream."""

    state_cache = False
    account: StreamId = stream_field()

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + 1

    def handle(self, state: int) -> list[tuple[str, Any]]:
        return [(self.account, Paid(5))]


_ids = itertools.count()


def read(streams: int, events: int) -> tuple[Once, Once]:
    """read_stream of ``streams`` streams of ``events`` Signed events, ``.data`` on each."""

    def side(registry: EventRegistry) -> Once:
        store = MemoryStore(registry=registry)
        ids = [f"c-{next(_ids)}" for _ in range(streams)]
        for s in ids:
            store.append([NewEvent(s, *registry.encode(signed(s, i))) for i in range(events)])

        def once() -> float:
            def body() -> float:
                n = 0
                for s in ids:
                    for e in store.read_stream(s):
                        e.data  # noqa: B018
                        n += 1
                return n

            return timed(body)

        return once

    on, off = registries()
    return side(on), side(off)


def commands(kind: str, count: int, fold: int = 20) -> tuple[Once, Once]:
    """``count`` commands per repetition: ``signup`` (a new subject: a key is created and
    three fields encrypted), ``fold`` (folds ``fold`` Signed events, appends one), or
    ``plain`` (an event without personal fields through each codec)."""

    def side(registry: EventRegistry) -> Once:
        def once() -> float:
            store = MemoryStore(registry=registry, state_cache=0)
            ids = [f"c-{next(_ids)}" for _ in range(count)]
            if kind == "fold":
                for s in ids:
                    store.append([NewEvent(s, *registry.encode(signed(s, i))) for i in range(fold)])
            make = {"signup": SignUp, "fold": Update}.get(kind)

            def body() -> float:
                if make is None:
                    for s in ids:
                        execute_sync(store, Pay(account=s))
                else:
                    for s in ids:
                        execute_sync(store, make(customer=s))
                return len(ids)

            return timed(body)

        return once

    on, off = registries()
    return side(on), side(off)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the same classes through a PostgresStore, keys in a PostgresKeyStore


class PgShred:
    """Two migrated schemas on ``dsn``: one whose registry shreds (keys in its own
    ``subject_keys``), one plain; sequential commands and paged reads on each."""

    def __init__(self, dsn: str, read_events: int, subjects: int) -> None:
        from eventcore.postgres import PostgresStore
        from eventcore.shredding.postgres import PostgresKeyStore

        self.loop = asyncio.new_event_loop()
        run = self.loop.run_until_complete
        self.keys = PostgresKeyStore(dsn, schema="bench_shred_on", cache_ttl=600.0)
        on = EventRegistry(ShreddingCodec(self.keys))
        _, off = registries()
        on.register("bench.shred.Signed", Signed)
        on.register("bench.shred.Paid", Paid)
        self.stores: dict[str, Any] = {}
        for side, registry in (("on", on), ("off", off)):
            schema = f"bench_shred_{side}"
            run(_drop(dsn, schema))
            store = PostgresStore(dsn, schema=schema, registry=registry, max_size=2)
            run(store.open())
            run(store.migrate())
            self.stores[side] = store
            for start in range(0, read_events, 1000):
                batch = [
                    NewEvent(f"r-{i % subjects}", *registry.encode(signed(f"r-{i % subjects}", i)))
                    for i in range(start, min(read_events, start + 1000))
                ]
                run(store.append(batch))
        self.dsn = dsn
        self.read_events = read_events

    def command(self, side: str, count: int) -> Once:
        """``count`` SignUp commands on new streams, one after the other (c1)."""
        store = self.stores[side]

        async def go(ids: list[str]) -> None:
            for s in ids:
                await execute(store, SignUp(customer=s))

        def once() -> float:
            ids = [f"c-{next(_ids)}" for _ in range(count)]
            return timed(lambda: (self.loop.run_until_complete(go(ids)), len(ids))[1])

        return once

    def read(self, side: str) -> Once:
        """read_all in pages of 1000 over the filled log, ``.data`` on every event."""
        store = self.stores[side]

        async def go() -> int:
            n, after = 0, 0
            while True:
                page = await store.read_all(after_position=after, limit=1000)
                for e in page:
                    e.data  # noqa: B018
                n += len(page)
                if len(page) < 1000:
                    return n
                after = page[-1].position

        return lambda: timed(lambda: self.loop.run_until_complete(go()))

    def close(self) -> None:
        """Close the stores and the key store, drop both schemas."""
        run = self.loop.run_until_complete
        for side, store in self.stores.items():
            run(store.close())
            run(_drop(self.dsn, f"bench_shred_{side}"))
        self.keys.close()
        self.loop.close()


async def _drop(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
