"""OpenTelemetry traces for commands and projections (needs ``opentelemetry-api``).

Install with ``pip install 'eventcore-py[otel]'`` (plus the SDK and an exporter of your
choice), then register the hook once::

    from eventcore.observe import add_hook
    from eventcore.tracing import TracingHook

    add_hook(TracingHook())   # uses the global TracerProvider

eventcore itself never imports OpenTelemetry; only this module does.

Spans of one command (all built from the executor's report, with its exact timings):

- ``execute <CommandType>`` (a child of the span current when the command ran), with
  attributes ``eventcore.command.type``, ``eventcore.command.outcome``,
  ``eventcore.command.attempts``, ``eventcore.streams``, ``eventcore.stream_count``,
  ``eventcore.events_written``, ``eventcore.positions`` (first 64), and
  ``eventcore.correlation_id``; one ``retry`` span event per retry (attempt, reason,
  delay); status ERROR (with the exception) for ``error`` and ``conflict-exhausted``;
  a rejected command records its exception but keeps status UNSET.
- children ``read_streams`` (reading and folding the streams: the stores do both in one
  pass, so there is no separate ``reconstruct_state`` step), ``handle_command`` and
  ``write_events``, once per attempt, with ``eventcore.attempt``.

Trace context flows into event metadata: :meth:`TracingHook.before_execute` sets the
command's ``correlation_id`` to the trace id (as a UUID) when the caller gave none, and
adds the W3C ``traceparent`` of the ``execute`` span to the metadata's custom fields. A
projection batch span (``projection <name>``) then carries a span link to the command
that wrote each of its events (from ``traceparent``; from the correlation id alone, a
link to that trace).
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "eventcore.tracing needs opentelemetry-api: pip install 'eventcore-py[otel]'"
    ) from exc

import eventcore
from eventcore._batch_report import event_count, events_of, lag_events_of, projection_name
from eventcore.metadata import Metadata
from eventcore.observe import CONFLICT_EXHAUSTED, ERROR, SUCCESS, Hook

if TYPE_CHECKING:
    from eventcore.observe import CommandReport

__all__ = ["TracingHook", "link_for"]

_MAX_POSITIONS = 64
_MAX_PENDING = 64
_TRACEPARENT = "traceparent"
_NO_CUSTOM: dict[str, Any] = {}

# The execute spans started by before_execute and not yet ended, innermost last.
_pending: ContextVar[tuple[tuple[Any, Any], ...]] = ContextVar("eventcore_tracing", default=())


class TracingHook(Hook):
    """A :class:`~eventcore.observe.Hook` that records commands and projection batches as spans.

    Args:
        tracer_provider: where spans go (default: the global ``TracerProvider``).
        correlation_id: set a command's correlation id to the trace id when it has none.
        traceparent: add the ``execute`` span's W3C ``traceparent`` to the metadata's
            custom fields (so projections can link to the exact span).
        max_links: the most span links one projection batch span carries.
        phase_spans: add the ``read_streams``/``handle_command``/``write_events`` child
            spans (False: one span per command, about a quarter of the cost).
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        correlation_id: bool = True,
        traceparent: bool = True,
        max_links: int = 32,
        phase_spans: bool = True,
    ) -> None:
        self.tracer = trace.get_tracer(
            "eventcore", eventcore.__version__, tracer_provider=tracer_provider
        )
        """The tracer spans are made with."""
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        self.max_links = max_links
        self.phase_spans = phase_spans

    def before_execute(self, command: Any, metadata: Metadata | None) -> Metadata | None:
        """Start the ``execute`` span; put its trace id and traceparent into the metadata."""
        span = self.tracer.start_span(
            f"execute {type(command).__name__}", start_time=time.time_ns()
        )
        pending = _pending.get()
        _pending.set((*pending[-_MAX_PENDING:], (command, span)))
        ctx = span.get_span_context()
        if not ctx.is_valid or not (self.correlation_id or self.traceparent):
            return metadata
        # read the fields off the given metadata (no empty Metadata built for None)
        given = metadata.correlation_id if metadata is not None else None
        correlation = given
        if correlation is None and self.correlation_id:
            correlation = uuid.UUID(int=ctx.trace_id)
        given_custom = metadata.custom if metadata is not None else _NO_CUSTOM
        custom = given_custom
        if self.traceparent and _TRACEPARENT not in custom:
            flags = int(ctx.trace_flags)
            custom = {
                **custom,
                _TRACEPARENT: f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags:02x}",
            }
        if correlation is given and custom is given_custom:
            return metadata
        return Metadata(
            causation_id=metadata.causation_id if metadata is not None else None,
            correlation_id=correlation,
            user_id=metadata.user_id if metadata is not None else None,
            custom=custom,
        )

    def after_execute(self, report: CommandReport) -> None:
        """Add the phase spans, attributes, retries and status; end the ``execute`` span."""
        span = self._take(report.command)
        base = int(report.started_at * 1e9) - report.start_ns  # perf_counter ns -> wall ns
        if span is None:  # registered between before_execute and now: start it late
            span = self.tracer.start_span(
                f"execute {report.command_type}", start_time=base + report.start_ns
            )
        result = report.result
        positions = list(result.positions) if result is not None else []
        streams = report.streams
        metadata = report.metadata
        correlation = metadata.correlation_id if metadata is not None else None
        attributes: dict[str, Any] = {
            "eventcore.command.type": report.command_type,
            "eventcore.command.outcome": report.outcome,
            "eventcore.command.attempts": report.attempts,
            "eventcore.streams": streams,
            "eventcore.stream_count": len(streams),
            "eventcore.events_written": len(positions),
        }
        if positions:
            attributes["eventcore.positions"] = positions[:_MAX_POSITIONS]
        if correlation is not None:
            attributes["eventcore.correlation_id"] = str(correlation)
        span.set_attributes(attributes)
        phase_spans = self.phase_spans
        parent = trace.set_span_in_context(span) if phase_spans else None
        start_span = self.tracer.start_span
        attempt_end: dict[int, int] = {}
        for name, attempt, start, end in report.trace:  # raw tuples: no Phase objects built
            if name == "retry":  # ("retry", attempt, reason, delay)
                span.add_event(
                    "retry",
                    {
                        "eventcore.attempt": attempt,
                        "eventcore.retry.reason": start,
                        "eventcore.retry.delay_s": end,
                    },
                    timestamp=attempt_end.get(attempt, base + report.end_ns),
                )
                continue
            attempt_end[attempt] = base + end
            if phase_spans:
                child = start_span(
                    name,
                    context=parent,
                    start_time=base + start,
                    attributes={"eventcore.attempt": attempt},
                )
                child.end(end_time=base + end)
        error = report.error
        if report.outcome != SUCCESS and error is not None:
            span.record_exception(error)
            if report.outcome in (ERROR, CONFLICT_EXHAUSTED):
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=base + report.end_ns)

    def after_projection_batch(self, report: Any) -> None:
        """Record a ``projection <name>`` span linked to the commands that wrote its events."""
        name = projection_name(report)
        events = events_of(report)
        end = time.time_ns()
        started_at = getattr(report, "started_at", None)
        seconds = getattr(report, "seconds", None)
        if started_at is not None:
            start = int(started_at * 1e9)
        elif seconds is not None:
            start = end - int(seconds * 1e9)
        else:
            start = end
        if seconds is not None:
            end = start + int(seconds * 1e9)
        attributes: dict[str, Any] = {
            "eventcore.projection": name,
            "eventcore.events": event_count(report),
        }
        for key in ("position", "head"):
            value = getattr(report, key, None)
            if value is not None:
                attributes[f"eventcore.{key}"] = int(value)
        lag = lag_events_of(report)
        if lag is not None:
            attributes["eventcore.lag_events"] = lag
        if events:
            attributes["eventcore.position.first"] = int(events[0].position)
        span = self.tracer.start_span(
            f"projection {name}",
            start_time=start,
            attributes=attributes,
            links=self._links(events),
        )
        span.end(end_time=max(start, end))

    def on_dead_letter(self, projection: str, event: Any, error: BaseException) -> None:
        """Record a ``dead_letter <projection>`` span (status ERROR) linked to the writer."""
        link = link_for(event)
        span = self.tracer.start_span(
            f"dead_letter {projection}",
            attributes={
                "eventcore.projection": projection,
                "eventcore.position": int(getattr(event, "position", 0) or 0),
                "eventcore.event_type": str(getattr(event, "event_type", "")),
                "eventcore.event_id": str(getattr(event, "event_id", "")),
            },
            links=[link] if link is not None else None,
        )
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def _links(self, events: list[Any]) -> list[Link]:
        """One link per distinct writing command among ``events`` (at most ``max_links``)."""
        links: list[Link] = []
        seen: set[tuple[int, int]] = set()
        for event in events:
            link = link_for(event)
            if link is None:
                continue
            key = (link.context.trace_id, link.context.span_id)
            if key in seen:
                continue
            seen.add(key)
            links.append(link)
            if len(links) >= self.max_links:
                break
        return links

    @staticmethod
    def _take(command: Any) -> Any:
        """Remove and return the pending ``execute`` span started for ``command``."""
        pending = _pending.get()
        for i in range(len(pending) - 1, -1, -1):
            if pending[i][0] is command:
                _pending.set(pending[:i] + pending[i + 1 :])
                return pending[i][1]
        return None


def link_for(event: Any) -> Link | None:
    """A span link to the command that wrote ``event`` (a :class:`~eventcore.RecordedEvent`).

    From the ``traceparent`` custom metadata field when present (the exact ``execute``
    span), else from the correlation id (the trace only); ``None`` when it has neither.
    """
    metadata = getattr(event, "metadata", None)
    if metadata is None:
        return None
    attributes: dict[str, Any] = {"eventcore.position": int(getattr(event, "position", 0) or 0)}
    parent = metadata.custom.get(_TRACEPARENT) if metadata.custom else None
    if isinstance(parent, str):
        parts = parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            try:
                context = SpanContext(
                    trace_id=int(parts[1], 16),
                    span_id=int(parts[2], 16),
                    is_remote=True,
                    trace_flags=TraceFlags(int(parts[3], 16)),
                )
            except ValueError:
                context = None
            if context is not None and context.is_valid:
                return Link(context, attributes)
    correlation = metadata.correlation_id
    if correlation is None:
        return None
    attributes["eventcore.correlation_id"] = str(correlation)
    context = SpanContext(trace_id=correlation.int, span_id=0, is_remote=True)
    return Link(context, attributes)
