"""The Rust core of eventcore: stream ids, type names, UUIDv7, folding, the in-memory store."""

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar, final

from typing_extensions import disjoint_base

from eventcore.recorded import AppendResult, WriteToken, WrittenEvent
from eventcore.stream import StreamId

__all__ = [
    "ANY",
    "MAX_APPEND_BYTES",
    "MAX_APPEND_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "NO_STREAM",
    "STREAM_EXISTS",
    "BoundInit",
    "CacheEntry",
    "CommandInit",
    "CommandRun",
    "ExecutionResult",
    "MemoryStore",
    "StateCacheCore",
    "dec_hook",
    "enc_hook",
    "fold",
    "reseed_after_fork",
    "stream_id",
    "uuid7",
    "uuid7_ints",
    "validate_event_type",
    "validate_stream_id",
]

_S = TypeVar("_S")

_FoldRow = tuple[str, str, bytes, int, int]
"""One event to fold: ``(stream_id, event_type, payload, version, position)``."""
_Row = tuple[int, int, str, int, str, bytes, int, bytes | None]
"""One stored event as a row.

``(position, event_id as int, stream_id, version, event_type, payload,
recorded_at in microseconds since the unix epoch UTC, metadata bytes or None)``.
"""

ANY: int
"""Expected version ``-1``: no check."""

STREAM_EXISTS: int
"""Expected version ``-2``: the stream must have at least one event."""

NO_STREAM: int
"""Expected version ``0``: the stream must not exist (same as exact 0)."""

def validate_stream_id(value: str) -> str:
    """Validate a stream id and return it stripped of surrounding whitespace.

    The result must be non-empty, at most 255 characters and free of control characters
    (Unicode category Cc). Returns the same object when nothing was trimmed.

    Raises:
        TypeError: ``value`` is not a str.
        eventcore.errors.InvalidStreamId: a rule is broken.
    """

def stream_id(value: str, field: str | None = None) -> StreamId:
    """Validate a stream id and return it trimmed, as a :class:`~eventcore.StreamId`.

    A StreamId is returned as is; any other str is validated and copied into a new one.

    Raises:
        TypeError: ``value`` is not a str.
        eventcore.errors.InvalidStreamId: a rule is broken (its ``field`` is ``field``
            when given).
    """

def enc_hook(obj: Any, /) -> int | str | float | bytes:
    """msgspec's ``enc_hook``: ``obj`` as the builtin it subclasses (``int(obj)``, ...).

    Raises:
        NotImplementedError: ``obj`` subclasses none of ``int``, ``str``, ``float``, ``bytes``.
    """

def dec_hook(typ: Any, obj: Any) -> Any:
    """msgspec's ``dec_hook``: ``typ(obj)`` when ``typ`` subclasses a builtin above.

    Raises:
        NotImplementedError: ``typ`` is not such a class.
    """

def validate_event_type(value: str) -> str:
    """Validate an event type name and return it (the same object; never trimmed).

    The name must be non-empty, at most 255 characters, free of control characters
    (Unicode category Cc) and must not start or end with whitespace.

    Raises:
        TypeError: ``value`` is not a str.
        eventcore.errors.InvalidEventType: a rule is broken.
    """

MAX_PAYLOAD_BYTES: int
"""The largest payload of one event: 16 MiB."""

MAX_APPEND_BYTES: int
"""The most one append may carry, payloads plus the encoded metadata once: 64 MiB."""

MAX_APPEND_EVENTS: int
"""The most events one append may write: 1,048,576."""

def uuid7() -> uuid.UUID:
    """Generate an RFC 9562 UUIDv7, strictly increasing within the process."""

def uuid7_ints(n: int) -> list[int]:
    """Generate ``n`` UUIDv7 values as 128-bit ints, strictly increasing."""

def reseed_after_fork() -> None:
    """Reseed the UUIDv7 random generator; register with ``os.register_at_fork``."""

def fold(
    state: _S,
    apply: Callable[[_S, Any, str], _S],
    decoders: Mapping[str, Callable[[bytes], Any]],
    events: Sequence[tuple[str, str, bytes] | tuple[str, str, bytes, int, int]],
) -> _S:
    """Fold ``(stream_id, event_type, payload)`` events into ``state``.

    An event may carry ``version, position`` after its payload: a decode error then
    names them.

    For each event in order: ``state = apply(state, decoders[event_type](payload),
    stream_id)``. Returns the final state.

    Raises:
        eventcore.errors.EventDecodeError: no decoder for an event type, or a decoder
            raised (that exception is the ``__cause__``); names the stream (and the
            version and position when given). A SerializationError.
    """

@final
class MemoryStore:
    """An in-memory, thread-safe event store (one lock; all-or-nothing appends)."""

    def __init__(self) -> None:
        """Create an empty store."""

    def append(
        self,
        expected: Sequence[tuple[str, int]],
        events: Sequence[
            tuple[str, str, bytes, int | uuid.UUID | None]
            | tuple[str, str, bytes, int | uuid.UUID | None, Sequence[str]]
        ],
        metadata: bytes | None,
        condition: tuple[Sequence[tuple[Sequence[str], Sequence[str]]], int] | None = None,
    ) -> tuple[int, list[tuple[str, int]], list[int] | None]:
        """Append events atomically after checking expected stream versions.

        An event may carry a fifth item, its tags. ``condition`` is ``(query, after)``,
        the query as ``(event_types, tags)`` pairs: the append fails with
        ``ConditionFailed`` when an event after position ``after`` matches it.

        ``expected`` lists ``(stream_id, expected_version)`` (``>= 0`` exact, ``ANY``,
        ``STREAM_EXISTS``); ``events`` are ``(stream_id, event_type, payload, event_id)``.
        Returns ``(first_position, [(stream_id, version_after), ...], ids)`` for the streams
        of ``expected`` then further streams of ``events``; an event whose id is ``None``
        gets a fresh UUIDv7, and then ``ids`` lists every event's id as an int (else it is
        ``None``). Re-appending a stored batch with
        the same event ids returns the original result and writes nothing.

        Raises:
            eventcore.errors.ConcurrencyConflict: a version did not match (every
                mismatching stream listed); nothing is written.
            eventcore.errors.DuplicateEventId: an event id is reused for other content.
            eventcore.errors.InvalidStreamId: a stream id breaks the rules.
            eventcore.errors.InvalidEventType: an event type name breaks the rules.
            eventcore.errors.LimitExceeded: a payload, the batch or its size is over a cap.
            ValueError: an expected version below -2 or a stream listed twice.
        """

    def read_query(
        self,
        items: Sequence[tuple[Sequence[str], Sequence[str]]],
        after: int = 0,
        limit: int | None = None,
    ) -> tuple[list[_Row], int]:
        """Rows of the events after ``after`` matching the query (``(event_types, tags)``
        pairs), in position order, and the position the read is consistent with."""

    def tags_at(self, positions: Sequence[int]) -> list[tuple[str, ...]]:
        """The tags of the events at ``positions`` (sorted; empty for none)."""

    def has_tags(self) -> bool:
        """Whether any stored event carries a tag."""

    def fold_streams(
        self,
        streams: Sequence[str],
        state: _S,
        apply: Callable[[_S, Any, str], _S],
        decoders: Mapping[str, Callable[[bytes], Any]],
    ) -> tuple[_S, list[int]]:
        """Fold every event of ``streams`` (global order) into ``state`` like :func:`fold`.

        Returns ``(final_state, [current version of each stream])``.
        """

    def read_fold(self, streams: Sequence[str]) -> tuple[list[_FoldRow], list[int]]:
        """Every event of ``streams`` as fold rows (global order) and each stream's version."""

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[list[_FoldRow], list[int]] | None:
        """The events of ``streams[fold_from:]`` after ``versions`` as fold rows, and each
        stream's version now; ``None`` when that tail cannot extend a state folded up to
        ``versions``: a stream before ``fold_from`` changed, or a stream has fewer events
        than ``versions`` says. ``hint`` is accepted and not used.
        """

    def read_streams(
        self, streams: Sequence[str], after_version: int = 0, limit: int | None = None
    ) -> list[_Row]:
        """Events of ``streams`` with version > ``after_version``, in global order."""

    def read_stream_backwards(
        self, stream: str, before_version: int | None = None, limit: int | None = None
    ) -> list[_Row]:
        """One stream's events with version < ``before_version``, newest first."""

    def read_all(
        self,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[_Row]:
        """Events after ``after_position`` in global order, optionally filtered.

        Filters (event type in ``event_types``, stream id starting with ``stream_prefix``)
        apply before ``limit``.
        """

    def read_columns(
        self,
        after_position: int = 0,
        limit: int | None = None,
        known_types: int = 0,
        known_streams: int = 0,
    ) -> tuple[bytes, bytes, bytes, bytes, list[str], list[str]]:
        """Envelope columns of the events after ``after_position`` (at most ``limit``).

        Returns ``(positions, type_codes, stream_codes, recorded_at, type_names,
        stream_names)``: little-endian ``int64``, ``int32``, ``int32`` and ``int64``
        (microseconds since the unix epoch, UTC) buffers, one item per event in position
        order. Codes are the store's interning indexes, stable for its lifetime;
        ``type_names`` holds the names of type codes ``known_types`` and up, and
        ``stream_names`` those of stream codes ``known_streams`` up to the largest code
        returned. The GIL is released while copying.
        """

    def read_by_ids(self, ids: Iterable[int | uuid.UUID]) -> list[_Row]:
        """The stored events with the given ids, in position order; ids not stored are
        left out."""

    def stream_version(self, stream: str) -> int:
        """The stream's version (number of events; 0 = no stream)."""

    def truncate_stream(self, stream: str, before_version: int | None, expected: int) -> int:
        """Hide the events of ``stream`` below ``before_version`` (None: all); its version."""
    def purge_stream(self, stream: str) -> tuple[int, int, int, int, int]:
        """Erase the hidden events of ``stream``: (events, from/to version, first/last position)."""
    def stream_bounds(self, stream: str) -> tuple[int, int, bool]:
        """(first visible version, version, deleted) of ``stream``."""
    def count_events(self, after: int, upto: int) -> int:
        """Stored (not erased) events at positions in ``(after, upto]``."""
    def has_holes(self) -> bool:
        """Whether erased events left holes in the positions."""
    def head(self) -> int:
        """The last global position (0 when empty)."""

    def list_streams(
        self, prefix: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, int]]:
        """``(stream_id, version)`` pairs sorted by stream id, after the cursor ``after``."""

    def __len__(self) -> int:
        """The number of stored events."""

    def memory_usage(self) -> int:
        """Approximate bytes held by the store's data structures."""

    def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Block until the head passes ``after_position`` or ``timeout`` seconds pass.

        Returns the head. The GIL is released while waiting.
        """

_Param = tuple[str, int, Any, int, Any]

@final
class CommandInit:
    """A command class's generated ``__init__`` (see ``eventcore.command._fast_init``)."""

    def __new__(
        cls,
        qualname: str,
        fields: Sequence[_Param],
        initvars: Sequence[_Param],
        post_init: bool,
        stream_value: Callable[[Any, str], Any],
        signature: Any,
    ) -> CommandInit:
        """Build the ``__init__`` of the class ``qualname`` from its parameters."""

    @property
    def __signature__(self) -> Any:
        """The dataclass ``__init__``'s signature (for ``inspect.signature``)."""

    def __get__(self, instance: Any, owner: Any = None, /) -> Any:
        """Bind to an instance (``instance.__init__``); on the class, the unbound ``__init__``."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """``Class.__init__(instance, **fields)``."""

@final
class BoundInit:
    """A command's ``__init__`` bound to the instance being built."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """Initialise the instance from keyword arguments."""

@final
class CommandRun:
    """One run of the command machine (what ``eventcore._pipeline.run_command`` returns).

    Driven like a generator: ``send(result)`` resumes it with the result of the effect it
    returned last (``None`` at the start) and returns the next effect tuple; errors are
    raised from ``send``, and ``send`` after the end raises ``StopIteration``.
    """

    def __new__(
        cls,
        command: Any,
        registry: Any,
        policy: Any,
        metadata: Any,
        idempotency_key: str | None = None,
        cache: Any = None,
        snapshot_every: int = 0,
        warm_append_first: bool = False,
        trace: bool = False,
        keep_own_events: bool = False,
    ) -> CommandRun: ...
    def send(self, value: Any) -> tuple[Any, ...]:
        """Resume with the result of the last effect; the next effect."""

    def throw(self, exc: BaseException) -> None:
        """End the run with ``exc`` (raised again)."""

    def drive(self, store: MemoryStore, result: Any) -> tuple[Any, ...]:
        """Resume with ``result`` and run reads, appends and lookups on ``store`` inside
        the call; returns the next ``sleep``, ``load``, ``save`` or ``done`` effect."""

    @staticmethod
    def execute(
        store: MemoryStore,
        command: Any,
        registry: Any,
        policy: Any,
        metadata: Any,
        idempotency_key: str | None,
        state_cache: Any,
        snapshots: Any,
    ) -> ExecutionResult | tuple[CommandRun, tuple[Any, ...]]:
        """A run on ``store`` without tracing, keeping states with their own events
        (``keep_own_events``), driven at once: its result when it ran to the end, else
        ``(run, effect)`` for the shell to go on with (a sleep, a snapshot load or save).
        ``state_cache`` and ``snapshots`` are the store's attributes as they are (a cache
        with ``max_entries`` 0 is not used; the interval is ``snapshots.interval``)."""

    @property
    def trace(self) -> list[tuple[Any, ...]] | None:
        """``(phase, attempt, start_ns, end_ns)`` and ``("retry", attempt, reason, delay)``
        tuples (``trace=True``), else ``None``."""

    def __iter__(self) -> CommandRun: ...
    def __next__(self) -> tuple[Any, ...]: ...

@final
class ExecutionResult:
    """What :func:`~eventcore.execute` did: the events written and the attempts used."""

    def __new__(cls, append: AppendResult, attempts: int) -> ExecutionResult: ...
    @property
    def attempts(self) -> int:
        """How many tries it took (1 = no retry; 0 = found under its idempotency key)."""

    @property
    def append(self) -> AppendResult:
        """The store's result of the write."""

    @property
    def replayed(self) -> bool:
        """True when the events were written earlier under the same idempotency key."""

    @property
    def events(self) -> list[WrittenEvent]:
        """The events written (id, stream, version, position)."""

    @property
    def stream_versions(self) -> Mapping[str, int]:
        """The version of every stream the command read, after the write."""

    @property
    def positions(self) -> Sequence[int]:
        """The global positions of the events written, in order."""

    @property
    def write_token(self) -> WriteToken:
        """What a replica read must see to show this write (``after=``); position 0 when
        the command wrote nothing."""

@final
class CacheEntry:
    """A folded state with the streams and per-stream versions it represents.

    ``fold_from`` is the index in ``streams`` where the last discovery round starts (0
    without discovery): only those streams may have a tail folded onto the state.
    ``since`` counts the events folded into it since it was last loaded from or saved as a
    durable snapshot; ``rounds`` is how many discovery rounds added streams.
    """

    def __new__(
        cls,
        state: Any,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int = 0,
        since: int = 0,
        rounds: int = 0,
    ) -> CacheEntry: ...
    @property
    def state(self) -> Any:
        """The folded state."""

    @state.setter
    def state(self, value: Any) -> None: ...
    @property
    def streams(self) -> list[str]:
        """The streams folded, in order (a new list)."""

    @property
    def versions(self) -> list[int]:
        """Each stream's version the state folds up to (a new list)."""

    @property
    def fold_from(self) -> int:
        """Where the last discovery round starts in ``streams``."""

    @property
    def since(self) -> int:
        """Events folded since the last durable snapshot."""

    @since.setter
    def since(self, value: int) -> None: ...
    @property
    def rounds(self) -> int:
        """How many discovery rounds added streams."""

@disjoint_base
class StateCacheCore:
    """The entry map, counters and bounds of a state cache (base of ``StateCache``).

    The command machine uses them without Python calls; the counters are atomic. An
    entry a command is using is not in the map for anyone else until it is put back.
    """

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    @property
    def _entries(self) -> dict[Any, CacheEntry]:
        """The entries by key, least recently used first (a new dict)."""

    def _pop(self, key: Any) -> CacheEntry | None:
        """Remove and return the entry of ``key`` (``None`` when there is none)."""

    def _put(self, key: Any, entry: CacheEntry) -> int:
        """Store ``entry`` under ``key`` as the most recently used; the number of entries."""

    def _pop_oldest(self) -> tuple[Any, CacheEntry] | None:
        """Remove and return the least recently used ``(key, entry)``, or ``None``."""

    def _clear(self) -> None:
        """Drop every entry."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    @property
    def hits(self) -> int:
        """Commands that found their state here (counted when taken)."""

    @hits.setter
    def hits(self, value: int) -> None: ...
    @property
    def misses(self) -> int:
        """Commands that looked for their state and folded in full."""

    @misses.setter
    def misses(self, value: int) -> None: ...
    @property
    def evictions(self) -> int:
        """Entries dropped to keep the bound."""

    @evictions.setter
    def evictions(self, value: int) -> None: ...
    @property
    def max_entries(self) -> int:
        """The bound on entries (0: the cache is off)."""

    @max_entries.setter
    def max_entries(self, value: int) -> None: ...
    @property
    def min_events(self) -> int:
        """A state folded in full from fewer events than this is not kept."""

    @min_events.setter
    def min_events(self, value: int) -> None: ...
    @property
    def verify(self) -> bool:
        """Whether every hit is checked against a full fold."""

    @verify.setter
    def verify(self, value: bool) -> None: ...
