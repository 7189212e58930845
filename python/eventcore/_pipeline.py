"""The command algorithm as a sans-IO state machine.

``run_command`` is a generator: it yields effects (``FOLD``, ``TAIL``, ``APPEND``,
``LOOKUP``, ``LOAD``, ``SAVE``, ``SLEEP``, ``DONE``) and is resumed with each effect's
result. Store errors that the algorithm decides about (conflicts, unavailability) come
back as values, never as exceptions, so the retry logic lives here once and every shell
(sync, async, tests feeding results by hand) shares it. The folded-state cache lives here
too (see :mod:`eventcore.state_cache`): a command takes its state out of the store's
cache, folds the tail after it (``TAIL``), and puts it back after a successful append.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import msgspec

from eventcore import observe
from eventcore._core import CommandRun, uuid7_ints
from eventcore._core import ExecutionResult as _ExecutionResult
from eventcore._core import fold as core_fold
from eventcore.command import Command
from eventcore.errors import (
    CommandError,
    ConcurrencyConflict,
    DuplicateEventId,
    EventCoreError,
    IdempotencyKeyReused,
    OutcomeUnknown,
    StoreUnavailable,
    UndeclaredStream,
    UsageError,
    ValidationError,
)
from eventcore.metadata import Metadata
from eventcore.recorded import AppendResult
from eventcore.registry import EventRegistry
from eventcore.retry import RetryPolicy
from eventcore.state_cache import (
    HIT,
    MISS,
    STREAMS_ONLY,
    UNKNOWN,
    CacheEntry,
    StateCache,
    StateCacheMismatch,
    _keyers,
    keyer_of,
)
from eventcore.stream import StreamId

# Effects are plain tuples tagged by their first item (cheap on the hot path):
FOLD = "fold"
"""``(FOLD, streams, state, apply, decoders)``: read ``streams`` and fold them into ``state``.
Resumed with ``(state, versions)`` or a ``StoreUnavailable``."""
APPEND = "append"
"""``(APPEND, events, expected, metadata)``: append atomically. Resumed with an
``AppendResult``, a ``ConcurrencyConflict`` or a ``StoreUnavailable``."""
SLEEP = "sleep"
"""``(SLEEP, seconds)``: wait before the next attempt. Resumed with ``None``."""
LOOKUP = "lookup"
"""``(LOOKUP, event_ids)``: read the stored events with these ids (idempotency key).
Resumed with the list of those found, in position order, or a ``StoreUnavailable``."""
DONE = "done"
"""``(DONE, ExecutionResult)``: the command finished; the shell returns the result."""
TAIL = "tail"
"""``(TAIL, streams, versions, fold_from, state, apply, decoders, hint)``: fold the events
of ``streams[fold_from:]`` after ``versions`` (one per stream) into ``state``, in global
order, checking that ``streams[:fold_from]`` are still at their versions. Resumed with
``(state, versions now)``, or ``None`` when that tail cannot extend the state (a stream
before ``fold_from`` moved, or a tail event lies at or before an already folded event of
``streams[fold_from:]``; nothing was folded: the pipeline folds in full), or a
``StoreUnavailable``. ``hint`` is the ``ConcurrencyConflict`` of the attempt before (or
``None``): a store whose conflicts carry the events after the expected versions may fold
those instead of reading."""
LOAD = "load"
"""``(LOAD, command, key)``: on a cache miss, a durable snapshot of ``key`` if the store has
one (only when ``store.snapshots`` is set). Resumed with ``None`` or a
:class:`~eventcore.state_cache.CacheEntry`; the pipeline then folds its tail (``TAIL``)."""
SAVE = "save"
"""``(SAVE, command, key, entry)``: write ``entry`` (a
:class:`~eventcore.state_cache.CacheEntry`: a state and the versions it folds) as a durable
snapshot; yielded after a successful append when ``entry.since`` reached the command
class's snapshot interval (``store.snapshots.interval(cls)``, what the shells pass as
``snapshot_every``). Resumed with ``None`` (a failure is the snapshot store's to log)."""

Effect = tuple[Any, ...]

run_command = CommandRun
"""``run_command(command, registry, policy, metadata, idempotency_key=None, cache=None,
snapshot_every=0, warm_append_first=False, trace=False)``: a :class:`CommandRun`."""


ExecutionResult = _ExecutionResult
"""What :func:`~eventcore.execute` did: the events written and the attempts used (see
:class:`eventcore._core.ExecutionResult`)."""


def _run_command_generator(
    command: Command[Any, Any],
    registry: EventRegistry,
    policy: RetryPolicy,
    metadata: Metadata | None,
    idempotency_key: str | None = None,
    cache: StateCache | None = None,
    snapshot_every: int = 0,
    warm_append_first: bool = False,
) -> Generator[Effect, Any, None]:
    """Run ``command`` to completion, yielding the effects it needs; the last is ``DONE``.

    With an ``idempotency_key`` every attempt starts with a ``LOOKUP`` of the key's event
    ids: events found there are the first outcome, returned without running the command.

    With a ``cache`` the command's folded state is taken from it (only the tail after its
    versions is folded: ``TAIL``) and put back after a successful append with the
    command's own events applied. ``snapshot_every`` > 0 asks for a durable snapshot on a
    miss (``LOAD``) and writes one (``SAVE``) once that many events were folded since.
    ``warm_append_first`` (a store where a read costs a round trip) runs ``handle`` on a
    cached state without reading its tail first: the append's expected versions check it,
    a conflict folds the tail and decides again, and an exception from ``handle`` on such a
    state is only raised after the tail confirmed it.
    """
    try:
        declared = command.streams()
    except AttributeError:
        if isinstance(command, Command):
            raise
        raise CommandError(f"{command!r} is not an eventcore Command") from None
    keyed: _Keyed | None = None
    if idempotency_key is not None:
        keyed = _Keyed(idempotency_key, command, metadata)
        metadata = keyed.metadata
    cls = type(command)
    discovers = cls.discover is not Command.discover
    apply = command.apply
    decoders = registry.decoders
    encode = registry.encode
    max_attempts = policy.max_attempts
    # The cache key, built when first needed (an empty cache cannot hit); None: not cached.
    key: Any = _UNSET if cache is not None or snapshot_every else None
    held: CacheEntry | None = None  # this command's own state, kept between its attempts
    hint: Any = None  # the conflict that ended the attempt before
    recheck = False  # handle failed on a cached state not read yet: read its tail first
    attempt = 0  # every try: command runs, and retries after a store failure
    failures = 0  # store failures (each costs one attempt): runs = attempt - failures
    unknown = False  # whether an append of the current events may have been written
    while True:
        attempt += 1
        if keyed is not None:
            found = yield from _lookup(keyed)
            if type(found) is ExecutionResult:
                yield (DONE, found)
                return
            if found is not None:  # the store failed
                failures += 1
                yield (SLEEP, policy.jittered(_unavailable(found, policy, failures)))
                continue
            if keyed.duplicate is not None:  # the ids are taken, yet not by this key's batch
                raise keyed.duplicate
        result: Any = None
        unverified = False
        entry = held
        if entry is not None:
            held = None
        elif key is not None:
            if cache is not None:
                # StateCache.take, inlined: a miss is one dict operation (none when empty)
                entries = cache._entries
                if entries:
                    if key is _UNSET:
                        keyer = _keyers.get(cls, UNKNOWN)
                        if keyer is STREAMS_ONLY:  # most classes: no call
                            key = (cls, tuple(declared))
                        else:
                            key = _cache_key(command, cls, declared)
                    if key is not None:
                        entry = entries.pop(key, None)
                if key is not None:
                    if entry is None:
                        cache.misses += 1
                    else:
                        cache.hits += 1
                    if observe._hooks:
                        observe.report_state_cache(MISS if entry is None else HIT, cls.__name__)
            if entry is None and snapshot_every:
                if key is _UNSET:
                    key = _cache_key(command, cls, declared)
                if key is not None:
                    loaded = yield (LOAD, command, key)
                    if type(loaded) is CacheEntry:
                        entry = loaded
        if entry is not None:
            if warm_append_first and hint is None and not recheck:
                result = (entry.state, entry.versions)
                unverified = True
            else:
                result = yield (
                    TAIL,
                    entry.streams,
                    entry.versions,
                    entry.fold_from,
                    entry.state,
                    apply,
                    decoders,
                    hint,
                )
            hint = None  # (both are only ever set with a held entry)
            recheck = False
        if type(result) is tuple:  # a cached state, brought up to date
            assert entry is not None
            state, versions = result
            streams = entry.streams
            fold_from = entry.fold_from
            rounds = entry.rounds
            since = entry.since + sum(versions) - sum(entry.versions) if snapshot_every else 0
            warm = True
            if discovers:
                result = yield from _discover(
                    command, state, versions, streams, decoders, fold_from, rounds
                )
                if type(result) is tuple:
                    state, versions, streams, fold_from, rounds = result
            if cache is not None and cache.verify and not unverified and type(result) is tuple:
                full = yield from _full_fold(command, declared, decoders, discovers)
                # Compared only when nothing was written in between (else it proves nothing).
                if (
                    isinstance(full, tuple)
                    and full[1] == versions
                    and full[2] == streams
                    and _compares_by_value(state)
                    and full[0] != state
                ):
                    raise StateCacheMismatch(cls.__name__, state, full[0])
        elif result is None:  # a cold fold of every declared stream
            result = yield (FOLD, declared, command.initial_state(), apply, decoders)
            if type(result) is tuple:
                if discovers:
                    state, versions = result
                    result = yield from _discover(
                        command, state, versions, declared, decoders, 0, 0
                    )
                    if type(result) is tuple:
                        state, versions, streams, fold_from, rounds = result
                else:
                    state, versions = result
                    streams = declared  # type: ignore[assignment]
                    fold_from = rounds = 0
                warm = False
        if type(result) is not tuple:
            failures += 1
            yield (SLEEP, policy.jittered(_unavailable(result, policy, failures)))
            continue
        known: list[str] | set[str] = streams if len(streams) < 8 else set(streams)

        events: list[tuple[str, str, bytes, int]] = []
        try:
            emitted = command.handle(state)
            try:
                if emitted:
                    ids = uuid7_ints(len(emitted)) if keyed is None else keyed.ids(len(emitted))
                    for (stream_id, event), event_id in zip(emitted, ids, strict=False):
                        if stream_id not in known:
                            raise UndeclaredStream(
                                stream_id, type(command).__name__, _stream_hint(command, stream_id)
                            )
                        name, payload = encode(event)
                        events.append((stream_id, name, payload, event_id))
            except (TypeError, ValueError) as exc:
                if isinstance(exc, EventCoreError) or _is_pairs(emitted):
                    raise
                raise _bad_handle_result(command, emitted, exc) from exc
        except Exception:
            if unverified:
                # Decided on a cached state without reading its tail: read it, decide again.
                held = CacheEntry(state, streams, versions, fold_from, max(since, 0), rounds)
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
        checks = list(zip(streams, versions, strict=False))
        while True:
            result = yield (APPEND, events, checks, metadata)
            if type(result) is AppendResult:
                if key is not None:
                    if not warm:
                        since = sum(versions)  # counted only now: few commands keep their state
                    if (
                        warm
                        or (cache is not None and since >= cache.min_events)
                        or (snapshot_every and since + len(events) >= snapshot_every)
                    ):
                        if key is _UNSET:
                            key = _cache_key(command, cls, declared)
                        if key is not None:
                            yield from _keep(
                                command,
                                key,
                                CacheEntry(state, streams, versions, fold_from, since, rounds),
                                events,
                                decoders,
                                cache,
                                snapshot_every,
                                warm_append_first,
                            )
                yield (DONE, ExecutionResult(result, attempt))
                return
            if isinstance(result, ConcurrencyConflict):
                if unknown:
                    # A send whose reply was lost may still have committed (a server can
                    # finish a request after its link broke), making this resend conflict:
                    # if its events are stored, that write is this command's outcome.
                    found = yield (LOOKUP, [e[3] for e in events])
                    if type(found) is not list:  # cannot tell: say so
                        raise OutcomeUnknown(
                            f"an append's reply was lost and checking for it failed: {found}",
                            [e[3] for e in events],
                        ) from found
                    if found:
                        yield (DONE, ExecutionResult(_append_result(found), attempt))
                        return
                    unknown = False  # not written: the next run's events are new
                if unverified:
                    # Decided on a cached state nobody read: this conflict told what the read
                    # would have, so it costs no attempt (the next one folds what it says).
                    attempt -= 1
                runs = attempt - failures
                if runs >= max_attempts:
                    if keyed is not None:  # the conflict may be a same-key caller's write
                        found = yield from _lookup(keyed)
                        if type(found) is ExecutionResult:
                            yield (DONE, found)
                            return
                    raise ConcurrencyConflict(result.conflicts, attempts=attempt)
                if key is not None:  # the retry folds only what the conflict says is new
                    held = CacheEntry(
                        state, streams, versions, fold_from, since if warm else 0, rounds
                    )
                    hint = result
                yield (SLEEP, policy.delay(runs))
                break  # re-read and re-decide from fresh state (after a lookup, if keyed)
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


_UNSET: Any = object()
"""A cache key not built yet."""


def _keep(
    command: Command[Any, Any],
    key: Any,
    decided: CacheEntry,
    events: list[tuple[str, str, bytes, int]],
    decoders: Mapping[str, Callable[[bytes], Any]],
    cache: StateCache | None,
    snapshot_every: int,
    warm_append_first: bool,
) -> Generator[Effect, Any, None]:
    """Keep the state a command decided on, after its append: a snapshot if due (``SAVE``),
    then back into the cache.

    Put back as decided on: the next command's ``TAIL`` folds this one's own events.
    Unless the next one appends on these versions without reading (``warm_append_first``):
    then they must include them.
    """
    kept = _with_own_events(command, decided, events, decoders) if warm_append_first else decided
    if kept is None:
        return
    if snapshot_every and kept.since >= snapshot_every:
        yield (SAVE, command, key, kept)
        kept.since = 0
    if cache is not None:
        cache.put(key, kept, type(command).__name__)


def _cache_key(command: Command[Any, Any], cls: type, declared: list[StreamId]) -> Any:
    """``command``'s state cache key (see :mod:`eventcore.state_cache`), or ``None``."""
    keyer = _keyers.get(cls, UNKNOWN)
    if keyer is UNKNOWN:
        keyer = keyer_of(cls)
    if keyer is STREAMS_ONLY:
        return (cls, tuple(declared))
    return None if keyer is None else keyer(command, declared)


def _compares_by_value(state: Any) -> bool:
    """Whether ``==`` on ``state`` says more than identity (verify mode needs it)."""
    return getattr(type(state), "__eq__", None) is not object.__eq__


def _with_own_events(
    command: Command[Any, Any],
    entry: CacheEntry,
    events: list[tuple[str, str, bytes, int]],
    decoders: Mapping[str, Callable[[bytes], Any]],
) -> CacheEntry | None:
    """The entry a full fold after the append would give: ``entry``'s state with the
    command's own events folded (decoded from their payloads, in append order), the
    versions moved past them; ``None`` when that is not certain (an own event in a stream
    of an earlier discovery round, or ``apply`` failing on it)."""
    if not events:
        return entry
    streams, fold_from = entry.streams, entry.fold_from
    versions = list(entry.versions)
    if len(streams) == 1:
        only = streams[0]
        if any(e[0] != only for e in events):
            return None
        versions[0] += len(events)
        rows = [(only, e[1], e[2]) for e in events]
    else:
        index = {s: i for i, s in enumerate(streams)}
        rows = []
        for e in events:
            i = index.get(e[0], -1)
            if i < fold_from:
                return None
            versions[i] += 1
            rows.append((streams[i], e[1], e[2]))
    try:
        state = core_fold(entry.state, command.apply, decoders, rows)
    except Exception:
        return None  # the next command folds in full, and meets the same error there
    return CacheEntry(state, streams, versions, fold_from, entry.since + len(events), entry.rounds)


def _full_fold(
    command: Command[Any, Any],
    declared: list[StreamId],
    decoders: Mapping[str, Callable[[bytes], Any]],
    discovers: bool,
) -> Generator[Effect, Any, tuple[Any, list[int], list[str], int, int] | StoreUnavailable]:
    """A full fold of ``command``'s streams (discovery included), as if nothing was cached."""
    result = yield (FOLD, declared, command.initial_state(), command.apply, decoders)
    if type(result) is not tuple:
        return result  # type: ignore[no-any-return]
    state, versions = result
    if not discovers:
        return state, versions, list(declared), 0, 0
    return (yield from _discover(command, state, versions, declared, decoders, 0, 0))


def _unavailable(result: Any, policy: RetryPolicy, failures: int) -> float:
    """The (un-jittered) wait before retrying after store failure number ``failures``;
    raises the failure when the policy is used up.

    ``result`` is the failure, or what a read (FOLD or LOOKUP) was resumed with instead
    of its data.
    """
    if not isinstance(result, StoreUnavailable):
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: no "was never awaited" warning
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


def _stream_hint(command: Command[Any, Any], stream_id: str) -> str:
    """How to fix an undeclared stream that a command field holds without ``stream()``."""
    for f in dataclasses.fields(command):  # type: ignore[arg-type]
        value = getattr(command, f.name, None)
        if isinstance(value, str) and value == stream_id:
            return (
                f"the field {f.name!r} holds it but is not a stream field: declare it as "
                f"`{f.name}: StreamId = stream()` so the command reads and may write it"
            )
    return ""


def _is_pairs(emitted: Any) -> bool:
    """Whether ``handle`` returned what it should: a sized sequence of 2-item pairs."""
    try:
        len(emitted)
        return all(isinstance(p, tuple | list) and len(p) == 2 for p in emitted)
    except TypeError:
        return False


def _bad_handle_result(command: Command[Any, Any], emitted: Any, exc: Exception) -> CommandError:
    """A CommandError saying what ``handle`` should have returned."""
    name = type(command).__name__
    shown = repr(emitted)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return CommandError(
        f"{name}.handle() must return a sequence of (stream_id, event) pairs, e.g. "
        f"`return [(self.account, Deposited(...))]`; it returned {shown} ({exc})"
    )


def _handle_result_error(
    command: Command[Any, Any], emitted: Any, exc: BaseException
) -> BaseException:
    """What to raise for ``exc``, raised while encoding what ``handle`` returned: a
    CommandError saying what ``handle`` should return when ``exc`` is a TypeError or
    ValueError from a result that is not a sequence of pairs, else ``exc`` itself."""
    if (
        not isinstance(exc, TypeError | ValueError)
        or isinstance(exc, EventCoreError)
        or _is_pairs(emitted)
    ):
        return exc
    error = _bad_handle_result(command, emitted, exc)
    error.__cause__ = exc
    return error


def _not_a_result(result: Any) -> None:
    """Raise the error for a read resumed with something that is neither its data nor a
    ``StoreUnavailable``: a UsageError for an awaitable (an async store in the sync
    shell), else a TypeError."""
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: no "was never awaited" warning
        raise UsageError(
            "execute_sync() needs a synchronous store, and this store is asynchronous "
            "(e.g. PostgresStore): use `await execute(store, command)` instead"
        )
    raise TypeError(f"unexpected result for FOLD or LOOKUP: {result!r}")


_LOOKUP_CHUNK = 16
"""Event ids looked up per LOOKUP effect (a command writing more asks again)."""


def _lookup(keyed: _Keyed) -> Generator[Effect, Any, ExecutionResult | StoreUnavailable | None]:
    """Look up the events written under ``keyed``'s key: its first outcome, if any.

    Returns an ExecutionResult when they exist (``attempts == 0``), ``None`` when the key
    wrote nothing yet, or the ``StoreUnavailable`` a lookup ended with.
    """
    found: list[Any] = []
    while True:
        start = len(found)
        result = yield (LOOKUP, keyed.ids(start + _LOOKUP_CHUNK)[start:])
        if type(result) is not list:
            return result  # type: ignore[no-any-return]
        found += result
        if len(result) < _LOOKUP_CHUNK:
            break
    if not found:
        return None
    keyed.check(found[0])
    return ExecutionResult(_append_result(found), 0)


def _append_result(found: list[Any]) -> AppendResult:
    """The AppendResult of one stored batch, from its RecordedEvents in position order."""
    versions: dict[str, int] = {}
    for e in found:  # in position order: the last version of each stream wins
        versions[e.stream_id] = e.version
    return AppendResult(
        [e.position for e in found],
        list(versions.items()),
        [(e.stream_id, e.event_type, e.payload, e.event_id) for e in found],
    )


# The UUIDv5 namespace of idempotency-key event ids: changing it changes every key's ids,
# so a retry across an upgrade would no longer find the first outcome.
_KEY_NAMESPACE = uuid.UUID("6b0b8a53-52e9-4d2c-9a43-3c0f3f1e6a11")
IDEMPOTENCY_FIELD = "eventcore.idempotency"
"""The metadata ``custom`` entry a keyed command's events carry: ``{"key", "command"}``."""
MAX_KEY_LENGTH = 255
"""The longest idempotency key accepted, in code points."""


class _Keyed:
    """What an idempotency key decides: the event ids, the metadata, the first outcome."""

    __slots__ = ("_ids", "duplicate", "key", "metadata", "name")

    def __init__(self, key: str, command: Command[Any, Any], metadata: Metadata | None) -> None:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise ValidationError(
                "idempotency_key", f"must be a non-empty str of at most {MAX_KEY_LENGTH} chars", key
            )
        self.key = key
        self._ids: list[int] = []
        self.duplicate: DuplicateEventId | None = None
        """Set when an append found the key's ids taken (another caller's write)."""
        cls = type(command)
        self.name = f"{cls.__module__}.{cls.__qualname__}"
        record = {"key": key, "command": f"{self.name}:{_fingerprint(command)}"}
        base = metadata if metadata is not None else Metadata()
        self.metadata = Metadata(
            causation_id=base.causation_id,
            correlation_id=base.correlation_id,
            user_id=base.user_id,
            custom={**base.custom, IDEMPOTENCY_FIELD: record},
        )

    def ids(self, n: int) -> list[int]:
        """The first ``n`` event ids of the key (UUIDv5 ints, the same in every process)."""
        ids = self._ids
        for i in range(len(ids), n):
            ids.append(uuid.uuid5(_KEY_NAMESPACE, f"{i}:{self.key}").int)
        return ids[:n]

    def check(self, first: Any) -> None:
        """Raise IdempotencyKeyReused unless ``first`` was written by this same command."""
        record = first.metadata.custom.get(IDEMPOTENCY_FIELD)
        mine = self.metadata.custom[IDEMPOTENCY_FIELD]
        if record != mine:
            stored = record.get("command") if isinstance(record, dict) else None
            raise IdempotencyKeyReused(
                self.key, self.name, stored.rpartition(":")[0] if isinstance(stored, str) else None
            )


def _fingerprint(command: Command[Any, Any]) -> str:
    """A digest of the command's field values, stable across processes.

    The fields are encoded as JSON by msgspec (value types as their builtins, stream ids
    as strings); a field msgspec cannot encode falls back to its ``repr``.
    """
    fields = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}  # type: ignore[arg-type]
    try:
        data = msgspec.json.encode(fields, order="sorted")
    except (TypeError, msgspec.MsgspecError):
        data = repr(sorted(fields.items())).encode()
    return hashlib.sha256(data).hexdigest()[:32]


def _discover(
    command: Command[Any, Any],
    state: Any,
    versions: list[int],
    streams: Sequence[str],
    decoders: Mapping[str, Callable[[bytes], Any]],
    fold_from: int,
    rounds: int,
) -> Generator[Effect, Any, tuple[Any, list[int], list[str], int, int] | StoreUnavailable]:
    """Ask the command for more streams until it names no new one; read and fold each once.

    Starts after ``rounds`` rounds that folded ``streams``, the last of them from
    ``fold_from``. Returns ``(state, versions, streams, fold_from, rounds)``, or the
    ``StoreUnavailable`` a read ended with.
    """
    streams, versions = list(streams), list(versions)
    while True:
        seen = set(streams)
        found = (s for s in map(StreamId, command.discover(state)) if s not in seen)
        extra: list[str] = list(dict.fromkeys(found))
        if not extra:
            return state, versions, streams, fold_from, rounds
        if rounds == command.max_discovery_rounds:
            raise CommandError(
                f"{type(command).__name__} kept discovering streams after "
                f"{rounds} rounds (last: {extra!r})"
            )
        rounds += 1
        result = yield (FOLD, extra, state, command.apply, decoders)
        if type(result) is not tuple:
            return result  # type: ignore[no-any-return]
        state, more = result
        fold_from = len(streams)
        streams += extra
        versions += more
