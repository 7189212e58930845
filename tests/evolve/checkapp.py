"""Apps for ``eventcore check --app`` in tests/evolve/test_check.py.

``good``: a store whose old versions and old names all upcast to the current classes.
``bad``: the same with one more stored version that nothing can decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventcore import MemoryStore, NewEvent
from eventcore.registry import EventRegistry, event, upcaster

OLD = EventRegistry()


@event("chk.ItemAdded", registry=OLD)
@dataclass(frozen=True)
class ItemAddedV1:
    sku: str
    count: int


class App:
    """An app object: its event types in ``registry``, its ``store``."""

    def __init__(self, *, broken: bool) -> None:
        self.registry = EventRegistry()

        @event("chk.ProductAdded", version=2, aliases=("chk.ItemAdded",), registry=self.registry)
        @dataclass(frozen=True)
        class ProductAdded:
            sku: str
            qty: int

        @upcaster("chk.ProductAdded", from_version=1, registry=self.registry)
        def count_to_qty(data: dict[str, Any]) -> dict[str, Any]:
            return {"sku": data["sku"], "qty": data["count"]}

        self.store = MemoryStore(registry=self.registry)
        for i in range(3):
            self.store.append([NewEvent(f"cart-{i}", *OLD.encode(ItemAddedV1(f"s{i}", i)))])
        for i in range(2):
            self.store.append([NewEvent(f"cart-{i}", *self.registry.encode(ProductAdded("x", i)))])
        if broken:
            # a payload of version 2 that lacks qty: a deploy changed the class in place
            self.store.append(
                [NewEvent("cart-9", "chk.ProductAdded@v2", OLD.encode(ItemAddedV1("y", 1))[1])]
            )


good = App(broken=False)
bad = App(broken=True)


class PgApp:
    """Event types only (``registry``): the store comes from --dsn."""

    def __init__(self) -> None:
        self.registry = App(broken=False).registry


pg = PgApp()
