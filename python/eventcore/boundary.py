"""Commands whose consistency boundary is a query of event types and tags (DCB).

A :class:`QueryCommand` declares its boundary with :meth:`~QueryCommand.query` instead of
(or beside) streams. :func:`~eventcore.execute` and :func:`~eventcore.execute_sync` run it
the way they run any command: read the events the query matches (and the declared
streams, if any), fold them in global order through ``apply``, call ``handle``, and append
the new events with an :class:`~eventcore.query.AppendCondition` (no event matching the
query after the position read) and the streams' versions as expected versions. When the
condition fails (:class:`~eventcore.ConditionFailed`) or a version conflicts, the command
runs again from fresh state, per the :class:`~eventcore.RetryPolicy`.

New events carry tags: ``handle`` returns ``(stream_id, event)`` pairs as usual, and
:meth:`~QueryCommand.tags_of` tags each event. A query command may append to any stream:
the query is what keeps decisions consistent.

The state cache: a command that declares no stream keeps its folded state in the store's
:class:`~eventcore.state_cache.StateCache` with the position it is consistent with (keyed
by the class, the query and the fields the state depends on); the next command reads only
the matching events after that position. After an append the state gets the command's own
events that match the query, and the append's last position: no matching event can lie
below it unseen (the condition held, under the store's locks). A command that declares
streams too folds in full each time (a stream's events need not match the query, so one
position does not describe its state).

The command machine in Rust (:mod:`eventcore._pipeline`) drives stream commands; a query
command runs in this module's loop in Python (the same retry policy and error types).
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from eventcore._core import CacheEntry, ExecutionResult, uuid7_ints
from eventcore.command import Command
from eventcore.errors import (
    CommandError,
    ConcurrencyConflict,
    ConditionFailed,
    StoreUnavailable,
    UsageError,
)
from eventcore.query import AppendCondition, Query, check_tags
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent
from eventcore.retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from eventcore.metadata import Metadata
    from eventcore.registry import EventRegistry
    from eventcore.state_cache import StateCache

__all__ = ["QueryCommand"]

S = TypeVar("S")
E = TypeVar("E")

_READ, _STREAMS, _APPEND, _SLEEP = "read", "streams", "append", "sleep"


class QueryCommand(Command[S, E]):
    """A command whose consistency boundary is :meth:`query` (see :mod:`eventcore.boundary`).

    ::

        class Subscribe(QueryCommand[Counts, object]):
            student: str
            course: str

            def query(self) -> Query:
                return Query.of(["Subscribed"], [f"course:{self.course}"]) | Query.of(
                    ["Subscribed"], [f"student:{self.student}"]
                )
            ...

    Stream fields (:func:`~eventcore.stream`) are optional: declared streams are read,
    folded with the query's events in global order, and checked by version on append.
    """

    _query_boundary: ClassVar[bool] = True

    @abstractmethod
    def query(self) -> Query:
        """The events this decision depends on: none of them may appear unseen."""

    def tags_of(self, event: E) -> Iterable[str]:
        """The tags of a new event ``handle`` returned (validated like stream ids)."""
        return ()


def _cache_key(command: QueryCommand[Any, Any], query: Query) -> Any:
    from eventcore.state_cache import state_key_fields

    cls = type(command)
    names = state_key_fields(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(command))
    try:
        key = (cls, "query", query, tuple(getattr(command, n) for n in names))
        hash(key)
    except TypeError:  # an unhashable field: no caching for this command
        return None
    return key


def _run(
    command: QueryCommand[Any, Any],
    registry: EventRegistry,
    policy: RetryPolicy,
    metadata: Metadata | None,
    cache: StateCache | None,
) -> Generator[tuple[Any, ...], Any, ExecutionResult]:
    """The decision loop as a generator of effects (one loop for both shells)."""
    name = type(command).__name__
    streams = [str(s) for s in command.streams()]
    attempts = 0
    failures = 0
    waited = 0.0

    def unavailable(exc: StoreUnavailable) -> float:
        nonlocal failures, waited
        failures += 1
        delay = policy.unavailable_delay(failures)
        if not policy.retry_unavailable or waited + delay > policy.unavailable_timeout:
            raise exc
        waited += delay
        return policy.jittered(delay)

    while True:
        attempts += 1
        query = command.query()
        if not isinstance(query, Query):
            raise CommandError(f"{name}.query() must return an eventcore.query.Query")
        cached = cache is not None and command.state_cache and not streams
        key = _cache_key(command, query) if cached else None
        entry = cache.take(key, name) if key is not None and cache is not None else None
        if entry is not None:
            state, after = entry.state, entry.versions[0]
        else:
            state, after = command.initial_state(), 0
        while True:  # read the boundary (retrying an unavailable store)
            try:
                found = yield (_READ, query, after)
                stream_events: list[RecordedEvent[Any]] = (
                    (yield (_STREAMS, streams)) if streams else []
                )
                break
            except StoreUnavailable as exc:
                yield (_SLEEP, unavailable(exc))
        events = found.events
        if stream_events:
            seen = {e.position for e in events}
            events = sorted(
                [*events, *(e for e in stream_events if e.position not in seen)],
                key=lambda e: e.position,
            )
        for e in events:
            state = command.apply(state, e.data, e.stream_id)
        versions = dict.fromkeys(streams, 0)
        for e in stream_events:
            versions[e.stream_id] = max(versions[e.stream_id], e.version)
        decided = command.handle(state)
        new: list[NewEvent] = []
        objects: list[Any] = []
        for stream_id, event in decided:
            tags = check_tags(command.tags_of(event))
            new.append(NewEvent(stream_id, *registry.encode(event), None, tags))
            objects.append(event)
        if not new:  # nothing to write: nothing to keep consistent
            if key is not None and cache is not None:
                cache.put(key, CacheEntry(state, [], [found.position]), name)
            return ExecutionResult(AppendResult([], list(versions.items()), []), attempts)
        ids = uuid7_ints(len(new))  # fixed now: a retried append is idempotent
        new = [e._replace(event_id=i) for e, i in zip(new, ids, strict=True)]
        condition = AppendCondition(query, found.position)
        while True:  # the append (the same ids on a retry: idempotent)
            try:
                result = yield (_APPEND, new, list(versions.items()), metadata, condition)
                break
            except ConditionFailed as exc:
                if attempts >= policy.max_attempts:
                    raise ConditionFailed(exc.after, exc.position, attempts) from None
                yield (_SLEEP, policy.delay(attempts))
                result = None
                break
            except ConcurrencyConflict as exc:
                if attempts >= policy.max_attempts:
                    raise ConcurrencyConflict(
                        [(c.stream_id, c.expected, c.actual) for c in exc.conflicts], attempts
                    ) from None
                yield (_SLEEP, policy.delay(attempts))
                result = None
                break
            except StoreUnavailable as exc:  # OutcomeUnknown too: the same ids, idempotent
                yield (_SLEEP, unavailable(exc))
        if result is None:
            continue  # the condition failed or a version conflicted: from fresh state
        if key is not None and cache is not None:
            position = result.last_position or found.position
            for e, obj in zip(new, objects, strict=True):
                if query.matches(e.event_type, e.tags):
                    state = command.apply(state, obj, e.stream_id)
            cache.put(key, CacheEntry(state, [], [max(position, found.position)]), name)
        return ExecutionResult(result, attempts)


def _checks(idempotency_key: str | None) -> None:
    if idempotency_key is not None:
        raise UsageError(
            "idempotency keys are not supported for query commands yet (eventcore.boundary)"
        )


def execute_query_sync(
    store: Any,
    command: QueryCommand[Any, Any],
    metadata: Metadata | None,
    retry: RetryPolicy | None,
    idempotency_key: str | None,
) -> ExecutionResult:
    """Run a query command on a synchronous store (``execute_sync`` calls it)."""
    _checks(idempotency_key)
    cache = getattr(store, "state_cache", None)
    gen = _run(command, store.registry, retry or DEFAULT_RETRY, metadata, cache)
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = gen.throw(error) if error is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        send, error = None, None
        try:
            kind = effect[0]
            if kind is _READ:
                send = store.read_query(effect[1], after=effect[2])
            elif kind is _STREAMS:
                send = store.read_streams(effect[1])
            elif kind is _APPEND:
                send = store.append(
                    effect[1], expected=effect[2], metadata=effect[3], condition=effect[4]
                )
            else:
                time.sleep(effect[1])
        except (ConditionFailed, ConcurrencyConflict, StoreUnavailable) as exc:
            error = exc


async def execute_query(
    store: Any,
    command: QueryCommand[Any, Any],
    metadata: Metadata | None,
    retry: RetryPolicy | None,
    idempotency_key: str | None,
) -> ExecutionResult:
    """Run a query command on an async store (``execute`` calls it)."""
    import asyncio

    _checks(idempotency_key)
    cache = getattr(store, "state_cache", None)
    gen = _run(command, store.registry, retry or DEFAULT_RETRY, metadata, cache)
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = gen.throw(error) if error is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        send, error = None, None
        try:
            kind = effect[0]
            if kind is _READ:
                send = await store.read_query(effect[1], after=effect[2])
            elif kind is _STREAMS:
                send = await store.read_streams(effect[1])
            elif kind is _APPEND:
                send = await store.append(
                    effect[1], expected=effect[2], metadata=effect[3], condition=effect[4]
                )
            else:
                await asyncio.sleep(effect[1])
        except (ConditionFailed, ConcurrencyConflict, StoreUnavailable) as exc:
            error = exc
