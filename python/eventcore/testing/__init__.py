"""Testing kit: given/when/then scenarios and a store that injects faults deterministically.

The pytest plugin (``eventcore.testing.plugin``, loaded automatically once eventcore is
installed) provides the fixtures ``memory_store`` and ``scenario``.

Both run with the folded-state cache in verify mode (:func:`verifying_store`): every cache
hit is checked against a full fold, so a ``handle`` that mutates its state, or an ``apply``
that reads a field the cache key misses, fails with
:class:`~eventcore.state_cache.StateCacheMismatch` on the next command of the same streams.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from eventcore._pipeline import ExecutionResult
from eventcore.command import Command
from eventcore.errors import ConcurrencyConflict, OutcomeUnknown, StoreUnavailable
from eventcore.executor import execute_sync
from eventcore.memory import AsyncMemoryStore, MemoryStore
from eventcore.metadata import Metadata
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent
from eventcore.registry import EventRegistry
from eventcore.retry import RetryPolicy
from eventcore.state_cache import StateCache
from eventcore.store import Expected, FoldRows

__all__ = ["FaultyStore", "Scenario", "verifying_store"]


def verifying_store(*, registry: EventRegistry | None = None) -> MemoryStore:
    """A fresh in-memory store whose state cache checks every hit against a full fold.

    States are compared with ``==`` (dataclasses, dicts, msgspec Structs all compare by
    value; a state class without ``__eq__`` compares by identity and is not checked);
    every state is kept (no minimum size), so the second command on a stream already runs
    from the cache.
    """
    return MemoryStore(registry=registry, state_cache=StateCache(min_events=0, verify=True))


class Scenario:
    """Given past events, when a command runs, then exactly these events (or this error).

    >>> Scenario().given(("account-1", AccountOpened("ann"))) \\
    ...     .when(Deposit(account="account-1", amount=Money(5))) \\
    ...     .then(("account-1", Deposited(5)))
    """

    def __init__(
        self, store: MemoryStore | None = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self.store = store if store is not None else verifying_store()
        """The store the scenario runs on (fresh, with a verifying state cache, by default)."""
        self.retry = retry
        self.result: ExecutionResult | None = None
        """The executor's result once :meth:`when` succeeded."""
        self.error: BaseException | None = None
        """What the command raised, if it raised."""
        self._head_before = 0

    def given(
        self,
        *events: tuple[str, Any] | tuple[str, Any, Iterable[str]],
        metadata: Metadata | None = None,
    ) -> Scenario:
        """Append past ``(stream_id, event)`` pairs, in order, without any version check.

        An item may be ``(stream_id, event, tags)``: the event carries those tags (what a
        :class:`~eventcore.boundary.QueryCommand`'s query finds it by).
        """
        encode = self.store.registry.encode
        batch = [
            NewEvent(e[0], *encode(e[1]), None, tuple(e[2]) if len(e) > 2 else ()) for e in events
        ]
        if batch:
            self.store.append(batch, metadata=metadata)
        return self

    def when(self, command: Command[Any, Any], *, metadata: Metadata | None = None) -> Scenario:
        """Execute ``command``; an error is kept for :meth:`then_raises` instead of raised."""
        self._head_before = self.store.head()
        try:
            self.result = execute_sync(self.store, command, metadata=metadata, retry=self.retry)
        except Exception as exc:
            self.error = exc
        return self

    def written(self) -> list[RecordedEvent[Any]]:
        """The events the command wrote."""
        return self.store.read_all(after_position=self._head_before)

    def then(self, *expected: tuple[str, Any] | tuple[str, Any, Iterable[str]]) -> Scenario:
        """Assert the command succeeded and wrote exactly ``expected`` ``(stream_id, event)``.

        Items given as ``(stream_id, event, tags)`` compare the events' tags too.
        """
        if self.error is not None:
            raise AssertionError(f"expected events, but the command raised {self.error!r}")
        with_tags = any(len(x) > 2 for x in expected)
        actual: list[tuple[Any, ...]] = [
            (e.stream_id, e.data, tuple(sorted(e.tags))) if with_tags else (e.stream_id, e.data)
            for e in self.written()
        ]
        wanted = [
            (x[0], x[1], tuple(sorted(x[2] if len(x) > 2 else ()))) if with_tags else x
            for x in expected
        ]
        if actual != wanted:
            raise AssertionError(
                f"events written differ\n  expected: {list(expected)!r}\n  actual:   {actual!r}"
            )
        return self

    def then_raises(self, error: type[BaseException], match: str | None = None) -> Scenario:
        """Assert the command raised ``error`` (message searched by ``match``), writing nothing."""
        if self.error is None:
            raise AssertionError(f"expected {error.__name__}, but the command succeeded")
        if not isinstance(self.error, error):
            raise AssertionError(f"expected {error.__name__}, got {self.error!r}")
        if match is not None and not re.search(match, str(self.error)):
            raise AssertionError(f"{str(self.error)!r} does not match {match!r}")
        if self.written():
            raise AssertionError(f"a failed command wrote events: {self.written()!r}")
        return self


_APPEND_FAULTS = (None, "conflict", "unavailable", "lost-reply", "interleave")


class FaultyStore:
    """A :class:`MemoryStore` wrapper that fails on a script, to test retry behaviour.

    ``faults`` lists what happens on each call to ``append`` in turn (``None`` = behave
    normally); after the list runs out every append behaves normally:

    - ``"conflict"``: raise ConcurrencyConflict (current versions as actual), write nothing;
    - ``"unavailable"``: raise StoreUnavailable, write nothing;
    - ``"lost-reply"``: write, then raise OutcomeUnknown (with the event ids) as if the
      reply had been lost;
    - ``"interleave"``: a competing writer appends first, so the real check conflicts.

    ``read_faults`` does the same for reads (``read_fold``, ``read_tail``, ``read_all``
    and lookups by event id, one script for all) with ``"unavailable"``.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        faults: Iterable[str | None] = (),
        read_faults: Iterable[str | None] = (),
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        """The real store underneath."""
        self.registry = self.store.registry
        self.faults = list(faults)
        self.read_faults = list(read_faults)
        for fault in self.faults:
            if fault not in _APPEND_FAULTS:
                raise ValueError(f"unknown append fault {fault!r}; use one of {_APPEND_FAULTS}")
        for fault in self.read_faults:
            if fault not in (None, "unavailable"):
                raise ValueError(f"unknown read fault {fault!r}; use None or 'unavailable'")
        self.calls: list[str] = []
        """Every call and what was injected, e.g. ``"append:conflict"``."""
        self.aio = AsyncMemoryStore(self)  # type: ignore[arg-type]

    def _next(self, kind: str, script: list[str | None]) -> str | None:
        fault = script.pop(0) if script else None
        self.calls.append(f"{kind}:{fault or 'ok'}")
        return fault

    def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append, unless the script says to fail this call (a condition is the real
        store's to check)."""
        fault = self._next("append", self.faults)
        checks = list(expected.items()) if hasattr(expected, "items") else list(expected)
        if fault == "conflict":
            conflicts = [(s, v, self.store.stream_version(s)) for s, v in checks]
            raise ConcurrencyConflict(conflicts or [(e[0], -1, 0) for e in events[:1]])
        if fault == "unavailable":
            raise StoreUnavailable("injected: store unavailable")
        if fault == "interleave":
            for stream_id, version in checks:
                if version >= 0 and events:
                    template = next((e for e in events if e[0] == stream_id), events[0])
                    self.store.append([NewEvent(stream_id, template[1], template[2])])
        result = self.store.append(
            events, expected=expected, metadata=metadata, condition=condition
        )
        if fault == "lost-reply":
            raise OutcomeUnknown(
                "injected: the reply to a committed append was lost", result.event_ids
            )
        return result

    def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """Read the rows to fold, unless the script says this read fails."""
        if self._next("fold", self.read_faults) == "unavailable":
            raise StoreUnavailable("injected: store unavailable on read")
        return self.store.read_fold(streams)

    def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """Read a cached state's tail, unless the script says this read fails."""
        if self._next("fold", self.read_faults) == "unavailable":
            raise StoreUnavailable("injected: store unavailable on read")
        return self.store.read_tail(streams, versions, fold_from, hint)

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Read the global log, unless the script says this read fails."""
        if self._next("read_all", self.read_faults) == "unavailable":
            raise StoreUnavailable("injected: store unavailable on read")
        return self.store.read_all(
            after_position=after_position,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )

    def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """Read by query, unless the read script says this read fails."""
        if self._next("query", self.read_faults) == "unavailable":
            raise StoreUnavailable("injected: store unavailable on read")
        return self.store.read_query(query, after=after, limit=limit)

    def read_events_by_id(self, event_ids: Sequence[Any]) -> list[RecordedEvent[Any]]:
        """Look events up by id, unless the read script says this read fails."""
        if self._next("lookup", self.read_faults) == "unavailable":
            raise StoreUnavailable("injected: store unavailable on read")
        return self.store.read_events_by_id(event_ids)

    def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Read one stream from the real store (never faulted)."""
        return self.store.read_stream(stream_id, after_version=after_version, limit=limit)

    def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Read several streams from the real store (never faulted)."""
        return self.store.read_streams(stream_ids, after_version=after_version, limit=limit)

    def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """Read one stream newest first from the real store (never faulted)."""
        return self.store.read_stream_backwards(
            stream_id, before_version=before_version, limit=limit
        )

    def stream_version(self, stream_id: str) -> int:
        """A stream's version in the real store."""
        return self.store.stream_version(stream_id)

    def head(self) -> int:
        """The real store's head."""
        return self.store.head()

    def __getattr__(self, name: str) -> Any:
        # Every other read goes straight to the real store.
        return getattr(self.store, name)
