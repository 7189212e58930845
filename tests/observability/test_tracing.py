"""TracingHook: spans from OpenTelemetry's in-memory exporter for a known sequence."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from eventcore import MemoryStore, Metadata, execute, execute_sync
from eventcore.testing import FaultyStore
from eventcore.tracing import TracingHook, link_for

from .domain import Deposit, Open, run_sequence
from .test_metrics import Batch


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


@pytest.fixture
def exporter(provider: TracerProvider, use_hook: Any) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_hook(TracingHook(provider))
    return exporter


def roots(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("execute ")]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def test_spans_for_a_known_sequence(exporter: InMemorySpanExporter) -> None:
    run_sequence(FaultyStore())
    spans = exporter.get_finished_spans()
    commands = sorted(roots(spans), key=lambda s: s.start_time or 0)
    assert [(s.name, s.attributes["eventcore.command.outcome"]) for s in commands] == [
        ("execute Open", "success"),
        ("execute Deposit", "success"),
        ("execute Deposit", "rejected"),
        ("execute Deposit", "conflict-exhausted"),
        ("execute Open", "error"),
    ]
    opened, retried, rejected, exhausted, failed = commands

    assert [c.name for c in children(spans, opened)] == [
        "read_streams",
        "handle_command",
        "write_events",
    ]
    attrs = opened.attributes
    assert attrs["eventcore.command.type"] == "Open"
    assert attrs["eventcore.streams"] == ("acc-1",)
    assert attrs["eventcore.stream_count"] == 1
    assert attrs["eventcore.events_written"] == 1
    assert attrs["eventcore.command.attempts"] == 1
    assert attrs["eventcore.positions"] == (1,)
    assert opened.status.status_code is StatusCode.UNSET

    # the retry: two attempts, each with its own phases, and a retry event between them
    phases = [(c.name, c.attributes["eventcore.attempt"]) for c in children(spans, retried)]
    assert phases == [
        ("read_streams", 1),
        ("handle_command", 1),
        ("write_events", 1),
        ("read_streams", 2),
        ("handle_command", 2),
        ("write_events", 2),
    ]
    assert retried.attributes["eventcore.command.attempts"] == 2
    assert retried.attributes["eventcore.positions"] == (2, 3)
    (retry,) = retried.events
    assert retry.name == "retry"
    assert retry.attributes["eventcore.retry.reason"] == "conflict"
    first_write = children(spans, retried)[2]
    assert retry.timestamp == first_write.end_time

    # phases nest inside their command span, in order
    for command in commands:
        previous = command.start_time
        for child in children(spans, command):
            assert command.start_time <= child.start_time <= child.end_time <= command.end_time
            assert child.start_time >= previous
            previous = child.end_time

    assert rejected.status.status_code is StatusCode.UNSET
    assert [e.name for e in rejected.events] == ["exception"]
    assert [c.name for c in children(spans, rejected)] == ["read_streams"]

    assert exhausted.status.status_code is StatusCode.ERROR
    assert exhausted.attributes["eventcore.command.attempts"] == 3
    assert exhausted.attributes["eventcore.events_written"] == 0
    assert [e.name for e in exhausted.events].count("retry") == 2

    assert failed.status.status_code is StatusCode.ERROR
    assert "StoreUnavailable" in (failed.status.description or "")


def test_the_command_span_is_a_child_of_the_current_span(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    store = MemoryStore()
    with provider.get_tracer("test").start_as_current_span("request") as request:
        execute_sync(store, Open(account="acc-1", owner="ann"))
    (command,) = roots(exporter.get_finished_spans())
    assert command.parent is not None
    assert command.parent.span_id == request.get_span_context().span_id
    trace_id = request.get_span_context().trace_id
    # the trace flows into the events' metadata
    (recorded,) = store.read_stream("acc-1")
    assert recorded.metadata.correlation_id == uuid.UUID(int=trace_id)
    traceparent = recorded.metadata.custom["traceparent"]
    flags = int(command.context.trace_flags)
    assert traceparent == f"00-{trace_id:032x}-{command.context.span_id:016x}-{flags:02x}"
    assert command.attributes["eventcore.correlation_id"] == str(uuid.UUID(int=trace_id))


async def test_async_execute_and_a_given_correlation_id(exporter: InMemorySpanExporter) -> None:
    store = MemoryStore()
    mine = uuid.uuid4()
    await execute(
        store,
        Deposit(account="acc-1", amount=2),
        metadata=Metadata(correlation_id=mine, user_id="ann", custom={"k": 1}),
    )
    (command,) = roots(exporter.get_finished_spans())
    first = store.read_stream("acc-1")[0]
    assert first.metadata.correlation_id == mine  # the caller's id wins
    assert first.metadata.user_id == "ann" and first.metadata.custom["k"] == 1
    assert first.metadata.custom["traceparent"].split("-")[2] == f"{command.context.span_id:016x}"


def test_without_a_provider_spans_are_no_ops_and_metadata_is_untouched(use_hook: Any) -> None:
    use_hook(TracingHook(trace.NoOpTracerProvider()))
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    (recorded,) = store.read_stream("acc-1")
    assert recorded.metadata == Metadata()


def test_projection_batch_spans_link_to_the_writing_commands(
    exporter: InMemorySpanExporter,
) -> None:
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    execute_sync(store, Deposit(account="acc-1", amount=2))
    # an event written without tracing: linked by its correlation id only
    other = uuid.uuid4()
    from eventcore.observe import hooks, remove_hook

    tracing = [h for h in hooks() if isinstance(h, TracingHook)]
    for h in tracing:
        remove_hook(h)
    execute_sync(store, Open(account="acc-2", owner="bob"), metadata=Metadata(correlation_id=other))
    execute_sync(store, Open(account="acc-3", owner="cy"))  # no metadata at all: no link
    events = store.read_all()
    writers = {s.context.span_id: s for s in roots(exporter.get_finished_spans())}

    tracing[0].after_projection_batch(Batch("balances", events[-1].position, 5, events))
    (batch,) = [s for s in exporter.get_finished_spans() if s.name == "projection balances"]
    assert batch.attributes["eventcore.events"] == 5
    assert batch.attributes["eventcore.position"] == 5
    assert batch.attributes["eventcore.lag_events"] == 0
    exact = [link for link in batch.links if link.context.span_id]
    assert {link.context.span_id for link in exact} == set(writers)  # one link per command
    (by_correlation,) = [link for link in batch.links if not link.context.span_id]
    assert by_correlation.context.trace_id == other.int
    assert link_for(events[-1]) is None


def test_dead_letter_span(exporter: InMemorySpanExporter) -> None:
    store = MemoryStore()
    execute_sync(store, Open(account="acc-1", owner="ann"))
    (event,) = store.read_all()
    (hook,) = [h for h in __import__("eventcore").observe.hooks() if isinstance(h, TracingHook)]
    hook.on_dead_letter("balances", event, ValueError("boom"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "dead_letter balances"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.links[0].context.trace_id == event.metadata.correlation_id.int


def test_phase_spans_can_be_turned_off(provider: TracerProvider, use_hook: Any) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_hook(TracingHook(provider, phase_spans=False))
    execute_sync(MemoryStore(), Open(account="acc-1", owner="ann"))
    assert [s.name for s in exporter.get_finished_spans()] == ["execute Open"]
