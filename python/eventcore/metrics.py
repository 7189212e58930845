"""Prometheus metrics for commands and projections (needs ``prometheus-client``).

Install with ``pip install 'eventcore-py[prometheus]'``, then register the hook once::

    from eventcore.metrics import PrometheusHook
    from eventcore.observe import add_hook
    from prometheus_client import start_http_server

    add_hook(PrometheusHook())             # metrics go to prometheus_client.REGISTRY
    start_http_server(9464)                # or mount prometheus_client's ASGI/WSGI app

Metrics (``namespace`` defaults to ``eventcore``):

======================================================  ==========  ============================
name                                                    type        labels
======================================================  ==========  ============================
``eventcore_commands_total``                            counter     command_type, outcome
``eventcore_events_written_total``                      counter     event_type
``eventcore_command_retries_total``                     counter     command_type, reason
``eventcore_command_duration_seconds``                  histogram   command_type, phase
``eventcore_projection_position``                       gauge       projection
``eventcore_projection_head``                           gauge       projection
``eventcore_projection_lag_events``                     gauge       projection
``eventcore_projection_lag_seconds``                    gauge       projection
``eventcore_projection_events_total``                   counter     projection
``eventcore_projection_batch_duration_seconds``         histogram   projection
``eventcore_projection_dead_letters_total``             counter     projection, event_type
``eventcore_projection_reconnects_total``               counter     projection
======================================================  ==========  ============================

``outcome`` is ``success``, ``rejected``, ``conflict-exhausted`` or ``error``; ``reason`` is
``conflict`` or ``unavailable``; ``phase`` is ``read_streams`` (reading and folding, one
fused pass in the stores), ``handle_command``, ``write_events`` or ``total``. A phase's
observation is its time summed over the command's attempts, so ``total`` also includes
retry back-off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "eventcore.metrics needs prometheus-client: pip install 'eventcore-py[prometheus]'"
    ) from exc

from eventcore._batch_report import event_count, lag_events_of, lag_seconds_of, projection_name
from eventcore.observe import Hook

if TYPE_CHECKING:
    from eventcore.observe import CommandReport

__all__ = ["DEFAULT_BUCKETS", "PrometheusHook"]

DEFAULT_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram buckets in seconds: 50 µs up to 10 s."""

_PHASES = ("read_streams", "handle_command", "write_events")


class PrometheusHook(Hook):
    """A :class:`~eventcore.observe.Hook` that records commands and projections in Prometheus.

    Args:
        registry: the ``CollectorRegistry`` to register with (default: the global
            ``prometheus_client.REGISTRY``; one hook per registry).
        namespace: the prefix of every metric name.
        buckets: the duration histograms' bucket bounds, in seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "eventcore",
        *,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        """The registry the metrics live in."""
        common: dict[str, Any] = {"namespace": namespace, "registry": reg}
        self.commands = Counter(
            "commands",
            "Commands executed, by command type and outcome.",
            ["command_type", "outcome"],
            **common,
        )
        self.events_written = Counter(
            "events_written",
            "Events written by commands, by event type.",
            ["event_type"],
            **common,
        )
        self.retries = Counter(
            "command_retries",
            "Command retries, by command type and reason.",
            ["command_type", "reason"],
            **common,
        )
        self.duration = Histogram(
            "command_duration_seconds",
            "Command duration by phase (read_streams, handle_command, write_events, total).",
            ["command_type", "phase"],
            buckets=buckets,
            **common,
        )
        self.projection_position = Gauge(
            "projection_position",
            "Global position of the last event a projection handled.",
            ["projection"],
            **common,
        )
        self.projection_head = Gauge(
            "projection_head",
            "Head of the global log when a projection last checked.",
            ["projection"],
            **common,
        )
        self.projection_lag_events = Gauge(
            "projection_lag_events",
            "Events a projection is behind the head.",
            ["projection"],
            **common,
        )
        self.projection_lag_seconds = Gauge(
            "projection_lag_seconds",
            "Age of the last event a projection handled when it handled it (0 when caught up).",
            ["projection"],
            **common,
        )
        self.replica_lag_bytes = Gauge(
            "replica_lag_bytes",
            "WAL a PostgreSQL read replica has not replayed yet, at its last probe.",
            ["replica"],
            **common,
        )
        self.replica_lag_seconds = Gauge(
            "replica_lag_seconds",
            "Replay lag of a PostgreSQL read replica, at its last probe.",
            ["replica"],
            **common,
        )
        self.replica_in_rotation = Gauge(
            "replica_in_rotation",
            "1 while reads go to a PostgreSQL read replica, 0 while it is out of rotation.",
            ["replica"],
            **common,
        )
        self.projection_events = Counter(
            "projection_events", "Events applied by a projection.", ["projection"], **common
        )
        self.projection_batch_duration = Histogram(
            "projection_batch_duration_seconds",
            "Time a projection spent on one batch.",
            ["projection"],
            buckets=buckets,
            **common,
        )
        self.dead_letters = Counter(
            "projection_dead_letters",
            "Events a projection skipped after failing to apply them.",
            ["projection", "event_type"],
            **common,
        )
        self.reconnects = Counter(
            "projection_reconnects",
            "Times a projection found its store unavailable and retried.",
            ["projection"],
            **common,
        )
        self.state_cache = Counter(
            "state_cache",
            "Folded-state cache lookups and evictions, by command type and result "
            "(hit, miss, evict).",
            ["command_type", "result"],
            **common,
        )
        # label lookups are the expensive part of prometheus-client: cache the children
        self._cache_children: dict[tuple[str, str], Any] = {}
        self._command_children: dict[tuple[str, str], Any] = {}
        self._duration_children: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._event_children: dict[str, Any] = {}

    def after_execute(self, report: CommandReport) -> None:
        """Count the command, its events and retries; observe its phase durations."""
        ctype = report.command_type
        key = (ctype, report.outcome)
        counter = self._command_children.get(key)
        if counter is None:
            counter = self._command_children[key] = self.commands.labels(*key)
        counter.inc()
        durations = self._duration_children.get(ctype)
        if durations is None:
            labels = self.duration.labels
            durations = self._duration_children[ctype] = (
                labels(ctype, "read_streams"),
                labels(ctype, "handle_command"),
                labels(ctype, "write_events"),
                labels(ctype, "total"),
            )
        read = handle = write = 0
        reasons: list[str] = []
        for name, _, start, end in report.trace:  # raw tuples: no Phase objects built
            if name == "read_streams":
                read += end - start
            elif name == "handle_command":
                handle += end - start
            elif name == "write_events":
                write += end - start
            else:
                reasons.append(start)  # ("retry", attempt, reason, delay)
        if read:
            durations[0].observe(read / 1e9)
        if handle:
            durations[1].observe(handle / 1e9)
        if write:
            durations[2].observe(write / 1e9)
        durations[3].observe((report.end_ns - report.start_ns) / 1e9)
        for reason in reasons:
            self.retries.labels(ctype, reason).inc()
        if report.result is not None:
            events = self._event_children
            for event_type in report.event_types:
                child = events.get(event_type)
                if child is None:
                    child = events[event_type] = self.events_written.labels(event_type)
                child.inc()

    def after_projection_batch(self, report: Any) -> None:
        """Set a projection's position, head and lag gauges; count its events.

        Reads ``projection`` (name), ``position``, ``head``, ``events`` (count or list),
        ``seconds`` and, when present, ``lag_seconds`` or the last event's ``recorded_at``.
        """
        name = projection_name(report)
        position = getattr(report, "position", None)
        head = getattr(report, "head", None)
        if position is not None:
            self.projection_position.labels(name).set(position)
        if head is not None:
            self.projection_head.labels(name).set(head)
        lag = lag_events_of(report)
        if lag is not None:
            self.projection_lag_events.labels(name).set(lag)
        lag_seconds = lag_seconds_of(report, lag)
        if lag_seconds is not None:
            self.projection_lag_seconds.labels(name).set(lag_seconds)
        count = event_count(report)
        if count:
            self.projection_events.labels(name).inc(count)
        seconds = getattr(report, "seconds", None)
        if seconds is not None:
            self.projection_batch_duration.labels(name).observe(seconds)

    def on_dead_letter(self, projection: str, event: Any, error: BaseException) -> None:
        """Count a dead-lettered event by projection and event type."""
        self.dead_letters.labels(projection, getattr(event, "event_type", "unknown")).inc()

    def on_projection_reconnect(
        self, projection: str, error: BaseException, attempt: int, delay: float
    ) -> None:
        """Count a failed attempt of a projection to reach its store."""
        self.reconnects.labels(projection).inc()

    def on_replica_status(self, status: Any) -> None:
        """Set a read replica's lag (bytes, seconds) and rotation gauges."""
        name = status.replica
        if status.lag_bytes is not None:
            self.replica_lag_bytes.labels(name).set(status.lag_bytes)
        if status.lag_seconds is not None:
            self.replica_lag_seconds.labels(name).set(status.lag_seconds)
        self.replica_in_rotation.labels(name).set(1 if status.in_rotation else 0)

    def on_state_cache(self, event: str, command_type: str) -> None:
        """Count a folded-state cache hit, miss or eviction."""
        key = (command_type, event)
        child = self._cache_children.get(key)
        if child is None:
            child = self._cache_children[key] = self.state_cache.labels(*key)
        child.inc()
