"""Read a projection runner's batch report the same way in every hook (internal).

Runners pass :class:`~eventcore.observe.ProjectionBatchReport`; the hooks read it by
attribute name with fallbacks, so a user's own runner may pass any object with
``projection`` (or ``name``), ``position``, ``head``, ``events`` (a list of
:class:`~eventcore.RecordedEvent`, or a count) and optionally ``count``, ``seconds``,
``started_at`` (wall clock), ``lag_events`` and ``lag_seconds``. A report that has
``lag_events = None`` means "unknown" (PostgreSQL positions are sparse, so ``head -
position`` is not a count of events there); only a report without the attribute gets
``head - position``.
"""

from __future__ import annotations

import time
from typing import Any


def projection_name(report: Any) -> str:
    """The projection name a batch report carries (``projection`` or ``name``)."""
    name = getattr(report, "projection", None)
    if name is None:
        name = getattr(report, "name", "unknown")
    return name if isinstance(name, str) else str(getattr(name, "name", name))


def events_of(report: Any) -> list[Any]:
    """The recorded events of a batch, when the report lists them (else empty)."""
    events = getattr(report, "events", None)
    return list(events) if isinstance(events, list | tuple) else []


def event_count(report: Any) -> int:
    """How many events a batch report covers (``events`` may be a count or a list)."""
    count = getattr(report, "count", None)
    if isinstance(count, int):
        return count
    events: Any = getattr(report, "events", None)
    if events is None:
        return 0
    return events if isinstance(events, int) else len(events)


def lag_events_of(report: Any) -> int | None:
    """Events the projection is behind: the report's figure, else ``head - position``."""
    if hasattr(report, "lag_events"):
        lag = report.lag_events
        return None if lag is None else int(lag)
    position = getattr(report, "position", None)
    head = getattr(report, "head", None)
    if position is None or head is None:
        return None
    return max(0, int(head) - int(position))


def lag_seconds_of(report: Any, lag_events: int | None) -> float | None:
    """A batch's lag in seconds: the report's own figure, else its last event's age."""
    lag = getattr(report, "lag_seconds", None)
    if lag is not None:
        return float(lag)
    if lag_events == 0:
        return 0.0
    events = events_of(report)
    if events:
        recorded_at = getattr(events[-1], "recorded_at", None)
        if recorded_at is not None:
            return max(0.0, time.time() - float(recorded_at.timestamp()))
    return None


def batch_fields(report: Any) -> dict[str, Any]:
    """The structured log fields of one batch."""
    seconds = getattr(report, "seconds", None)
    lag = lag_events_of(report)
    return {
        "projection": projection_name(report),
        "position": getattr(report, "position", None),
        "head": getattr(report, "head", None),
        "events": event_count(report),
        "lag_events": lag,
        "duration_ms": round(seconds * 1000, 3) if seconds is not None else None,
    }
