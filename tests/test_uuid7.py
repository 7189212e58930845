"""UUIDv7 event ids: RFC 9562 layout, strictly increasing in the process, batch generation."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest

import eventcore
from eventcore import _core


def check_layout(value: uuid.UUID) -> None:
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert (value.int >> 76) & 0xF == 7
    assert (value.int >> 62) & 0b11 == 0b10


def millis(value: int) -> int:
    return value >> 80


def test_uuid7_is_a_stdlib_uuid_with_the_rfc_layout() -> None:
    value = eventcore.uuid7()
    assert type(value) is uuid.UUID
    check_layout(value)
    assert uuid.UUID(str(value)) == value
    assert _core.uuid7().version == 7


def test_timestamp_is_the_current_unix_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = eventcore.uuid7()
    after = time.time_ns() // 1_000_000
    # The generator may run a millisecond ahead after a counter overflow.
    assert before - 1 <= millis(value.int) <= after + 1


def test_strictly_increasing_within_one_millisecond() -> None:
    values = [eventcore.uuid7() for _ in range(20_000)]
    ints = [v.int for v in values]
    assert all(a < b for a, b in itertools.pairwise(ints))
    assert values == sorted(values)
    # Many values share a millisecond, and are still ordered and distinct.
    per_ms: dict[int, int] = {}
    for v in ints:
        per_ms[millis(v)] = per_ms.get(millis(v), 0) + 1
    assert max(per_ms.values()) > 1
    assert len(set(ints)) == len(ints)
    for v in values[::997]:
        check_layout(v)


def test_string_order_matches_generation_order() -> None:
    values = [eventcore.uuid7() for _ in range(2_000)]
    texts = [str(v) for v in values]
    assert texts == sorted(texts)


def test_uuid7_ints_batches_are_increasing_valid_and_after_earlier_ids() -> None:
    first = eventcore.uuid7().int
    batch = _core.uuid7_ints(5_000)
    assert len(batch) == 5_000
    assert all(isinstance(v, int) for v in batch)
    assert first < batch[0]
    assert all(a < b for a, b in itertools.pairwise(batch))
    for v in batch[::499]:
        assert 0 <= v < 1 << 128
        check_layout(uuid.UUID(int=v))
    assert batch[-1] < eventcore.uuid7().int
    assert _core.uuid7_ints(0) == []


def test_uuid7_ints_rejects_a_negative_count() -> None:
    with pytest.raises((ValueError, OverflowError)):
        _core.uuid7_ints(-1)


def test_interleaved_single_and_batch_calls_stay_ordered() -> None:
    out: list[int] = []
    for i in range(500):
        if i % 3:
            out.append(eventcore.uuid7().int)
        else:
            out.extend(_core.uuid7_ints(i % 7))
    assert all(a < b for a, b in itertools.pairwise(out))


def test_unique_and_per_thread_increasing_across_threads() -> None:
    n_threads, per_thread = 8, 4_000
    results: list[list[int]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)

    def work(slot: int) -> None:
        barrier.wait()
        got = results[slot]
        for i in range(per_thread):
            if i % 2:
                got.append(eventcore.uuid7().int)
            else:
                got.extend(_core.uuid7_ints(2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [v for got in results for v in got]
    assert len(everything) == n_threads * per_thread * 3 // 2
    assert len(set(everything)) == len(everything)
    for got in results:
        assert all(a < b for a, b in itertools.pairwise(got))


def test_random_bits_are_not_constant() -> None:
    # Two ids from different milliseconds start from fresh random counters.
    a = eventcore.uuid7().int
    time.sleep(0.003)
    b = eventcore.uuid7().int
    low_bits = (1 << 62) - 1
    assert millis(a) < millis(b)
    assert (a & low_bits) != (b & low_bits)
