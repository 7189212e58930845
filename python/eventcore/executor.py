"""Run commands: thin sync and async shells around the one sans-IO pipeline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from eventcore import observe
from eventcore._pipeline import (
    APPEND,
    DONE,
    FOLD,
    LOAD,
    LOOKUP,
    SAVE,
    TAIL,
    ExecutionResult,
    run_command,
)
from eventcore.errors import ConcurrencyConflict, DuplicateEventId, StoreUnavailable
from eventcore.retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from eventcore.command import Command
    from eventcore.metadata import Metadata
    from eventcore.store import EventStore, SyncEventStore

__all__ = ["ExecutionResult", "execute", "execute_sync"]

# Store errors the pipeline decides about, handed to it as values.
_RETRIED = (ConcurrencyConflict, StoreUnavailable, DuplicateEventId)


def execute_sync(
    store: SyncEventStore,
    command: Command[Any, Any],
    *,
    metadata: Metadata | None = None,
    retry: RetryPolicy | None = None,
    idempotency_key: str | None = None,
) -> ExecutionResult:
    """Execute ``command`` against a synchronous store (the in-memory store).

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
        BusinessRuleViolation, ValidationError, UndeclaredStream, SerializationError,
        CommandError, IdempotencyKeyReused: at once, nothing written.
        ConcurrencyConflict: when conflicts outlast the retry policy.
        OutcomeUnknown: when an append's reply was lost and store failures outlast the
            policy: the events may have been written (``.event_ids`` says which ids).
        StoreUnavailable: when store failures outlast the retry policy; nothing written.
        UsageError: ``store`` is asynchronous (use ``await execute(...)``).
    """
    active = observe._hooks
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    cache = getattr(store, "state_cache", None)
    if cache is not None and not cache.max_entries:
        cache = None
    snapshots: Any = getattr(store, "snapshots", None)
    steps = run_command(
        command,
        store.registry,
        retry or DEFAULT_RETRY,
        metadata,
        idempotency_key,
        cache,
        snapshots.interval(type(command)) if snapshots is not None else 0,
    )
    if active:
        steps = observe.observed(steps, rec)
    send = steps.send
    result: Any = None
    while True:
        effect = send(result)
        kind = effect[0]
        try:
            if kind is FOLD:
                result = store.fold_streams(effect[1], effect[2], effect[3], effect[4])
            elif kind is APPEND:
                result = store.append(effect[1], expected=effect[2], metadata=effect[3])
            elif kind is DONE:
                return effect[1]  # type: ignore[no-any-return]
            elif kind is TAIL:
                result = store.fold_tail(*effect[1:])
            elif kind is LOOKUP:
                result = store.read_events_by_id(effect[1])
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
            steps.throw(exc)  # the pipeline (and any observer) sees it; it is re-raised
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
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    cache = getattr(aio, "state_cache", None)
    if cache is not None and not cache.max_entries:
        cache = None
    snapshots: Any = getattr(aio, "snapshots", None)
    steps = run_command(
        command,
        aio.registry,
        retry or DEFAULT_RETRY,
        metadata,
        idempotency_key,
        cache,
        snapshots.interval(type(command)) if snapshots is not None else 0,
        getattr(aio, "warm_append_first", False),
    )
    if active:
        steps = observe.observed(steps, rec)
    send = steps.send
    result: Any = None
    while True:
        effect = send(result)
        kind = effect[0]
        try:
            if kind is FOLD:
                result = await aio.fold_streams(effect[1], effect[2], effect[3], effect[4])
            elif kind is APPEND:
                result = await aio.append(effect[1], expected=effect[2], metadata=effect[3])
            elif kind is DONE:
                return effect[1]  # type: ignore[no-any-return]
            elif kind is TAIL:
                result = await aio.fold_tail(*effect[1:])
            elif kind is LOOKUP:
                result = await aio.read_events_by_id(effect[1])
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
            steps.throw(exc)  # the pipeline (and any observer) sees it; it is re-raised
            raise
