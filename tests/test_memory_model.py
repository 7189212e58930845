"""The in-memory store's extras (waiting, memory use, the async view, trimmed ids).

The store against the reference model (hypothesis, stateful) is
``tests/test_store_model.py``, shared with every other store.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

from eventcore import NO_STREAM, MemoryStore, NewEvent
from tests.store_model import STREAMS

# --- plain unit tests of the store's extras ----------------------------------------------


def test_positions_and_versions_are_contiguous() -> None:
    store = MemoryStore()
    for i in range(50):
        store.append([NewEvent(STREAMS[i % len(STREAMS)], "m.A", bytes([i]))])
    log = store.read_all()
    assert [e.position for e in log] == list(range(1, 51))
    for s in STREAMS:
        assert [e.version for e in store.read_stream(s)] == list(range(1, 11))


def test_stored_events_are_immutable() -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"x")])
    [e] = store.read_all()
    with pytest.raises(AttributeError):
        e.payload = b"y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        e.version = 9  # type: ignore[misc]
    [again] = store.read_all()
    assert again.payload == b"x" and again.version == 1
    assert again == e


def test_wait_for_append_wakes_on_a_write_and_times_out_otherwise() -> None:
    store = MemoryStore()
    started = time.monotonic()
    assert store.wait_for_append(0, 0.05) == 0
    assert time.monotonic() - started >= 0.04

    def later() -> None:
        time.sleep(0.05)
        store.append([NewEvent("s", "m.A", b"")])

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    assert store.wait_for_append(0, 5.0) == 1
    assert time.monotonic() - started < 4.0
    thread.join()
    # Already past: returns at once.
    started = time.monotonic()
    assert store.wait_for_append(0, 5.0) == 1
    assert time.monotonic() - started < 1.0


async def test_async_wait_for_append() -> None:
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"")])
    assert await store.aio.wait_for_append(0, 1.0) == 1
    assert await store.aio.wait_for_append(1, 0.01) == 1


async def test_a_store_that_was_awaited_on_is_freed() -> None:
    """Regression: the watcher behind ``aio.wait_for_append`` kept its store alive forever
    (it was the value of a WeakKeyDictionary and held its own key)."""
    store = MemoryStore()
    store.append([NewEvent("s", "m.A", b"x" * 1000)])
    assert await store.aio.wait_for_append(1, 0.01) == 1  # times out: starts the watcher
    gone = weakref.ref(store)
    del store
    deadline = time.monotonic() + 5.0  # the watcher thread ends within its 0.1 s slice
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        await asyncio.sleep(0.02)
    assert gone() is None


def test_memory_usage_grows_with_events() -> None:
    store = MemoryStore()
    empty = store.memory_usage()
    assert isinstance(empty, int) and empty >= 0
    store.append([NewEvent(f"s-{i % 10}", "m.A", b"x" * 100) for i in range(1000)])
    grown = store.memory_usage()
    assert grown - empty >= 100 * 1000
    assert repr(store) == "MemoryStore(events=1000)"


async def test_async_view_shares_the_data() -> None:
    store = MemoryStore()
    await store.aio.append([NewEvent("s", "m.A", b"1")], expected={"s": NO_STREAM})
    assert store.stream_version("s") == 1
    assert [e.payload for e in await store.aio.read_stream("s")] == [b"1"]
    assert await store.aio.head() == 1
    async with store.aio as aio:
        assert await aio.stream_version("s") == 1


def test_append_result_uses_the_trimmed_stream_ids() -> None:
    # Stream ids are validated and trimmed by the store; the result must describe the
    # events as stored (trimmed ids, right versions), whatever spelling the caller used.
    store = MemoryStore()
    first = store.append([NewEvent(" padded ", "m.A", b"x")], expected={" padded ": NO_STREAM})
    assert dict(first.stream_versions) == {"padded": 1}
    assert [(w.stream_id, w.version, w.position) for w in first.events] == [("padded", 1, 1)]
    second = store.append([NewEvent("padded", "m.A", b"y"), NewEvent("padded\t", "m.A", b"z")])
    assert dict(second.stream_versions) == {"padded": 3}
    assert [(w.stream_id, w.version) for w in second.events] == [("padded", 2), ("padded", 3)]
    assert [(e.stream_id, e.version) for e in store.read_all()] == [
        ("padded", 1),
        ("padded", 2),
        ("padded", 3),
    ]
