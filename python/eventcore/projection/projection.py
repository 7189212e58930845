"""What a projection is (the user's object), and what happens when it fails."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from eventcore.errors import EventDecodeError, ProjectionError
from eventcore.projection.reconnect import StoreFault
from eventcore.query import Query
from eventcore.recorded import RecordedEvent
from eventcore.retry import RetryPolicy

if TYPE_CHECKING:
    from eventcore.projection.columns import ColumnBatch

# ProjectionError lives in eventcore.errors; this import path is kept.
__all__ = ["FailureStrategy", "Projection", "ProjectionError"]


@runtime_checkable
class Projection(Protocol):
    """A read model fed by the global log: your object with a stable ``name`` and ``apply``.

    Only ``name`` and one of the apply hooks are required; the runner looks the others
    up with ``getattr``:

    - ``event_types: Sequence[str] | None`` (registered names: every stored version and
      alias of each matches) and ``stream_prefix: str | None``: filters
      (only matching events are delivered; the checkpoint still moves past the others).
    - ``query: eventcore.query.Query | None``: a filter of event types and tags (read
      with the store's tag index); the filters above narrow it further.
    - ``apply(event)``: one :class:`~eventcore.RecordedEvent` (payload in ``event.data``,
      envelope in ``position``, ``stream_id``, ``version``, ``event_type``,
      ``recorded_at``, ``metadata``); a plain or an ``async`` method.
    - ``apply_batch(events)``: a list of events in position order (sync or async); used
      instead of ``apply`` when present.
    - ``apply_columns(batch)``: a :class:`~eventcore.projection.ColumnBatch` of numpy
      arrays (positions, type codes, stream codes, timestamps) for vectorized folds; used
      when present (needs numpy).
    - ``async apply_in_transaction(events, connection)``: for a read model in the same
      PostgreSQL database as the checkpoints: the runner opens a transaction on
      ``connection`` (asyncpg), calls this, saves the checkpoint in the same transaction
      and commits, so every event is applied exactly once even across crashes.
    - ``reset()`` (sync or async) or ``async reset_in_transaction(connection)``: clear the
      read model before a rebuild.
    - ``on_error: FailureStrategy``: what to do when applying fails (default: stop).

    Without the transactional hook, delivery is at-least-once: a crash between applying
    a batch and saving its checkpoint delivers that batch again on restart, so make the
    read model idempotent (e.g. keyed by ``event.position``) or use the transaction.
    """

    name: str
    """A stable name: the key of the checkpoint and of the leader lock."""


_NO_RETRY = RetryPolicy(max_attempts=1, initial_delay=0.05, max_delay=5.0, jitter=0.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureStrategy:
    """What the runner does when a projection raises while applying events.

    ``backoff`` says how many attempts in all (its ``max_attempts``; 1 = no retry) and how
    long to wait between them (the executor's :class:`~eventcore.RetryPolicy`); then
    ``then``:

    - ``"stop"``: the projection stops (state ``failed``, :class:`ProjectionError` from
      ``run_*``) at the failing event; its checkpoint stays before it. Other projections
      keep running.
    - ``"skip"``: the failing event is recorded as a dead letter (projection, position,
      event id, stream, type, error) in the checkpoint store and the projection moves on.

    An event that cannot be decoded (:class:`~eventcore.EventDecodeError`: its stored
    version has no upcaster here) is never retried, since the same bytes decode the
    same way; ``undecodable`` says what then happens to it (``None``: as ``then``).

    Build one with :meth:`stop`, :meth:`skip` or :meth:`retry`.
    """

    backoff: RetryPolicy = _NO_RETRY
    then: Literal["stop", "skip"] = "stop"
    undecodable: Literal["stop", "skip"] | None = None

    def __post_init__(self) -> None:
        if self.then not in ("stop", "skip"):
            raise ValueError("then must be 'stop' or 'skip'")
        if self.undecodable not in (None, "stop", "skip"):
            raise ValueError("undecodable must be None, 'stop' or 'skip'")

    def then_for(self, error: BaseException) -> Literal["stop", "skip"]:
        """What to do once ``error`` has outlasted the retries: ``then``, or
        ``undecodable`` for an event that cannot be decoded."""
        if self.undecodable is not None and isinstance(error, EventDecodeError):
            return self.undecodable
        return self.then

    @property
    def attempts(self) -> int:
        """Attempts in all, the first included."""
        return self.backoff.max_attempts

    @classmethod
    def stop(cls, *, undecodable: Literal["stop", "skip"] | None = None) -> FailureStrategy:
        """Stop the projection at the first failure (the default); with
        ``undecodable="skip"`` an undecodable event is dead-lettered instead."""
        return cls(undecodable=undecodable)

    @classmethod
    def skip(cls) -> FailureStrategy:
        """Record the failing event as a dead letter and go on."""
        return cls(then="skip")

    @classmethod
    def retry(
        cls,
        attempts: int = 5,
        *,
        initial_delay: float = 0.05,
        multiplier: float = 2.0,
        max_delay: float = 5.0,
        jitter: float = 0.2,
        then: Literal["stop", "skip"] = "stop",
        undecodable: Literal["stop", "skip"] | None = None,
    ) -> FailureStrategy:
        """Retry with exponential backoff, then stop (or skip, with ``then="skip"``);
        an undecodable event is not retried (``undecodable``: what then, else ``then``)."""
        return cls(
            backoff=RetryPolicy(
                max_attempts=attempts,
                initial_delay=initial_delay,
                multiplier=multiplier,
                max_delay=max_delay,
                jitter=jitter,
            ),
            then=then,
            undecodable=undecodable,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return self.backoff.delay(attempt)


def _maybe_async(fn: Callable[..., Any]) -> tuple[Callable[..., Any], bool]:
    """The callable and whether it returns an awaitable (coroutine function)."""
    return fn, inspect.iscoroutinefunction(fn)


class Hooks:
    """The hooks a projection object offers, looked up once."""

    __slots__ = (
        "apply",
        "apply_async",
        "batch",
        "batch_async",
        "columns",
        "columns_async",
        "event_types",
        "name",
        "on_error",
        "projection",
        "query",
        "reset",
        "reset_in_transaction",
        "stream_prefix",
        "transactional",
    )

    def __init__(self, projection: Any) -> None:
        name = getattr(projection, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a projection needs a non-empty str name, got {name!r}")
        self.projection = projection
        self.name = name
        types = getattr(projection, "event_types", None)
        if isinstance(types, str):
            raise TypeError("event_types must be a sequence of str, not one str")
        self.event_types: list[str] | None = list(types) if types is not None else None
        self.stream_prefix: str | None = getattr(projection, "stream_prefix", None)
        self.query: Query | None = getattr(projection, "query", None)
        self.on_error: FailureStrategy = getattr(projection, "on_error", None) or (
            FailureStrategy.stop()
        )
        self.transactional: Callable[..., Awaitable[Any]] | None = getattr(
            projection, "apply_in_transaction", None
        )
        self.apply, self.apply_async = _pair(getattr(projection, "apply", None))
        self.batch, self.batch_async = _pair(getattr(projection, "apply_batch", None))
        self.columns, self.columns_async = _pair(getattr(projection, "apply_columns", None))
        self.reset = getattr(projection, "reset", None)
        self.reset_in_transaction: Callable[..., Awaitable[Any]] | None = getattr(
            projection, "reset_in_transaction", None
        )
        if not (self.apply or self.batch or self.columns or self.transactional):
            raise TypeError(
                f"projection {name!r} has none of apply, apply_batch, apply_columns "
                "or apply_in_transaction"
            )

    async def apply_events(self, events: Sequence[RecordedEvent[Any]]) -> None:
        """Apply a list of events with ``apply_batch`` (or ``apply`` one by one).

        Raises:
            BatchFailure: applying raised; ``index`` tells how many events ``apply``
                had finished (None for ``apply_batch``: unknown).
        """
        if self.batch is not None:
            try:
                result = self.batch(events)
                if self.batch_async:
                    await result
            except StoreFault:
                raise
            except Exception as exc:
                raise BatchFailure(None, exc) from exc
            return
        apply = self.apply
        assert apply is not None
        i = 0
        try:
            if self.apply_async:
                for i, event in enumerate(events):  # noqa: B007
                    await apply(event)
            else:
                for i, event in enumerate(events):  # noqa: B007
                    apply(event)
        except StoreFault:
            raise  # the store's failure (a process manager's command): the runner reconnects
        except Exception as exc:
            raise BatchFailure(i, exc) from exc

    async def apply_columns(self, batch: ColumnBatch) -> None:
        """Apply a columnar batch."""
        assert self.columns is not None
        result = self.columns(batch)
        if self.columns_async:
            await result

    async def reset_model(self) -> None:
        """Call the projection's ``reset()`` if it has one."""
        if self.reset is not None:
            result = self.reset()
            if inspect.isawaitable(result):
                await result


class BatchFailure(Exception):
    """Internal: applying a batch raised ``error`` at event ``index`` (None: unknown)."""

    def __init__(self, index: int | None, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _pair(fn: Callable[..., Any] | None) -> tuple[Callable[..., Any] | None, bool]:
    if fn is None:
        return None, False
    return _maybe_async(fn)
