"""Run commands: thin sync and async shells around the one command machine.

The machine (:class:`eventcore._core.CommandRun`, see :mod:`eventcore._pipeline`) decides
everything; a shell only runs the effects it asks for. On the in-memory store the machine
runs its reads and appends natively (``run.drive``) and hands back only sleeps, snapshot
loads/saves and the result; any other store (PostgreSQL, wrappers, test doubles) gets every
effect (``run.send``). A store only reads for the folds (``read_fold``, ``read_tail``
return rows); the machine folds the rows into the command's state itself.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from eventcore import observe
from eventcore._core import CommandRun
from eventcore._pipeline import (
    APPEND,
    APPEND_IF,
    DONE,
    FOLD,
    LOAD,
    LOOKUP,
    QUERY,
    SAVE,
    STREAMS,
    TAIL,
    ExecutionResult,
)
from eventcore.errors import (
    ConcurrencyConflict,
    ConditionFailed,
    DuplicateEventId,
    StoreUnavailable,
    UsageError,
)
from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from eventcore.command import Command
    from eventcore.metadata import Metadata
    from eventcore.store import EventStore, SyncEventStore

__all__ = ["ExecutionResult", "execute", "execute_sync"]

# Store errors the machine decides about, handed to it as values.
_RETRIED = (ConcurrencyConflict, StoreUnavailable, DuplicateEventId, ConditionFailed)

# The in-memory store's one native call, read once (not looked up on the class per command).
_execute = CommandRun.execute


def execute_sync(
    store: SyncEventStore,
    command: Command[Any, Any],
    *,
    metadata: Metadata | None = None,
    retry: RetryPolicy | None = None,
    idempotency_key: str | None = None,
) -> ExecutionResult:
    """Execute ``command`` against a synchronous store (in-memory, SyncPostgresStore...).

    Reads every stream the command declares (and discovers), folds, handles, and appends
    the new events in one atomic write with the versions read as expected versions. On a
    conflict it retries from fresh state, and an unavailable store is retried for seconds,
    per ``retry`` (default :class:`RetryPolicy`).

    ``idempotency_key`` makes a retry of the same request safe, even from another process:
    the event ids are derived from the key, and if events were already written under it
    their first outcome is returned (``result.replayed``) without running the command
    again. The key is recorded in the events' metadata (``custom["eventcore.idempotency"]``)
    with a digest of the command's fields; the same key with a different command raises
    :class:`~eventcore.IdempotencyKeyReused`. Costs one read by event id per attempt.

    Raises:
        BusinessRuleViolation: at once, nothing written; so are ``ValidationError``,
            ``UndeclaredStream``, ``SerializationError``, ``CommandError`` and
            ``IdempotencyKeyReused``.
        ConcurrencyConflict: when conflicts outlast the retry policy.
        OutcomeUnknown: when an append's reply was lost and store failures outlast the
            policy: the events may have been written (``.event_ids`` says which ids).
        StoreUnavailable: when store failures outlast the retry policy; nothing written.
        UsageError: ``store`` is asynchronous (use ``SyncPostgresStore`` or ``await
            execute(...)``), or a SyncPostgresStore is called inside a running event loop.
    """
    if type(store) is MemoryStore and store._fused and not observe._hooks:
        # Nothing to trace: one native call, no run object (it reads the cache's bound
        # and the snapshot interval itself).
        out = _execute(
            store._core,
            command,
            store.registry,
            retry or DEFAULT_RETRY,
            metadata,
            idempotency_key,
            store.state_cache,
            store.snapshots,
        )
        if isinstance(out, ExecutionResult):
            return out
        run, effect = out  # a sleep, a snapshot load or save first
        while effect[0] is not DONE:
            effect = run.drive(store._core, _shell_effect(run, effect, store.snapshots))
        return effect[1]  # type: ignore[no-any-return]
    if type(store) is not MemoryStore:
        delegate = getattr(store, "_execute_sync", None)
        if delegate is not None:  # SyncPostgresStore: the async shell, in this thread's lane
            return delegate(command, metadata, retry, idempotency_key)  # type: ignore[no-any-return]
        if inspect.iscoroutinefunction(getattr(type(store), "read_fold", None)):
            _async_store(store)
    active = observe._hooks
    rec = None
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    fused = type(store) is MemoryStore and store._fused
    if fused:  # (its attributes, read directly)
        cache = store.state_cache  # type: ignore[attr-defined]
        snapshots: Any = store.snapshots  # type: ignore[attr-defined]
    else:
        cache = getattr(store, "state_cache", None)
        snapshots = getattr(store, "snapshots", None)
    run = CommandRun(
        command,
        store.registry,
        retry or DEFAULT_RETRY,
        metadata,
        idempotency_key,
        *_cache_and_interval(cache, snapshots, command),
        False,
        rec is not None and bool(rec.after),  # trace only for a hook that reads reports
    )
    try:
        if fused:
            # The machine reads and appends natively: one call for a plain command.
            core = store._core  # type: ignore[attr-defined]
            effect = run.drive(core, None)
            while effect[0] is not DONE:
                effect = run.drive(core, _shell_effect(run, effect, snapshots))
            result: ExecutionResult = effect[1]
        else:
            result = _send_sync(run, store, snapshots)
    except BaseException as exc:
        if rec is not None:
            rec.finish(None, exc, run.trace)
        raise
    if rec is not None:
        rec.finish(result, None, run.trace)
    return result


def _cache_and_interval(cache: Any, snapshots: Any, command: Command[Any, Any]) -> tuple[Any, int]:
    """The state cache and snapshot interval a run of ``command`` uses: a cache bounded to
    no entries is none, and the interval is the snapshot policy's for the command's class
    (0 without snapshots). ``CommandRun.execute`` works out the same natively for the
    in-memory store's path without hooks."""
    return (
        cache if cache is not None and cache.max_entries else None,
        snapshots.interval(type(command)) if snapshots is not None else 0,
    )


def _async_store(store: object) -> None:
    """Raise the UsageError for an asynchronous store given to :func:`execute_sync`."""
    name = type(store).__name__
    raise UsageError(
        f"execute_sync() needs a synchronous store, and {name} is asynchronous: in "
        "synchronous code use SyncPostgresStore.connect(dsn) (eventcore.postgres) for "
        "PostgreSQL, or MemoryStore; in async code `await execute(store, command)`"
    )


def _shell_effect(run: CommandRun, effect: tuple[Any, ...], snapshots: Any) -> Any:
    """Run an effect the machine hands back from ``drive`` (sync): sleep, load or save."""
    kind = effect[0]
    try:
        if kind is LOAD:
            return snapshots.load(effect[1], effect[2])
        if kind is SAVE:
            return snapshots.save(effect[1], effect[2], effect[3])  # never raises
        time.sleep(effect[1])
        return None
    except BaseException as exc:
        run.throw(exc)  # ends the run; raises exc
        raise


def _send_sync(run: CommandRun, store: Any, snapshots: Any) -> ExecutionResult:
    """Drive ``run`` effect by effect against any synchronous store."""
    send = run.send
    result: Any = None
    while True:
        effect = send(result)
        kind = effect[0]
        try:
            if kind is FOLD:
                result = store.read_fold(effect[1])  # rows: the machine folds them
            elif kind is APPEND:
                result = store.append(effect[1], expected=effect[2], metadata=effect[3])
            elif kind is DONE:
                return effect[1]  # type: ignore[no-any-return]
            elif kind is TAIL:
                result = store.read_tail(effect[1], effect[2], effect[3], effect[4])
            elif kind is LOOKUP:
                result = store.read_events_by_id(effect[1])
            elif kind is QUERY:
                result = store.read_query(effect[1], after=effect[2])
            elif kind is STREAMS:
                result = store.read_streams(effect[1])
            elif kind is APPEND_IF:
                result = store.append(
                    effect[1], expected=effect[2], metadata=effect[3], condition=effect[4]
                )
            elif kind is LOAD:
                result = snapshots.load(effect[1], effect[2])
            elif kind is SAVE:
                result = snapshots.save(effect[1], effect[2], effect[3])  # never raises
            else:
                time.sleep(effect[1])
                result = None
        except _RETRIED as exc:
            result = exc
        except BaseException as exc:
            run.throw(exc)  # ends the run; raises exc
            raise


async def execute(
    store: EventStore | SyncEventStore,
    command: Command[Any, Any],
    *,
    metadata: Metadata | None = None,
    retry: RetryPolicy | None = None,
    idempotency_key: str | None = None,
) -> ExecutionResult:
    """Execute ``command`` against any store from async code (see :func:`execute_sync`).

    An in-memory store may be passed directly; its async view is used.
    """
    aio: EventStore = getattr(store, "aio", store)  # type: ignore[arg-type]
    active = observe._hooks
    rec = None
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    snapshots: Any = getattr(aio, "snapshots", None)
    run = CommandRun(
        command,
        aio.registry,
        retry or DEFAULT_RETRY,
        metadata,
        idempotency_key,
        *_cache_and_interval(getattr(aio, "state_cache", None), snapshots, command),
        getattr(aio, "warm_append_first", False),
        rec is not None and bool(rec.after),  # trace only for a hook that reads reports
    )
    try:
        if (
            type(aio) is AsyncMemoryStore
            and aio._fused
            and type(aio.sync) is MemoryStore
            and aio.sync._fused
        ):
            core = aio.sync._core
            effect = run.drive(core, None)
            while effect[0] is not DONE:
                effect = run.drive(core, await _shell_effect_async(run, effect, snapshots))
            result: ExecutionResult = effect[1]
        else:
            result = await _send_async(run, aio, snapshots)
    except BaseException as exc:
        if rec is not None:
            rec.finish(None, exc, run.trace)
        raise
    if rec is not None:
        rec.finish(result, None, run.trace)
    return result


async def _shell_effect_async(run: CommandRun, effect: tuple[Any, ...], snapshots: Any) -> Any:
    """Run an effect the machine hands back from ``drive`` (async): sleep, load or save."""
    kind = effect[0]
    try:
        if kind is LOAD:
            return await snapshots.load_async(effect[1], effect[2])
        if kind is SAVE:  # encodes now; an async store writes in the background
            return snapshots.save(effect[1], effect[2], effect[3])
        import asyncio  # loaded on first use: sync-only code never needs it

        await asyncio.sleep(effect[1])
        return None
    except BaseException as exc:
        run.throw(exc)  # ends the run; raises exc
        raise


async def _send_async(run: CommandRun, aio: Any, snapshots: Any) -> ExecutionResult:
    """Drive ``run`` effect by effect against any async store."""
    send = run.send
    result: Any = None
    while True:
        effect = send(result)
        kind = effect[0]
        try:
            if kind is FOLD:
                result = await aio.read_fold(effect[1])  # rows: the machine folds them
            elif kind is APPEND:
                result = await aio.append(effect[1], expected=effect[2], metadata=effect[3])
            elif kind is DONE:
                return effect[1]  # type: ignore[no-any-return]
            elif kind is TAIL:
                result = await aio.read_tail(effect[1], effect[2], effect[3], effect[4])
            elif kind is LOOKUP:
                result = await aio.read_events_by_id(effect[1])
            elif kind is QUERY:
                result = await aio.read_query(effect[1], after=effect[2])
            elif kind is STREAMS:
                result = await aio.read_streams(effect[1])
            elif kind is APPEND_IF:
                result = await aio.append(
                    effect[1], expected=effect[2], metadata=effect[3], condition=effect[4]
                )
            elif kind is LOAD:
                result = await snapshots.load_async(effect[1], effect[2])
            elif kind is SAVE:  # encodes now; an async store writes in the background
                result = snapshots.save(effect[1], effect[2], effect[3])
            else:
                import asyncio  # loaded on first use: sync-only code never needs it

                await asyncio.sleep(effect[1])
                result = None
        except _RETRIED as exc:
            result = exc
        except BaseException as exc:
            run.throw(exc)  # ends the run; raises exc
            raise
