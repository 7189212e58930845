"""What a process manager is (the user's object), what it returns, and how it runs.

A process manager reacts to events of the global log by executing commands. It runs as a
projection (:class:`_Reactor` is the projection object the projection runner drives), so
checkpoints, leases, reconnects, failure strategies and dead letters are the projection
runner's. Exactly once: each command runs under an idempotency key derived from the
triggering event, so a redelivery (a crash before the checkpoint) writes nothing new.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from eventcore._core import enc_hook
from eventcore._pipeline import key_event_id
from eventcore.command import Command
from eventcore.errors import ConcurrencyConflict, StoreUnavailable, ValidationError
from eventcore.executor import execute
from eventcore.metadata import Metadata
from eventcore.projection.projection import FailureStrategy
from eventcore.projection.reconnect import StoreFault
from eventcore.recorded import NewEvent, RecordedEvent
from eventcore.registry import EventRegistry, event
from eventcore.retry import RetryPolicy
from eventcore.stream import StreamId

if TYPE_CHECKING:
    from eventcore.store import EventStore

__all__ = [
    "DeadlineFired",
    "DeadlineScheduled",
    "ProcessManager",
    "Schedule",
]

log = logging.getLogger("eventcore.process")

MAX_NAME_LENGTH = 200
"""The longest process manager name: its keys (name, event id, index) stay within 255."""

SCHEDULED = "eventcore.process.DeadlineScheduled"
FIRED = "eventcore.process.DeadlineFired"
_OWN_TYPES = frozenset((SCHEDULED, FIRED))


@runtime_checkable
class ProcessManager(Protocol):
    """Reacts to events by executing commands: your object with ``name`` and ``react``.

    - ``name: str``: stable; the key of its checkpoint, lease, dead letters, deadline
      stream (``$process-<name>``) and of every command's idempotency key.
    - ``react(event) -> Iterable[Command | Schedule] | None`` (plain or ``async``): what
      to do about one :class:`~eventcore.RecordedEvent`. It must decide from the event
      alone (the same event gives the same commands), because a redelivered event runs
      it again and its commands are matched to the first run's by their index.
    - ``event_types`` / ``stream_prefix``: filters, as for a projection.
    - ``on_error: FailureStrategy``: its ``backoff`` retries transient failures (a
      conflict that outlasted the executor's retries, or an exception listed in
      ``retry_on``); a rule violation, an invalid command or an exception from ``react``
      is not retried and goes straight to ``then``: ``"stop"`` (the default) or
      ``"skip"`` (a dead letter).
    - ``retry_on: tuple[type[Exception], ...]``: more exceptions to treat as transient.

    Each command runs with the idempotency key ``"<name>:<event id>:<index>"`` and
    :meth:`Metadata.caused_by(event) <eventcore.Metadata.caused_by>` (causation is the
    triggering event, the correlation id is carried over).
    """

    name: str
    """A stable name."""

    def react(self, event: RecordedEvent[Any]) -> Any:
        """The commands (and :class:`Schedule` entries) ``event`` calls for."""
        ...


@dataclass(frozen=True, slots=True)
class Schedule:
    """A command to execute later, once, even across restarts ("cancel if not paid").

    Exactly one of ``after`` (counted from the triggering event's ``recorded_at``, so a
    redelivery computes the same deadline) and ``at`` (an aware datetime) is given. The
    command's fields must come back equal from JSON (str, int, float, bool, None, value
    types, stream ids, tuples of them), since the deadline is stored as an event.

    Attributes:
        command: the command to execute when due.
        after: how long after the triggering event.
        at: when (timezone-aware).
    """

    command: Command[Any, Any]
    after: timedelta | None = None
    at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.command, Command):
            raise ValidationError("command", "must be a Command", self.command)
        if (self.after is None) == (self.at is None):
            raise ValidationError("Schedule", "give exactly one of after and at")
        if self.at is not None and (
            not isinstance(self.at, datetime) or self.at.utcoffset() is None
        ):
            raise ValidationError("at", "must be a timezone-aware datetime", self.at)
        if self.after is not None and not isinstance(self.after, timedelta):
            raise ValidationError("after", "must be a timedelta", self.after)

    def due(self, trigger: RecordedEvent[Any]) -> datetime:
        """When the command is due, for the event that scheduled it."""
        if self.at is not None:
            return self.at.astimezone(UTC)
        assert self.after is not None
        return trigger.recorded_at + self.after


@event("eventcore.process.DeadlineScheduled")
@dataclass(frozen=True)
class DeadlineScheduled:
    """A scheduled command, kept in its process manager's stream ``$process-<name>``.

    Attributes:
        process: the process manager's name.
        due: when it is due, in microseconds since the Unix epoch (UTC).
        command_type: the command's class, ``module:qualname``.
        fields: the command's fields as JSON.
    """

    process: str
    due: int
    command_type: str
    fields: str


@event("eventcore.process.DeadlineFired")
@dataclass(frozen=True)
class DeadlineFired:
    """A scheduled command was executed (or failed for good and was dead-lettered).

    Attributes:
        deadline: the event id of its :class:`DeadlineScheduled` record.
    """

    deadline: str


def register_events(registry: EventRegistry) -> None:
    """Register the deadline events in ``registry`` (a store's) if it lacks them."""
    for name, cls in ((SCHEDULED, DeadlineScheduled), (FIRED, DeadlineFired)):
        if name not in registry:
            registry.register(name, cls)


def deadline_stream(name: str) -> str:
    """The stream a process manager keeps its deadlines in."""
    return f"$process-{name}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Value types and stream ids as their builtins, as the registry's codecs write them.
_FIELDS = msgspec.json.Encoder(enc_hook=enc_hook)


def to_micros(when: datetime) -> int:
    """``when`` in microseconds since the Unix epoch."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def encode_command(command: Command[Any, Any]) -> tuple[str, str]:
    """``(module:qualname, fields as JSON)`` of ``command``, checked to come back equal.

    Raises:
        ValidationError: the command's class cannot be found again by its name (a local
            class) or its fields do not round-trip through JSON.
    """
    cls = type(command)
    path = f"{cls.__module__}:{cls.__qualname__}"
    fields = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}  # type: ignore[arg-type]
    try:
        text = _FIELDS.encode(fields).decode()
    except (TypeError, msgspec.MsgspecError) as exc:
        raise ValidationError("Schedule.command", f"fields must encode as JSON: {exc}") from exc
    try:
        again = decode_command(path, text)
    except Exception as exc:
        raise ValidationError(
            "Schedule.command", f"{path} cannot be rebuilt from its stored form: {exc!r}"
        ) from exc
    if again != command:
        raise ValidationError(
            "Schedule.command",
            f"{path} does not come back equal from JSON (got {again!r}); "
            "use JSON-friendly field types",
        )
    return path, text


def decode_command(path: str, fields: str) -> Command[Any, Any]:
    """The command ``encode_command`` stored as ``(path, fields)``.

    Raises:
        ValidationError: the class is not found or is not a Command (or its fields are
            invalid, as when any command is built).
    """
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        if part == "<locals>":
            raise ValidationError("command_type", "a class defined inside a function", path)
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Command)):
        raise ValidationError("command_type", "is not a Command class", path)
    command: Command[Any, Any] = obj(**msgspec.json.decode(fields))
    return command


def check_name(manager: Any) -> str:
    """The manager's name, checked (a non-empty str of at most 200 characters)."""
    name = getattr(manager, "name", None)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            "name",
            f"a process manager needs a non-empty str name of at most {MAX_NAME_LENGTH} chars",
            name,
        )
    if not callable(getattr(manager, "react", None)):
        raise ValidationError("react", f"process manager {name!r} has no react(event)")
    StreamId(deadline_stream(name))  # its deadline stream: InvalidStreamId (control chars)
    return name


def retry_on(manager: Any) -> tuple[type[BaseException], ...]:
    """The exception classes the manager's ``retry_on`` names (one class or a tuple)."""
    value = getattr(manager, "retry_on", ())
    classes = (value,) if isinstance(value, type) else tuple(value)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise ValidationError("retry_on", "must be exception classes", cls)
    return classes


class Reactor:
    """The projection a process manager runs as: ``apply(event)`` executes its commands.

    The projection runner gives it its checkpoint, lease, reconnects and failure
    strategy (without retries: transient failures are retried here, with the manager's
    backoff, so that a rule violation is never retried).
    """

    def __init__(self, manager: Any, store: EventStore, retry: RetryPolicy | None) -> None:
        self.manager = manager
        self.name = check_name(manager)
        types = getattr(manager, "event_types", None)
        if isinstance(types, str):
            raise ValidationError("event_types", "must be a sequence of str, not one str", types)
        self.event_types: list[str] | None = list(types) if types is not None else None
        self.stream_prefix: str | None = getattr(manager, "stream_prefix", None)
        strategy: FailureStrategy = getattr(manager, "on_error", None) or FailureStrategy.stop()
        self.backoff = strategy.backoff
        self.on_error = FailureStrategy(then=strategy.then)
        self.transient: tuple[type[BaseException], ...] = (ConcurrencyConflict, *retry_on(manager))
        self.store = store
        self.retry = retry
        self.stream = deadline_stream(self.name)
        self._react = manager.react

    async def apply(self, event: RecordedEvent[Any]) -> None:
        """React to ``event``: run its commands, retrying transient failures.

        Raises:
            StoreFault: the store stayed unavailable (the runner reconnects, then
                redelivers the event).
            Exception: a failure for the manager's strategy (stop or dead letter).
        """
        if event.event_type in _OWN_TYPES:
            return
        attempt = 1
        while True:
            try:
                await self._handle(event)
                return
            except StoreUnavailable as exc:  # OutcomeUnknown too: the redelivery replays
                raise StoreFault(exc) from exc
            except self.transient as exc:
                if attempt >= self.backoff.max_attempts:
                    raise
                delay = self.backoff.delay(attempt)
                log.warning(
                    "process manager %r: event at position %d failed (attempt %d of %d), "
                    "retrying in %.2f s: %r",
                    self.name,
                    event.position,
                    attempt,
                    self.backoff.max_attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _handle(self, event: RecordedEvent[Any]) -> None:
        actions = self._react(event)
        if inspect.isawaitable(actions):
            actions = await actions
        if actions is None:
            return
        if isinstance(actions, Command | Schedule):
            actions = [actions]
        metadata = Metadata.caused_by(event)
        for index, action in enumerate(_as_list(actions, self.name)):
            key = f"{self.name}:{event.event_id}:{index}"
            if isinstance(action, Schedule):
                await self._schedule(action, event, key, metadata)
            elif isinstance(action, Command):
                await execute(
                    self.store, action, metadata=metadata, retry=self.retry, idempotency_key=key
                )
            else:
                raise ValidationError(
                    "react", "must return Commands and Schedules", type(action).__name__
                )

    async def _schedule(
        self, action: Schedule, event: RecordedEvent[Any], key: str, metadata: Metadata
    ) -> None:
        """Record the deadline in the manager's stream (the same id on a redelivery)."""
        path, fields = encode_command(action.command)
        record = DeadlineScheduled(self.name, to_micros(action.due(event)), path, fields)
        _, payload = self.store.registry.encode(record)
        new = NewEvent(self.stream, SCHEDULED, payload, key_event_id(key))
        await self.store.append([new], metadata=metadata)


def _as_list(actions: Any, name: str) -> Sequence[Any]:
    if isinstance(actions, Iterable) and not isinstance(actions, str | bytes):
        return list(actions)
    raise ValidationError(
        "react",
        f"process manager {name!r} must return Commands and Schedules (a list) or None",
        type(actions).__name__,
    )
