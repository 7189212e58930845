"""Order fulfilment with a process manager: reserve stock, charge, ship, compensate.

An order is placed; the process manager ``Fulfilment`` reacts to each step's event with
the next command, and to a failure with the compensation:

- ``OrderPlaced`` -> ``ReserveStock`` and, scheduled 15 minutes later, ``CancelUnpaidOrder``;
- ``StockReserved`` -> ``ChargeCustomer``; ``StockUnavailable`` -> ``CancelOrder``;
- ``PaymentCharged`` -> ``ShipOrder``;
- ``PaymentDeclined`` -> ``CancelOrder``, which also puts the reserved stock back.

Every command is executed exactly once per event (its idempotency key comes from the
event), with the event as its causation. Run it: ``python examples/fulfilment.py``; it
places orders (some for stock that runs out, some for customers who cannot pay, some
whose payment never comes), runs the process manager, moves the clock past the deadline,
and prints each order's outcome and the stock left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventcore import (
    Command,
    MemoryStore,
    NewEvent,
    RecordedEvent,
    StreamId,
    default_registry,
    event,
    execute,
    stream,
)
from eventcore.process import ProcessRunner, Schedule
from eventcore.projection import FailureStrategy

# -- events -------------------------------------------------------------------------


@event("shop.OrderPlaced")
@dataclass(frozen=True)
class OrderPlaced:
    order: str
    sku: str
    quantity: int
    customer: str
    amount: int
    pays_later: bool = False


@event("shop.StockAdded")
@dataclass(frozen=True)
class StockAdded:
    quantity: int


@event("shop.StockReserved")
@dataclass(frozen=True)
class StockReserved:
    order: str
    quantity: int


@event("shop.StockUnavailable")
@dataclass(frozen=True)
class StockUnavailable:
    order: str


@event("shop.StockReleased")
@dataclass(frozen=True)
class StockReleased:
    order: str
    quantity: int


@event("shop.FundsAdded")
@dataclass(frozen=True)
class FundsAdded:
    amount: int


@event("shop.PaymentCharged")
@dataclass(frozen=True)
class PaymentCharged:
    order: str
    amount: int


@event("shop.PaymentDeclined")
@dataclass(frozen=True)
class PaymentDeclined:
    order: str


@event("shop.OrderShipped")
@dataclass(frozen=True)
class OrderShipped:
    order: str


@event("shop.OrderCancelled")
@dataclass(frozen=True)
class OrderCancelled:
    order: str
    reason: str


# -- state ----------------------------------------------------------------------------


@dataclass
class Order:
    """An order as its stream tells it."""

    placed: OrderPlaced | None = None
    reserved: bool = False
    paid: bool = False
    shipped: bool = False
    cancelled: str | None = None

    @property
    def status(self) -> str:
        """placed, reserved, paid, shipped or cancelled (with the reason)."""
        if self.cancelled is not None:
            return f"cancelled ({self.cancelled})"
        for flag, name in ((self.shipped, "shipped"), (self.paid, "paid")):
            if flag:
                return name
        return "reserved" if self.reserved else "placed"


def fold_order(order: Order, data: Any) -> Order:
    """One order event into the order's state."""
    match data:
        case OrderPlaced():
            order.placed = data
        case StockReserved():
            order.reserved = True
        case StockReleased():
            order.reserved = False
        case PaymentCharged():
            order.paid = True
        case OrderShipped():
            order.shipped = True
        case OrderCancelled(reason=reason):
            order.cancelled = reason
    return order


def fold_count(count: int, data: Any) -> int:
    """Stock or funds: what was added minus what was taken (and plus what came back)."""
    match data:
        case StockAdded(quantity=n) | StockReleased(quantity=n):
            return count + n
        case StockReserved(quantity=n):
            return count - n
        case FundsAdded(amount=n):
            return count + n
        case PaymentCharged(amount=n):
            return count - n
    return count


def order_stream(order: str) -> str:
    return f"order-{order}"


# -- commands -------------------------------------------------------------------------


class PlaceOrder(Command[Order, OrderPlaced]):
    """A customer places an order (the HTTP side of the shop)."""

    order: StreamId = stream()
    placed: OrderPlaced

    def initial_state(self) -> Order:
        return Order()

    def apply(self, state: Order, event: Any, stream_id: str) -> Order:
        return fold_order(state, event)

    def handle(self, state: Order) -> list[tuple[str, OrderPlaced]]:
        if state.placed is not None:
            return []
        return [(self.order, self.placed)]


class ReserveStock(Command[dict[str, Any], Any]):
    """Take ``quantity`` from the stock for the order, or say there is not enough."""

    order: StreamId = stream()
    stock: StreamId = stream()
    quantity: int

    def initial_state(self) -> dict[str, Any]:
        return {"order": Order(), "stock": 0}

    def apply(self, state: dict[str, Any], event: Any, stream_id: str) -> dict[str, Any]:
        if stream_id == self.order:
            fold_order(state["order"], event)
        else:
            state["stock"] = fold_count(state["stock"], event)
        return state

    def handle(self, state: dict[str, Any]) -> list[tuple[str, Any]]:
        order: Order = state["order"]
        if order.reserved or order.cancelled is not None:
            return []
        if state["stock"] < self.quantity:
            return [(self.order, StockUnavailable(self.order))]
        reserved = StockReserved(self.order, self.quantity)
        return [(self.stock, reserved), (self.order, reserved)]


class ChargeCustomer(Command[dict[str, Any], Any]):
    """Charge the customer's wallet for the order, or decline."""

    order: StreamId = stream()
    wallet: StreamId = stream()
    amount: int

    def initial_state(self) -> dict[str, Any]:
        return {"order": Order(), "funds": 0}

    def apply(self, state: dict[str, Any], event: Any, stream_id: str) -> dict[str, Any]:
        if stream_id == self.order:
            fold_order(state["order"], event)
        else:
            state["funds"] = fold_count(state["funds"], event)
        return state

    def handle(self, state: dict[str, Any]) -> list[tuple[str, Any]]:
        order: Order = state["order"]
        if order.paid or order.cancelled is not None:
            return []
        if state["funds"] < self.amount:
            return [(self.order, PaymentDeclined(self.order))]
        charged = PaymentCharged(self.order, self.amount)
        return [(self.wallet, charged), (self.order, charged)]


class ShipOrder(Command[Order, OrderShipped]):
    """Ship a paid order."""

    order: StreamId = stream()

    def initial_state(self) -> Order:
        return Order()

    def apply(self, state: Order, event: Any, stream_id: str) -> Order:
        return fold_order(state, event)

    def handle(self, state: Order) -> list[tuple[str, OrderShipped]]:
        if state.shipped or state.cancelled is not None:
            return []
        return [(self.order, OrderShipped(self.order))]


class CancelOrder(Command[dict[str, Any], Any]):
    """Cancel an order that is not paid yet and put its reserved stock back.

    Run by the process manager on a failure, and as the deadline "cancel if not paid
    within 15 minutes": a paid (or already cancelled) order makes it a no-op.
    """

    order: StreamId = stream()
    stock: StreamId = stream()
    reason: str

    def initial_state(self) -> dict[str, Any]:
        return {"order": Order()}

    def apply(self, state: dict[str, Any], event: Any, stream_id: str) -> dict[str, Any]:
        if stream_id == self.order:
            fold_order(state["order"], event)
        return state

    def handle(self, state: dict[str, Any]) -> list[tuple[str, Any]]:
        order: Order = state["order"]
        if order.paid or order.cancelled is not None or order.placed is None:
            return []
        out: list[tuple[str, Any]] = [(self.order, OrderCancelled(self.order, self.reason))]
        if order.reserved:
            released = StockReleased(self.order, order.placed.quantity)
            out += [(self.stock, released), (self.order, released)]
        return out


# -- the process manager --------------------------------------------------------------

PAYMENT_TIMEOUT = timedelta(minutes=15)


class Fulfilment:
    """Drives an order from placed to shipped, or cancels it and gives its stock back.

    It reads the order's ``OrderPlaced`` (the first event of its stream, never changed)
    when a step needs the order's details, so the same event always gives the same
    commands.
    """

    name = "fulfilment"
    stream_prefix = "order-"
    on_error = FailureStrategy.retry(5, then="skip")

    def __init__(self, store: Any) -> None:
        self.store = store

    async def react(self, event: RecordedEvent[Any]) -> list[Command[Any, Any] | Schedule]:
        data = event.data
        order = event.stream_id
        match data:
            case OrderPlaced():
                stock = f"stock-{data.sku}"
                return [
                    ReserveStock(order=order, stock=stock, quantity=data.quantity),
                    Schedule(
                        CancelOrder(order=order, stock=stock, reason="not paid in time"),
                        after=PAYMENT_TIMEOUT,
                    ),
                ]
            case StockReserved():
                placed = await self._placed(order)
                if placed.pays_later:
                    return []  # the customer pays by bank transfer (or never)
                wallet = f"wallet-{placed.customer}"
                return [ChargeCustomer(order=order, wallet=wallet, amount=placed.amount)]
            case StockUnavailable():
                return [await self._cancel(order, "out of stock")]
            case PaymentDeclined():
                return [await self._cancel(order, "payment declined")]
            case PaymentCharged():
                return [ShipOrder(order=order)]
        return []

    async def _placed(self, order: str) -> OrderPlaced:
        """The order's OrderPlaced: the first event of its stream."""
        (first,) = await self.store.read_stream(order, limit=1)
        placed: OrderPlaced = first.data
        return placed

    async def _cancel(self, order: str, reason: str) -> CancelOrder:
        placed = await self._placed(order)
        return CancelOrder(order=order, stock=f"stock-{placed.sku}", reason=reason)


async def order_status(store: Any, order: str) -> str:
    """An order's status from its stream."""
    state = Order()
    for recorded in await store.read_stream(order):
        fold_order(state, recorded.data)
    return state.status


async def add(store: Any, stream_id: str, data: Any) -> None:
    """Append one event (stock or funds arriving)."""
    await store.append([NewEvent(stream_id, *default_registry.encode(data))])


async def run_shop(store: Any, now: datetime) -> dict[str, str]:
    """Place the demo's orders, run the process manager, then pass the deadline.

    ``now`` is the clock the deadlines are checked against before the timeout passes;
    the second round checks them 16 minutes later. Returns each order's status.
    """
    await add(store, "stock-lamp", StockAdded(3))
    await add(store, "wallet-ann", FundsAdded(100))
    await add(store, "wallet-bob", FundsAdded(5))
    orders = [
        OrderPlaced("1", "lamp", 1, "ann", 40),  # shipped
        OrderPlaced("2", "lamp", 1, "bob", 40),  # payment declined: stock back
        OrderPlaced("3", "lamp", 5, "ann", 10),  # out of stock
        OrderPlaced("4", "lamp", 1, "ann", 40, pays_later=True),  # never paid
    ]
    for placed in orders:
        await execute(store, PlaceOrder(order=order_stream(placed.order), placed=placed))
    clock = [now]
    runner = ProcessRunner(store, Fulfilment(store), clock=lambda: clock[0])
    await runner.run_until_caught_up()  # every step, until nothing new is written
    assert await runner.fire_due() == 0  # nothing is due yet
    clock[0] = now + PAYMENT_TIMEOUT + timedelta(minutes=1)
    await runner.fire_due()  # cancels order 4 and gives its lamp back
    await runner.run_until_caught_up()
    return {o.order: await order_status(store, order_stream(o.order)) for o in orders}


def main() -> None:
    """Run the demo on the in-memory store and print what became of each order."""
    store = MemoryStore().aio
    statuses = asyncio.run(run_shop(store, datetime.now(UTC)))
    for order, status in statuses.items():
        print(f"order {order}: {status}")
    stock = 0
    for recorded in store.sync.read_stream("stock-lamp"):
        stock = fold_count(stock, recorded.data)
    print(f"lamps left: {stock}")


if __name__ == "__main__":
    main()
