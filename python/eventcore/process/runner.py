"""The process runner: process managers on the projection runner, plus their deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventcore._pipeline import key_event_id
from eventcore.command import Command
from eventcore.errors import StoreUnavailable, ValidationError
from eventcore.executor import execute
from eventcore.memory import MemoryStore
from eventcore.metadata import Metadata
from eventcore.process.manager import (
    FIRED,
    SCHEDULED,
    DeadlineFired,
    DeadlineScheduled,
    Reactor,
    decode_command,
    from_micros,
    register_events,
    to_micros,
)
from eventcore.projection.checkpoint import DeadLetter, dead_letter
from eventcore.projection.reconnect import ReconnectPolicy, store_failure
from eventcore.projection.runner import ProjectionRunner
from eventcore.projection.status import ProjectionStatus
from eventcore.projection.subscription import projection_store
from eventcore.recorded import NewEvent, RecordedEvent
from eventcore.retry import RetryPolicy
from eventcore.store import CheckpointStore, ProjectionStore

__all__ = ["Deadline", "ProcessRunner"]

log = logging.getLogger("eventcore.process")

_PAGE = 500


@dataclass(frozen=True, slots=True)
class Deadline:
    """A scheduled command not yet fired.

    Attributes:
        id: the event id of its record in the manager's stream.
        process: the process manager's name.
        due: when it is due (UTC).
        command_type: the command's class, ``module:qualname``.
        scheduled_by: the event that scheduled it (its causation id).
    """

    id: uuid.UUID
    process: str
    due: datetime
    command_type: str
    scheduled_by: uuid.UUID | None


class Deadlines:
    """One process manager's pending deadlines, read from its stream as it grows."""

    def __init__(self, reactor: Reactor, checkpoints: CheckpointStore) -> None:
        self.reactor = reactor
        self.name = reactor.name
        self.store = reactor.store
        self.stream = reactor.stream
        self.checkpoints = checkpoints
        # Failures a later round may not meet: the deadline stays pending.
        self.transient: tuple[type[BaseException], ...] = (StoreUnavailable, *reactor.transient)
        self.version = 0
        self.pending: dict[uuid.UUID, RecordedEvent[DeadlineScheduled]] = {}

    async def refresh(self) -> None:
        """Read the records written since the last refresh (by any process)."""
        while True:
            page = await self.store.read_stream(
                self.stream, after_version=self.version, limit=_PAGE
            )
            for record in page:
                if record.event_type == SCHEDULED:
                    self.pending[record.event_id] = record
                elif record.event_type == FIRED:
                    fired: DeadlineFired = record.data
                    self.pending.pop(uuid.UUID(fired.deadline), None)
                self.version = record.version
            if len(page) < _PAGE:
                return

    def listed(self) -> list[Deadline]:
        """The pending deadlines, soonest first."""
        out = []
        for record in self.pending.values():
            data = record.data
            out.append(
                Deadline(
                    record.event_id,
                    self.name,
                    from_micros(data.due),
                    data.command_type,
                    record.metadata.causation_id,
                )
            )
        return sorted(out, key=lambda d: (d.due, d.id))

    async def fire_due(self, now: datetime) -> int:
        """Execute every deadline due at ``now``, soonest first; how many were done.

        A transient failure (store unavailable, conflicts) leaves a deadline pending for
        the next round; a permanent one (rule violation, a command that cannot be built)
        is dead-lettered and the deadline is done.
        """
        await self.refresh()
        limit = to_micros(now)
        due = sorted(
            (r for r in self.pending.values() if r.data.due <= limit),
            key=lambda r: (r.data.due, r.position),
        )
        done = 0
        for record in due:
            if await self._fire(record):
                done += 1
        return done

    async def _fire(self, record: RecordedEvent[DeadlineScheduled]) -> bool:
        data = record.data
        metadata = Metadata.caused_by(record)
        key = f"{self.name}:deadline:{record.event_id}"
        try:
            command: Command[Any, Any] = decode_command(data.command_type, data.fields)
            await execute(
                self.store,
                command,
                metadata=metadata,
                retry=self.reactor.retry,
                idempotency_key=key,
            )
        except self.transient as exc:
            log.warning(
                "process manager %r: deadline %s failed, kept for the next round: %r",
                self.name,
                record.event_id,
                exc,
            )
            return False
        except Exception as exc:
            letter = dead_letter(self.name, record, exc)
            log.error("process manager %r: deadline %s failed: %s", self.name, record.event_id, exc)
            await self.checkpoints.add_dead_letter(letter)
        fired = DeadlineFired(str(record.event_id))
        _, payload = self.store.registry.encode(fired)
        new = NewEvent(self.stream, FIRED, payload, key_event_id(f"{key}:fired"))
        await self.store.append([new], metadata=metadata)
        self.pending.pop(record.event_id, None)
        return True


class ProcessRunner:
    """Runs process managers over a store: events in, commands out, exactly once.

    Each manager runs as a projection of a :class:`~eventcore.projection.ProjectionRunner`
    (its own checkpoint, lease, reconnects, failure strategy and dead letters; see
    ``projections``), and its scheduled commands fire from its stream
    ``$process-<name>`` once due, checked every ``deadline_interval`` seconds while the
    manager is live (caught up, and the leader where checkpoints have leases). Use it as::

        async with ProcessRunner(store, [fulfilment]) as runner:
            ...

    or ``await runner.run_until_caught_up()`` and ``await runner.fire_due()`` in tests and
    batch jobs.

    Args:
        store: the event store (any :class:`~eventcore.store.ProjectionStore`, or a
            :class:`~eventcore.MemoryStore`).
        managers: one process manager or several (distinct names; see
            :class:`~eventcore.process.ProcessManager`).
        checkpoints: where positions and dead letters go (default: the store's).
        retry: the executor's retry policy for the managers' commands (default
            :class:`~eventcore.RetryPolicy`).
        clock: what "now" is for deadlines (default: the system clock, UTC).
        deadline_interval: seconds between checks for due deadlines.
        page_size: events per batch (the checkpoint is saved after each).
        poll_interval: as for :class:`~eventcore.projection.ProjectionRunner`.
        exclusive: as for :class:`~eventcore.projection.ProjectionRunner`.
        takeover_interval: as for :class:`~eventcore.projection.ProjectionRunner`.
        lock_check_interval: as for :class:`~eventcore.projection.ProjectionRunner`.
        reconnect: as for :class:`~eventcore.projection.ProjectionRunner`.
    """

    def __init__(
        self,
        store: ProjectionStore | MemoryStore,
        managers: Sequence[Any] | Any,
        *,
        checkpoints: CheckpointStore | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        deadline_interval: float = 1.0,
        page_size: int = 100,
        poll_interval: float = 1.0,
        exclusive: bool | None = None,
        takeover_interval: float = 1.0,
        lock_check_interval: float = 1.0,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if not deadline_interval > 0:
            raise ValidationError("deadline_interval", "must be > 0", deadline_interval)
        self.store: ProjectionStore = projection_store(store)
        """The store the managers follow and write to."""
        register_events(self.store.registry)
        items = list(managers) if isinstance(managers, list | tuple) else [managers]
        reactors = [Reactor(m, self.store, retry) for m in items]
        self.projections: ProjectionRunner = ProjectionRunner(
            self.store,
            reactors,
            checkpoints=checkpoints,
            page_size=page_size,
            poll_interval=poll_interval,
            exclusive=exclusive,
            takeover_interval=takeover_interval,
            lock_check_interval=lock_check_interval,
            reconnect=reconnect,
        )
        """The projection runner the managers run on (status, leases, dead letters)."""
        self.clock = clock if clock is not None else _utcnow
        self.deadline_interval = deadline_interval
        self._deadlines = {r.name: Deadlines(r, self.projections.checkpoints) for r in reactors}
        self._stopping = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    # -- deadlines -----------------------------------------------------------------

    async def fire_due(self, name: str | None = None) -> int:
        """Execute the deadlines due now (of one manager, or all); how many were done.

        Safe to run in several processes at once: each deadline's command runs under an
        idempotency key of its own, so it is written once.
        """
        now = self.clock()
        done = 0
        for deadlines in self._pick(name):
            done += await deadlines.fire_due(now)
        return done

    async def deadlines(self, name: str) -> list[Deadline]:
        """The pending deadlines of manager ``name``, soonest first."""
        (deadlines,) = self._pick(name)
        await deadlines.refresh()
        return deadlines.listed()

    def _pick(self, name: str | None) -> list[Deadlines]:
        if name is None:
            return list(self._deadlines.values())
        try:
            return [self._deadlines[name]]
        except KeyError:
            raise KeyError(f"no process manager named {name!r}") from None

    async def _tick(self) -> None:
        """Fire due deadlines of every live manager until stopped.

        A failure that is not the store's (a bug) stops the whole runner and is raised.
        """
        try:
            await self._tick_forever()
        except Exception:
            log.exception("process runner: firing deadlines failed; stopping")
            self._stopping.set()
            await self.projections.stop()
            raise

    async def _tick_forever(self) -> None:
        while not self._stopping.is_set():
            for name, deadlines in self._deadlines.items():
                if self.projections._worker(name).state != "live":
                    continue  # not the leader, or still catching up on events
                try:
                    await deadlines.fire_due(self.clock())
                except Exception as exc:
                    failure = store_failure(exc, "fire deadlines")
                    if failure is None:
                        raise
                    log.warning("process manager %r: deadlines wait: %s", name, failure)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.deadline_interval)

    # -- running -------------------------------------------------------------------

    async def run_forever(self) -> None:
        """React to events and fire deadlines until :meth:`stop`.

        Raises:
            ProjectionError: a manager stopped for good (its strategy said stop).
            Exception: firing deadlines failed other than by the store (a bug): the
                runner stops and raises it.
        """
        self._stopping.clear()
        ticker = asyncio.create_task(self._tick())
        try:
            await self.projections.run_forever()
        finally:
            self._stopping.set()
            (outcome,) = await asyncio.gather(ticker, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome

    async def run_until_caught_up(self) -> None:
        """React to every event up to the head, then return (deadlines: :meth:`fire_due`).

        The managers' own commands move the head: it runs again until a pass wrote
        nothing, so a chain of reactions ends before it returns.

        Raises:
            ProjectionError: a manager stopped on a failure.
        """
        while True:
            head = await self.store.head()
            await self.projections.run_until_caught_up()
            if await self.store.head() == head:
                return

    async def stop(self) -> None:
        """Stop gracefully: each manager finishes its event and saves its checkpoint."""
        self._stopping.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            await asyncio.gather(ticker, return_exceptions=True)
        await self.projections.stop()

    async def wait_for(
        self, position: int, *, timeout: float | None = 10.0, manager: str | None = None
    ) -> None:
        """Wait until the managers (or one) have reacted to everything up to ``position``."""
        await self.projections.wait_for(position, timeout=timeout, projection=manager)

    async def status(self) -> dict[str, ProjectionStatus]:
        """Each manager's status (state, position, lag), as for projections."""
        return await self.projections.status()

    async def dead_letters(self, name: str) -> list[DeadLetter]:
        """The events (and deadlines) manager ``name`` gave up on."""
        return await self.projections.dead_letters(name)

    async def __aenter__(self) -> ProcessRunner:
        self._stopping.clear()
        await self.projections.__aenter__()
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        """Stop gracefully; raise the error a manager stopped for good with, if any.

        Raises:
            ProjectionError: a manager stopped for good while the block ran.
            Exception: firing deadlines failed other than by the store (a bug); the
                runner stopped then.
        """
        self._stopping.set()
        ticker, self._ticker = self._ticker, None
        outcome = None
        if ticker is not None:
            (outcome,) = await asyncio.gather(ticker, return_exceptions=True)
        await self.projections.__aexit__(exc_type, *exc)
        if isinstance(outcome, Exception) and exc_type is None:
            raise outcome


def _utcnow() -> datetime:
    return datetime.now(UTC)
