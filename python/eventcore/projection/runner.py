"""The projection runner: runs projections over one store, catch-up then live.

What lives where: each projection's run loop in ``_worker`` (state, reconnects), its
leadership in ``_leadership``, applying a page and the failure strategy in ``_delivery``,
reading pages in :mod:`~eventcore.projection.subscription`, status and progress in
:mod:`~eventcore.projection.status`. The runner uses only the store protocols of
:mod:`eventcore.store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from eventcore.errors import UsageError, ValidationError
from eventcore.memory import MemoryStore
from eventcore.projection._worker import Worker
from eventcore.projection.checkpoint import DeadLetter
from eventcore.projection.projection import ProjectionError
from eventcore.projection.reconnect import ReconnectPolicy
from eventcore.projection.status import (
    Progress,
    ProgressCallback,
    ProjectionStatus,
    statuses,
)
from eventcore.projection.subscription import projection_store
from eventcore.recorded import WriteToken
from eventcore.store import CheckpointStore, LoopThreadStore, ProjectionStore

__all__ = ["Progress", "ProjectionRunner", "ProjectionStatus"]

T = TypeVar("T")


def _close_runner(runner: asyncio.Runner) -> None:
    """Finalizer of a runner's own loop: close it, from a helper thread when the garbage
    collector runs this inside a running loop (a sync store's call), which cannot run it."""
    if asyncio._get_running_loop() is None:
        runner.close()
        return
    import threading  # loaded on first use

    helper = threading.Thread(target=runner.close, daemon=True)
    helper.start()
    helper.join(5)


class ProjectionRunner:
    """Runs projections over an event store: catch-up from checkpoints, then live.

    Each projection has its own subscription, checkpoint and failure strategy, so a
    failing projection never blocks the others. Use it as::

        async with ProjectionRunner(store, [balances, audit]) as runner:  # run_forever()
            ...
            await runner.wait_for(result.last_position)  # read your own writes

    or ``await runner.run_until_caught_up()`` for batch jobs and tests (from synchronous
    code: :meth:`run_until_caught_up_sync` and :meth:`rebuild_sync`). Leaving the
    ``async with`` stops gracefully: each projection finishes its current batch and
    saves its checkpoint.

    Delivery is at-least-once (a crash between applying a batch and saving its
    checkpoint repeats that batch) unless the projection has ``apply_in_transaction``
    and the checkpoints are in PostgreSQL: then the batch and the checkpoint commit in
    one transaction, exactly once.

    With PostgreSQL checkpoints (``exclusive``), each projection holds a lease (an
    advisory lock on a dedicated connection) while it runs: in several processes running
    the same projection exactly one is active, the others wait in ``standby`` and one
    takes over within ``takeover_interval`` seconds when the active one dies.

    Args:
        store: the event store (in-memory store, its ``.aio`` view, PostgreSQL: any
            :class:`~eventcore.store.ProjectionStore`; a
            :class:`~eventcore.postgres.SyncPostgresStore` for the ``*_sync`` methods).
        projections: one projection or several (distinct names).
        checkpoints: where positions and dead letters go (default: the store's
            :meth:`~eventcore.store.ProjectionStore.checkpoint_store`: PostgreSQL tables
            in the store's schema for a PostgreSQL store, else in memory).
        page_size: events per batch.
        poll_interval: seconds a live subscription waits for an append before it reads
            again (stores poll their head meanwhile as they see fit).
        exclusive: hold a lease per projection (default: when the checkpoints offer
            leases, i.e. are in PostgreSQL).
        takeover_interval: seconds between lease attempts in standby.
        lock_check_interval: seconds between checks that the lease is still held.
        on_progress: called with :class:`Progress` during catch-up (sync or async).
        progress_interval: seconds between progress calls.
        reconnect: how long and how often to retry while the store is unavailable
            (default: for as long as the runner runs, backoff capped at 5 s, jitter).
    """

    def __init__(
        self,
        store: ProjectionStore | MemoryStore | LoopThreadStore,
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
        # A store that runs its async face on a loop of its own (SyncPostgresStore): the
        # runner runs there, driven by the *_sync methods.
        self._home: LoopThreadStore | None = None
        if isinstance(store, LoopThreadStore):
            self._home = store
            store = store.loop_store
        self._own_loop: asyncio.Runner | None = None
        self.store: ProjectionStore = projection_store(store)
        """The store the projections follow."""
        if checkpoints is None:
            checkpoints = self.store.checkpoint_store()
        self.checkpoints: CheckpointStore = checkpoints
        """Where positions and dead letters are kept."""
        self.exclusive = checkpoints.exclusive if exclusive is None else exclusive
        if self.exclusive and not checkpoints.exclusive:
            raise ValidationError(
                "exclusive", "needs checkpoints with leases (a PostgresCheckpointStore)", exclusive
            )
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.takeover_interval = takeover_interval
        self.lock_check_interval = lock_check_interval
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.reconnect = reconnect if reconnect is not None else ReconnectPolicy()
        """How store failures are retried (see :class:`ReconnectPolicy`)."""
        items = list(projections) if isinstance(projections, list | tuple) else [projections]
        self._workers = [Worker(self, p) for p in items]
        names = [w.name for w in self._workers]
        if len(set(names)) != len(names):
            raise ValidationError("projections", "names must be distinct", names)
        self._stopping = asyncio.Event()
        self._change = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._outcome: BaseException | None = None

    # -- plumbing ------------------------------------------------------------------

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _worker(self, name: str) -> Worker:
        for w in self._workers:
            if w.name == name:
                return w
        raise KeyError(f"no projection named {name!r}")

    async def _run(self, workers: Sequence[Worker], *, fresh: bool = True, **options: Any) -> None:
        if self._home is not None and asyncio.get_running_loop() is not self._home.loop:
            raise UsageError(
                "this runner follows a SyncPostgresStore: call run_until_caught_up_sync() "
                "or rebuild_sync() from synchronous code; async code gives the runner a "
                "PostgresStore"
            )
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

    def run_until_caught_up_sync(self) -> None:
        """:meth:`run_until_caught_up` from synchronous code (any store), blocking.

        On a :class:`~eventcore.postgres.SyncPostgresStore` it runs on that store's loop
        thread; on any other store on an event loop the runner keeps for these calls.
        Ctrl-C cancels the run: the batch being applied is not checkpointed, and the next
        run repeats it (at-least-once, as after a crash).

        Raises:
            ProjectionError: a projection stopped on a failure.
            UsageError: called from inside a running event loop (``await
                run_until_caught_up()`` there).
        """
        self._blocking(self.run_until_caught_up)

    def rebuild_sync(
        self,
        name: str | None = None,
        *,
        from_position: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        """:meth:`rebuild` from synchronous code (any store), blocking; see
        :meth:`run_until_caught_up_sync`.

        Raises:
            UsageError: called from inside a running event loop.
        """
        self._blocking(lambda: self.rebuild(name, from_position=from_position, progress=progress))

    def _blocking(self, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine ``start()`` makes to its end, from synchronous code."""
        if asyncio._get_running_loop() is not None:
            raise UsageError(
                "a ProjectionRunner's *_sync method was called from inside a running event "
                "loop, where it would block the loop: await the async method instead"
            )
        if self._home is not None:
            return self._home.run_on_loop(start())
        own = self._own_loop
        if own is None:
            # asyncio.Runner: one loop for every call (the runner's events bind to it);
            # Ctrl-C cancels the run's task before KeyboardInterrupt is raised.
            own = self._own_loop = asyncio.Runner()
            weakref.finalize(self, _close_runner, own)
        return own.run(start())

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
        self,
        position: int | WriteToken,
        *,
        timeout: float | None = 10.0,
        projection: str | None = None,
    ) -> None:
        """Wait until the projections (or one) have applied everything up to ``position``.

        Use it to read your own writes: ``await runner.wait_for(result.write_token)`` (a
        command result's :class:`~eventcore.recorded.WriteToken`, or a position).

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
            ProjectionError: a projection waited for has failed.
        """
        if isinstance(position, WriteToken):
            position = position.position
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
        return await statuses(self.store, self.checkpoints, self._workers)

    async def dead_letters(self, name: str) -> list[DeadLetter]:
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
