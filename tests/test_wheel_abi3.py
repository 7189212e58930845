"""What the stable-ABI (abi3) build does its own way: 128-bit event ids and Python ints.

The limited API has no 128-bit int conversion before CPython 3.15, so under abi3 pyo3
builds an id from two 64-bit halves (and splits one the same way): every id must come
back exactly, on both sides of 2**64.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from eventcore import MemoryStore, NewEvent, uuid7
from eventcore._core import uuid7_ints

EDGES = [0, 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, 2**127, 2**128 - 1]
IDS = st.one_of(st.sampled_from(EDGES), st.integers(min_value=0, max_value=2**128 - 1))


@given(st.lists(IDS, min_size=1, max_size=20, unique=True))
def test_event_ids_round_trip_through_the_store(ids: list[int]) -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "t", b"x", i) for i in ids])
    assert [e.event_id for e in store.read_stream("s")] == [uuid.UUID(int=i) for i in ids]
    assert [e.event_id for e in store.read_all()] == [uuid.UUID(int=i) for i in ids]


def test_ids_the_store_assigns_are_the_ids_it_reads_back() -> None:
    store = MemoryStore()
    written = store.append([NewEvent("s", "t", b"x", None) for _ in range(300)])
    read = store.read_stream("s")
    assert [e.event_id for e in read] == written.event_ids
    assert all(e.event_id.version == 7 for e in read)
    ints = [e.event_id.int for e in read]
    assert ints == sorted(ints) and len(set(ints)) == 300 and ints[0] > 2**64


def test_uuid7_ints_and_uuid7_are_version_7_ints() -> None:
    ints = uuid7_ints(50)
    assert all(type(i) is int for i in ints)
    assert ints == sorted(ints) and len(set(ints)) == 50
    for i in ints:
        u = uuid.UUID(int=i)
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert int(u.hex, 16) == i
    u = uuid7()
    assert type(u.int) is int and u.version == 7 and u.int > ints[-1]
