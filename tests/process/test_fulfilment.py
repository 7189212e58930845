"""The order fulfilment example (examples/fulfilment.py) on every store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from examples.fulfilment import Fulfilment, fold_count, run_shop

from eventcore.process import ProcessRunner
from eventcore.projection import MemoryCheckpointStore
from tests.projection.conftest import all_events


async def stock(store: Any, sku: str) -> int:
    count = 0
    for recorded in await store.read_stream(f"stock-{sku}"):
        count = fold_count(count, recorded.data)
    return count


async def test_orders_ship_or_are_compensated(store: Any) -> None:
    statuses = await run_shop(store, datetime.now(UTC))
    assert statuses == {
        "1": "shipped",
        "2": "cancelled (payment declined)",
        "3": "cancelled (out of stock)",
        "4": "cancelled (not paid in time)",
    }
    assert await stock(store, "lamp") == 2  # 3 - order 1's; orders 2 and 4 gave theirs back
    wallet = [e.data for e in await store.read_stream("wallet-ann")]
    assert [type(d).__name__ for d in wallet] == ["FundsAdded", "PaymentCharged"]
    assert await store.read_stream("wallet-bob") != []


async def test_every_step_is_caused_by_the_one_before(store: Any) -> None:
    await run_shop(store, datetime.now(UTC))
    placed, *steps = await store.read_stream("order-1")
    assert [e.event_type for e in steps] == [
        "shop.StockReserved",
        "shop.PaymentCharged",
        "shop.OrderShipped",
    ]
    previous = placed
    for step in steps:
        assert step.metadata.causation_id == previous.event_id
        assert step.metadata.correlation_id == placed.event_id
        previous = step


async def test_running_it_all_again_changes_nothing(store: Any) -> None:
    now = datetime.now(UTC)
    await run_shop(store, now)
    before = [(e.event_id, e.stream_id) for e in await all_events(store)]
    again = ProcessRunner(store, Fulfilment(store), checkpoints=MemoryCheckpointStore())
    await again.run_until_caught_up()  # every event redelivered from position 0
    assert await again.fire_due() == 0
    assert [(e.event_id, e.stream_id) for e in await all_events(store)] == before
    assert await again.dead_letters("fulfilment") == []


def test_the_script_prints_each_outcome() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "fulfilment.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "order 1: shipped",
        "order 2: cancelled (payment declined)",
        "order 3: cancelled (out of stock)",
        "order 4: cancelled (not paid in time)",
        "lamps left: 2",
    ]
