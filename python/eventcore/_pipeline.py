"""The command algorithm as a sans-IO state machine.

``run_command`` is a generator: it yields effects (:class:`Fold`, :class:`Append`,
:class:`Sleep`) and is resumed with each effect's result. Store errors that the algorithm
decides about (conflicts, unavailability) come back as values, never as exceptions, so
the retry logic lives here once and every shell (sync, async, tests feeding results by
hand) shares it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import msgspec

from eventcore._core import uuid7_ints
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

Effect = tuple[Any, ...]


class ExecutionResult:
    """What :func:`~eventcore.execute` did: the events written and the attempts used."""

    __slots__ = ("append", "attempts")

    def __init__(self, append: AppendResult, attempts: int) -> None:
        self.append = append
        self.attempts = attempts
        """How many tries it took (1 = no retry; 0 = found under its idempotency key)."""

    @property
    def replayed(self) -> bool:
        """True when the events were written earlier under the same idempotency key.

        The command did not run again; this is the first outcome, as stored.
        """
        return self.attempts == 0

    @property
    def events(self) -> Any:
        """The events written (:class:`~eventcore.WrittenEvent`: id, stream, version, position)."""
        return self.append.events

    @property
    def stream_versions(self) -> Mapping[str, int]:
        """The version of every stream the command read, after the write.

        For a :attr:`replayed` result: the version each written stream had right after
        the first write (streams the command only read are not known then).
        """
        return self.append.stream_versions

    @property
    def positions(self) -> Sequence[int]:
        """The global positions of the events written, in order."""
        return self.append.positions

    def __repr__(self) -> str:
        return f"ExecutionResult(events={len(self.append)}, attempts={self.attempts})"


def run_command(
    command: Command[Any, Any],
    registry: EventRegistry,
    policy: RetryPolicy,
    metadata: Metadata | None,
    idempotency_key: str | None = None,
) -> Generator[Effect, Any, None]:
    """Run ``command`` to completion, yielding the effects it needs; the last is ``DONE``.

    With an ``idempotency_key`` every attempt starts with a ``LOOKUP`` of the key's event
    ids: events found there are the first outcome, returned without running the command.
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
    discovers = type(command).discover is not Command.discover
    apply = command.apply
    decoders = registry.decoders
    encode = registry.encode
    max_attempts = policy.max_attempts
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
        # Read and fold every declared stream; the versions read become the expected ones.
        result = yield (FOLD, declared, command.initial_state(), apply, decoders)
        if type(result) is tuple and discovers:
            state, versions = result
            result = yield from _discover(command, state, versions, declared, decoders)
        if type(result) is not tuple:
            failures += 1
            yield (SLEEP, policy.jittered(_unavailable(result, policy, failures)))
            continue
        if discovers:
            state, versions, streams = result
        else:
            state, versions = result
            streams = declared
        known: list[str] | set[str] = streams if len(streams) < 8 else set(streams)

        emitted = command.handle(state)
        events: list[tuple[str, str, bytes, int]] = []
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
        checks = list(zip(streams, versions, strict=False))
        while True:
            result = yield (APPEND, events, checks, metadata)
            if type(result) is AppendResult:
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
                runs = attempt - failures
                if runs >= max_attempts:
                    if keyed is not None:  # the conflict may be a same-key caller's write
                        found = yield from _lookup(keyed)
                        if type(found) is ExecutionResult:
                            yield (DONE, found)
                            return
                    raise ConcurrencyConflict(result.conflicts, attempts=attempt)
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
) -> Generator[Effect, Any, tuple[Any, list[int], list[str]] | StoreUnavailable]:
    """Ask the command for more streams until it names no new one; read and fold each once.

    Returns ``(state, versions, streams)``, or the ``StoreUnavailable`` a read ended with.
    """
    streams, versions = list(streams), list(versions)
    rounds = 0
    while True:
        seen = set(streams)
        found = (s for s in map(StreamId, command.discover(state)) if s not in seen)
        extra: list[str] = list(dict.fromkeys(found))
        if not extra:
            return state, versions, streams
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
        streams += extra
        versions += more
