"""Crypto-shredding workloads: the same work with personal fields encrypted, and without.

Both sides use the same event classes; "on" registers them in a registry whose codec is
a ``ShreddingCodec`` over an in-memory key store, "off" in a plain ``EventRegistry``
(msgspec ignores the ``Personal`` annotations, so the payload is the plain event). Each
workload returns ``(on, off)``: one timed repetition of each side, as rates.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Annotated, Any

from benches.core import timed
from eventcore import Command, EventRegistry, MemoryStore, NewEvent, StreamId, execute_sync
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
