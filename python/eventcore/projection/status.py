"""Where a projection is: its status, and catch-up progress for a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from eventcore.projection.reconnect import store_failure

if TYPE_CHECKING:
    from eventcore.projection.subscription import Page
    from eventcore.recorded import RecordedEvent
    from eventcore.store import CheckpointStore, ProjectionStore

__all__ = ["Progress", "ProjectionStatus"]

State = Literal["idle", "standby", "catching_up", "live", "reconnecting", "stopped", "failed"]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where one projection is.

    Attributes:
        name: the projection's name.
        state: ``idle`` (not started), ``standby`` (another process is active),
            ``catching_up``, ``live``, ``reconnecting`` (the store is unavailable: it
            retries, then resumes from its checkpoint), ``stopped`` or ``failed``.
        position: the last position applied (and checkpointed).
        head: the store's head now (the last one seen while the store is unreachable).
        lag_events: events between ``position`` and ``head`` (last known value while
            the store is unreachable).
        lag_seconds: age of the oldest event not yet applied (0 when caught up).
        events_applied: events applied by this runner since it started.
        error: why it stopped for good (state ``failed``).
        reconnecting_since: when the store became unavailable (state ``reconnecting``).
        last_error: the last store failure (state ``reconnecting``).
        reconnect_attempts: failed attempts since ``reconnecting_since``.
        held_back_by: what holds the store's global log back, when one of the store's
            own appends is still in flight (PostgreSQL: its transaction id, backend pid
            and age); ``lag_seconds`` is then at least that append's age. None otherwise.
    """

    name: str
    state: State
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    events_applied: int
    error: str | None = None
    reconnecting_since: datetime | None = None
    last_error: str | None = None
    reconnect_attempts: int = 0
    held_back_by: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Progress of a catch-up or rebuild, for a progress bar.

    Attributes:
        name: the projection's name.
        position: the position applied so far.
        head: the head the catch-up is heading for (it moves while writes go on).
        events_done: events processed since the catch-up started.
        events_remaining: events left up to ``head`` (an estimate while writes go on).
        events_per_second: processing rate since the start.
        eta_seconds: estimated seconds left (None while the rate is unknown).
        elapsed_seconds: seconds since the start.
        done: the catch-up reached the head.
    """

    name: str
    position: int
    head: int
    events_done: int
    events_remaining: int
    events_per_second: float
    eta_seconds: float | None
    elapsed_seconds: float
    done: bool

    @property
    def fraction(self) -> float:
        """Done as a fraction in [0, 1] (for a progress bar)."""
        total = self.events_done + self.events_remaining
        return 1.0 if total == 0 else self.events_done / total


ProgressCallback = Callable[[Progress], Any]


class ProgressTracker:
    """Calls the runner's progress callback at most every ``progress_interval``."""

    def __init__(self, worker: Any, start: int) -> None:
        self.worker = worker
        self.start_position = start
        self.started = time.monotonic()
        self.last = 0.0
        self.total = 0
        self.done = 0
        self.finished = False

    async def begin(self) -> None:
        store = self.worker.runner.store
        head = await store.head()
        self.total = await store.count_events(self.start_position, head)
        self.worker.head = head
        await self._report(done=False)

    async def update(self, page: Page) -> None:
        w = self.worker
        if w.runner.store.dense_positions:
            self.done = page.position - self.start_position
            self.total = max(self.total, page.head - self.start_position)
        else:
            self.done += len(page)
            self.total = max(self.total, self.done)
        now = time.monotonic()
        if page.caught_up or now - self.last >= w.runner.progress_interval:
            await self._report(done=page.caught_up)

    async def finish(self) -> None:
        """Report that the replay reached the head."""
        await self._report(done=True)

    async def _report(self, *, done: bool) -> None:
        w = self.worker
        self.finished = self.finished or done
        self.last = now = time.monotonic()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = 0 if done else max(self.total - self.done, 0)
        eta = remaining / rate if rate > 0 else (0.0 if done else None)
        progress = Progress(
            w.name, w.position, w.head, self.done, remaining, rate, eta, elapsed, done
        )
        callback = w.runner.on_progress
        assert callback is not None
        result = callback(progress)
        if asyncio.iscoroutine(result):
            await result


async def statuses(
    store: ProjectionStore, checkpoints: CheckpointStore, workers: Sequence[Any]
) -> dict[str, ProjectionStatus]:
    """The status of each of a runner's workers (see ``ProjectionRunner.status``).

    While the store is unreachable it still answers, from what the runner saw last.
    """
    out = {}
    try:
        head: int | None = await store.head()
    except Exception as exc:
        if store_failure(exc, "status") is None:
            raise
        head = None
    held = await _holdback(store) if head is not None else None
    for w in workers:
        position = w.position
        lag, seconds = w.known_lag
        if head is not None:
            try:
                if w.state in ("idle", "standby"):
                    position = await checkpoints.load(w.name)
                lag, seconds = w.known_lag = await _lag(store, position, head)
            except Exception as exc:
                if store_failure(exc, "status") is None:
                    raise
        outage = w.outage
        if held is not None:
            seconds = max(seconds, held[1])
        out[w.name] = ProjectionStatus(
            w.name,
            w.state,
            position,
            max(w.head, position) if head is None else head,
            lag,
            seconds,
            w.applied,
            str(w.error) if w.error else None,
            outage.since,
            str(outage.error) if outage.error is not None else None,
            outage.attempts,
            held[0] if held is not None else None,
        )
    return out


async def _holdback(store: ProjectionStore) -> tuple[str, float] | None:
    """What holds the global log back (a description, its age in seconds), if anything."""
    try:
        held = await store.log_holdback()
    except Exception as exc:
        if store_failure(exc, "status") is None:
            raise
        return None
    if held is None:
        return None
    seconds = held.seconds or 0.0
    who = f"pid {held.pid}" if held.pid is not None else "a prepared transaction"
    age = f", open for {seconds:.1f} s" if held.seconds is not None else ""
    return f"an append in transaction {held.transaction_id} ({who}{age})", seconds


async def _lag(store: ProjectionStore, position: int, head: int) -> tuple[int, float]:
    """Events after ``position`` up to ``head``, and the age of the first of them."""
    lag = await store.count_events(position, head)
    seconds = 0.0
    if lag:
        first: list[RecordedEvent[Any]] = await store.read_all(after_position=position, limit=1)
        if first:
            first_event = first[0]
            age = datetime.now(UTC) - first_event.recorded_at
            seconds = max(age.total_seconds(), 0.0)
    return lag, seconds
