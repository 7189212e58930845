"""Hooks: what the executor (and projection runners) report, for metrics, logs and traces.

Subclass :class:`Hook`, override what you need, and register it with :func:`add_hook`.
With no hook registered the executor takes its plain path (one global lookup per command).
Hooks run in the caller's thread after the work they report; an exception in a hook is
logged on the ``eventcore`` logger and never changes the command's outcome.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventcore.errors import (
    BusinessRuleViolation,
    ConcurrencyConflict,
    ValidationError,
)

if TYPE_CHECKING:
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

logger = logging.getLogger("eventcore")

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


@dataclass(slots=True)
class CommandReport:
    """Everything one :func:`~eventcore.execute` call did, handed to :meth:`Hook.after_execute`."""

    command: Any
    command_type: str
    metadata: Metadata | None
    started_at: float
    """Wall-clock start (``time.time()``)."""
    start_ns: int
    """``time.perf_counter_ns()`` at the start; phases use the same clock."""
    end_ns: int = 0
    outcome: str = SUCCESS
    """``success``, ``rejected`` (business rule or validation), ``conflict-exhausted`` or
    ``error`` (anything else, store failures included)."""
    attempts: int = 1
    phases: list[Phase] = field(default_factory=list)
    retries: list[RetryRecord] = field(default_factory=list)
    result: ExecutionResult | None = None
    error: BaseException | None = None

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
            logger.exception("eventcore hook %r failed in after_projection_batch", hook)


def report_dead_letter(projection: str, event: Any, error: BaseException) -> None:
    """Tell every hook that ``projection`` skipped ``event`` (used by projection runners)."""
    for hook in _hooks:
        try:
            hook.on_dead_letter(projection, event, error)
        except Exception:
            logger.exception("eventcore hook %r failed in on_dead_letter", hook)


def report_projection_reconnect(
    projection: str, error: BaseException, attempt: int, delay: float
) -> None:
    """Tell every hook that ``projection`` is reconnecting (used by projection runners)."""
    for hook in _hooks:
        try:
            hook.on_projection_reconnect(projection, error, attempt, delay)
        except Exception:
            logger.exception("eventcore hook %r failed in on_projection_reconnect", hook)


def report_state_cache(event: str, command_type: str) -> None:
    """Tell every hook about a state cache ``hit``, ``miss`` or ``evict``."""
    for hook in _hooks:
        try:
            hook.on_state_cache(event, command_type)
        except Exception:
            logger.exception("eventcore hook %r failed in on_state_cache", hook)


def report_snapshot_failure(command_type: str, what: str, error: BaseException) -> None:
    """Tell every hook that a snapshot of ``command_type`` failed (used by snapshots)."""
    for hook in _hooks:
        try:
            hook.on_snapshot_failure(command_type, what, error)
        except Exception:
            logger.exception("eventcore hook %r failed in on_snapshot_failure", hook)


def outcome_of(error: BaseException) -> str:
    """Classify a command's exception as a report outcome."""
    if isinstance(error, (BusinessRuleViolation, ValidationError)):
        return REJECTED
    if isinstance(error, ConcurrencyConflict):
        return CONFLICT_EXHAUSTED
    return ERROR


class Recorder:
    """Builds one :class:`CommandReport` while a shell runs a command (internal)."""

    __slots__ = ("active", "last_failure", "report", "since")

    def __init__(self, command: Any, metadata: Metadata | None, active: tuple[Hook, ...]) -> None:
        self.active = active
        for hook in active:
            try:
                metadata = hook.before_execute(command, metadata)
            except Exception:
                logger.exception("eventcore hook %r failed in before_execute", hook)
        self.report = CommandReport(
            command=command,
            command_type=type(command).__name__,
            metadata=metadata,
            started_at=time.time(),
            start_ns=time.perf_counter_ns(),
        )
        self.last_failure = ""
        self.since = self.report.start_ns

    def phase(self, name: str, start_ns: int) -> None:
        """Record a step of the current attempt that ran from ``start_ns`` until now."""
        now = time.perf_counter_ns()
        self.report.phases.append(Phase(name, self.report.attempts, start_ns, now))
        self.since = now

    def failed(self, error: BaseException) -> None:
        """An effect ended with a retriable error; remember why for the retry record."""
        self.last_failure = "conflict" if isinstance(error, ConcurrencyConflict) else "unavailable"

    def retry(self, delay: float) -> None:
        """The pipeline decided to retry after ``delay`` seconds."""
        report = self.report
        report.retries.append(RetryRecord(report.attempts, self.last_failure, delay))
        report.attempts += 1

    def finish(
        self,
        result: ExecutionResult | None,
        error: BaseException | None,
        trace: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Close the report and hand it to every hook.

        ``trace`` is the run's trace (``CommandRun.trace``): ``(phase, attempt, start_ns,
        end_ns)`` and ``("retry", attempt, reason, delay)`` tuples.
        """
        report = self.report
        report.end_ns = time.perf_counter_ns()
        if trace:
            for item in trace:
                if item[0] == "retry":
                    report.retries.append(RetryRecord(item[1], item[2], item[3]))
                else:
                    report.phases.append(Phase(item[0], item[1], item[2], item[3]))
            report.attempts = 1 + len(report.retries)
        report.result = result
        report.error = error
        if error is not None:
            report.outcome = outcome_of(error)
        elif result is not None:
            report.attempts = result.attempts
        for hook in self.active:
            try:
                hook.after_execute(report)
            except Exception:
                logger.exception("eventcore hook %r failed in after_execute", hook)
