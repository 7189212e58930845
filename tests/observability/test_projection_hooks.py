"""The projection runner reports batches and dead letters to the hooks."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from eventcore import MemoryStore, execute_sync
from eventcore.metrics import PrometheusHook
from eventcore.projection import MemoryCheckpointStore, ProjectionRunner

from .cliapp import Counts
from .domain import Deposit, Open


async def test_runner_batches_and_dead_letters_reach_prometheus(use_hook: Any) -> None:
    registry = CollectorRegistry()
    use_hook(PrometheusHook(registry))
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    execute_sync(store, Deposit(account="acc-1", amount=13))  # Counts dead-letters it
    runner = ProjectionRunner(store, [Counts()], checkpoints=MemoryCheckpointStore())
    await runner.run_until_caught_up()
    labels = {"projection": "counts"}
    assert registry.get_sample_value("eventcore_projection_position", labels) == 3
    assert registry.get_sample_value("eventcore_projection_head", labels) == 3
    assert registry.get_sample_value("eventcore_projection_lag_events", labels) == 0
    assert (
        registry.get_sample_value(
            "eventcore_projection_dead_letters_total",
            {"projection": "counts", "event_type": "obs.Deposited"},
        )
        == 1
    )


async def test_runner_batch_spans_link_to_the_writing_commands(use_hook: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from eventcore.tracing import TracingHook

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_hook(TracingHook(provider))
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    execute_sync(store, Deposit(account="acc-1", amount=13))
    runner = ProjectionRunner(store, [Counts()], checkpoints=MemoryCheckpointStore())
    await runner.run_until_caught_up()
    spans = exporter.get_finished_spans()
    writers = {s.context.span_id for s in spans if s.name.startswith("execute ")}
    batches = [s for s in spans if s.name == "projection counts"]
    assert batches and batches[0].attributes["eventcore.events"] == 3
    assert {link.context.span_id for link in batches[0].links} == writers
    (letter,) = [s for s in spans if s.name == "dead_letter counts"]
    assert letter.links[0].context.span_id in writers
