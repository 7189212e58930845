"""The projection runner: checkpoints, catch-up, live delivery, failures, leadership."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventcore import observe
from eventcore.errors import StoreUnavailable, ValidationError
from eventcore.projection._source import Source
from eventcore.projection.checkpoint import (
    CheckpointStore,
    MemoryCheckpointStore,
    PostgresCheckpointStore,
    dead_letter,
    lock_key,
)
from eventcore.projection.projection import BatchFailure, Hooks, ProjectionError
from eventcore.projection.reconnect import (
    GaveUp,
    Outage,
    ReconnectPolicy,
    StoreFault,
    driver_error,
    store_failure,
    transaction_failure,
)
from eventcore.projection.status import (
    Progress,
    ProgressCallback,
    ProgressTracker,
    ProjectionStatus,
    State,
    statuses,
)
from eventcore.projection.subscription import Page, Subscription
from eventcore.recorded import RecordedEvent

__all__ = ["Progress", "ProjectionRunner", "ProjectionStatus"]

log = logging.getLogger("eventcore.projection")


class _LostLeadership(Exception):
    """The leader lock or the checkpoint moved under us: go back to standby."""


class _Worker:
    """Runs one projection: its own subscription, checkpoint, failures and lock."""

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
        if self.hooks.transactional is not None and not isinstance(
            runner.checkpoints, PostgresCheckpointStore
        ):
            raise ValidationError(
                "checkpoints",
                f"projection {self.name!r} has apply_in_transaction: it needs a "
                "PostgresCheckpointStore (the read model's database)",
            )

    # -- leadership ----------------------------------------------------------------

    async def _acquire(self) -> Any:
        """A connection holding this projection's advisory lock (None: stopping)."""
        runner = self.runner
        key = lock_key(runner.checkpoints.schema, self.name)  # type: ignore[attr-defined]
        conn = None
        if self.outage.since is None:
            self.state = "standby"
        while not runner._stopping.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await runner._dedicated_connection()
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    return conn
                self._recovered()  # the server answers: another process leads
                self.state = "standby"
            except Exception as exc:
                await runner._close_connection(conn)
                conn = None
                failure = store_failure(exc, "take the leader lock")
                if failure is None:
                    cause = driver_error(exc, "lock") or exc
                    raise self._stop_error(self.position, cause) from cause
                await self._pause(failure)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner._stopping.wait(), runner.takeover_interval)
        await runner._close_connection(conn)
        return None

    async def _watch_lock(self, conn: Any) -> None:
        """Mark leadership lost when the lock's connection dies."""
        while True:
            await asyncio.sleep(self.runner.lock_check_interval)
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
            except Exception as exc:
                self.lost = True
                self.lock_failure = store_failure(exc, "check the leader lock")
                if self.sub is not None:
                    self.sub.stop()
                return

    # -- running -------------------------------------------------------------------

    async def run(self, *, live: bool, reset_to: int | None = None) -> None:
        """Run until done or stopped, riding out store failures; raise if it fails."""
        runner = self.runner
        self.error = None
        self.outage.clear()
        try:
            while not runner._stopping.is_set():
                conn = watch = failure = None
                try:
                    if runner.exclusive:
                        conn = await self._acquire()
                        if conn is None:
                            break
                        self.lost, self.lock_failure = False, None
                        watch = asyncio.create_task(self._watch_lock(conn))
                    if reset_to is not None:
                        await self._reset(reset_to)
                        reset_to = None
                    await self._consume(live)
                    if not self.lost:
                        break
                    failure = self._leadership_lost()
                except _LostLeadership:
                    failure = self._leadership_lost()
                except ProjectionError:
                    raise
                except Exception as exc:
                    # Only the store's failures get here (the projection's own go to its
                    # strategy): a transient one is retried after the lock is released.
                    failure = store_failure(exc, f"projection {self.name!r}")
                    if failure is None:
                        cause = driver_error(exc, "read") or exc
                        raise self._stop_error(self.position, cause) from cause
                finally:
                    self.sub = None
                    if watch is not None:
                        watch.cancel()
                        await asyncio.gather(watch, return_exceptions=True)
                    if conn is not None:
                        await runner._close_connection(conn, unlock=True)
                if failure is not None:
                    await self._pause(failure)
        except ProjectionError as exc:
            self.state = "failed"
            self.error = exc
            log.error("%s", exc)
            runner._changed()
            raise
        self.state = "stopped"

    def _leadership_lost(self) -> StoreUnavailable | None:
        """Log a lost leadership; the store failure that lost it (None: another runner)."""
        if self.lost and self.lock_failure is not None:
            return self.lock_failure  # the lock's connection died: reconnect
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

    async def _reset(self, position: int) -> None:
        hooks, cps = self.hooks, self.runner.checkpoints
        reset_tx = getattr(hooks.projection, "reset_in_transaction", None)
        if reset_tx is not None and isinstance(cps, PostgresCheckpointStore):
            pool = await cps.pool()
            async with pool.acquire() as conn, conn.transaction():
                await reset_tx(conn)
                await conn.execute(cps._upsert, self.name, position)
        else:
            await hooks.reset_model()
            await cps.reset(self.name, position)

    async def _consume(self, live: bool) -> None:
        runner = self.runner
        source = runner.source
        await runner._prepare()
        self.position = start = await runner.checkpoints.load(self.name)
        hooks = self.hooks
        self.sub = sub = Subscription(
            source,
            after_position=start,
            page_size=runner.page_size,
            event_types=hooks.event_types,
            stream_prefix=hooks.stream_prefix,
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
                raise _LostLeadership
            started, wall = time.perf_counter(), time.time()
            await self._process(page)
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
        dense = self.runner.source.positions_are_dense
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

    # -- applying ------------------------------------------------------------------

    async def _process(self, page: Page) -> None:
        if self.hooks.transactional is not None:
            await self._process_tx(page)
            return
        if page.columns is not None:
            if len(page.columns):
                await self._process_columns(page)
        elif page.events:
            await self._process_events(page.events)
        await self.runner.checkpoints.save(self.name, page.position)

    async def _retry(self, again: Callable[[], Awaitable[Any]], error: Exception) -> bool:
        """Retry per the strategy (the first attempt failed with ``error``); True if ok."""
        strategy = self.hooks.on_error
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
                return True
            except BatchFailure as f:
                error = f.error
            except StoreFault:
                raise
            except Exception as exc:
                error = exc
        self._last_error = error
        return False

    def _stop_error(self, position: int, error: BaseException) -> ProjectionError:
        """The ProjectionError for stopping at ``position`` (raise it ``from error``)."""
        return ProjectionError(self.name, position, repr(error))

    async def _skip(self, event: RecordedEvent[Any] | int, error: BaseException) -> None:
        letter = dead_letter(self.name, event, error)
        log.error("projection %r skips position %d: %s", self.name, letter.position, letter.error)
        await self.runner.checkpoints.add_dead_letter(letter)
        observe.report_dead_letter(self.name, event, error)

    async def _process_events(self, events: list[RecordedEvent[Any]]) -> None:
        hooks = self.hooks
        then = hooks.on_error.then
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
                    if await self._retry(functools.partial(hooks.apply_events, [failed]), f.error):
                        continue
                    if then == "stop":
                        raise self._stop_error(
                            failed.position, self._last_error
                        ) from self._last_error
                    await self._skip(failed, self._last_error)
                    continue
                # apply_batch failed somewhere: retry the batch, then isolate the culprits.
                if await self._retry(functools.partial(hooks.apply_events, chunk), f.error):
                    return
                if then == "stop":
                    raise self._stop_error(
                        chunk[0].position, self._last_error
                    ) from self._last_error
                for event in chunk:
                    try:
                        await hooks.apply_events([event])
                    except BatchFailure as g:
                        await self._skip(event, g.error)
                return

    async def _process_columns(self, page: Page) -> None:
        batch = page.columns
        assert batch is not None
        try:
            await self.hooks.apply_columns(batch)
            return
        except Exception as exc:
            error = exc
        if await self._retry(lambda: self.hooks.apply_columns(batch), error):
            return
        first = int(batch.positions[0])
        if self.hooks.on_error.then == "stop":
            raise self._stop_error(first, self._last_error) from self._last_error
        await self._skip(first, self._last_error)

    async def _process_tx(self, page: Page) -> None:
        cps = self.runner.checkpoints
        assert isinstance(cps, PostgresCheckpointStore)
        events = page.events
        pool = await cps.pool()

        async def attempt(isolate: bool) -> None:
            conn = None
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await self._apply_tx(conn, page, isolate)
            except (_LostLeadership, StoreFault):
                raise
            except Exception as exc:
                # A lost connection is the store's failure, whatever the projection's
                # code made of it: reconnect, do not count it against the projection.
                failure = transaction_failure(exc, conn)
                if failure is not None:
                    raise StoreFault(failure) from exc
                raise

        try:
            await attempt(False)
            return
        except (_LostLeadership, StoreFault):
            raise
        except Exception as exc:
            error = exc
        if await self._retry(lambda: attempt(False), error):
            return
        if self.hooks.on_error.then == "stop":
            first = events[0].position if events else page.position
            raise self._stop_error(first, self._last_error) from self._last_error
        await attempt(True)

    async def _apply_tx(self, conn: Any, page: Page, isolate: bool) -> None:
        """One transactional batch on ``conn``: checkpoint first, then the events.

        With ``isolate`` each event gets a savepoint and a failing one is dead-lettered
        in the same transaction.
        """
        cps = self.runner.checkpoints
        assert isinstance(cps, PostgresCheckpointStore)
        apply_tx = self.hooks.transactional
        assert apply_tx is not None
        # The checkpoint row first: a compare-and-set that also row-locks it, so a second
        # runner that wrongly thinks it is active can never apply twice.
        if not await cps.save_in(conn, self.name, self.position, page.position):
            raise _LostLeadership
        if not page.events:
            return
        if not isolate:
            await apply_tx(page.events, conn)
            return
        for event in page.events:
            try:
                async with conn.transaction():  # a savepoint per event
                    await apply_tx([event], conn)
            except Exception as exc:
                if transaction_failure(exc, conn) is not None:
                    raise  # the connection is gone: not this event's fault
                letter = dead_letter(self.name, event, exc)
                log.error(
                    "projection %r skips position %d: %s", self.name, event.position, letter.error
                )
                await cps.add_dead_letter(letter, conn)
                observe.report_dead_letter(self.name, event, exc)

    _last_error: BaseException = RuntimeError("no error")


class ProjectionRunner:
    """Runs projections over an event store: catch-up from checkpoints, then live.

    Each projection has its own subscription, checkpoint and failure strategy, so a
    failing projection never blocks the others. Use it as::

        async with ProjectionRunner(store, [balances, audit]) as runner:  # run_forever()
            ...
            await runner.wait_for(result.last_position)  # read your own writes

    or ``await runner.run_until_caught_up()`` for batch jobs and tests. Leaving the
    ``async with`` stops gracefully: each projection finishes its current batch and
    saves its checkpoint.

    Delivery is at-least-once (a crash between applying a batch and saving its
    checkpoint repeats that batch) unless the projection has ``apply_in_transaction``
    and the checkpoints are in PostgreSQL: then the batch and the checkpoint commit in
    one transaction, exactly once.

    With PostgreSQL checkpoints (``exclusive``), each projection holds an advisory lock
    on a dedicated connection while it runs: in several processes running the same
    projection exactly one is active, the others wait in ``standby`` and one takes over
    within ``takeover_interval`` seconds when the active one dies.

    Args:
        store: the event store (in-memory store, its ``.aio`` view, PostgreSQL).
        projections: one projection or several (distinct names).
        checkpoints: where positions and dead letters go (default: PostgreSQL tables in
            the store's schema for a PostgreSQL store, else in memory).
        page_size: events per batch.
        poll_interval: seconds between polls when no notification arrives.
        exclusive: hold a PostgreSQL advisory lock per projection (default: when the
            checkpoints are in PostgreSQL).
        takeover_interval: seconds between lock attempts in standby.
        lock_check_interval: seconds between checks that the lock connection is alive.
        on_progress: called with :class:`Progress` during catch-up (sync or async).
        progress_interval: seconds between progress calls.
        reconnect: how long and how often to retry while the store is unavailable
            (default: for as long as the runner runs, backoff capped at 5 s, jitter).
    """

    def __init__(
        self,
        store: Any,
        projections: Sequence[Any] | Any,
        *,
        checkpoints: CheckpointStore | None = None,
        page_size: int = 1000,
        poll_interval: float = 1.0,
        exclusive: bool | None = None,
        takeover_interval: float = 1.0,
        lock_check_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if page_size < 1:
            raise ValidationError("page_size", "must be at least 1", page_size)
        self.source = Source(store, poll_interval=poll_interval)
        if checkpoints is None:
            is_pg = self.source.memory is None and self.source.schema is not None
            checkpoints = (
                PostgresCheckpointStore(self.source.store) if is_pg else MemoryCheckpointStore()
            )
        self.checkpoints: CheckpointStore = checkpoints
        """Where positions and dead letters are kept."""
        self.exclusive = (
            isinstance(checkpoints, PostgresCheckpointStore) if exclusive is None else exclusive
        )
        if self.exclusive and not isinstance(checkpoints, PostgresCheckpointStore):
            raise ValidationError("exclusive", "needs a PostgresCheckpointStore", exclusive)
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.takeover_interval = takeover_interval
        self.lock_check_interval = lock_check_interval
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.reconnect = reconnect if reconnect is not None else ReconnectPolicy()
        """How store failures are retried (see :class:`ReconnectPolicy`)."""
        items = list(projections) if isinstance(projections, list | tuple) else [projections]
        self._workers = [_Worker(self, p) for p in items]
        names = [w.name for w in self._workers]
        if len(set(names)) != len(names):
            raise ValidationError("projections", "names must be distinct", names)
        self._stopping = asyncio.Event()
        self._change = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._pooled: set[int] = set()
        self._outcome: BaseException | None = None

    # -- plumbing ------------------------------------------------------------------

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def _dedicated_connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        store = self.source.store
        dsn = getattr(store, "dsn", None) or getattr(store, "_dsn", None)
        if dsn is not None:
            return await asyncpg.connect(dsn, timeout=10)
        pool = await self.source.pool()
        conn = await pool.acquire()
        self._pooled.add(id(conn))
        return conn

    async def _close_connection(self, conn: Any, *, unlock: bool = False) -> None:
        if conn is None:
            return
        pool = await self.source.pool()
        try:
            if unlock and not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock_all()")
            if id(conn) in self._pooled:
                self._pooled.discard(id(conn))
                await pool.release(conn)
            else:
                await conn.close(timeout=5)
        except Exception:
            conn.terminate()

    def _worker(self, name: str) -> _Worker:
        for w in self._workers:
            if w.name == name:
                return w
        raise KeyError(f"no projection named {name!r}")

    async def _prepare(self) -> None:
        check = getattr(self.checkpoints, "check", None)
        if check is not None:
            await check()

    async def _run(self, workers: Sequence[_Worker], *, fresh: bool = True, **options: Any) -> None:
        if self._running:
            raise RuntimeError("this runner is already running")
        self._running = True
        if fresh:
            self._stopping.clear()
        try:
            results = await asyncio.gather(
                *(w.run(**options) for w in workers), return_exceptions=True
            )
        finally:
            self._running = False
            for w in workers:
                w.sub = None
            self._changed()
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ProjectionError):
                raise r
        errors = [r for r in results if isinstance(r, ProjectionError)]
        if errors:
            raise errors[0]

    # -- public API ----------------------------------------------------------------

    async def run_forever(self) -> None:
        """Run every projection (catch up, then live) until :meth:`stop`.

        Store failures are retried per the runner's ``reconnect`` policy (state
        ``reconnecting``), then each projection resumes from its checkpoint. A projection
        that stops for good (its strategy says stop, or the policy gives up) ends in
        state ``failed`` (see :meth:`status`) while the others go on.

        Raises:
            ProjectionError: a projection stopped for good (raised once every projection
                has ended: at once if it was the only one, else after :meth:`stop`).
        """
        await self._run(self._workers, live=True)

    async def run_until_caught_up(self) -> None:
        """Apply every event up to the current head, then return.

        Raises:
            ProjectionError: a projection stopped on a failure (after the others
                finished).
        """
        await self._run(self._workers, live=False)

    async def rebuild(
        self,
        name: str | None = None,
        *,
        from_position: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Reset a projection (``reset()`` and checkpoint) and replay it up to the head.

        Writers may keep appending: the replay follows the moving head and ends once it
        has reached it. ``progress`` (or the runner's ``on_progress``) is called with
        :class:`Progress` (events/s, head, ETA). With PostgreSQL checkpoints the
        projection's leader lock is taken first. Call it while the runner is not
        running; afterwards :meth:`run_forever` continues from where it ended.

        Args:
            name: the projection (all of them when None).
            from_position: replay the events after this position.
            progress: a progress callback for this rebuild.
        """
        workers = self._workers if name is None else [self._worker(name)]
        saved = self.on_progress
        if progress is not None:
            self.on_progress = progress
        try:
            await self._run(workers, live=False, reset_to=from_position)
        finally:
            self.on_progress = saved

    async def stop(self) -> None:
        """Stop gracefully: every projection finishes its batch and saves its checkpoint."""
        self._stopping.set()
        for w in self._workers:
            if w.sub is not None:
                w.sub.stop()
        task = self._task
        if task is not None:
            self._task = None
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, Exception):
                self._outcome = outcome

    async def wait_for(
        self, position: int, *, timeout: float | None = 10.0, projection: str | None = None
    ) -> None:
        """Wait until the projections (or one) have applied everything up to ``position``.

        Use it to read your own writes: ``await runner.wait_for(result.last_position)``.

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
            ProjectionError: a projection waited for has failed.
        """
        workers = self._workers if projection is None else [self._worker(projection)]
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            for w in workers:
                if w.error is not None:
                    raise w.error
            if all(w.position >= position for w in workers):
                return
            change = self._change
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"projections did not reach position {position}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(change.wait(), remaining)

    async def status(self) -> dict[str, ProjectionStatus]:
        """Status of every projection: state, position, head, lag (events, seconds).

        While the store is unreachable it still answers, from what the runner saw last.
        """
        return await statuses(self.source, self.checkpoints, self._workers)

    async def dead_letters(self, name: str) -> list[Any]:
        """The dead letters recorded for projection ``name``."""
        return await self.checkpoints.dead_letters(name)

    async def __aenter__(self) -> ProjectionRunner:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(self._workers, fresh=False, live=True))
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        """Stop gracefully; raise the error a projection stopped for good with, if any.

        Raises:
            ProjectionError: a projection stopped for good while the block ran (not
                raised when the block itself raised: that exception goes on).
        """
        await self.stop()
        outcome, self._outcome = self._outcome, None
        if outcome is not None and exc_type is None:
            raise outcome
