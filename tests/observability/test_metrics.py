"""PrometheusHook: counter and histogram values for a known sequence of commands."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventcore import MemoryStore, execute, execute_sync
from eventcore.metrics import PrometheusHook
from eventcore.observe import ProjectionBatchReport
from eventcore.testing import FaultyStore

from .domain import Deposit, Open, run_sequence


@pytest.fixture
def registry(use_hook: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    use_hook(PrometheusHook(registry))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_commands_events_retries_and_durations(registry: CollectorRegistry) -> None:
    run_sequence(FaultyStore())

    def commands(ctype: str, outcome: str) -> float | None:
        return value(registry, "eventcore_commands_total", command_type=ctype, outcome=outcome)

    assert commands("Open", "success") == 1
    assert commands("Deposit", "success") == 1
    assert commands("Deposit", "rejected") == 1
    assert commands("Deposit", "conflict-exhausted") == 1
    assert commands("Open", "error") == 1
    assert commands("Open", "rejected") is None

    events = "eventcore_events_written_total"
    assert value(registry, events, event_type="obs.Opened") == 1
    assert value(registry, events, event_type="obs.Deposited") == 2  # only the successful one

    retries = "eventcore_command_retries_total"
    # one retry before the success, two before giving up after three attempts
    assert value(registry, retries, command_type="Deposit", reason="conflict") == 3
    assert value(registry, retries, command_type="Open", reason="conflict") is None

    def observations(ctype: str, phase: str) -> float | None:
        return value(
            registry, "eventcore_command_duration_seconds_count", command_type=ctype, phase=phase
        )

    assert observations("Deposit", "total") == 3
    assert observations("Deposit", "read_streams") == 3
    assert observations("Deposit", "handle_command") == 2  # the rejection never got to write
    assert observations("Deposit", "write_events") == 2
    assert observations("Open", "total") == 2
    assert observations("Open", "write_events") == 2
    total = value(
        registry, "eventcore_command_duration_seconds_sum", command_type="Deposit", phase="total"
    )
    parts = sum(
        value(registry, "eventcore_command_duration_seconds_sum", command_type="Deposit", phase=p)
        or 0.0
        for p in ("read_streams", "handle_command", "write_events")
    )
    assert total is not None and 0 < parts <= total
    assert b"eventcore_commands_total" in generate_latest(registry)


async def test_the_async_executor_reports_the_same(registry: CollectorRegistry) -> None:
    store = MemoryStore()
    await execute(store, Open(account="acc-9", owner="ann"))
    await execute(store, Deposit(account="acc-9", amount=1))
    assert (
        value(registry, "eventcore_commands_total", command_type="Deposit", outcome="success") == 1
    )
    assert value(registry, "eventcore_events_written_total", event_type="obs.Deposited") == 2


def test_namespace_and_a_registry_per_hook(use_hook: Any) -> None:
    registry = CollectorRegistry()
    use_hook(PrometheusHook(registry, namespace="bank"))
    execute_sync(MemoryStore(), Open(account="acc-1", owner="ann"))
    assert (
        registry.get_sample_value(
            "bank_commands_total", {"command_type": "Open", "outcome": "success"}
        )
        == 1
    )
    assert registry.get_sample_value("eventcore_commands_total", {}) is None


def Batch(
    projection: str, position: int, head: int, events: list[Any], *, dense: bool = True
) -> ProjectionBatchReport:
    """A batch report as the runner builds it (lag_events None where positions are sparse)."""
    return ProjectionBatchReport(
        projection=projection,
        position=position,
        head=head,
        events=events,
        count=len(events),
        seconds=0.01,
        started_at=time.time() - 0.01,
        lag_events=max(0, head - position) if dense else None,
        lag_seconds=0.0 if position == head else None,
    )


@dataclass
class Recorded:
    position: int
    event_type: str = "obs.Deposited"


def test_projection_gauges_and_dead_letters() -> None:
    registry = CollectorRegistry()
    prom = PrometheusHook(registry)
    prom.after_projection_batch(Batch("balances", 40, 100, [Recorded(p) for p in range(31, 41)]))
    labels = {"projection": "balances"}
    assert value(registry, "eventcore_projection_position", **labels) == 40
    assert value(registry, "eventcore_projection_head", **labels) == 100
    assert value(registry, "eventcore_projection_lag_events", **labels) == 60
    assert value(registry, "eventcore_projection_events_total", **labels) == 10
    assert value(registry, "eventcore_projection_batch_duration_seconds_count", **labels) == 1
    prom.after_projection_batch(Batch("balances", 100, 100, [Recorded(p) for p in range(41, 101)]))
    assert value(registry, "eventcore_projection_lag_events", **labels) == 0
    assert value(registry, "eventcore_projection_lag_seconds", **labels) == 0
    assert value(registry, "eventcore_projection_events_total", **labels) == 70
    # PostgreSQL: positions are sparse, the runner leaves lag_events unknown: gauge untouched
    pg = {"projection": "pg"}
    prom.after_projection_batch(Batch("pg", 5 << 20, 9 << 20, [Recorded(5 << 20)], dense=False))
    assert value(registry, "eventcore_projection_position", **pg) == 5 << 20
    assert value(registry, "eventcore_projection_lag_events", **pg) is None
    assert value(registry, "eventcore_projection_events_total", **pg) == 1

    prom.on_dead_letter("balances", Recorded(7), ValueError("boom"))
    prom.on_dead_letter("balances", Recorded(8), ValueError("boom"))
    assert (
        value(
            registry,
            "eventcore_projection_dead_letters_total",
            projection="balances",
            event_type="obs.Deposited",
        )
        == 2
    )


def test_state_cache_hits_misses_and_evictions(registry: CollectorRegistry) -> None:
    from eventcore.examples import bank
    from eventcore.state_cache import StateCache

    store = MemoryStore(registry=bank.registry, state_cache=StateCache(1, min_events=0))
    for account in ("a", "b"):
        execute_sync(store, bank.OpenAccount(account=account, owner="o"))
    execute_sync(store, bank.Deposit(account="a", amount=bank.Money(1)))  # miss, kept
    execute_sync(store, bank.Deposit(account="a", amount=bank.Money(1)))  # hit
    execute_sync(store, bank.Deposit(account="b", amount=bank.Money(1)))  # miss; evicts a

    def cache(ctype: str, result: str) -> float | None:
        return value(registry, "eventcore_state_cache_total", command_type=ctype, result=result)

    assert cache("Deposit", "hit") == 1
    assert cache("Deposit", "miss") == 2
    assert cache("Deposit", "evict") == 1  # a's entry, when b's was kept
    assert cache("OpenAccount", "miss") == 2
    assert cache("OpenAccount", "evict") == 2  # a room of one: each put evicts the last
