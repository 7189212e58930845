"""Run commands: thin sync and async shells around the one sans-IO pipeline."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from eventcore import observe
from eventcore._pipeline import APPEND, DONE, FOLD, ExecutionResult, run_command
from eventcore.errors import ConcurrencyConflict, StoreUnavailable
from eventcore.retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from eventcore.command import Command
    from eventcore.metadata import Metadata
    from eventcore.store import EventStore, SyncEventStore

__all__ = ["ExecutionResult", "execute", "execute_sync"]

_RETRIED = (ConcurrencyConflict, StoreUnavailable)


def execute_sync(
    store: SyncEventStore,
    command: Command[Any, Any],
    *,
    metadata: Metadata | None = None,
    retry: RetryPolicy | None = None,
) -> ExecutionResult:
    """Execute ``command`` against a synchronous store (the in-memory store).

    Reads every stream the command declares (and discovers), folds, handles, and appends
    the new events in one atomic write with the versions read as expected versions. On a
    conflict it retries from fresh state per ``retry`` (default :class:`RetryPolicy`).

    Raises:
        BusinessRuleViolation, ValidationError, UndeclaredStream, SerializationError,
        CommandError: at once, nothing written.
        ConcurrencyConflict: when conflicts outlast the retry policy.
        StoreUnavailable: when store failures outlast the retry policy.
    """
    active = observe._hooks
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    steps = run_command(command, store.registry, retry or DEFAULT_RETRY, metadata)
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
) -> ExecutionResult:
    """Execute ``command`` against any store from async code (see :func:`execute_sync`).

    An in-memory store may be passed directly; its async view is used.
    """
    aio: EventStore = getattr(store, "aio", store)  # type: ignore[arg-type]
    active = observe._hooks
    if active:
        rec = observe.Recorder(command, metadata, active)
        metadata = rec.report.metadata
    steps = run_command(command, aio.registry, retry or DEFAULT_RETRY, metadata)
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
            else:
                await asyncio.sleep(effect[1])
                result = None
        except _RETRIED as exc:
            result = exc
        except BaseException as exc:
            steps.throw(exc)  # the pipeline (and any observer) sees it; it is re-raised
            raise
