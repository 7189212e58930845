"""The synchronous face of PostgreSQL: :class:`SyncPostgresStore`.

One :class:`PostgresStore` per store (one state cache, registry, snapshotter, notifier and
write-token state) runs the async code; synchronous calls drive it in one of two places:

- **A lane in the calling thread** (the common case): the thread's own event loop, kept for
  the thread's life, and its own connection (a pool of one, opened on that loop). A call is
  ``run_until_complete`` of the same coroutine the async API awaits: no thread hop, so
  :func:`~eventcore.execute_sync`, reads and appends cost what the async path costs. Each
  lane holds one slot of the store's ``max_size`` (:class:`~eventcore.postgres._pool.Slots`,
  shared with the loop thread's pool, so the store never has more than ``max_size``
  connections); a lane never takes the last free slot, which keeps the loop thread able to
  serve. A thread that ends closes its lane's connection and frees its slot.
- **The store's loop thread**: one daemon thread running an event loop and the store's
  pool. A call there is ONE coroutine submitted from the caller's thread (one hop each way).
  It serves what blocks or lives long (:meth:`SyncPostgresStore.wait_for_append`,
  ``run_on_loop`` and the projection runners, LISTEN), the background work a lane hands
  over without waiting (the post-commit NOTIFY, snapshot writes), a store with read
  replicas (their pools live on this loop), and the threads that found no free slot.

The caller's context variables (tracing spans...) go with every call, on either path. The
threads, loops and connections are per process: a forked child never touches the parent's
(the sockets are shared with the parent); it opens its own on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eventcore.errors import UsageError
from eventcore.metadata import Metadata
from eventcore.postgres._notify import NOBODY_RECHECK, Notifier
from eventcore.postgres._pool import ConnectionPool, Slots
from eventcore.postgres._sql import channel
from eventcore.postgres.store import PostgresStore
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent, WriteToken
from eventcore.registry import EventRegistry
from eventcore.snapshot import Snapshot, Snapshotter
from eventcore.state_cache import StateCache
from eventcore.store import Expected, FoldRows, LogHoldback, PurgeRecord, StreamBounds

if TYPE_CHECKING:
    from eventcore._pipeline import ExecutionResult
    from eventcore.command import Command
    from eventcore.postgres._replicas import ReadFrom, ReplicaStatus
    from eventcore.retry import RetryPolicy

__all__ = ["SyncPostgresStore"]

T = TypeVar("T")

_generation = 0
"""Bumped in a forked child: a loop thread made in an older generation is the parent's."""


def _forked() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

_get_running_loop = asyncio._get_running_loop  # no exception when there is none: cheap


class _Call:
    """One submitted coroutine: its task (set on the loop) and its outcome."""

    __slots__ = ("coro", "ctx", "future", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.ctx = contextvars.copy_context()
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        """On the loop: run the coroutine as a task in the caller's context."""
        if self.future.cancelled():  # the caller gave up before it started
            self.coro.close()
            return
        self.task = task = asyncio.get_running_loop().create_task(self.coro, context=self.ctx)
        task.add_done_callback(self.done)

    def done(self, task: asyncio.Task[Any]) -> None:
        future = self.future
        if future.done():
            return
        if task.cancelled():
            future.cancel()
        elif (exc := task.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())

    def cancel(self) -> None:
        """On the loop: cancel the task (the caller was interrupted)."""
        if self.task is not None:
            self.task.cancel()
        else:
            self.future.cancel()


class _Home:
    """A store's loop thread, for the background work a lane hands over without waiting."""

    loop: asyncio.AbstractEventLoop | None = None
    ident: int | None = None

    def away(self) -> bool:
        """Whether the caller runs elsewhere than on the loop thread (in a lane)."""
        return self.loop is not None and threading.get_ident() != self.ident

    def hand_over(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` soon on the loop thread; nothing if its loop is closed."""
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)


class _LoopNotifier(Notifier):
    """The store's notifier, on the loop thread: a lane's append hands its announcement
    over (without waiting); the NOTIFY connection stays there."""

    home: _Home

    def announce(self, position: int) -> None:
        """:meth:`Notifier.announce` on the loop thread (never fails the append)."""
        if not self.home.away():
            super().announce(position)
            return
        looked = self.looked_at
        if (
            self.task is None
            and not self.listened
            and looked is not None
            and time.monotonic() - looked < NOBODY_RECHECK  # the loop's clock
        ):
            # What announce() would do there (nobody listened a moment ago): no wake-up
            # of the loop thread for it. (A listener that just started polls the head.)
            if position > self.head:
                self.head = position
            return
        self.home.hand_over(super().announce, position)


class _LoopSnapshotter(Snapshotter):
    """The store's snapshot policy: a lane's snapshot (encoded in the lane) is written in
    the background on the loop thread, as an async store's is, so the call does not wait
    for it and :meth:`Snapshotter.close` finds every write in flight there."""

    home: _Home

    def write(self, command_class: type, snapshot: Snapshot) -> None:
        """:meth:`Snapshotter.write` on the loop thread (never fails the command)."""
        if self.home.away():
            self.home.hand_over(super().write, command_class, snapshot)
        else:
            super().write(command_class, snapshot)


class _SharedStore(PostgresStore):
    """The one PostgresStore of a SyncPostgresStore: on its loop thread, and in the lanes
    of the calling threads, where every statement goes to the lane's own connection."""

    def __init__(self, dsn: str, **options: Any) -> None:
        super().__init__(dsn, **options)
        self._pool_slots = Slots(self._pool_sizes[1])  # the loop pool's and the lanes'
        self.home = _Home()
        """The loop thread (set when it starts)."""
        self._notifier = notifier = _LoopNotifier(self, channel(self.schema))
        notifier.home = self.home
        if self.snapshots is not None:
            snapshots = self.snapshots
            self.snapshots = _LoopSnapshotter(snapshots.store, snapshots.codec, snapshots.every)
            self.snapshots.home = self.home
        self.lane_local = threading.local()
        """``.pool``: the calling thread's lane pool (unset: the loop thread's pool)."""

    async def _get_pool(self) -> Any:
        pool = getattr(self.lane_local, "pool", None)
        if pool is not None:
            return pool
        return await super()._get_pool()


class _ThreadEnd:
    """Kept in a lane thread's thread-local: finalized when the thread ends."""

    __slots__ = ("__weakref__",)


def _connect_weakly(store: _SharedStore) -> Callable[[], Awaitable[Any]]:
    """``store._open_connection`` without keeping ``store`` alive: a lane stays in its
    thread's locals after the store is closed (until the thread ends)."""
    ref = weakref.ref(store)

    async def connect() -> Any:
        live = ref()
        if live is None:
            raise UsageError(_CLOSED)
        return await live._open_connection()

    return connect


class _Lane:
    """One calling thread's own event loop and connection (a pool of one), for its life.

    It refers to its store and lanes weakly: a closed store is freed even while the lane
    stays in the locals of a thread that lives on (the main thread's)."""

    def __init__(self, lanes: _Lanes) -> None:
        self.generation = _generation
        self.lanes = weakref.ref(lanes)
        self.loop = asyncio.new_event_loop()
        self.pool = ConnectionPool(_connect_weakly(lanes.store), min_size=0, max_size=1)
        self.lock = threading.Lock()  # held by a call, or by whoever closes the lane
        self.task: asyncio.Task[Any] | None = None
        self.closed = False
        self.owner = threading.get_ident()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this thread's loop (in the caller's context) until it ends."""
        with self.lock:
            if self.closed:
                coro.close()
                raise UsageError(_CLOSED)
            loop = self.loop
            self.task = task = loop.create_task(coro)
            try:
                return loop.run_until_complete(task)
            except asyncio.CancelledError:
                if not self.closed:
                    raise
                raise UsageError("the SyncPostgresStore was closed during this call") from None
            except BaseException:
                if not task.done():  # interrupted (Ctrl-C) while waiting: end it here
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        loop.run_until_complete(task)
                raise
            finally:
                self.task = None
                self._settle()

    def _settle(self) -> None:
        """After a call: finish any task it left (none is expected: background writes go
        to the loop thread), so nothing waits on a loop that is not running; close the
        lane if the store was closed meanwhile."""
        loop = self.loop
        pending = asyncio.all_tasks(loop)
        if pending:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait(pending))
        if self.closed:
            self._shutdown()

    def _shutdown(self) -> None:
        """Close the connection and the loop, free the slot (lock held, no loop running)."""
        loop = self.loop
        if loop.is_closed():
            return
        try:
            loop.run_until_complete(asyncio.wait_for(self.pool.close(), 5))
        except BaseException:
            self.pool.terminate()
        finally:
            loop.close()
            lanes = self.lanes()
            if lanes is not None:
                lanes.retired(self)

    def end(self) -> None:
        """Close this lane from any thread (its own thread's exit, or the store's close):
        at once when idle, else its call is cancelled and its thread closes it after."""
        self.closed = True
        if self.generation != _generation:
            return  # the parent's, in a forked child: its sockets are not ours
        if self.lock.acquire(blocking=False):
            try:
                if _get_running_loop() is None:
                    self._shutdown()
                else:  # a loop runs in this thread: close the lane from a helper thread
                    helper = threading.Thread(target=self._shutdown, daemon=True)
                    helper.start()
                    helper.join(15)
            finally:
                self.lock.release()
            return
        task = self.task
        if task is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(task.cancel)
        if threading.get_ident() != self.owner and self.lock.acquire(timeout=15):
            self.lock.release()  # its thread closed it at the end of the call


class _Lanes:
    """The lanes of one store in this process: at most one per thread, each holding a slot
    of the store's ``max_size`` (the loop thread's pool always keeps one)."""

    def __init__(self, store: _SharedStore) -> None:
        self.store = store
        self.local = store.lane_local
        self.lock = threading.Lock()
        self.all: set[_Lane] = set()
        self.closed = False
        # With read replicas every call takes the loop thread: their pools live there.
        self.enabled = store._replicas is None

    def get(self) -> _Lane | None:
        """This thread's lane, made now if a slot is free (None: use the loop thread)."""
        lane: _Lane | None = getattr(self.local, "lane", None)
        if lane is not None:
            return lane
        store = self.store
        if not self.enabled or self.closed or not store._checked:
            return None  # not open yet: the loop thread opens the store first
        # The last free slot only while the loop thread's pool holds a connection: it can
        # always serve (a lost connection gives its slot back, and then it is kept).
        slots, pool = store._pool_slots, store._pool
        held = pool.get_size() if isinstance(pool, ConnectionPool) else 0
        if slots is None or not slots.take(keep=0 if held else 1):
            return None
        lane = _Lane(self)
        with self.lock:
            if self.closed:
                lane.loop.close()
                slots.give()
                return None
            self.all.add(lane)
        local = self.local
        local.lane = lane
        local.pool = lane.pool
        local.end = end = _ThreadEnd()
        weakref.finalize(end, lane.end).atexit = False  # the thread ended: close its lane
        return lane

    def retired(self, lane: _Lane) -> None:
        """``lane`` is closed: free its slot."""
        with self.lock:
            self.all.discard(lane)
        slots = self.store._pool_slots
        if slots is not None:
            slots.give()

    def close(self) -> None:
        """Close every lane (from any thread); no new ones."""
        with self.lock:
            self.closed = True
            lanes = list(self.all)
        for lane in lanes:
            lane.end()


class _LoopThread:
    """A daemon thread running one event loop, and the store that lives on it."""

    def __init__(self, store: _SharedStore) -> None:
        self.generation = _generation
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.closed = False
        self.calls: set[_Call] = set()  # submitted and not returned yet
        self.thread = threading.Thread(
            target=self._main, name="eventcore-postgres-sync", daemon=True
        )
        self.thread.start()
        store.home.loop, store.home.ident = self.loop, self.thread.ident
        self.lanes = _Lanes(store)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; an interrupt cancels it there."""
        call = _Call(coro)
        with self.lock:
            if self.closed:
                coro.close()
                raise UsageError(_CLOSED)
            self.calls.add(call)
            self.loop.call_soon_threadsafe(call.start)
        try:
            return call.future.result()  # type: ignore[no-any-return]
        except concurrent.futures.CancelledError:
            if not self.closed:
                raise
            raise UsageError("the SyncPostgresStore was closed during this call") from None
        except BaseException:
            if not call.future.done():  # interrupted (KeyboardInterrupt...) while waiting
                self.loop.call_soon_threadsafe(call.cancel)
            raise
        finally:
            with self.lock:
                self.calls.discard(call)

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel the calls in flight, close the store, then end the loop and its thread."""
        if self.generation != _generation:
            return  # the parent's: nothing of it runs in this process
        with self.lock:
            if self.closed:
                return
            self.closed = True
            calls = list(self.calls)
        self.lanes.close()
        if threading.current_thread() is self.thread:  # (a finalizer run on the loop)
            task = self.loop.create_task(self.store.close())
            task.add_done_callback(lambda _: self.loop.stop())
            return
        for call in calls:
            self.loop.call_soon_threadsafe(call.cancel)
        try:
            asyncio.run_coroutine_threadsafe(self.store.close(), self.loop).result(timeout)
        except Exception:  # closing is best effort; the loop stops anyway
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        for call in calls:  # never started, or the loop ended first: wake their callers
            call.future.cancel()


_CLOSED = "this SyncPostgresStore is closed: connect a new one"


def _stop(holder: list[_LoopThread | None]) -> None:
    """Finalizer: stop the loop thread of a store that was dropped without ``close()``."""
    lt = holder[0]
    holder[0] = None
    if lt is not None:
        lt.stop()


class SyncPostgresStore:
    """The PostgreSQL event store for synchronous code (Django, Flask, scripts).

    Implements :class:`~eventcore.store.SyncEventStore`, so
    :func:`~eventcore.execute_sync` accepts it, with the same semantics and typed errors as
    :class:`PostgresStore` (the store it runs: in the calling thread on an event loop and a
    connection of that thread's own, else on a loop thread of the store's own)::

        with SyncPostgresStore.connect(dsn) as store:
            store.migrate()
            execute_sync(store, OpenAccount(account="acc-1", owner="ann"))

    It is safe to share between threads (calls run concurrently, each on a connection of
    its own; ``max_size`` connections in all, ``min_size`` of them kept by the loop
    thread) and across ``os.fork`` (a child opens its own connections on first use).
    Projections: ``ProjectionRunner(store, ...).run_until_caught_up_sync()``.

    Args:
        dsn: a libpq connection string.
        **options: the options of :class:`PostgresStore` (``schema``, ``min_size``,
            ``max_size``, ``statement_timeout``, ``registry``, ``state_cache``...).

    Raises:
        UsageError: any call made from inside a running event loop (it would block the
            loop): async code uses :class:`PostgresStore` and ``await``.
        ConfigurationError: a malformed DSN or schema name.
        ValidationError: an invalid option.
    """

    def __init__(self, dsn: str, **options: Any) -> None:
        if "pool" in options:
            raise UsageError(
                "SyncPostgresStore opens its own pool (an asyncpg pool belongs to one event "
                "loop): give it a dsn"
            )
        store = _SharedStore(dsn, **options)  # the options are checked here, in the caller
        self._dsn = dsn
        self._options = options
        self._lock = threading.Lock()
        self._closed = False
        self._holder: list[_LoopThread | None] = [_LoopThread(store)]
        weakref.finalize(self, _stop, self._holder)
        self.registry: EventRegistry = store.registry
        """The registry that decodes payloads for :attr:`RecordedEvent.data`."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "registry":  # the store it runs (and a forked child's) use it too
            self._options["registry"] = value
            lt = self._holder[0]
            if lt is not None:
                lt.store.registry = value

    def _loop_thread(self) -> _LoopThread:
        """This process's loop thread (a new one in a forked child)."""
        lt = self._holder[0]
        if lt is not None and lt.generation == _generation:
            return lt
        with self._lock:
            if self._closed:
                raise UsageError(_CLOSED)
            lt = self._holder[0]
            if lt is None or lt.generation != _generation:
                # In a forked child the parent's loop, thread and sockets are left alone.
                lt = _LoopThread(_SharedStore(self._dsn, **self._options))
                self._holder[0] = lt
            return lt

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in this thread's lane (else on the loop thread); its result.

        Raises:
            UsageError: called from inside a running event loop (or the store is closed).
        """
        lt = self._checked_loop_thread(coro)
        lane = lt.lanes.get()
        if lane is not None:
            return lane.run(coro)
        return lt.run(coro)

    def _run_on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this store's loop thread (what blocks long, or opens the store).

        Raises:
            UsageError: called from inside a running event loop (or the store is closed).
        """
        return self._checked_loop_thread(coro).run(coro)

    def _checked_loop_thread(self, coro: Coroutine[Any, Any, Any]) -> _LoopThread:
        """The loop thread, after refusing a call from a running loop or on a closed store."""
        if _get_running_loop() is not None:
            coro.close()
            raise UsageError(
                "SyncPostgresStore was called from inside a running event loop, where "
                "it would block the loop: in async code use PostgresStore and await it, "
                "e.g. `await execute(store, command)`"
            )
        if self._closed:
            coro.close()
            raise UsageError(_CLOSED)
        return self._loop_thread()

    @property
    def _store(self) -> _SharedStore:
        """The :class:`PostgresStore` on the loop thread (only ever awaited there)."""
        return self._loop_thread().store

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the store runs on (see :class:`~eventcore.store.LoopThreadStore`)."""
        return self._loop_thread().loop

    @property
    def loop_store(self) -> PostgresStore:
        """The :class:`PostgresStore` it runs: await it only on :attr:`loop`."""
        return self._loop_thread().store

    def run_on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on :attr:`loop` and block until it ends (Ctrl-C cancels it).

        Raises:
            UsageError: called from inside a running event loop, or the store is closed.
        """
        return self._run_on_loop(coro)

    def _execute_sync(
        self,
        command: Command[Any, Any],
        metadata: Metadata | None,
        retry: RetryPolicy | None,
        idempotency_key: str | None,
    ) -> ExecutionResult:
        """What :func:`~eventcore.execute_sync` does with this store: the whole async
        :func:`~eventcore.execute` as one call, in this thread's lane (else on the loop
        thread)."""
        from eventcore.executor import execute

        return self._run(
            execute(
                self._store,
                command,
                metadata=metadata,
                retry=retry,
                idempotency_key=idempotency_key,
            )
        )

    # -- lifecycle -----------------------------------------------------------------

    @classmethod
    def connect(cls, dsn: str, **options: Any) -> SyncPostgresStore:
        """Create a store from ``dsn`` and open its pool (options as :class:`PostgresStore`).

        Raises:
            StoreUnavailable: the server could not be reached.
            StoreError: the schema is older than this eventcore needs (run
                :meth:`migrate`) or newer than it knows.
        """
        store = cls(dsn, **options)
        try:
            store.open()
        except BaseException:
            store.close()
            raise
        return store

    def open(self) -> SyncPostgresStore:
        """Open the pool and check the schema version (else done on first use)."""
        self._run_on_loop(self._store.open())
        return self

    def close(self) -> None:
        """Close the pool and end the loop thread; idempotent. Later calls raise UsageError."""
        with self._lock:
            self._closed = True
            lt, self._holder[0] = self._holder[0], None
        if lt is not None:
            if _get_running_loop() is lt.loop:
                raise UsageError("SyncPostgresStore.close() was called on its own loop")
            lt.stop()

    def __enter__(self) -> SyncPostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncPostgresStore(schema={self.schema!r})"

    # -- attributes of the store it runs -------------------------------------------

    @property
    def schema(self) -> str:
        """The schema holding the store's tables."""
        return str(self._options.get("schema", "eventcore"))

    @property
    def state_cache(self) -> StateCache | None:
        """The executor's folded-state cache (``None``: off)."""
        return self._store.state_cache

    @property
    def snapshots(self) -> Snapshotter | None:
        """The store's snapshot policy (:mod:`eventcore.snapshot`); None: no snapshots."""
        return self._store.snapshots

    def migrate(self) -> int:
        """Apply the missing migrations; the schema version (see :meth:`PostgresStore.migrate`)."""
        return self._run_on_loop(self._store.migrate())

    # -- the SyncEventStore protocol -------------------------------------------------

    def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append atomically across streams; see :meth:`PostgresStore.append`."""
        return self._run(
            self._store.append(events, expected=expected, metadata=metadata, condition=condition)
        )

    def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """Events matching ``query``; see :meth:`PostgresStore.read_query`."""
        return self._run(self._store.read_query(query, after=after, limit=limit))

    def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """See :meth:`~eventcore.store.EventStore.read_fold`."""
        return self._run(self._store.read_fold(streams))

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """See :meth:`~eventcore.store.EventStore.read_tail`."""
        return self._run(self._store.read_tail(streams, versions, fold_from, hint))

    def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        limit: int | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version > ``after_version``, oldest first.

        ``read_from``/``after``: where the read goes and a write token it must see (with
        replicas; see :meth:`PostgresStore.read_stream`).
        """
        return self._run(
            self._store.read_stream(
                stream_id,
                after_version=after_version,
                limit=limit,
                read_from=read_from,
                after=after,
            )
        )

    def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of several streams with version > ``after_version``, in global order."""
        return self._run(
            self._store.read_streams(stream_ids, after_version=after_version, limit=limit)
        )

    def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version < ``before_version``, newest first."""
        return self._run(
            self._store.read_stream_backwards(stream_id, before_version=before_version, limit=limit)
        )

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The global log after ``after_position``; see :meth:`PostgresStore.read_all`."""
        return self._run(
            self._store.read_all(
                after_position=after_position,
                limit=limit,
                event_types=event_types,
                stream_prefix=stream_prefix,
                read_from=read_from,
                after=after,
            )
        )

    def iter_all(
        self,
        *,
        after_position: int = 0,
        page_size: int = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Iterator[RecordedEvent[Any]]:
        """Iterate the global log in pages of ``page_size`` (one call per page)."""
        from eventcore.errors import ValidationError

        if page_size < 1:
            raise ValidationError("page_size", "must be at least 1", page_size)
        cursor = after_position
        while True:
            page = self.read_all(
                after_position=cursor,
                limit=page_size,
                event_types=event_types,
                stream_prefix=stream_prefix,
            )
            yield from page
            if len(page) < page_size:
                return
            cursor = page[-1].position

    def read_events_by_id(self, event_ids: Sequence[uuid.UUID | int]) -> list[RecordedEvent[Any]]:
        """The stored events with these ids, in position order; ids not stored are left out."""
        return self._run(self._store.read_events_by_id(event_ids))

    def stream_version(self, stream_id: str) -> int:
        """A stream's version: its number of events, plus one per truncation (0 = no stream)."""
        return self._run(self._store.stream_version(stream_id))

    def head(self) -> int:
        """The highest position a reader of the global log may safely read up to (0: none)."""
        return self._run(self._store.head())

    # -- more of PostgresStore -------------------------------------------------------

    def latest_position(self) -> int:
        """The highest committed position, which :meth:`read_all` may not reach yet."""
        return self._run(self._store.latest_position())

    def log_holdback(self) -> LogHoldback | None:
        """The oldest append of this store still in flight (None: none is)."""
        return self._run(self._store.log_holdback())

    def write_token(self) -> int:
        """A write token (the primary's WAL position now) for reads elsewhere that must
        see this store's acknowledged appends (``after=`` on :class:`PostgresStore`'s
        reads); see :meth:`PostgresStore.write_token`."""
        return self._run(self._store.write_token())

    def read_after(self, token: WriteToken | int) -> None:
        """Make every later read show the write of ``token``; see
        :meth:`PostgresStore.read_after`."""
        self._store.read_after(token)

    def replica_status(self) -> list[ReplicaStatus]:
        """Every read replica probed now (lag in bytes and seconds, in rotation or not)."""
        return self._run(self._store.replica_status())

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by stream id, optionally by prefix."""
        return self._run(self._store.list_streams(prefix=prefix, after=after, limit=limit))

    def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (see
        :meth:`PostgresStore.count_events`)."""
        return self._run(self._store.count_events(after_position, upto))

    def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Block until :meth:`head` passes ``after_position`` or ``timeout`` seconds pass."""
        return self._run_on_loop(self._store.wait_for_append(after_position, timeout))

    # -- stream lifecycle (eventcore.store.SyncStreamLifecycle) -----------------------

    def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """Hide every event ``stream_id`` has now (a soft delete); its version.

        See :meth:`PostgresStore.delete_stream` and
        :class:`~eventcore.store.StreamLifecycle`.
        """
        return self._run(self._store.delete_stream(stream_id, expected=expected))

    def truncate_stream(self, stream_id: str, before_version: int, *, expected: int = -1) -> int:
        """Hide the events of ``stream_id`` below ``before_version``; its version.

        See :meth:`PostgresStore.truncate_stream`.
        """
        return self._run(self._store.truncate_stream(stream_id, before_version, expected=expected))

    def stream_bounds(self, stream_id: str) -> StreamBounds:
        """The first visible version and the version of ``stream_id``."""
        return self._run(self._store.stream_bounds(stream_id))

    def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """Erase the hidden events of ``stream_id``, with an audit record (the schema
        owner's alone: see :meth:`PostgresStore.purge_stream`)."""
        return self._run(self._store.purge_stream(stream_id, actor=actor, reason=reason))

    def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """Every purge's audit record (of ``stream_id`` only), oldest first."""
        return self._run(self._store.purge_log(stream_id))
