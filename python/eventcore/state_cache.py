"""The in-process folded-state cache: a command's state kept between commands.

Every store object owns one :class:`StateCache` (``store.state_cache``). The executor
finds a command's entry and marks it in use, folds only the events after the entry's
versions (the store's ``read_tail`` reads them), runs the command, and updates the entry in
place (the most recently used) only after a successful append, with the command's own
events applied, exactly as a full fold after the append would give. A command that raises,
breaks a rule, conflicts or finds the store unavailable drops the entry; a second command
on the same key while the entry is in use misses and folds in full (an entry in use is not
in the cache for anyone else: not counted, listed or evicted). States are never copied: an
entry is used by one command at a time, so an ``apply`` that mutates its state in place
stays correct. (:meth:`StateCache.take` and :meth:`StateCache.put`, for code outside the
executor, take an entry out and put one back.)

Entries are keyed by the command class, its streams and the values of the fields its
``initial_state``/``apply``/``discover`` read (found once per class from their bytecode,
see :func:`state_key_fields`), so commands that fold differently never share a state.
"""

from __future__ import annotations

import dataclasses
import dis
import threading
from collections.abc import Callable, Hashable, Sequence
from types import FunctionType
from typing import Any

from eventcore import observe
from eventcore._core import CacheEntry, StateCacheCore
from eventcore.errors import EventCoreError
from eventcore.stream import STREAM_FIELD

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "CacheEntry",
    "StateCache",
    "StateCacheMismatch",
    "make_state_cache",
    "state_key_fields",
]

DEFAULT_MAX_ENTRIES = 10_000
"""The default bound of a store's cache (least recently used entries are evicted)."""
DEFAULT_MIN_EVENTS = 8
"""A state folded in full from fewer events than this is not cached: folding it again
costs about what keeping it costs (a command on a short or new stream pays nothing but the
lookup); once its streams reach this size the state is kept and then only tails are folded."""

HIT = "hit"
MISS = "miss"
EVICT = "evict"


class StateCacheMismatch(EventCoreError, AssertionError):
    """A cached state plus its tail differed from a full fold (verify mode only).

    Almost always a ``handle`` (or ``discover``) that mutated the state it was given, or an
    ``apply``/``initial_state`` that reads something the cache key does not hold (declare
    it in the command class's ``state_key``).
    """

    def __init__(self, command_type: str, cached: Any, full: Any) -> None:
        self.command_type = command_type
        self.cached = cached
        self.full = full
        super().__init__(
            f"{command_type}: the cached state plus its tail is {cached!r}, but a full fold "
            f"gives {full!r}. Does handle() or discover() mutate the state, or does "
            f"apply()/initial_state() read a field missing from the cache key (set "
            f"`state_key` on the class, or `state_cache = False`)?"
        )


class StateCache(StateCacheCore):
    """A bounded, least-recently-used map of folded command states (one per store).

    Thread- and asyncio-safe: a take and a put are single atomic operations on the map
    and a lock serialises evictions only; no user code runs under either. The entry map,
    counters and bounds live in Rust (:class:`~eventcore._core.StateCacheCore`), where the
    command machine uses them without Python calls; the counters are atomic. ``max_entries=0``
    disables it. A state folded in full from fewer than ``min_events`` events is not kept
    (see :data:`DEFAULT_MIN_EVENTS`); a state found here is always put back. With
    ``verify=True`` (tests) every hit is checked against a full fold and a difference
    raises :class:`StateCacheMismatch`.
    """

    __slots__ = ("_lock",)

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        min_events: int = DEFAULT_MIN_EVENTS,
        verify: bool = False,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError(f"max_entries must be an int >= 0, not {max_entries!r}")
        if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 0:
            raise ValueError(f"min_events must be an int >= 0, not {min_events!r}")
        self.max_entries = max_entries
        self.min_events = min_events
        self.verify = verify
        self._lock = threading.Lock()

    def take(self, key: Hashable, command_type: str) -> CacheEntry | None:
        """Remove and return the entry of ``key`` (``None`` on a miss).

        One atomic operation: of two callers racing for an entry, one gets it.
        """
        entry = self._pop(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        if observe._hooks:
            observe.report_state_cache(MISS if entry is None else HIT, command_type)
        return entry

    def put(self, key: Hashable, entry: CacheEntry, command_type: str) -> None:
        """Store ``entry`` under ``key`` as the most recently used, evicting the oldest.

        Every use takes an entry out and puts it back (or, in the executor, updates it in
        place as the newest), so the map's order is the order of last use: the first
        entries are the least recently used.
        """
        if self._put(key, entry) > self.max_entries:
            self._evict(command_type)

    def _evict(self, command_type: str) -> None:
        evicted: list[Hashable] = []
        with self._lock:  # one evicting thread at a time; takes and puts go on meanwhile
            while len(self) > self.max_entries:
                oldest = self._pop_oldest()
                if oldest is None:
                    break
                evicted.append(oldest[0])
            self.evictions += len(evicted)
        if observe._hooks:
            for key in evicted:  # reported under the evicted entry's command type
                cls = key[0] if isinstance(key, tuple) and key else None
                observe.report_state_cache(
                    EVICT, cls.__name__ if isinstance(cls, type) else command_type
                )

    def discard(self, key: Hashable) -> None:
        """Drop the entry of ``key``, if any."""
        self._pop(key)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._clear()

    def __repr__(self) -> str:
        return (
            f"StateCache(entries={len(self)}, max_entries={self.max_entries}, hits={self.hits}, "
            f"misses={self.misses}, evictions={self.evictions})"
        )


def make_state_cache(option: int | StateCache | None) -> StateCache | None:
    """A store's cache from its ``state_cache`` option: a bound, a cache, or 0/None (off)."""
    if option is None or isinstance(option, StateCache):
        return option
    if isinstance(option, bool) or not isinstance(option, int) or option < 0:
        raise ValueError(f"state_cache must be an int >= 0, a StateCache or None, not {option!r}")
    return StateCache(option) if option else None


# -- keys -------------------------------------------------------------------------------

ALL_FIELDS = None
"""What :func:`state_key_fields` returns when it cannot see which fields are read."""

_STATE_METHODS = ("initial_state", "apply", "discover")
_keyers: dict[type, Any] = {}


def state_key_fields(cls: type) -> tuple[str, ...] | None:
    """The non-stream fields whose values the state of ``cls``'s commands depends on.

    ``cls.state_key`` when the class sets it; otherwise the fields that ``initial_state``,
    ``apply`` and ``discover`` read as ``self.<field>`` (following calls to the class's own
    methods and properties), found in their bytecode. ``None`` (every field) when ``self``
    is used in a way the analysis cannot follow: passed to a function, read with
    ``getattr``, captured by a closure, or an attribute that is not a field or a class
    attribute.
    """
    explicit = getattr(cls, "state_key", None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if explicit is not None:
        names = tuple(explicit)
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise TypeError(f"{cls.__name__}.state_key names unknown fields {unknown!r}")
        return tuple(n for n in names if not _is_stream(fields[n]))
    read: set[str] = set()
    seen: set[Any] = set()
    todo: list[Any] = [getattr(cls, name, None) for name in _STATE_METHODS]
    while todo:
        fn = todo.pop()
        if isinstance(fn, property):
            todo.append(fn.fget)
            continue
        fn = getattr(fn, "__func__", fn)
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if not isinstance(fn, FunctionType):
            return ALL_FIELDS
        attrs = _self_attrs(fn)
        if attrs is None:
            return ALL_FIELDS
        for name in attrs:
            if name in fields:
                read.add(name)
                continue
            attr = _class_attr(cls, name)
            if attr is _MISSING:
                return ALL_FIELDS  # an instance attribute set some other way
            if isinstance(attr, FunctionType | property | staticmethod | classmethod):
                todo.append(attr.__func__ if isinstance(attr, staticmethod) else attr)
    return tuple(sorted(n for n in read if not _is_stream(fields[n])))


_MISSING = object()


def _class_attr(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def _is_stream(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get(STREAM_FIELD))


def _self_attrs(fn: FunctionType) -> set[str] | None:
    """The attribute names ``fn`` reads from its first argument, or ``None`` when that
    argument escapes (used other than as ``self.<name>``)."""
    code = fn.__code__
    if code.co_argcount == 0:
        return set()
    me = code.co_varnames[0]
    if me in code.co_cellvars or "__class__" in code.co_freevars:
        return None  # captured by a closure, or zero-argument super() reads it
    out: set[str] = set()
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if isinstance(ins.argval, tuple) and me in ins.argval:
            return None  # a combined instruction (LOAD_FAST_LOAD_FAST) loads it
        if ins.argval != me or not ins.opname.startswith(("LOAD_FAST", "STORE_FAST", "DELETE")):
            continue
        if ins.opname != "LOAD_FAST" or i + 1 >= len(instructions):
            return None
        nxt = instructions[i + 1]
        if nxt.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
            return None
        out.add(nxt.argval)
    return out


STREAMS_ONLY: Any = object()
"""The keyer of a class whose state depends on its streams alone: key ``(cls, streams)``."""
UNKNOWN: Any = object()


def keyer_of(cls: type) -> Any:
    """How commands of ``cls`` are keyed: ``None`` (not cached), :data:`STREAMS_ONLY`, or a
    function ``(command, streams) -> key | None``; found once per class."""
    keyer = _keyers.get(cls, UNKNOWN)
    if keyer is UNKNOWN:
        keyer = _keyers[cls] = _make_keyer(cls)
    return keyer


def command_key(command: Any, streams: Sequence[str]) -> Hashable | None:
    """The cache key of ``command`` reading ``streams``; ``None`` when it is not cached
    (``state_cache = False`` on its class, or a keyed field value that is not hashable)."""
    cls = type(command)
    keyer = keyer_of(cls)
    if keyer is STREAMS_ONLY:
        return (cls, tuple(streams))
    if keyer is None:
        return None
    return keyer(command, streams)  # type: ignore[no-any-return]


def _make_keyer(cls: type) -> Callable[[Any, Sequence[str]], Hashable | None] | None:
    if not getattr(cls, "state_cache", True):
        return None
    names = state_key_fields(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
    if not names:
        return STREAMS_ONLY  # type: ignore[no-any-return]

    def keyer(command: Any, streams: Sequence[str]) -> Hashable | None:
        values = tuple(getattr(command, n) for n in names)
        try:
            hash(values)
        except TypeError:
            return None
        return (cls, tuple(streams), values)

    return keyer
