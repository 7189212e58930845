"""Hooks: what the executor (and projection runners) report, for metrics, logs and traces.

Subclass :class:`Hook`, override what you need, and register it with :func:`add_hook`.
With no hook registered the executor takes its plain path (one global lookup per command).
Only hooks that override ``before_execute``/``after_execute`` are called for commands, and
a command is timed only when some hook overrides ``after_execute``. A report keeps its
steps as raw tuples (:attr:`CommandReport.trace`); :class:`Phase` and :class:`RetryRecord`
objects are built only when a hook reads ``phases`` or ``retries``.
Hooks run in the caller's thread after the work they report; an exception in a hook is
logged on the ``eventcore`` logger and never changes the command's outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventcore.errors import (
    BusinessRuleViolation,
    ConcurrencyConflict,
    ConditionFailed,
    ValidationError,
)

if TYPE_CHECKING:
    import logging

    from eventcore._pipeline import ExecutionResult
    from eventcore.metadata import Metadata

__all__ = [
    "CommandReport",
    "Hook",
    "Phase",
    "ProjectionBatchReport",
    "RetryRecord",
    "add_hook",
    "hooks",
    "remove_hook",
]


def _logger() -> logging.Logger:
    """The ``eventcore`` logger, where hook failures go (logging loads on the first one)."""
    import logging

    return logging.getLogger("eventcore")


SUCCESS = "success"
REJECTED = "rejected"
CONFLICT_EXHAUSTED = "conflict-exhausted"
ERROR = "error"


@dataclass(slots=True)
class Phase:
    """One timed step of one attempt.

    ``name`` is ``read_streams`` (reading and folding: one pass over the events, fused in
    the stores), ``handle_command`` (``discover``/``handle`` and encoding the new events) or
    ``write_events`` (the atomic append).
    """

    name: str
    attempt: int
    start_ns: int
    """``time.perf_counter_ns()`` when the step began."""
    end_ns: int

    @property
    def seconds(self) -> float:
        """The step's duration in seconds."""
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(slots=True)
class RetryRecord:
    """One retry: after which attempt, why (``conflict`` or ``unavailable``), how long it waited."""

    attempt: int
    reason: str
    delay: float


_RETRY = "retry"

TraceEntry = tuple[str, int, Any, Any]
"""One raw trace entry: ``(phase, attempt, start_ns, end_ns)`` for a step, ``phase`` in
``read_streams``, ``handle_command``, ``write_events``; ``("retry", attempt, reason,
delay)`` for a retry after ``attempt`` failed."""


class CommandReport:
    """Everything one :func:`~eventcore.execute` call did, handed to :meth:`Hook.after_execute`.

    The steps are recorded as raw tuples (:attr:`trace`); :attr:`phases` and
    :attr:`retries` build objects from them only when a hook reads them.
    """

    __slots__ = (
        "command",
        "command_type",
        "end_ns",
        "error",
        "metadata",
        "outcome",
        "result",
        "start_ns",
        "started_at",
        "trace",
    )

    def __init__(
        self,
        command: Any,
        command_type: str,
        metadata: Metadata | None,
        started_at: float,
        start_ns: int,
    ) -> None:
        self.command = command
        """The command executed."""
        self.command_type = command_type
        """Its class name."""
        self.metadata = metadata
        """The metadata the events were (or would have been) written with."""
        self.started_at = started_at
        """Wall-clock start (``time.time()``)."""
        self.start_ns = start_ns
        """``time.perf_counter_ns()`` at the start; phases use the same clock."""
        self.end_ns = 0
        """``time.perf_counter_ns()`` at the end."""
        self.outcome = SUCCESS
        """``success``, ``rejected`` (business rule or validation), ``conflict-exhausted``
        (version conflicts or failed append conditions outlasted the retry policy) or
        ``error`` (anything else, store failures included)."""
        self.result: ExecutionResult | None = None
        """The result, when it succeeded."""
        self.error: BaseException | None = None
        """The exception, when it failed."""
        self.trace: list[TraceEntry] = []
        """The raw steps and retries, in order (see :data:`TraceEntry`)."""

    @property
    def attempts(self) -> int:
        """How many attempts ran (1 = no retry; 0 = found under its idempotency key)."""
        if self.result is not None:
            return self.result.attempts
        return 1 + sum(1 for entry in self.trace if entry[0] == _RETRY)

    @property
    def phases(self) -> list[Phase]:
        """The timed steps of every attempt, in order (built from :attr:`trace` on access)."""
        return [Phase(*entry) for entry in self.trace if entry[0] != _RETRY]

    @property
    def retries(self) -> list[RetryRecord]:
        """The retries, in order (built from :attr:`trace` on access)."""
        return [RetryRecord(*entry[1:]) for entry in self.trace if entry[0] == _RETRY]

    @property
    def seconds(self) -> float:
        """The whole call's duration in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def event_types(self) -> list[str]:
        """The type name of each event written (empty unless it succeeded)."""
        return self.result.append.event_types if self.result is not None else []

    @property
    def streams(self) -> list[str]:
        """The streams the command read (declared and discovered)."""
        if self.result is not None:
            return list(self.result.stream_versions)
        streams = getattr(self.command, "streams", None)
        return list(streams()) if callable(streams) else []

    def __repr__(self) -> str:
        return (
            f"CommandReport(command_type={self.command_type!r}, outcome={self.outcome!r}, "
            f"attempts={self.attempts}, seconds={self.seconds:.6f})"
        )


@dataclass(slots=True)
class ProjectionBatchReport:
    """One batch a projection runner applied, handed to :meth:`Hook.after_projection_batch`."""

    projection: str
    position: int
    """The projection's checkpoint after the batch."""
    head: int
    """The store's head when the batch was read."""
    events: list[Any]
    """The batch's :class:`~eventcore.RecordedEvent` objects (empty for columnar batches)."""
    count: int
    """How many events the batch held."""
    seconds: float
    """How long applying (and checkpointing) the batch took."""
    started_at: float
    """Wall-clock start (``time.time()``)."""
    lag_events: int | None
    """Events still to apply after this batch, where the store can tell cheaply."""
    lag_seconds: float | None
    """Age of the batch's last event when it was applied (0 once caught up)."""


class Hook:
    """Base class for observers; every method is a no-op until overridden."""

    def before_execute(self, command: Any, metadata: Metadata | None) -> Metadata | None:
        """Called before a command runs; may return replacement metadata (e.g. trace ids)."""
        return metadata

    def after_execute(self, report: CommandReport) -> None:
        """Called once per executed command, whatever its outcome."""

    def after_projection_batch(self, report: ProjectionBatchReport) -> None:
        """Called by projection runners after each batch they apply."""

    def on_dead_letter(self, projection: str, event: Any, error: BaseException) -> None:
        """Called when a projection skips an event it failed to apply."""

    def on_projection_reconnect(
        self, projection: str, error: BaseException, attempt: int, delay: float
    ) -> None:
        """Called when a projection found its store unavailable and retries in ``delay`` s."""

    def on_state_cache(self, event: str, command_type: str) -> None:
        """Called on a folded-state cache ``hit``, ``miss`` or ``evict`` (one call per entry
        evicted, with the evicted entry's command type)."""

    def on_snapshot_failure(self, command_type: str, what: str, error: BaseException) -> None:
        """Called when a snapshot could not be used (``what``: ``read``, ``decode``,
        ``state type``) or written (``encode``, ``write``); the command folded in full.
        Once per command class and ``what`` per store."""

    def on_replica_status(self, status: Any) -> None:
        """Called after each probe of a PostgreSQL read replica (about once a second per
        replica of a store in use) with its
        :class:`~eventcore.postgres.ReplicaStatus`: lag in bytes and seconds, whether it
        is in the read rotation."""


_hooks: tuple[Hook, ...] = ()


def add_hook(hook: Hook) -> None:
    """Register ``hook`` for every executor and projection runner in this process."""
    global _hooks
    if hook not in _hooks:
        _hooks = (*_hooks, hook)


def remove_hook(hook: Hook) -> None:
    """Unregister ``hook`` (no error if it was not registered)."""
    global _hooks
    _hooks = tuple(h for h in _hooks if h is not hook)


def hooks() -> tuple[Hook, ...]:
    """The hooks registered now."""
    return _hooks


def report_projection_batch(report: ProjectionBatchReport) -> None:
    """Hand ``report`` to every hook (used by projection runners)."""
    for hook in _hooks:
        try:
            hook.after_projection_batch(report)
        except Exception:
            _logger().exception("eventcore hook %r failed in after_projection_batch", hook)


def report_dead_letter(projection: str, event: Any, error: BaseException) -> None:
    """Tell every hook that ``projection`` skipped ``event`` (used by projection runners)."""
    for hook in _hooks:
        try:
            hook.on_dead_letter(projection, event, error)
        except Exception:
            _logger().exception("eventcore hook %r failed in on_dead_letter", hook)


def report_projection_reconnect(
    projection: str, error: BaseException, attempt: int, delay: float
) -> None:
    """Tell every hook that ``projection`` is reconnecting (used by projection runners)."""
    for hook in _hooks:
        try:
            hook.on_projection_reconnect(projection, error, attempt, delay)
        except Exception:
            _logger().exception("eventcore hook %r failed in on_projection_reconnect", hook)


def report_state_cache(event: str, command_type: str) -> None:
    """Tell every hook about a state cache ``hit``, ``miss`` or ``evict``."""
    split = _split
    if split[0] is not _hooks:
        split = _callbacks(_hooks)
    for hook in split[3]:
        try:
            hook.on_state_cache(event, command_type)
        except Exception:
            _logger().exception("eventcore hook %r failed in on_state_cache", hook)


def report_snapshot_failure(command_type: str, what: str, error: BaseException) -> None:
    """Tell every hook that a snapshot of ``command_type`` failed (used by snapshots)."""
    for hook in _hooks:
        try:
            hook.on_snapshot_failure(command_type, what, error)
        except Exception:
            _logger().exception("eventcore hook %r failed in on_snapshot_failure", hook)


def report_replica_status(status: Any) -> None:
    """Tell every hook how a read replica stands (used by the PostgreSQL store)."""
    for hook in _hooks:
        try:
            hook.on_replica_status(status)
        except Exception:
            _logger().exception("eventcore hook %r failed in on_replica_status", hook)


def outcome_of(error: BaseException) -> str:
    """Classify a command's exception as a report outcome."""
    if isinstance(error, (BusinessRuleViolation, ValidationError)):
        return REJECTED
    if isinstance(error, ConcurrencyConflict | ConditionFailed):  # retries used up
        return CONFLICT_EXHAUSTED
    return ERROR


# The hook methods called per command, and for the last hooks tuple seen: that tuple, then
# per method the hooks overriding it. A hook that overrides none costs a command nothing.
_PER_COMMAND = ("before_execute", "after_execute", "on_state_cache")
_split: tuple[tuple[Hook, ...], ...] = ((), (), (), ())


def _overrides(hook: Hook, name: str) -> bool:
    return getattr(type(hook), name, None) is not getattr(Hook, name) or name in getattr(
        hook, "__dict__", ()
    )


def _callbacks(active: tuple[Hook, ...]) -> tuple[tuple[Hook, ...], ...]:
    """``active``, then the hooks of ``active`` overriding each of :data:`_PER_COMMAND`."""
    global _split
    split = _split
    if split[0] is not active:
        split = _split = (
            active,
            *(tuple(h for h in active if _overrides(h, name)) for name in _PER_COMMAND),
        )
    return split


_UNREAD = CommandReport(None, "", None, 0.0, 0)
"""The report of every command no hook reads (finish returns before touching it)."""


class Recorder:
    """Builds one :class:`CommandReport` while a shell runs a command (internal).

    The shell uses ``rec.report.metadata`` as the command's metadata and calls
    :meth:`finish` once at the end with the run's trace. ``rec.after`` lists the hooks
    that read reports: when it is empty nothing reads the trace, so a shell need not
    record one (``trace=bool(rec.after)``).
    """

    __slots__ = ("after", "report")

    def __init__(self, command: Any, metadata: Metadata | None, active: tuple[Hook, ...]) -> None:
        split = _split
        if split[0] is not active:
            split = _callbacks(active)
        before, after = split[1], split[2]
        for hook in before:
            try:
                metadata = hook.before_execute(command, metadata)
            except Exception:
                _logger().exception("eventcore hook %r failed in before_execute", hook)
        self.after = after
        if after:
            self.report = CommandReport(
                command, type(command).__name__, metadata, time.time(), time.perf_counter_ns()
            )
        elif metadata is None:  # nobody reads the report: the shared empty one will do
            self.report = _UNREAD
        else:
            self.report = CommandReport(None, "", metadata, 0.0, 0)

    def finish(
        self,
        result: ExecutionResult | None,
        error: BaseException | None,
        trace: list[TraceEntry] | None,
    ) -> None:
        """Close the report with the run's ``trace`` and hand it to every hook."""
        if not self.after:
            return
        report = self.report
        report.end_ns = time.perf_counter_ns()
        report.result = result
        if trace is not None:
            report.trace = trace
        if error is not None:
            report.error = error
            report.outcome = outcome_of(error)
        for hook in self.after:
            try:
                hook.after_execute(report)
            except Exception:
                _logger().exception("eventcore hook %r failed in after_execute", hook)
