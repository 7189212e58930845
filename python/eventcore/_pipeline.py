"""The command algorithm's Python face: its effects, its result, the helpers it calls.

The algorithm itself is a sans-IO state machine in Rust (``eventcore._core.CommandRun``,
``rust/src/pipeline.rs``), written once. :func:`run_command` starts one; it is driven like
a generator: ``run.send(result)`` resumes it with the result of the effect it asked for
last and returns the next effect (``FOLD``, ``TAIL``, ``APPEND``, ``LOOKUP``, ``LOAD``,
``SAVE``, ``SLEEP``, ``DONE``), ``run.throw(exc)`` ends it. Store errors the algorithm
decides about (conflicts, unavailability) come back as values, never as exceptions, so
the retry logic lives in the machine once and every shell (sync, async, tests feeding
results by hand) shares it. On the in-memory store, ``run.drive(core, result)`` runs the
reads and appends natively and returns only ``SLEEP``, ``LOAD``, ``SAVE`` and ``DONE``.
The folded-state cache lives in the machine too (see :mod:`eventcore.state_cache`): a
command takes its state out of the store's cache, folds the tail after it (``TAIL``), and
puts it back after a successful append.

The functions below are what the machine calls in Python: cache keys, the idempotency
key's ids and check, and the messages of its errors.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any

from eventcore._core import CommandRun
from eventcore._core import ExecutionResult as _ExecutionResult
from eventcore.command import Command
from eventcore.errors import (
    CommandError,
    DuplicateEventId,
    EventCoreError,
    IdempotencyKeyReused,
    UsageError,
    ValidationError,
)
from eventcore.metadata import Metadata
from eventcore.recorded import AppendResult
from eventcore.state_cache import (
    STREAMS_ONLY,
    UNKNOWN,
    _keyers,
    keyer_of,
)
from eventcore.stream import StreamId

if TYPE_CHECKING:
    import uuid

# Effects are plain tuples tagged by their first item (cheap on the hot path):
FOLD = "fold"
"""``(FOLD, streams)``: read ``streams`` for a fold (the store's ``read_fold``). Resumed
with ``(rows, versions)`` (the machine folds the rows into the state it holds) or a
``StoreUnavailable``."""
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
"""``(TAIL, streams, versions, fold_from, hint)``: read the events of
``streams[fold_from:]`` after ``versions`` (one per stream) that extend the state the
machine holds, checking that ``streams[:fold_from]`` are still at their versions (the
store's ``read_tail``). Resumed with ``(rows, versions now)`` (the machine folds the rows),
or ``None`` when that tail cannot extend the state (a stream before ``fold_from`` moved,
or a tail event lies at or before an already folded event of ``streams[fold_from:]``:
the pipeline folds in full), or a ``StoreUnavailable``. ``hint`` is the
``ConcurrencyConflict`` of the attempt before, or the tail a snapshot load read with its
snapshot, or ``None``: a store may return what it carries instead of reading."""
QUERY = "query"
"""``(QUERY, query, after)``: a query command's read (:mod:`eventcore.boundary`): the events
after position ``after`` matching ``query``. Resumed with a
:class:`~eventcore.query.QueryResult` or a ``StoreUnavailable``."""
STREAMS = "streams"
"""``(STREAMS, streams)``: a query command's read of its declared streams (after
``QUERY``). Resumed with their RecordedEvents in global order or a ``StoreUnavailable``."""
APPEND_IF = "append_if"
"""``(APPEND_IF, events, expected, metadata, condition)``: a query command's append:
``events`` are :class:`~eventcore.recorded.NewEvent` with tags, ``condition`` an
:class:`~eventcore.query.AppendCondition`. Resumed like ``APPEND``, or with a
``ConditionFailed``."""
LOAD = "load"
"""``(LOAD, command, key)``: on a cache miss, a durable snapshot of ``key`` if the store has
one (only when ``store.snapshots`` is set). Resumed with ``None``, a
:class:`~eventcore.state_cache.CacheEntry`, or ``(entry, tail)`` when the snapshot store
read the events after it too (``tail`` becomes the next ``TAIL``'s hint); the pipeline
then folds its tail (``TAIL``)."""
SAVE = "save"
"""``(SAVE, command, key, entry)``: write ``entry`` (a
:class:`~eventcore.state_cache.CacheEntry`: a state and the versions it folds) as a durable
snapshot; yielded after a successful append when ``entry.since`` reached the command
class's snapshot interval (``store.snapshots.interval(cls)``, what the shells pass as
``snapshot_every``). Resumed with ``None`` (a failure is the snapshot store's to log)."""

Effect = tuple[Any, ...]

run_command = CommandRun
"""``run_command(command, registry, policy, metadata, idempotency_key=None, cache=None,
snapshot_every=0, warm_append_first=False, trace=False, keep_own_events=False)``: a
:class:`CommandRun`. ``keep_own_events`` keeps a state with the command's own events
folded in (as ``warm_append_first`` does) while the next command still reads its tail."""


ExecutionResult = _ExecutionResult
"""What :func:`~eventcore.execute` did: the events written and the attempts used (see
:class:`eventcore._core.ExecutionResult`)."""


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


def _append_result(found: list[Any]) -> AppendResult:
    """The AppendResult of one stored batch, from its RecordedEvents in position order."""
    versions: dict[str, int] = {}
    for e in found:  # in position order: the last version of each stream wins
        versions[e.stream_id] = e.version
    return AppendResult(
        [e.position for e in found],
        list(versions.items()),
        [(e.stream_id, e.stored_type, e.payload, e.event_id) for e in found],
    )


# The UUIDv5 namespace of idempotency-key event ids: changing it changes every key's ids,
# so a retry across an upgrade would no longer find the first outcome.
_KEY_NAMESPACE = "6b0b8a53-52e9-4d2c-9a43-3c0f3f1e6a11"


def key_event_id(key: str, index: int = 0) -> uuid.UUID:
    """The id of the ``index``-th event an idempotency ``key`` writes (UUIDv5, the same in
    every process)."""
    import uuid  # here, not at the top: only keyed commands load it

    return uuid.uuid5(uuid.UUID(_KEY_NAMESPACE), f"{index}:{key}")


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
            ids.append(key_event_id(self.key, i).int)
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
    import hashlib  # here, not at the top: only keyed commands load it

    import msgspec

    fields = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}  # type: ignore[arg-type]
    try:
        data = msgspec.json.encode(fields, order="sorted")
    except (TypeError, msgspec.MsgspecError):
        data = repr(sorted(fields.items())).encode()
    return hashlib.sha256(data).hexdigest()[:32]
