"""``memory.fold.upcast_*``: what versioned event types cost in the Rust fold loop.

Three folds of the same 100-event streams, their repetitions alternating in one run:

- ``memory.fold.upcast_plain``: a type registered as before versions existed (version 1,
  no upcaster), its events stored under the bare name (the baseline);
- ``memory.fold.upcast_none``: a type at version 2 with an upcaster from version 1, its
  events stored at version 2: no upcaster applies, so they decode with the codec's own
  decoder (the claim: the same cost as the baseline);
- ``memory.fold.upcast_v1v2``: the same registry folding version-1 events through the
  upcaster (plain decode, the upcaster, ``msgspec.convert``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benches.core import timed
from eventcore import MemoryStore, NewEvent
from eventcore.registry import EventRegistry, event, upcaster

PER_STREAM = 100

PLAIN = EventRegistry()
VERSIONED = EventRegistry()


@event("upcast.Deposited", registry=PLAIN)
@dataclass(frozen=True)
class Deposited:
    amount: int
    note: str


@event("upcast.Deposited", version=2, registry=VERSIONED)
@dataclass(frozen=True)
class DepositedV2:
    amount: int
    memo: str


@upcaster("upcast.Deposited", from_version=1, registry=VERSIONED)
def note_to_memo(data: dict[str, Any]) -> dict[str, Any]:
    return {"amount": data["amount"], "memo": data["note"]}


def _store(registry: EventRegistry, writer: EventRegistry, event: Any, streams: int) -> Any:
    store = MemoryStore(registry=registry)
    name, payload = writer.encode(event)
    for i in range(streams):
        store.append([NewEvent(f"f-{i}", name, payload) for _ in range(PER_STREAM)])
    return store


def _apply(state: int, event: Any, stream_id: str) -> int:
    return state + event.amount


def fold_once(store: Any, registry: EventRegistry, streams: int) -> Callable[[], float]:
    """One timed repetition: fold every stream; events per second."""
    fold, decoders = store._core.fold_streams, registry.decoders  # the native read and fold
    ids = [f"f-{i}" for i in range(streams)]

    def once() -> float:
        def body() -> float:
            for s in ids:
                state, _ = fold([s], 0, _apply, decoders)
                assert state == 3 * PER_STREAM
            return PER_STREAM * streams

        return timed(body)

    return once


def workloads(streams: int) -> dict[str, Callable[[], float]]:
    """The three folds by key, their stores built (untimed)."""
    plain = _store(PLAIN, PLAIN, Deposited(3, "n"), streams)
    current = _store(VERSIONED, VERSIONED, DepositedV2(3, "n"), streams)
    old = _store(VERSIONED, PLAIN, Deposited(3, "n"), streams)
    assert VERSIONED.decoders["upcast.Deposited@v2"] is not VERSIONED.decoders["upcast.Deposited"]
    return {
        "memory.fold.upcast_plain": fold_once(plain, PLAIN, streams),
        "memory.fold.upcast_none": fold_once(current, VERSIONED, streams),
        "memory.fold.upcast_v1v2": fold_once(old, VERSIONED, streams),
    }
