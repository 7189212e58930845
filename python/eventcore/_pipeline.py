"""The command algorithm as a sans-IO state machine.

``run_command`` is a generator: it yields effects (:class:`Fold`, :class:`Append`,
:class:`Sleep`) and is resumed with each effect's result. Store errors that the algorithm
decides about (conflicts, unavailability) come back as values, never as exceptions, so
the retry logic lives here once and every shell (sync, async, tests feeding results by
hand) shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from eventcore._core import uuid7_ints
from eventcore.command import Command
from eventcore.errors import CommandError, ConcurrencyConflict, StoreUnavailable, UndeclaredStream
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
DONE = "done"
"""``(DONE, ExecutionResult)``: the command finished; the shell returns the result."""

Effect = tuple[Any, ...]


class ExecutionResult:
    """What :func:`~eventcore.execute` did: the events written and the attempts used."""

    __slots__ = ("append", "attempts")

    def __init__(self, append: AppendResult, attempts: int) -> None:
        self.append = append
        self.attempts = attempts
        """How many times the command ran (1 = no retry)."""

    @property
    def events(self) -> Any:
        """The events written (:class:`~eventcore.WrittenEvent`: id, stream, version, position)."""
        return self.append.events

    @property
    def stream_versions(self) -> Mapping[str, int]:
        """The version of every stream the command read, after the write."""
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
) -> Generator[Effect, Any, None]:
    """Run ``command`` to completion, yielding the effects it needs; the last is ``DONE``."""
    try:
        declared = command.streams()
    except AttributeError:
        if isinstance(command, Command):
            raise
        raise CommandError(f"{command!r} is not an eventcore Command") from None
    discovers = type(command).discover is not Command.discover
    apply = command.apply
    decoders = registry.decoders
    encode = registry.encode
    max_attempts = policy.max_attempts
    attempt = 0
    while True:
        attempt += 1
        # Read and fold every declared stream; the versions read become the expected ones.
        result = yield (FOLD, declared, command.initial_state(), apply, decoders)
        if type(result) is tuple and discovers:
            state, versions = result
            result = yield from _discover(command, state, versions, declared, decoders)
        if type(result) is not tuple:
            if not isinstance(result, StoreUnavailable):
                raise TypeError(f"unexpected result for FOLD: {result!r}")
            if attempt >= max_attempts or not policy.retry_unavailable:
                raise result
            yield (SLEEP, policy.delay(attempt))
            continue
        if discovers:
            state, versions, streams = result
        else:
            state, versions = result
            streams = declared
        known: list[str] | set[str] = streams if len(streams) < 8 else set(streams)

        emitted = command.handle(state)
        events: list[tuple[str, str, bytes, int]] = []
        if emitted:
            ids = uuid7_ints(len(emitted))
            for (stream_id, event), event_id in zip(emitted, ids, strict=False):
                if stream_id not in known:
                    raise UndeclaredStream(stream_id, type(command).__name__)
                name, payload = encode(event)
                events.append((stream_id, name, payload, event_id))
        checks = list(zip(streams, versions, strict=False))
        while True:
            result = yield (APPEND, events, checks, metadata)
            if type(result) is AppendResult:
                yield (DONE, ExecutionResult(result, attempt))
                return
            if isinstance(result, ConcurrencyConflict):
                if attempt >= max_attempts:
                    raise ConcurrencyConflict(result.conflicts, attempts=attempt)
                yield (SLEEP, policy.delay(attempt))
                break  # re-read and re-decide from fresh state
            if isinstance(result, StoreUnavailable):
                if attempt >= max_attempts or not policy.retry_unavailable:
                    raise result
                yield (SLEEP, policy.delay(attempt))
                attempt += 1
                continue  # same events, same ids: the append is idempotent
            raise TypeError(f"unexpected result for Append: {result!r}")


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
