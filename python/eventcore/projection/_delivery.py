"""Delivery: one page into one projection, per its failure strategy, then its checkpoint.

A page is applied as events (``apply`` / ``apply_batch``), as columns (``apply_columns``)
or in one transaction with its checkpoint (``apply_in_transaction``). A failure is retried
per the projection's :class:`~eventcore.projection.FailureStrategy`, then stops the
projection or skips the culprits (dead letters). Store failures are not the projection's:
they go up to the worker, which reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from eventcore import observe
from eventcore.errors import EventDecodeError
from eventcore.projection.checkpoint import dead_letter
from eventcore.projection.projection import BatchFailure, Hooks, ProjectionError
from eventcore.projection.reconnect import StoreFault, transaction_failure
from eventcore.projection.subscription import Page
from eventcore.recorded import RecordedEvent
from eventcore.store import CheckpointStore, CheckpointTransaction

log = logging.getLogger("eventcore.projection")


class LostLeadership(Exception):
    """The leader lease or the checkpoint moved under us: go back to standby."""


class Delivery:
    """Applies pages to one projection and moves its checkpoint."""

    def __init__(self, hooks: Hooks, checkpoints: CheckpointStore) -> None:
        self.hooks = hooks
        self.name = hooks.name
        self.checkpoints = checkpoints

    def stop_error(self, position: int, error: BaseException) -> ProjectionError:
        """The ProjectionError for stopping at ``position`` (raise it ``from error``)."""
        return ProjectionError(self.name, position, repr(error))

    async def deliver(self, page: Page, checkpoint: int) -> None:
        """Apply ``page`` and move the checkpoint from ``checkpoint`` to the page's end.

        Raises:
            ProjectionError: the projection's strategy says stop.
            LostLeadership: another runner moved the checkpoint (transactional only).
            StoreFault: a transactional batch failed because of the store.
        """
        if self.hooks.transactional is not None:
            await self._deliver_in_transaction(page, checkpoint)
            return
        if page.columns is not None:
            if len(page.columns):
                await self._apply_columns(page)
        elif page.events:
            await self._apply_events(page.events)
        await self.checkpoints.save(self.name, page.position)

    async def reset(self, position: int) -> None:
        """Reset the read model (``reset_in_transaction`` or ``reset``) and the checkpoint."""
        hooks, cps = self.hooks, self.checkpoints
        if hooks.reset_in_transaction is not None and cps.transactional:
            async with cps.transaction() as tx:
                await hooks.reset_in_transaction(tx.connection)
                await tx.reset(self.name, position)
        else:
            await hooks.reset_model()
            await cps.reset(self.name, position)

    # -- failures ------------------------------------------------------------------

    async def _retry(
        self, again: Callable[[], Awaitable[Any]], error: BaseException
    ) -> BaseException | None:
        """Retry per the strategy (the first attempt failed with ``error``).

        Returns None once an attempt succeeds, else the last attempt's error.
        """
        strategy = self.hooks.on_error
        if isinstance(error, EventDecodeError):
            return error  # the same bytes decode the same way: no retry
        for attempt in range(1, strategy.attempts):
            log.warning(
                "projection %r failed (attempt %d of %d): %r",
                self.name,
                attempt,
                strategy.attempts,
                error,
            )
            await asyncio.sleep(strategy.delay(attempt))
            try:
                await again()
                return None
            except BatchFailure as f:
                error = f.error
            except StoreFault:
                raise
            except Exception as exc:
                error = exc
            if isinstance(error, EventDecodeError):
                break
        return error

    async def _skip(self, event: RecordedEvent[Any] | int, error: BaseException) -> None:
        letter = dead_letter(self.name, event, error)
        log.error("projection %r skips position %d: %s", self.name, letter.position, letter.error)
        await self.checkpoints.add_dead_letter(letter)
        observe.report_dead_letter(self.name, event, error)

    # -- events and columns ----------------------------------------------------------

    async def _apply_events(self, events: list[RecordedEvent[Any]]) -> None:
        hooks = self.hooks
        then = hooks.on_error.then_for
        start = 0
        while start < len(events):
            chunk = events[start:] if start else events
            try:
                await hooks.apply_events(chunk)
                return
            except BatchFailure as f:
                if f.index is not None:  # apply() one by one: chunk[:index] are applied
                    failed = chunk[f.index]
                    start += f.index + 1
                    last = await self._retry(
                        functools.partial(hooks.apply_events, [failed]), f.error
                    )
                    if last is None:
                        continue
                    if then(last) == "stop":
                        raise self.stop_error(failed.position, last) from last
                    await self._skip(failed, last)
                    continue
                # apply_batch failed somewhere: retry the batch, then isolate the culprits.
                last = await self._retry(functools.partial(hooks.apply_events, chunk), f.error)
                if last is None:
                    return
                if then(last) == "stop":
                    raise self.stop_error(chunk[0].position, last) from last
                for event in chunk:
                    try:
                        await hooks.apply_events([event])
                    except BatchFailure as g:
                        if then(g.error) == "stop":
                            raise self.stop_error(event.position, g.error) from g.error
                        await self._skip(event, g.error)
                return

    async def _apply_columns(self, page: Page) -> None:
        batch = page.columns
        assert batch is not None
        try:
            await self.hooks.apply_columns(batch)
            return
        except Exception as exc:
            error = exc
        last = await self._retry(lambda: self.hooks.apply_columns(batch), error)
        if last is None:
            return
        first = int(batch.positions[0])
        if self.hooks.on_error.then_for(last) == "stop":
            raise self.stop_error(first, last) from last
        await self._skip(first, last)

    # -- in one transaction with the checkpoint ----------------------------------------

    async def _deliver_in_transaction(self, page: Page, checkpoint: int) -> None:
        events = page.events

        async def attempt(isolate: bool) -> None:
            tx: CheckpointTransaction | None = None
            try:
                async with self.checkpoints.transaction() as tx:
                    await self._apply_in(tx, page, checkpoint, isolate)
            except (LostLeadership, StoreFault):
                raise
            except Exception as exc:
                # A lost connection is the store's failure, whatever the projection's
                # code made of it: reconnect, do not count it against the projection.
                failure = transaction_failure(exc, tx)
                if failure is not None:
                    raise StoreFault(failure) from exc
                raise

        try:
            await attempt(False)
            return
        except (LostLeadership, StoreFault):
            raise
        except Exception as exc:
            error = exc
        last = await self._retry(lambda: attempt(False), error)
        if last is None:
            return
        if self.hooks.on_error.then_for(last) == "stop":
            first = events[0].position if events else page.position
            raise self.stop_error(first, last) from last
        await attempt(True)

    async def _apply_in(
        self, tx: CheckpointTransaction, page: Page, checkpoint: int, isolate: bool
    ) -> None:
        """One transactional batch: checkpoint first, then the events.

        With ``isolate`` each event gets a savepoint and a failing one is dead-lettered
        in the same transaction.
        """
        apply_tx = self.hooks.transactional
        assert apply_tx is not None
        # The checkpoint row first: a compare-and-set that also row-locks it, so a second
        # runner that wrongly thinks it is active can never apply twice.
        if not await tx.move(self.name, checkpoint, page.position):
            raise LostLeadership
        if not page.events:
            return
        if not isolate:
            await apply_tx(page.events, tx.connection)
            return
        for event in page.events:
            try:
                async with tx.savepoint():
                    await apply_tx([event], tx.connection)
            except Exception as exc:
                if transaction_failure(exc, tx) is not None:
                    raise  # the connection is gone: not this event's fault
                if self.hooks.on_error.then_for(exc) == "stop":
                    raise self.stop_error(event.position, exc) from exc
                letter = dead_letter(self.name, event, exc)
                log.error(
                    "projection %r skips position %d: %s", self.name, event.position, letter.error
                )
                await tx.add_dead_letter(letter)
                observe.report_dead_letter(self.name, event, exc)
