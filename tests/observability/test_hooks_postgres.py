"""Metrics, logs and traces for commands on the PostgreSQL store (async executor)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from eventcore import BusinessRuleViolation, execute
from eventcore.logs import LoggingHook
from eventcore.metrics import PrometheusHook
from eventcore.tracing import TracingHook, link_for

from .domain import Deposit, Open

pytestmark = pytest.mark.postgres


async def test_all_three_hooks_on_postgres(
    postgres_store: Any, use_hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_hook(PrometheusHook(registry))
    use_hook(TracingHook(provider))
    use_hook(LoggingHook())
    caplog.set_level(logging.DEBUG, logger="eventcore")

    await execute(postgres_store, Open(account="acc-1", owner="ann"))
    await execute(postgres_store, Deposit(account="acc-1", amount=4))
    with pytest.raises(BusinessRuleViolation):
        await execute(postgres_store, Deposit(account="acc-1", amount=0))

    def commands(outcome: str) -> float | None:
        return registry.get_sample_value(
            "eventcore_commands_total", {"command_type": "Deposit", "outcome": outcome}
        )

    assert (commands("success"), commands("rejected")) == (1, 1)
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    executes = [s for s in spans.values() if s.name.startswith("execute ")]
    assert len(executes) == 3
    # the traceparent written into PostgreSQL's metadata links back to the exact span
    events = await postgres_store.read_stream("acc-1")
    assert len(events) == 3
    for event in events:
        link = link_for(event)
        assert link is not None and link.context.span_id in spans
        assert event.metadata.correlation_id == uuid.UUID(int=link.context.trace_id)
    records = [r for r in caplog.records if r.name == "eventcore"]
    assert [r.outcome for r in records] == ["success", "success", "rejected"]  # type: ignore[attr-defined]
