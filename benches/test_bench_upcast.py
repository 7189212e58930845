"""The ``memory.fold.upcast_*`` workloads run (untimed checks; speed is headline.py's)."""

from __future__ import annotations

from benches import upcast


def test_the_upcast_workloads_fold_the_same_states() -> None:
    runs = upcast.workloads(2)
    assert sorted(runs) == [
        "memory.fold.upcast_none",
        "memory.fold.upcast_plain",
        "memory.fold.upcast_v1v2",
    ]
    for once in runs.values():
        assert once() > 0  # each asserts its folded state
    # No upcaster applies to the current version: the codec's own decoder, as before.
    decoders = upcast.VERSIONED.decoders
    assert type(decoders["upcast.Deposited@v2"]) is type(upcast.PLAIN.decoders["upcast.Deposited"])
