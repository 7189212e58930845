"""Durable snapshots of a command's folded state: they only ever make commands faster.

A :class:`Snapshot` is a command's folded state, encoded with the store's codec, together
with what it represents: the streams folded (declared, then discovered), each stream's
version, and where the last discovery round starts (what an entry of the in-process
state cache holds). The executor reads one when that cache misses (a restarted process,
another instance) and then folds only the events after it; it writes one, after a
successful append, once about :data:`SNAPSHOT_EVERY` events were folded beyond the last.

Snapshots never change an outcome:

- a snapshot of another state schema version (:attr:`Command.snapshot_version`) is
  ignored and replaced, never decoded into the wrong class;
- an unreadable snapshot store (a dropped table, a lost connection), a corrupted row (a
  checksum covers every part but ``taken_at``), an undecodable state, or a state the
  codec cannot encode and decode back to an equal value is a warning (once per command
  class and kind of failure, on the ``eventcore`` logger and through
  :meth:`eventcore.observe.Hook.on_snapshot_failure`), then a full fold;
- writes are best effort: a failed write never fails the command.

The state's type (what a snapshot is decoded into) is :attr:`Command.snapshot_state`
when a command class sets it, else the command's first generic parameter
(``class Deposit(Command[Account, AccountEvent])`` -> ``Account``). It must be a type the
codec can decode (a dataclass, a ``msgspec.Struct``, builtins and containers of them);
a state that does not come back equal to itself (``decode(encode(state)) != state``, for
example a class without ``__eq__``) is never snapshotted.
"""

from __future__ import annotations

import inspect
import threading
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from eventcore import observe

if typing.TYPE_CHECKING:
    import asyncio

    from eventcore.registry import Codec
    from eventcore.state_cache import CacheEntry

__all__ = [
    "SNAPSHOT_EVERY",
    "AsyncSnapshotStore",
    "MemorySnapshotStore",
    "Snapshot",
    "SnapshotStore",
    "Snapshotter",
    "snapshot_key",
    "state_type",
]

SNAPSHOT_EVERY = 100
"""By default a snapshot is written once this many events were folded beyond the last one."""

PROBE_EVERY = 16
"""A command class whose last reads found no snapshot is probed on one miss in this many.

A read costs a round trip on PostgreSQL; a class whose commands start fresh streams (an
``OpenAccount``) would pay it on every command for nothing. After ``PROBE_EVERY`` misses
in a row that found nothing, only every ``PROBE_EVERY``-th miss reads; a snapshot found,
or one written for the class, makes every miss read again.
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One command's folded state and exactly what it represents."""

    key: str
    """The command class's qualified name and a digest of its key (see :func:`snapshot_key`)."""
    streams: tuple[str, ...]
    """Every stream folded, declared ones first, then each discovery round's."""
    versions: tuple[int, ...]
    """Each stream's version folded (its events ``1..version``), as :attr:`streams`."""
    fold_from: int
    """Where the last discovery round starts in :attr:`streams` (0 without discovery)."""
    rounds: int
    """How many discovery rounds added streams (0 without discovery)."""
    schema_version: int
    """The command class's :attr:`~eventcore.Command.snapshot_version` when it was taken."""
    state: bytes
    """The state, encoded with the store's codec."""
    taken_at: float
    """When it was taken (``time.time()``)."""
    checksum: bytes
    """A digest of every other part but :attr:`taken_at` (see :func:`checksum`)."""

    @property
    def events(self) -> int:
        """How many events the state folds (the sum of :attr:`versions`)."""
        return sum(self.versions)


@runtime_checkable
class SnapshotStore(Protocol):
    """Where snapshots live, for synchronous stores (see :class:`MemorySnapshotStore`)."""

    def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None."""
        ...

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a snapshot of more events (same schema) is stored."""
        ...


@runtime_checkable
class AsyncSnapshotStore(Protocol):
    """Where snapshots live, for asynchronous stores (PostgreSQL).

    The executor runs :meth:`save` in the background, after the command's append: it
    may raise (a warning), and it never outlives the event store's ``close()``.
    """

    async def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None."""
        ...

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a snapshot of more events (same schema) is stored."""
        ...


def checksum(
    key: str,
    streams: Sequence[str],
    versions: Sequence[int],
    fold_from: int,
    rounds: int,
    schema_version: int,
    state: bytes,
) -> bytes:
    """The 16-byte BLAKE2b digest of a snapshot's parts (a corrupted row does not match)."""
    import hashlib  # here, not at the top: an application without snapshots never loads it

    import msgspec

    parts = [key, list(map(str, streams)), list(versions), fold_from, rounds, schema_version]
    data = msgspec.msgpack.encode(parts)
    return hashlib.blake2b(data + state, digest_size=16).digest()


def supersedes(new: Snapshot, old: Snapshot | None) -> bool:
    """Whether ``new`` should replace ``old``: another schema version, or more events."""
    return old is None or new.schema_version != old.schema_version or new.events > old.events


class MemorySnapshotStore:
    """Snapshots in process memory: for tests, and for the in-memory event store.

    Thread-safe. Share one between two :class:`~eventcore.MemoryStore` objects on the same
    data to see what a restarted process would see.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.snapshots: dict[str, Snapshot] = {}
        """Every snapshot stored, by key (tests may read or change it)."""

    def load(self, key: str) -> Snapshot | None:
        """The snapshot stored under ``key``, or None."""
        return self.snapshots.get(key)

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` unless a snapshot of more events (same schema) is stored."""
        with self._lock:
            if supersedes(snapshot, self.snapshots.get(snapshot.key)):
                self.snapshots[snapshot.key] = snapshot

    def __len__(self) -> int:
        return len(self.snapshots)

    def __repr__(self) -> str:
        return f"MemorySnapshotStore({len(self.snapshots)} snapshots)"


def snapshot_key(command_class: type, parts: Any) -> str | None:
    """The snapshot key of a command class and its cache key's ``parts``, or None.

    ``module.QualName:digest`` (see :func:`class_name`), where the digest is a SHA-256 of
    the parts encoded as JSON (the same in every process: no ``hash()``, which is salted
    per process). None when the parts cannot be encoded (no snapshot then: a ``repr`` may
    differ between processes).
    """
    import hashlib  # here, not at the top: an application without snapshots never loads it

    import msgspec

    try:
        data = msgspec.json.encode(parts, enc_hook=_builtin)
    except (TypeError, ValueError, NotImplementedError, msgspec.MsgspecError):
        return None
    digest = hashlib.sha256(data).hexdigest()[:32]
    return f"{class_name(command_class)}:{digest}"


def class_name(command_class: type) -> str:
    """``module.QualName``; for a class defined in a function also the line of its
    ``apply`` (two such classes of one name in one module are told apart, stably)."""
    name = f"{command_class.__module__}.{command_class.__qualname__}"
    if "<locals>" in name:
        code = getattr(getattr(command_class, "apply", None), "__code__", None)
        name += f"@{code.co_firstlineno}" if code is not None else ""
    return name


def _builtin(obj: Any) -> Any:
    """Value types and stream ids encode as the builtin they subclass; nothing else does."""
    for base in (str, int, float, bytes):
        if isinstance(obj, base):
            return base(obj)  # type: ignore[arg-type]
    raise NotImplementedError(type(obj).__name__)


def state_type(command_class: type) -> Any:
    """What a snapshot of ``command_class`` decodes into, or None when it cannot tell.

    ``snapshot_state`` when the class sets it, else the first argument of the
    ``Command[State, Event]`` it derives from (the nearest one in its bases).
    """
    explicit = getattr(command_class, "snapshot_state", None)
    if explicit is not None:
        return explicit
    from eventcore.command import Command

    for klass in command_class.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Command):
                args = typing.get_args(base)
                if args and not isinstance(args[0], typing.TypeVar):
                    return args[0]
    return None


class Snapshotter:
    """One event store's snapshot policy: keys, encoding, reads and writes, and warnings.

    Args:
        store: where the snapshots live.
        codec: the event store's codec (the state is encoded with it).
        every: events folded beyond the last snapshot before the next is written, for
            command classes that do not set ``snapshot_every``; 0 or None: off unless a
            class sets it.
    """

    def __init__(
        self, store: SnapshotStore | AsyncSnapshotStore, codec: Codec, every: int | None
    ) -> None:
        self.store = store
        self.codec = codec
        self.every = every or 0
        self._decoders: dict[type, Callable[[bytes], Any] | None] = {}
        self._off: set[type] = set()  # classes whose state does not round-trip
        self._warned: set[tuple[type, str]] = set()
        self._empty: dict[type, int] = {}  # misses since a snapshot was last found or written
        self._lock = threading.Lock()
        self._pending: set[asyncio.Future[Any]] = set()
        self._closed = False
        self.max_pending = 8
        """Background writes in flight at most (asynchronous stores); more are dropped."""
        self.reads = 0
        """Snapshots looked for on cache misses (probes that read the store)."""
        self.found = 0
        """Snapshots that were read and used: a command folded only their tail."""
        self.written = 0
        """Snapshots taken and handed to the store (a background write may still fail)."""

    # -- policy ----------------------------------------------------------------------

    def interval(self, command_class: type) -> int:
        """Events beyond the last snapshot before the next (0: never) for this class."""
        if command_class in self._off:
            return 0
        every = getattr(command_class, "snapshot_every", None)
        if every is None:
            return self.every
        return int(every) if every and every > 0 else 0

    def due(self, command_class: type, events: int, last: int) -> bool:
        """Whether a state folding ``events`` events (the last snapshot: ``last``) is due."""
        every = self.interval(command_class)
        return every > 0 and events - last >= every

    # -- the executor's LOAD and SAVE effects ------------------------------------------

    def load(self, command: Any, key: Any) -> CacheEntry | None:
        """The state-cache entry of ``command`` (cache key ``key``) from its snapshot, or None.

        For synchronous snapshot stores. None when there is no usable snapshot (another
        schema version, not this command's streams, unreadable: see the module), or when
        the class's recent reads found nothing (see :data:`PROBE_EVERY`).
        """
        cls = type(command)
        name = self._probe(cls, key)
        if name is None:
            return None
        self.reads += 1
        return self._entry(command, self.read(cls, name))

    async def load_async(
        self, command: Any, key: Any
    ) -> CacheEntry | tuple[CacheEntry, object] | None:
        """:meth:`load` for any snapshot store, from async code.

        A store that reads the events after the snapshot with it (``load_with_tail``: the
        PostgreSQL store, one round trip for both) gives ``(entry, tail)``: the command
        machine hands ``tail`` to the event store's ``read_tail`` as its hint.
        """
        cls = type(command)
        name = self._probe(cls, key)
        if name is None:
            return None
        self.reads += 1
        with_tail = getattr(self.store, "load_with_tail", None)
        if with_tail is None:
            return self._entry(command, await self.read_async(cls, name))
        try:
            found, tail = await with_tail(name)
        except Exception as exc:
            self.failed(cls, "read", exc)
            return None
        entry = self._entry(command, self._checked(cls, name, found))
        if entry is not None and tail is not None:
            return entry, tail
        return entry

    def save(self, command: Any, key: Any, entry: CacheEntry) -> None:
        """Write ``entry`` (a state-cache entry) as ``command``'s snapshot; never raises.

        The state is encoded now, before anything may mutate it; an asynchronous store's
        write then runs in the background (see :meth:`write`).
        """
        cls = type(command)
        name = self.key_of(cls, key)
        if name is None:
            return
        try:
            snap = self.take(
                cls, name, entry.streams, entry.versions, entry.fold_from, entry.rounds, entry.state
            )
        except Exception as exc:  # a malformed entry: never the command's failure
            self.failed(cls, "encode", exc)
            return
        if snap is not None:
            self._empty[cls] = 0
            self.written += 1
            self.write(cls, snap)

    @staticmethod
    def key_of(command_class: type, key: Any) -> str | None:
        """The snapshot key of a state-cache key (the class itself left out of the digest)."""
        if type(key) is tuple and key and key[0] is command_class:
            key = key[1:]
        return snapshot_key(command_class, key)

    def _probe(self, cls: type, key: Any) -> str | None:
        """The snapshot key to read on this miss, or None: not snapshotted, or not probed."""
        if not self.interval(cls):
            return None
        empty = self._empty.get(cls, 0) + 1
        self._empty[cls] = empty
        if empty > PROBE_EVERY and empty % PROBE_EVERY:
            return None
        return self.key_of(cls, key)

    def _entry(self, command: Any, snap: Snapshot | None) -> CacheEntry | None:
        if snap is None:
            return None
        cls = type(command)
        ok, state = self.restore(cls, snap, command.streams())
        if not ok:
            return None
        self._empty[cls] = 0
        self.found += 1
        from eventcore.state_cache import CacheEntry

        return CacheEntry(
            state, list(snap.streams), list(snap.versions), snap.fold_from, 0, snap.rounds
        )

    # -- reads -----------------------------------------------------------------------

    def read(self, command_class: type, key: str) -> Snapshot | None:
        """Read ``key`` from a synchronous snapshot store; None (with a warning) on failure."""
        try:
            found = self.store.load(key)
            if inspect.isawaitable(found):
                if inspect.iscoroutine(found):
                    found.close()
                raise TypeError("an asynchronous snapshot store needs `await execute(...)`")
        except Exception as exc:
            self.failed(command_class, "read", exc)
            return None
        return self._checked(command_class, key, found)

    async def read_async(self, command_class: type, key: str) -> Snapshot | None:
        """Read ``key`` from any snapshot store; None (with a warning) on failure."""
        try:
            found: Any = self.store.load(key)
            if inspect.isawaitable(found):
                found = await found
        except Exception as exc:
            self.failed(command_class, "read", exc)
            return None
        return self._checked(command_class, key, found)

    def _checked(self, command_class: type, key: str, found: Any) -> Snapshot | None:
        if found is None:
            return None
        if type(found) is not Snapshot or found.key != key or not _intact(found):
            self.failed(command_class, "read", ValueError(f"a malformed snapshot: {found!r}"))
            return None
        return found

    def restore(
        self, command_class: type, snapshot: Snapshot, declared: Sequence[str]
    ) -> tuple[bool, Any]:
        """``(True, state)`` decoded from ``snapshot``, or ``(False, None)`` to fold fully.

        Refuses a snapshot of another schema version (silently: it is rebuilt), one whose
        first streams are not exactly ``declared``, and a state that does not decode (with
        a warning).
        """
        if snapshot.schema_version != getattr(command_class, "snapshot_version", 1):
            return False, None
        if list(snapshot.streams[: len(declared)]) != list(declared):
            return False, None
        decode = self._decoder(command_class)
        if decode is None:
            return False, None
        try:
            return True, decode(snapshot.state)
        except Exception as exc:
            self.failed(command_class, "decode", exc)
            return False, None

    def _decoder(self, command_class: type) -> Callable[[bytes], Any] | None:
        try:
            return self._decoders[command_class]
        except KeyError:
            pass
        decode: Callable[[bytes], Any] | None = None
        kind = state_type(command_class)
        try:
            if kind is None:
                raise TypeError(
                    f"{command_class.__qualname__} names no state type: derive it from "
                    "Command[State, Event] with a concrete State, or set snapshot_state"
                )
            decode = self.codec.decoder(kind)
        except Exception as exc:
            self.failed(command_class, "state type", exc)
            self._off.add(command_class)
        self._decoders[command_class] = decode
        return decode

    # -- writes ----------------------------------------------------------------------

    def take(
        self,
        command_class: type,
        key: str,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        rounds: int,
        state: Any,
    ) -> Snapshot | None:
        """Encode ``state`` now (before anything may mutate it) as a snapshot, or None.

        The encoded state is decoded back and compared with ``state``: one that does not
        come back equal (a type the codec cannot represent exactly) turns snapshots off
        for the class, with a warning.
        """
        decode = self._decoder(command_class)
        if decode is None:
            return None
        try:
            data = self.codec.encode(state)
            if decode(data) != state:
                raise ValueError(
                    f"decode(encode(state)) != state for {type(state).__qualname__}: the "
                    "codec does not represent it exactly (or it has no __eq__)"
                )
        except Exception as exc:
            self.failed(command_class, "encode", exc)
            self._off.add(command_class)
            return None
        schema: int = getattr(command_class, "snapshot_version", 1)
        names = tuple(map(str, streams))  # plain str: stream ids are a str subclass
        numbers = tuple(map(int, versions))
        return Snapshot(
            key,
            names,
            numbers,
            fold_from,
            rounds,
            schema,
            data,
            time.time(),
            checksum(key, names, numbers, fold_from, rounds, schema, data),
        )

    def write(self, command_class: type, snapshot: Snapshot) -> None:
        """Hand ``snapshot`` to the store; a failure is a warning, never an error.

        An asynchronous store's write runs in the background on the running loop (at
        most :attr:`max_pending` at once: more are dropped) until :meth:`close`.
        """
        try:
            written = self.store.save(snapshot)
        except Exception as exc:
            self.failed(command_class, "write", exc)
            return
        if inspect.isawaitable(written):
            import asyncio  # loaded on first use: sync-only code never needs it

            pending = self._pending
            if self._closed or len(pending) >= self.max_pending:
                if inspect.iscoroutine(written):
                    written.close()  # dropped: best effort
                return
            try:
                asyncio.get_running_loop()
            except RuntimeError as exc:  # an async snapshot store from sync code
                if inspect.iscoroutine(written):
                    written.close()
                self.failed(command_class, "write", exc)
                return
            task = asyncio.ensure_future(written)
            pending.add(task)
            task.add_done_callback(lambda t: self._written(command_class, t))

    def _written(self, command_class: type, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed(command_class, "write", task.exception())  # type: ignore[arg-type]

    async def close(self, timeout: float = 5.0) -> None:
        """Let background writes finish (at most ``timeout`` seconds, then cancel them)."""
        self._closed = True
        pending = list(self._pending)
        if pending:
            import asyncio  # loaded on first use: sync-only code never needs it

            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._closed = False

    # -- failures --------------------------------------------------------------------

    def failed(self, command_class: type, what: str, error: BaseException) -> None:
        """Warn (once per class and ``what``) that a snapshot could not be used or written."""
        with self._lock:
            if (command_class, what) in self._warned:
                return
            self._warned.add((command_class, what))
        name = f"{command_class.__module__}.{command_class.__qualname__}"
        observe._logger().warning(
            "eventcore snapshot %s failed for %s (folding in full instead): %r",
            what,
            name,
            error,
        )
        observe.report_snapshot_failure(name, what, error)


def _intact(s: Snapshot) -> bool:
    """Whether a snapshot read back is whole: its parts fit and its checksum matches."""
    import msgspec  # here, not at the top: an application without snapshots never loads it

    try:
        return (
            isinstance(s.state, bytes)
            and len(s.streams) == len(s.versions) > s.fold_from >= 0
            and s.rounds >= 0
            and all(type(v) is int and v >= 0 for v in s.versions)
            and s.checksum
            == checksum(
                s.key, s.streams, s.versions, s.fold_from, s.rounds, s.schema_version, s.state
            )
        )
    except (TypeError, ValueError, msgspec.MsgspecError):
        return False
