"""The reference model of the command algorithm, in plain Python (the executable spec).

This is the algorithm ``eventcore._pipeline.run_command`` implements (first as a Python
generator, then as a Rust state machine), written for reading, not for speed: a generator
that yields the same effects (``FOLD``, ``TAIL``, ``APPEND``, ``LOOKUP``, ``LOAD``,
``SAVE``, ``SLEEP``, ``DONE``) in the same order with the same items, is resumed with each
effect's result the way the shells resume the real one (store failures the algorithm
decides about come back as values), and raises the same errors.
``tests/test_pipeline_differential.py`` runs the two side by side and checks they agree.

It is simplified where that keeps the meaning: the cache key is built when first needed
with the public ``StateCache`` methods instead of inlined dict operations, fresh event ids
come from :func:`eventcore.uuid7`, and the command's own events are folded in Python.

One attempt, in order:

1. With an idempotency key, ``LOOKUP`` the key's event ids: events found are the first
   outcome (``DONE`` with ``attempts == 0``); a failed lookup costs a store failure.
2. Get the state: the command's own entry held from its attempt before, else the cache's
   entry (a hit takes it out), else on a miss a durable snapshot (``LOAD``, when
   ``snapshot_every``). A cached state gets its tail folded (``TAIL``), unless
   ``warm_append_first`` lets the append's expected versions check it instead (a
   snapshot loaded with its tail, ``(entry, tail)``, still has that tail folded: ``TAIL``
   with it as the hint, no read); without one (or when the tail cannot extend it) every
   declared stream is folded (``FOLD``). The reads return rows; the algorithm folds them
   (:func:`_fold`).
3. Discovery: ask ``discover`` for more streams, fold each new batch (``FOLD``), until it
   names none; more rounds than ``max_discovery_rounds`` is a ``CommandError``.
4. ``handle`` the state; every event must target a known stream (``UndeclaredStream``)
   and encode; a malformed result is a ``CommandError``. An error is raised at once
   (after one more ``LOOKUP`` for a keyed command: a same-key caller may have won).
5. ``APPEND`` with the versions read as expected versions. Success: keep the state (a
   ``SAVE`` if a snapshot is due, then the cache) and ``DONE``. A conflict: ``SLEEP`` and
   run again (up to ``max_attempts`` runs). Unavailable: ``SLEEP`` and resend the same
   events with the same ids (up to the unavailability budget), remembering that a lost
   reply may have written them. A duplicate id under a key: look the key up again.

A query command (:class:`eventcore.boundary.QueryCommand`, :func:`_run_query`) runs the
same loop with other reads and its own cache entries: its state is the cache's entry (a
command without declared streams, keyed by ``boundary._cache_key``), or the state it
decided on before a failed condition, else ``initial_state()``; ``QUERY`` reads what
matches after that state's position (no ``QUERY`` when the held state's failure carried
that read: ``ConditionFailed.read`` is folded instead; no ``QUERY`` either for a cached
state with ``warm_append_first``, whose condition checks it: a failed condition then costs
no attempt, and a ``handle`` that fails or decides nothing on it reads and decides again;
verify mode is not modelled), ``STREAMS`` the declared streams
(if any), and the events are folded in global order. ``handle``'s events may target any
stream and are tagged by ``tags_of``; nothing decided means no append. ``APPEND_IF`` appends under
``AppendCondition(query, position read)`` with the streams' versions as expected versions;
a ``ConditionFailed`` is retried (and raised once the policy is used up) exactly like a
conflict. On success the state, with the command's own events that match the query, goes
back into the cache at the append's last position. No discovery, no snapshots.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from eventcore import _core, uuid7
from eventcore._pipeline import (
    APPEND,
    APPEND_IF,
    DONE,
    FOLD,
    LOAD,
    LOOKUP,
    QUERY,
    SAVE,
    SLEEP,
    STREAMS,
    TAIL,
    ExecutionResult,
    _append_result,
    _bad_handle_result,
    _is_pairs,
    _Keyed,
    _stream_hint,
)
from eventcore.command import Command
from eventcore.errors import (
    CommandError,
    ConcurrencyConflict,
    ConditionFailed,
    DuplicateEventId,
    EventCoreError,
    OutcomeUnknown,
    StoreUnavailable,
    UndeclaredStream,
    UsageError,
)
from eventcore.metadata import Metadata
from eventcore.query import AppendCondition, Query, check_tags
from eventcore.recorded import AppendResult, NewEvent
from eventcore.registry import EventRegistry
from eventcore.retry import RetryPolicy
from eventcore.state_cache import CacheEntry, StateCache, StateCacheMismatch, command_key
from eventcore.stream import StreamId

Effect = tuple[Any, ...]
Steps = Generator[Effect, Any, Any]
Event = tuple[str, str, bytes, int]  # (stream id, type name, payload, event id)

LOOKUP_CHUNK = 16
"""Event ids looked up per LOOKUP effect (a command that wrote more asks again)."""

_UNSET: Any = object()
"""A cache key not built yet (an empty cache cannot hit, so it is built only when needed)."""


class _Fresh:
    """What one attempt's state is: folded, with the streams and versions it represents."""

    __slots__ = ("fold_from", "rounds", "since", "state", "streams", "versions", "warm")

    def __init__(
        self,
        state: Any,
        streams: list[str],
        versions: list[int],
        fold_from: int,
        rounds: int,
        since: int,
        warm: bool,
    ) -> None:
        self.state = state
        self.streams = streams
        self.versions = versions
        self.fold_from = fold_from
        self.rounds = rounds
        self.since = since
        self.warm = warm  # from a cached entry (else folded in full this attempt)


def run_command(
    command: Command[Any, Any],
    registry: EventRegistry,
    policy: RetryPolicy,
    metadata: Metadata | None,
    idempotency_key: str | None = None,
    cache: StateCache | None = None,
    snapshot_every: int = 0,
    warm_append_first: bool = False,
    trace: bool = False,
    keep_own_events: bool = False,
) -> Steps:
    """Run ``command`` to completion, yielding its effects; the last is ``DONE``.

    ``trace`` is the machine's (no effect here); ``keep_own_events`` keeps the state with
    the command's own events folded in, as ``warm_append_first`` does, while the next
    command still reads its tail."""
    try:
        declared = command.streams()
    except AttributeError:
        if isinstance(command, Command):
            raise
        raise CommandError(f"{command!r} is not an eventcore Command") from None
    keyed = None
    if idempotency_key is not None:
        keyed = _Keyed(idempotency_key, command, metadata)
        metadata = keyed.metadata
    cls = type(command)
    name = cls.__name__
    if getattr(cls, "_query_boundary", False):
        return (
            yield from _run_query(
                command, registry, policy, metadata, keyed, cache, warm_append_first
            )
        )
    discovers = cls.discover is not Command.discover
    decoders = registry.decoders
    key: Any = _UNSET if cache is not None or snapshot_every else None
    held: CacheEntry | None = None  # this command's own state, kept between its attempts
    hint: Any = None  # the conflict that ended the attempt before
    recheck = False  # handle failed on a cached state not read yet: read its tail first
    attempt = 0  # every try: runs of the command and retries after a store failure
    failures = 0  # store failures (each costs one attempt): runs = attempt - failures
    unknown = False  # whether an append of the current events may have been written

    while True:
        attempt += 1
        # 1. A keyed command: its first outcome, if it has one.
        if keyed is not None:
            found = yield from _lookup(keyed)
            if type(found) is ExecutionResult:
                yield (DONE, found)
                return
            if found is not None:  # the lookup failed
                failures += 1
                yield (SLEEP, policy.jittered(_unavailable(found, policy, failures)))
                continue
            if keyed.duplicate is not None:  # the ids are taken, yet not by this key's batch
                raise keyed.duplicate

        # 2. The state: held, cached, or a snapshot; its tail folded, or folded in full.
        entry = held
        held = None
        snap_tail: Any = None  # the tail a snapshot was loaded with (the next TAIL's hint)
        if entry is None and key is not None:
            if cache is not None:
                if len(cache) and key is _UNSET:
                    key = _cache_key(command, declared)
                if key is _UNSET:
                    # An empty cache counts a miss without building the key, so today even
                    # for a class that is never cached (a non-empty one builds it: no count).
                    cache.misses += 1
                elif key is not None:
                    entry = cache.take(key, name)
            if entry is None and snapshot_every:
                if key is _UNSET:
                    key = _cache_key(command, declared)
                if key is not None:
                    loaded = yield (LOAD, command, key)
                    if type(loaded) is CacheEntry:
                        entry = loaded
                    elif (
                        type(loaded) is tuple and len(loaded) == 2 and type(loaded[0]) is CacheEntry
                    ):
                        entry, snap_tail = loaded
        unverified = False  # handle decides on a cached state whose tail nobody read
        fresh: _Fresh | StoreUnavailable | Any = None
        if entry is not None:
            tail: Any
            if warm_append_first and hint is None and not recheck:
                unverified = True
                tail = (entry.state, entry.versions)
                if snap_tail is not None:
                    read = yield (TAIL, entry.streams, entry.versions, entry.fold_from, snap_tail)
                    if read is not None:  # (None: decide on the snapshot as loaded)
                        tail = _folded(read, entry.state, command, decoders)
            else:
                read = yield (
                    TAIL,
                    entry.streams,
                    entry.versions,
                    entry.fold_from,
                    hint if hint is not None else snap_tail,
                )
                tail = _folded(read, entry.state, command, decoders)
            hint = None
            recheck = False
            if type(tail) is tuple:
                state, versions = tail
                since = entry.since + sum(versions) - sum(entry.versions) if snapshot_every else 0
                fresh = _Fresh(
                    state, entry.streams, versions, entry.fold_from, entry.rounds, since, True
                )
            else:
                fresh = tail  # None: the tail cannot extend it (fold in full); or a failure
        if fresh is None:
            initial = command.initial_state()
            result = _folded((yield (FOLD, declared)), initial, command, decoders)
            if type(result) is tuple:
                fresh = _Fresh(result[0], list(declared), result[1], 0, 0, 0, False)
            else:
                fresh = result
        # 3. Discovery.
        if type(fresh) is _Fresh and discovers:
            fresh = yield from _discover(command, fresh, decoders)
        if (
            type(fresh) is _Fresh
            and fresh.warm
            and not unverified
            and cache is not None
            and cache.verify
        ):
            yield from _verify(command, declared, decoders, discovers, fresh)
        if type(fresh) is not _Fresh:
            failures += 1
            yield (SLEEP, policy.jittered(_unavailable(fresh, policy, failures)))
            continue
        state, streams, versions = fresh.state, fresh.streams, fresh.versions

        # 4. Decide.
        try:
            events = _decide(command, state, streams, registry, keyed)
        except Exception:
            if unverified:
                # Decided on a cached state without reading its tail: read it, decide again.
                held = CacheEntry(
                    state, streams, versions, fresh.fold_from, max(fresh.since, 0), fresh.rounds
                )
                recheck = True
                attempt -= 1
                continue
            if keyed is not None:
                # A same-key caller may have written between this attempt's lookup and its
                # read (so the state already holds that write): its outcome is this one's.
                found = yield from _lookup(keyed)
                if type(found) is ExecutionResult:
                    yield (DONE, found)
                    return
            raise

        # 5. Append: resend on unavailability, run again on a conflict.
        checks = list(zip(streams, versions, strict=False))
        while True:
            result = yield (APPEND, events, checks, metadata)
            if type(result) is AppendResult:
                if key is not None:
                    since = fresh.since if fresh.warm else sum(versions)
                    keep = CacheEntry(
                        state, streams, versions, fresh.fold_from, since, fresh.rounds
                    )
                    if (
                        fresh.warm
                        or (cache is not None and since >= cache.min_events)
                        or (snapshot_every and since + len(events) >= snapshot_every)
                    ):
                        if key is _UNSET:
                            key = _cache_key(command, declared)
                        if key is not None:
                            yield from _keep(
                                command,
                                key,
                                keep,
                                events,
                                decoders,
                                cache,
                                snapshot_every,
                                warm_append_first or keep_own_events,
                            )
                yield (DONE, ExecutionResult(result, attempt))
                return
            if isinstance(result, ConcurrencyConflict):
                if unknown:
                    # A send whose reply was lost may still have committed, making this
                    # resend conflict: if its events are stored, that write is the outcome.
                    found = yield (LOOKUP, [e[3] for e in events])
                    if type(found) is not list:
                        raise OutcomeUnknown(
                            f"an append's reply was lost and checking for it failed: {found}",
                            [e[3] for e in events],
                        ) from (found if isinstance(found, BaseException) else None)
                    if found:
                        yield (DONE, ExecutionResult(_append_result(found), attempt))
                        return
                    unknown = False  # not written: the next run's events are new
                if unverified:
                    # The conflict told what the skipped read would have: no attempt spent.
                    attempt -= 1
                runs = attempt - failures
                if runs >= policy.max_attempts:
                    if keyed is not None:  # the conflict may be a same-key caller's write
                        found = yield from _lookup(keyed)
                        if type(found) is ExecutionResult:
                            yield (DONE, found)
                            return
                    raise ConcurrencyConflict(result.conflicts, attempts=attempt)
                if key is not None:  # the retry folds only what the conflict says is new
                    held = CacheEntry(
                        state,
                        streams,
                        versions,
                        fresh.fold_from,
                        fresh.since if fresh.warm else 0,
                        fresh.rounds,
                    )
                    hint = result
                yield (SLEEP, policy.delay(runs))
                break
            if isinstance(result, StoreUnavailable):
                unknown = unknown or isinstance(result, OutcomeUnknown)
                failures += 1
                try:
                    delay = _unavailable(result, policy, failures)
                except StoreUnavailable as last:
                    if unknown and not isinstance(last, OutcomeUnknown):
                        raise OutcomeUnknown(
                            f"the outcome of an append is unknown (a reply was lost), and then: "
                            f"{last}",
                            [e[3] for e in events],
                        ) from last
                    raise
                yield (SLEEP, policy.jittered(delay))
                attempt += 1
                continue  # same events, same ids: the append is idempotent
            if keyed is not None and isinstance(result, DuplicateEventId) and not keyed.duplicate:
                # Another caller with the same key wrote first: the next attempt's lookup
                # finds its outcome, which is the one to return.
                keyed.duplicate = result
                break
            if isinstance(result, BaseException):
                raise result
            raise TypeError(f"unexpected result for Append: {result!r}")


def _run_query(
    command: Any,
    registry: EventRegistry,
    policy: RetryPolicy,
    metadata: Metadata | None,
    keyed: _Keyed | None,
    cache: StateCache | None,
    warm_append_first: bool = False,
) -> Steps:
    """A query command's run (see the module docs); ``run_command`` hands it over."""
    from eventcore.boundary import _cache_key as query_key

    name = type(command).__name__
    declared = list(command.streams())
    # The state decided on before a failed condition, its position, the read it carried.
    held: tuple[Any, int, Any] | None = None
    attempt = 0
    failures = 0
    unknown = False
    while True:
        attempt += 1
        if keyed is not None:
            found = yield from _lookup(keyed)
            if type(found) is ExecutionResult:
                yield (DONE, found)
                return
            if found is not None:
                failures += 1
                yield (SLEEP, policy.jittered(_unavailable(found, policy, failures)))
                continue
            if keyed.duplicate is not None:
                raise keyed.duplicate
        query = command.query()
        if not isinstance(query, Query):
            raise CommandError(f"{name}.query() must return an eventcore.query.Query")
        key = None
        state, after = None, 0
        carried = None
        unverified = False  # handle decides on a cached state nobody read
        if cache is not None:
            if not declared and command.state_cache:
                key = query_key(command, query)
            last, held = held, None
            if key is not None and last is None:
                entry = cache.take(key, name)
                if entry is not None:
                    state, after = entry.state, entry.versions[0]
                    unverified = warm_append_first
            elif key is not None and last is not None:
                state, after, carried = last
        if state is None:
            state, after = command.initial_state(), 0
        if unverified:
            read: Any = ([], after)  # the append's condition checks the state
        else:
            read = carried if carried is not None else (yield (QUERY, query, after))
        if not isinstance(read, tuple):
            failures += 1
            yield (SLEEP, policy.jittered(_unavailable(read, policy, failures)))
            continue
        events, position = read
        versions = [0] * len(declared)
        if declared:
            got = yield (STREAMS, declared)
            if not isinstance(got, list):
                failures += 1
                yield (SLEEP, policy.jittered(_unavailable(got, policy, failures)))
                continue
            seen = {e.position for e in events}
            for e in got:
                if e.stream_id in declared:
                    i = declared.index(e.stream_id)
                    versions[i] = max(versions[i], e.version)
            events = sorted(
                [*events, *(e for e in got if e.position not in seen)], key=lambda e: e.position
            )
        for e in events:
            state = command.apply(state, e.data, e.stream_id)
        try:
            emitted = command.handle(state)
            new = _encode(command, emitted, None, registry, keyed)
            tags = [check_tags(command.tags_of(event)) for _, event in emitted] if emitted else []
        except Exception:
            if unverified:
                # Decided on a cached state without reading: read after it, decide again.
                held, attempt = (state, after, None), attempt - 1
                continue
            if keyed is not None:
                found = yield from _lookup(keyed)
                if type(found) is ExecutionResult:
                    yield (DONE, found)
                    return
            raise
        if not new and unverified:  # nothing to append checks the state: read first
            held, attempt = (state, after, None), attempt - 1
            continue
        if not new:
            if key is not None and cache is not None:
                cache.put(key, CacheEntry(state, [], [position]), name)
            result = AppendResult([], list(zip(declared, versions, strict=True)), [])
            yield (DONE, ExecutionResult(result, attempt))
            return
        checks = list(zip(declared, versions, strict=True))
        condition = AppendCondition(query, position)
        batch = [NewEvent(*e, t) for e, t in zip(new, tags, strict=True)]
        while True:
            result = yield (APPEND_IF, batch, checks, metadata, condition)
            if type(result) is AppendResult:
                if key is not None and cache is not None:
                    kept = _with_own_query_events(command, state, new, tags, emitted, query)
                    if kept is not None:
                        last_position = max(position, result.last_position or 0)
                        cache.put(key, CacheEntry(kept, [], [last_position]), name)
                yield (DONE, ExecutionResult(result, attempt))
                return
            if isinstance(result, ConcurrencyConflict | ConditionFailed):
                if unknown:
                    found = yield (LOOKUP, [e[3] for e in new])
                    if type(found) is not list:
                        raise OutcomeUnknown(
                            f"an append's reply was lost and checking for it failed: {found}",
                            [e[3] for e in new],
                        ) from (found if isinstance(found, BaseException) else None)
                    if found:
                        yield (DONE, ExecutionResult(_append_result(found), attempt))
                        return
                    unknown = False
                if unverified:
                    # The failure told what the skipped read would have: no attempt spent.
                    attempt -= 1
                runs = attempt - failures
                if runs >= policy.max_attempts:
                    if keyed is not None:
                        found = yield from _lookup(keyed)
                        if type(found) is ExecutionResult:
                            yield (DONE, found)
                            return
                    if isinstance(result, ConditionFailed):
                        raise ConditionFailed(result.after, result.position, attempt)
                    raise ConcurrencyConflict(result.conflicts, attempts=attempt)
                if key is not None:  # the retry folds only what came after `position`
                    carries = isinstance(result, ConditionFailed) and result.read is not None
                    held = (state, position, tuple(result.read) if carries else None)
                yield (SLEEP, policy.delay(runs))
                break
            if isinstance(result, StoreUnavailable):
                unknown = unknown or isinstance(result, OutcomeUnknown)
                failures += 1
                try:
                    delay = _unavailable(result, policy, failures)
                except StoreUnavailable as last:
                    if unknown and not isinstance(last, OutcomeUnknown):
                        raise OutcomeUnknown(
                            f"the outcome of an append is unknown (a reply was lost), and then: "
                            f"{last}",
                            [e[3] for e in new],
                        ) from last
                    raise
                yield (SLEEP, policy.jittered(delay))
                attempt += 1
                continue
            if keyed is not None and isinstance(result, DuplicateEventId) and not keyed.duplicate:
                keyed.duplicate = result
                break
            if isinstance(result, BaseException):
                raise result
            raise TypeError(f"unexpected result for Append: {result!r}")


def _with_own_query_events(
    command: Any, state: Any, new: list[Event], tags: list[Any], emitted: Any, query: Query
) -> Any:
    """``state`` with the command's own events that match ``query`` applied, or ``None``
    when ``apply`` fails on one (then nothing is cached)."""
    try:
        for (stream_id, name, _, _), t, (_, event) in zip(new, tags, emitted, strict=True):
            if query.matches(name, t):
                state = command.apply(state, event, stream_id)
    except Exception:
        return None
    return state


def _decide(
    command: Command[Any, Any],
    state: Any,
    streams: list[str],
    registry: EventRegistry,
    keyed: _Keyed | None,
) -> list[Event]:
    """``handle`` the state: the encoded events, each with its id, in the order returned."""
    return _encode(command, command.handle(state), streams, registry, keyed)


def _encode(
    command: Command[Any, Any],
    emitted: Any,
    streams: list[str] | None,
    registry: EventRegistry,
    keyed: _Keyed | None,
) -> list[Event]:
    """What ``handle`` returned, encoded, each event with its id (``streams``: the ones it
    may target; ``None``: any, as for a query command)."""
    events: list[Event] = []
    try:
        if emitted:
            n = len(emitted)
            ids = [uuid7().int for _ in range(n)] if keyed is None else keyed.ids(n)
            for (stream_id, event), event_id in zip(emitted, ids, strict=False):
                if streams is not None and stream_id not in streams:
                    raise UndeclaredStream(
                        stream_id, type(command).__name__, _stream_hint(command, stream_id)
                    )
                name, payload = registry.encode(event)
                events.append((stream_id, name, payload, event_id))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, EventCoreError) or _is_pairs(emitted):
            raise
        raise _bad_handle_result(command, emitted, exc) from exc
    return events


def _discover(
    command: Command[Any, Any], fresh: _Fresh, decoders: Mapping[str, Callable[[bytes], Any]]
) -> Generator[Effect, Any, _Fresh | Any]:
    """Ask ``discover`` for more streams until it names no new one; fold each new batch."""
    streams, versions = list(fresh.streams), list(fresh.versions)
    state, fold_from, rounds = fresh.state, fresh.fold_from, fresh.rounds
    while True:
        seen = set(streams)
        extra = list(
            dict.fromkeys(s for s in map(StreamId, command.discover(state)) if s not in seen)
        )
        if not extra:
            return _Fresh(state, streams, versions, fold_from, rounds, fresh.since, fresh.warm)
        if rounds == command.max_discovery_rounds:
            raise CommandError(
                f"{type(command).__name__} kept discovering streams after "
                f"{rounds} rounds (last: {extra!r})"
            )
        rounds += 1
        result = _folded((yield (FOLD, extra)), state, command, decoders)
        if type(result) is not tuple:
            return result  # a failure
        state, more = result
        fold_from = len(streams)
        streams += extra
        versions += more


def _verify(
    command: Command[Any, Any],
    declared: list[StreamId],
    decoders: Mapping[str, Callable[[bytes], Any]],
    discovers: bool,
    fresh: _Fresh,
) -> Generator[Effect, Any, None]:
    """Verify mode: a cached state plus its tail must equal a full fold (when comparable)."""
    initial = command.initial_state()
    result = _folded((yield (FOLD, declared)), initial, command, decoders)
    if type(result) is not tuple:
        return
    full = _Fresh(result[0], list(declared), result[1], 0, 0, 0, False)
    if discovers:
        full = yield from _discover(command, full, decoders)
        if type(full) is not _Fresh:
            return
    # Compared only when nothing was written in between (else it proves nothing).
    if (
        full.versions == fresh.versions
        and full.streams == fresh.streams
        and getattr(type(fresh.state), "__eq__", None) is not object.__eq__
        and full.state != fresh.state
    ):
        raise StateCacheMismatch(type(command).__name__, fresh.state, full.state)


def _keep(
    command: Command[Any, Any],
    key: Any,
    decided: CacheEntry,
    events: list[Event],
    decoders: Mapping[str, Callable[[bytes], Any]],
    cache: StateCache | None,
    snapshot_every: int,
    own_events: bool,
) -> Generator[Effect, Any, None]:
    """After a successful append: a snapshot if due (``SAVE``), then back into the cache.

    Kept as decided on (the next command's ``TAIL`` folds this one's own events), unless
    ``own_events`` (the next one appends on these versions without reading,
    ``warm_append_first``, or ``keep_own_events``): then the own events are folded in now,
    or nothing is kept if that is not certain.
    """
    kept = _with_own_events(command, decided, events, decoders) if own_events else decided
    if kept is None:
        return
    if snapshot_every and kept.since >= snapshot_every:
        yield (SAVE, command, key, kept)
        kept.since = 0
    if cache is not None:
        cache.put(key, kept, type(command).__name__)


def _with_own_events(
    command: Command[Any, Any],
    entry: CacheEntry,
    events: list[Event],
    decoders: Mapping[str, Callable[[bytes], Any]],
) -> CacheEntry | None:
    """``entry`` with the command's own events folded in append order, or ``None`` when
    that is not certain (an own event in a stream of an earlier discovery round, or
    ``apply`` failing on one)."""
    if not events:
        return entry
    index = {s: i for i, s in enumerate(entry.streams)}
    versions = list(entry.versions)
    state = entry.state
    try:
        for stream_id, name, payload, _ in events:
            i = index.get(stream_id, -1)
            if i < entry.fold_from:
                return None
            versions[i] += 1
            state = command.apply(state, decoders[name](payload), entry.streams[i])
    except Exception:
        return None  # the next command folds in full, and meets the same error there
    return CacheEntry(
        state, entry.streams, versions, entry.fold_from, entry.since + len(events), entry.rounds
    )


def _cache_key(command: Command[Any, Any], declared: Sequence[str]) -> Any:
    """``command``'s state-cache key, or ``None`` when its class is not cached."""
    return command_key(command, declared)


def _folded(read: Any, state: Any, command: Command[Any, Any], decoders: Mapping[str, Any]) -> Any:
    """A FOLD or TAIL result: the rows read, folded into ``state`` (the fold loop every
    store shares, ``_core.fold``), with the versions; anything else as it came."""
    if type(read) is not tuple:
        return read
    if len(read) != 2:
        raise ValueError(
            f"a store's fold read must return (rows, versions), not a tuple of {len(read)} items"
        )
    rows, versions = read[0], list(read[1])
    return _core.fold(state, command.apply, decoders, rows), versions


def _unavailable(result: Any, policy: RetryPolicy, failures: int) -> float:
    """The un-jittered wait before retrying after store failure number ``failures``;
    raises the failure when the policy is used up (or a TypeError/UsageError when a read
    was resumed with something that is neither its data nor a failure)."""
    if not isinstance(result, StoreUnavailable):
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise UsageError(
                "execute_sync() needs a synchronous store, and this store is asynchronous "
                "(e.g. PostgresStore): use `await execute(store, command)` instead"
            )
        raise TypeError(f"unexpected result for FOLD or LOOKUP: {result!r}")
    if not policy.retry_unavailable:
        raise result
    waited = sum(policy.unavailable_delay(n) for n in range(1, failures + 1))
    if waited > policy.unavailable_timeout:
        raise result
    return policy.unavailable_delay(failures)


def _lookup(keyed: _Keyed) -> Generator[Effect, Any, Any]:
    """The key's first outcome (an ``ExecutionResult``), ``None``, or the lookup's failure."""
    found: list[Any] = []
    while True:
        start = len(found)
        result = yield (LOOKUP, keyed.ids(start + LOOKUP_CHUNK)[start:])
        if type(result) is not list:
            return result
        found += result
        if len(result) < LOOKUP_CHUNK:
            break
    if not found:
        return None
    keyed.check(found[0])
    return ExecutionResult(_append_result(found), 0)
