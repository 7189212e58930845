"""Upcasting in projections: type filters by registered name, columnar batches coded by
name, and failure strategies for an event that does not decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from eventcore import MemoryStore, NewEvent
from eventcore.errors import EventDecodeError
from eventcore.projection import (
    FailureStrategy,
    MemoryCheckpointStore,
    ProjectionError,
    ProjectionRunner,
)
from eventcore.registry import EventRegistry, event, upcaster

OLD = EventRegistry()
NEW = EventRegistry()


@event("proj.ItemAdded", registry=OLD)
@dataclass(frozen=True)
class ItemAddedV1:
    sku: str
    count: int


@event("proj.ProductAdded", version=2, aliases=("proj.ItemAdded",), registry=NEW)
@dataclass(frozen=True)
class ProductAdded:
    sku: str
    qty: int


@upcaster("proj.ProductAdded", from_version=1, registry=NEW)
def count_to_qty(data: dict[str, Any]) -> dict[str, Any]:
    return {"sku": data["sku"], "qty": data["count"]}


@event("proj.Other", registry=NEW)
@dataclass(frozen=True)
class Other:
    n: int


def evolved_store() -> MemoryStore:
    """Positions 1-5: v1 under the old name, other, v2, other, v2."""
    store = MemoryStore(registry=NEW)
    store.append([NewEvent("cart-1", *OLD.encode(ItemAddedV1("a", 1)))])
    store.append([NewEvent("cart-1", *NEW.encode(Other(1)))])
    store.append([NewEvent("cart-2", *NEW.encode(ProductAdded("b", 2)))])
    store.append([NewEvent("cart-2", *NEW.encode(Other(2)))])
    store.append([NewEvent("cart-3", *NEW.encode(ProductAdded("c", 3)))])
    return store


def runner(store: MemoryStore, projection: Any, **kw: Any) -> ProjectionRunner:
    kw.setdefault("checkpoints", MemoryCheckpointStore())
    return ProjectionRunner(store, projection, page_size=2, poll_interval=0.05, **kw)


async def test_a_type_filter_by_name_delivers_every_version_and_alias_upcast() -> None:
    class Products:
        name = "products"
        event_types = ("proj.ProductAdded",)

        def __init__(self) -> None:
            self.seen: list[tuple[int, str, int, Any]] = []

        def apply(self, e: Any) -> None:
            self.seen.append((e.position, e.event_type, e.event_version, e.data))

    proj = Products()
    await runner(evolved_store(), proj).run_until_caught_up()
    assert proj.seen == [
        (1, "proj.ProductAdded", 1, ProductAdded("a", 1)),
        (3, "proj.ProductAdded", 2, ProductAdded("b", 2)),
        (5, "proj.ProductAdded", 2, ProductAdded("c", 3)),
    ]


async def test_columnar_batches_code_each_type_once_by_name() -> None:
    class Counts:
        name = "counts"

        def __init__(self) -> None:
            self.counts: dict[str, int] = {}
            self.names: list[str] = []

        def apply_columns(self, batch: Any) -> None:
            c = np.bincount(batch.type_codes, minlength=len(batch.type_names))
            for code, n in enumerate(c):
                name = batch.type_names[code]
                self.counts[name] = self.counts.get(name, 0) + int(n)
            self.names = list(batch.type_names)

    class Filtered:
        name = "filtered"
        event_types = ("proj.ProductAdded",)

        def __init__(self) -> None:
            self.positions: list[int] = []

        def apply_columns(self, batch: Any) -> None:
            assert {batch.type_names[c] for c in batch.type_codes} <= {"proj.ProductAdded"}
            self.positions += [int(p) for p in batch.positions]

    counts, filtered = Counts(), Filtered()
    await runner(evolved_store(), [counts, filtered]).run_until_caught_up()
    assert counts.names == ["proj.ProductAdded", "proj.Other"]
    assert counts.counts == {"proj.ProductAdded": 3, "proj.Other": 2}
    assert filtered.positions == [1, 3, 5]


def broken_store() -> MemoryStore:
    """Position 2 holds a stored version this registry cannot decode."""
    store = MemoryStore(registry=NEW)
    store.append([NewEvent("cart-1", *NEW.encode(ProductAdded("a", 1)))])
    store.append([NewEvent("cart-1", "proj.ProductAdded", b"\xc1")])
    store.append([NewEvent("cart-1", *NEW.encode(ProductAdded("b", 2)))])
    return store


class Applier:
    name = "applier"

    def __init__(self, on_error: FailureStrategy) -> None:
        self.on_error = on_error
        self.calls = 0
        self.data: list[Any] = []

    def apply(self, e: Any) -> None:
        self.calls += 1
        self.data.append(e.data)


async def test_an_undecodable_event_is_dead_lettered_without_retries() -> None:
    proj = Applier(FailureStrategy.retry(3, initial_delay=0.001, then="skip"))
    checkpoints = MemoryCheckpointStore()
    await runner(broken_store(), proj, checkpoints=checkpoints).run_until_caught_up()
    assert proj.data == [ProductAdded("a", 1), ProductAdded("b", 2)]
    assert proj.calls == 3  # the undecodable event once: a retry cannot help
    [letter] = checkpoints.letters
    assert (letter.position, letter.stream_id, letter.event_type) == (
        2,
        "cart-1",
        "proj.ProductAdded",
    )
    assert "EventDecodeError" in letter.error and "position 2" in letter.error


async def test_undecodable_skip_with_stop_for_everything_else() -> None:
    proj = Applier(FailureStrategy.stop(undecodable="skip"))
    checkpoints = MemoryCheckpointStore()
    await runner(broken_store(), proj, checkpoints=checkpoints).run_until_caught_up()
    assert [d.position for d in checkpoints.letters] == [2]
    assert proj.data == [ProductAdded("a", 1), ProductAdded("b", 2)]

    class Failing(Applier):
        def apply(self, e: Any) -> None:
            if e.position == 3:
                raise RuntimeError("read model broke")
            super().apply(e)

    other = Failing(FailureStrategy.stop(undecodable="skip"))
    with pytest.raises(ProjectionError) as info:
        await runner(broken_store(), other).run_until_caught_up()
    assert info.value.position == 3


async def test_undecodable_stop_with_skip_for_everything_else() -> None:
    proj = Applier(FailureStrategy(then="skip", undecodable="stop"))
    with pytest.raises(ProjectionError) as info:
        await runner(broken_store(), proj).run_until_caught_up()
    assert info.value.position == 2
    assert isinstance(info.value.__cause__, EventDecodeError)


def test_a_wrong_undecodable_value_is_refused() -> None:
    with pytest.raises(ValueError, match="undecodable"):
        FailureStrategy(undecodable="ignore")  # type: ignore[arg-type]
