"""One projection's life in a runner: lead, read pages, deliver them, ride out outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from eventcore import observe
from eventcore.errors import StoreUnavailable, ValidationError
from eventcore.projection._delivery import Delivery, LostLeadership
from eventcore.projection._leadership import Leadership
from eventcore.projection.projection import Hooks, ProjectionError
from eventcore.projection.reconnect import GaveUp, Outage, store_failure
from eventcore.projection.status import ProgressTracker, State
from eventcore.projection.subscription import Page, Subscription
from eventcore.store import Lease

if TYPE_CHECKING:
    from eventcore.projection.runner import ProjectionRunner

log = logging.getLogger("eventcore.projection")


class Worker:
    """Runs one projection: its own subscription, checkpoint, failures and lease."""

    def __init__(self, runner: ProjectionRunner, projection: Any) -> None:
        self.runner = runner
        self.hooks = Hooks(projection)
        self.name = self.hooks.name
        self.state: State = "idle"
        self.position = 0
        self.head = 0
        self.applied = 0
        self.error: ProjectionError | None = None
        self.sub: Subscription | None = None
        self.lost = False
        self.lock_failure: StoreUnavailable | None = None
        self.outage = Outage(runner.reconnect)
        self.known_lag: tuple[int, float] = (0, 0.0)
        checkpoints = runner.checkpoints
        if self.hooks.transactional is not None and not checkpoints.transactional:
            raise ValidationError(
                "checkpoints",
                f"projection {self.name!r} has apply_in_transaction: it needs "
                "transactional checkpoints in the read model's database "
                "(a PostgresCheckpointStore)",
            )
        self.delivery = Delivery(self.hooks, checkpoints)
        self.leadership = Leadership(
            checkpoints,
            self.name,
            takeover_interval=runner.takeover_interval,
            check_interval=runner.lock_check_interval,
        )

    # -- running -------------------------------------------------------------------

    async def run(self, *, live: bool, reset_to: int | None = None) -> None:
        """Run until done or stopped, riding out store failures; raise if it fails."""
        runner = self.runner
        self.error = None
        self.outage.clear()
        try:
            while not runner._stopping.is_set():
                lease: Lease | None = None
                watch = failure = None
                try:
                    if runner.exclusive:
                        if self.outage.since is None:
                            self.state = "standby"
                        lease = await self.leadership.take(
                            runner._stopping, standby=self._standby, unavailable=self._pause
                        )
                        if lease is None:
                            break
                        self.lost, self.lock_failure = False, None
                        watch = asyncio.create_task(self.leadership.watch(lease, self._lose))
                    if reset_to is not None:
                        await self.delivery.reset(reset_to)
                        reset_to = None
                    await self._consume(live)
                    if not self.lost:
                        break
                    failure = self._leadership_lost()
                except LostLeadership:
                    failure = self._leadership_lost()
                except ProjectionError:
                    raise
                except Exception as exc:
                    # Only the store's failures get here (the projection's own go to its
                    # strategy): a transient one is retried after the lease is released.
                    failure = store_failure(exc, f"projection {self.name!r}")
                    if failure is None:
                        raise self.delivery.stop_error(self.position, exc) from exc
                finally:
                    self.sub = None
                    if watch is not None:
                        watch.cancel()
                        await asyncio.gather(watch, return_exceptions=True)
                    if lease is not None:
                        await lease.release()
                if failure is not None:
                    await self._pause(failure)
        except ProjectionError as exc:
            self.state = "failed"
            self.error = exc
            log.error("%s", exc)
            runner._changed()
            raise
        self.state = "stopped"

    def _standby(self) -> None:
        """Another process leads (so the store answers)."""
        self._recovered()
        self.state = "standby"

    def _lose(self, failure: StoreUnavailable | None) -> None:
        """The lease is gone: stop reading (``failure``: the store failure that lost it)."""
        self.lost = True
        self.lock_failure = failure
        if self.sub is not None:
            self.sub.stop()

    def _leadership_lost(self) -> StoreUnavailable | None:
        """Log a lost leadership; the store failure that lost it (None: another runner)."""
        if self.lost and self.lock_failure is not None:
            return self.lock_failure  # the lease's link died: reconnect
        log.warning("projection %r lost its leadership; back to standby", self.name)
        return None

    async def _pause(self, failure: StoreUnavailable) -> None:
        """State ``reconnecting``: report ``failure`` and wait before the next attempt.

        Raises:
            ProjectionError: the runner's reconnect policy gives up.
        """
        try:
            delay = self.outage.record(failure)
        except GaveUp as exc:
            err = ProjectionError(self.name, self.position, str(exc))
            raise err from exc.error
        self.state = "reconnecting"
        log.warning(
            "projection %r: store unavailable (attempt %d), retrying in %.2f s: %s",
            self.name,
            self.outage.attempts,
            delay,
            failure,
        )
        observe.report_projection_reconnect(self.name, failure, self.outage.attempts, delay)
        self.runner._changed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runner._stopping.wait(), delay)

    def _recovered(self) -> None:
        """The store answered again: end the outage (if any)."""
        if self.outage.since is not None and self.outage.clear():
            log.info("projection %r: store available again", self.name)

    def _caught_up(self) -> None:
        """The subscription read up to the head and found nothing new."""
        self._recovered()
        if self.state in ("catching_up", "reconnecting"):
            self.state = "live"
            self.runner._changed()

    async def _consume(self, live: bool) -> None:
        runner = self.runner
        await runner.checkpoints.check()
        self.position = start = await runner.checkpoints.load(self.name)
        hooks = self.hooks
        self.sub = sub = Subscription(
            runner.store,
            after_position=start,
            page_size=runner.page_size,
            event_types=hooks.event_types,
            stream_prefix=hooks.stream_prefix,
            query=hooks.query,
            live=live,
            poll_interval=runner.poll_interval,
            columns=hooks.columns is not None and hooks.transactional is None,
        )
        if live:
            sub.on_caught_up = self._caught_up
        if runner._stopping.is_set():
            return
        if self.outage.since is None:
            self.state = "catching_up"
        tracker = ProgressTracker(self, start) if runner.on_progress else None
        if tracker is not None:
            await tracker.begin()
        async for page in sub:
            if self.lost:
                raise LostLeadership
            started, wall = time.perf_counter(), time.time()
            await self.delivery.deliver(page, self.position)
            if observe._hooks:
                self._report(page, time.perf_counter() - started, wall)
            self.position = page.position
            self.head = max(self.head, page.head)
            self.applied += len(page)
            self._recovered()
            self.state = "live" if page.caught_up else "catching_up"
            runner._changed()
            if tracker is not None:
                await tracker.update(page)
        if tracker is not None and not (live or tracker.finished or runner._stopping.is_set()):
            # The last page may have been exactly full: the subscription then ends on
            # an empty read that yields no page, so no page said it was caught up.
            await tracker.finish()

    def _report(self, page: Page, seconds: float, started_at: float) -> None:
        """Hand the batch just applied to the registered hooks."""
        lag_seconds = None
        if page.events:
            lag_seconds = max(0.0, time.time() - page.events[-1].recorded_at.timestamp())
        elif page.caught_up:
            lag_seconds = 0.0
        dense = self.runner.store.dense_positions
        observe.report_projection_batch(
            observe.ProjectionBatchReport(
                projection=self.name,
                position=page.position,
                head=page.head,
                events=page.events,
                count=len(page),
                seconds=seconds,
                started_at=started_at,
                lag_events=max(0, page.head - page.position) if dense else None,
                lag_seconds=lag_seconds,
            )
        )
