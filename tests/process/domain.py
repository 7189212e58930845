"""A small domain for the process manager tests: each Ping calls for one Pong.

``Answer`` appends a Pong whatever the state (it is NOT idempotent by itself), so a
command executed twice shows as two Pongs: exactly-once is the process manager's doing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eventcore import (
    Command,
    NewEvent,
    RecordedEvent,
    StreamId,
    default_registry,
    event,
    require,
    stream,
)
from eventcore.process import Schedule
from eventcore.projection import FailureStrategy


@event("test.process.Ping")
@dataclass(frozen=True)
class Ping:
    n: int
    later: bool = False
    bad: bool = False


@event("test.process.Pong")
@dataclass(frozen=True)
class Pong:
    n: int


class Answer(Command[int, Pong]):
    """Append Pong(n) to ``target``; rejected when ``n`` is negative."""

    target: StreamId = stream()
    n: int

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, event: Any, stream_id: str) -> int:
        return state + 1

    def handle(self, state: int) -> list[tuple[str, Pong]]:
        require(self.n >= 0, "n must not be negative")
        return [(self.target, Pong(self.n))]


class PingPong:
    """Answers every Ping with a Pong in ``pongs`` (two for an even n); schedules later."""

    name = "pingpong"
    event_types = ("test.process.Ping",)

    def __init__(self, *, then: str = "skip", attempts: int = 3) -> None:
        self.on_error = FailureStrategy.retry(
            attempts, initial_delay=0.001, max_delay=0.01, then=then
        )
        self.calls = 0

    def react(self, event: RecordedEvent[Ping]) -> list[Command[Any, Any] | Schedule]:
        self.calls += 1
        ping = event.data
        n = -ping.n if ping.bad else ping.n
        if ping.later:
            return [Schedule(Answer(target="later", n=n), after=timedelta(minutes=10))]
        out: list[Command[Any, Any] | Schedule] = [Answer(target="pongs", n=n)]
        if n % 2 == 0:
            out.append(Answer(target="evens", n=n))
        return out


def ping(n: int, *, stream_id: str = "pings", **kw: Any) -> NewEvent:
    """A Ping ready to append."""
    return NewEvent(stream_id, *default_registry.encode(Ping(n, **kw)))


async def pongs(store: Any, stream_id: str = "pongs") -> list[int]:
    """The ns of the Pongs in ``stream_id``, in order (a duplicate shows twice)."""
    return [e.data.n for e in await store.read_stream(stream_id)]
