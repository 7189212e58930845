"""The SQLite store's segments (migration 0005): one row per run of one stream's events in
an append, found by position, version, type and id through ranges.

A file written by the previous layout (schema 4, with that schema's statements) converts
with everything kept; random histories of batches (streams interleaved, mixed types,
generated, random and clashing-range ids), truncations and purges read back exactly as
the in-memory store reads them; ids whose runs overlap without being equal are told apart.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventcore import DuplicateEventId, MemoryStore, NewEvent, _core
from eventcore.metadata import Metadata
from eventcore.query import QueryItem
from eventcore.sqlite import SqliteStore
from eventcore.sqlite import _schema as q

# Schema 4's statements (eventcore before segments), to write a file as it wrote them.
_V4_INSERT = f"INSERT INTO events ({q.COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_V4_TYPE_RUNS = (
    "INSERT INTO event_type_runs (event_type, last_position, first_position)"
    " SELECT event_type, max(position), min(position) FROM events WHERE position >= ?1"
    " GROUP BY event_type"
)


def _schema_4_file(path: Path) -> list[tuple[Any, ...]]:
    """A file at schema 4: 300 events or a few more in appends of 1 to 20 events over three streams
    (interleaved), some tagged, some with metadata, stream "s-2" truncated before version
    5; the stored rows (position, id, stream, version, type, payload, micros, metadata)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for number, _name, statements in q.MIGRATIONS[:4]:
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    rng = random.Random(4)
    rows: list[tuple[Any, ...]] = []
    versions = {"s-1": 0, "s-2": 0, "s-3": 0}
    meta = Metadata(correlation_id=uuid.UUID(int=7)).to_bytes()
    while len(rows) < 300:
        first = len(rows) + 1
        batch = []
        for _ in range(rng.choice([1, 2, 5, 20])):
            stream = rng.choice(list(versions))
            versions[stream] += 1
            position = first + len(batch)
            batch.append(
                (
                    position,
                    uuid.uuid4().bytes,
                    stream,
                    versions[stream],
                    rng.choice(["A", "B"]),
                    b"p%d" % position,
                    1_700_000_000_000_000 + position,
                    meta if position % 3 == 0 else None,
                )
            )
        conn.executemany(_V4_INSERT, batch)
        conn.execute(_V4_TYPE_RUNS, (first,))
        rows += batch
    conn.executemany(
        "INSERT INTO event_tags (position, tag) VALUES (?, ?)",
        [(r[0], "t:" + r[4]) for r in rows if r[0] % 7 == 0],
    )
    conn.execute(q.TRUNCATE, ("s-2", 4, versions["s-2"] + 1))
    conn.execute("COMMIT")
    conn.close()
    return rows


def _envelope(e: Any) -> tuple[Any, ...]:
    return (e.position, e.event_id, e.stream_id, e.version, e.event_type, e.payload, e.tags)


def test_a_schema_4_file_is_converted_to_segments(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rows = _schema_4_file(path)
    with SqliteStore(path) as store:
        assert store._one("PRAGMA user_version") == q.SCHEMA_VERSION == 5
        assert not store._all("SELECT name FROM sqlite_master WHERE name = 'events'")
        assert store._one("SELECT count(*) FROM segments") == len(rows)
        events = store.read_all()
        assert [
            (e.position, e.event_id.bytes, e.stream_id, e.version, e.event_type, e.payload)
            for e in events
        ] == [r[:6] for r in rows]
        assert [e.metadata.correlation_id for e in events[2:4]] == [uuid.UUID(int=7), None]
        assert events[6].tags == ("t:" + rows[6][4],) and events[5].tags == ()
        # Stream reads and folds see the truncation; versions go on from the old ones.
        s2 = [r for r in rows if r[2] == "s-2"]
        assert [e.version for e in store.read_stream("s-2")] == [r[3] for r in s2[4:]]
        assert store.stream_version("s-2") == s2[-1][3] + 1
        found = store.read_query([QueryItem(types=["B"])], after=150)
        assert [e.position for e in found.events] == [
            r[0] for r in rows if r[0] > 150 and r[4] == "B"
        ]
        # An old id: a replay with its content, a duplicate with other content.
        old = rows[40]
        replay = store.append(
            [NewEvent(old[2], old[4], old[5], uuid.UUID(bytes=old[1]))],
            metadata=Metadata.from_bytes(old[7]) if old[7] else None,
        )
        assert list(replay.positions) == [old[0]]
        with pytest.raises(DuplicateEventId):
            store.append([NewEvent("s-9", "A", b"other", uuid.UUID(bytes=old[1]))])
        assert [e.position for e in store.read_events_by_id([uuid.UUID(bytes=old[1])])] == [old[0]]
        # New appends go on from the old head, as segments.
        result = store.append([NewEvent("s-1", "A", b"x%d" % i) for i in range(10)])
        head = len(rows)
        assert list(result.positions) == list(range(head + 1, head + 11))
        assert store._one("SELECT count(*) FROM segments") == len(rows) + 1
    with SqliteStore(path) as again:  # reopening converts nothing twice
        assert again.head() == len(rows) + 10
        assert len(again.read_all()) == len(rows) + 10


def test_a_batch_of_one_stream_is_one_row(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "e.db") as store:
        store.append([NewEvent("a", "A", b"%d" % i) for i in range(1000)])
        store.append([NewEvent(s, "T", b"") for s in ["x", "x", "y", "x"]])
        assert store._all("SELECT last_position, n, stream_id, last_version FROM segments") == [
            (1000, 1000, "a", 1000),
            (1002, 2, "x", 2),
            (1003, 1, "y", 1),
            (1004, 1, "x", 3),
        ]
        # UUIDv7 ids made together: one id run (or a few, across milliseconds).
        assert 1 <= store._one("SELECT count(*) FROM event_id_runs WHERE last_position = 1000") <= 3
        assert [e.payload for e in store.read_stream("a", after_version=997)] == [
            b"997",
            b"998",
            b"999",
        ]


def test_ids_in_overlapping_runs_are_told_apart(tmp_path: Path) -> None:
    """Two batches whose ids interleave in one millisecond bucket (as two processes'
    UUIDv7 ids may): neither is a replay of the other; each replays as itself."""
    prefix = uuid.uuid7().bytes[:6] if hasattr(uuid, "uuid7") else b"\x01\x02\x03\x04\x05\x06"
    even = [uuid.UUID(bytes=prefix + (2 * i).to_bytes(10, "big")) for i in range(50)]
    odd = [uuid.UUID(bytes=prefix + (2 * i + 1).to_bytes(10, "big")) for i in range(50)]
    with SqliteStore(tmp_path / "e.db") as store:
        first = store.append([NewEvent("a", "A", b"%d" % i, even[i]) for i in range(50)])
        second = store.append([NewEvent("b", "B", b"%d" % i, odd[i]) for i in range(50)])
        assert list(second.positions) == list(range(51, 101))
        again = store.append([NewEvent("b", "B", b"%d" % i, odd[i]) for i in range(50)])
        assert list(again.positions) == list(second.positions)
        assert list(store.append([NewEvent("a", "A", b"0", even[0])]).positions) == [1]
        with pytest.raises(DuplicateEventId, match="only part"):
            store.append([NewEvent("c", "C", b"", uuid.uuid4()), NewEvent("a", "A", b"1", even[1])])
        with pytest.raises(DuplicateEventId, match="different content"):
            store.append([NewEvent("b", "B", b"changed", odd[3])])
        found = store.read_events_by_id([odd[7], even[7], uuid.uuid4()])
        assert [(e.position, e.event_id) for e in found] == [(8, even[7]), (58, odd[7])]
        assert list(first.positions) == list(range(1, 51)) and store.head() == 100


def test_a_purge_trims_a_segment_from_the_front(tmp_path: Path) -> None:
    ids = [uuid.uuid4() for _ in range(10)]
    with SqliteStore(tmp_path / "e.db") as store:
        store.append([NewEvent("s", "A", b"%d" % i, ids[i], tags=[f"n:{i}"]) for i in range(10)])
        store.truncate_stream("s", 4)
        record = store.purge_stream("s", actor="test", reason="erase")
        assert (record.events, record.from_version, record.to_version) == (3, 1, 3)
        assert (record.first_position, record.last_position) == (1, 3)
        assert store._all("SELECT last_position, n FROM segments") == [(10, 7)]
        assert [e.version for e in store.read_stream("s")] == list(range(4, 11))
        assert [e.position for e in store.read_all()] == list(range(4, 11))
        assert [e.tags for e in store.read_all(limit=1)] == [("n:3",)]
        assert store.read_events_by_id(ids[:3]) == []
        assert [e.position for e in store.read_events_by_id(ids[3:5])] == [4, 5]
        assert store.read_query([QueryItem(tags=["n:1"])]).events == []
        # A purged id may be used again; a kept one is still a replay.
        assert list(store.append([NewEvent("t", "A", b"", ids[0])]).positions) == [11]
        assert list(store.append([NewEvent("s", "A", b"4", ids[4], tags=["n:4"])]).positions) == [5]
        store.delete_stream("s")
        assert store.purge_stream("s", actor="test", reason="all").events == 7
        assert store._all("SELECT last_position, n FROM segments") == [(11, 1)]
        assert store.count_events(0, 11) == 1 and store.head() == 11


def _id(rng: random.Random, kind: str) -> Any:
    if kind == "none":
        return None
    if kind == "random":
        return uuid.UUID(int=rng.getrandbits(128))
    return uuid.UUID(bytes=b"\x00\x00\x00\x00\x00\x01" + rng.randbytes(10))  # one bucket


def _apply(state: list[Any], event: Any, event_type: str) -> list[Any]:
    return [*state, (event_type, event)]


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_read_as_in_memory(tmp_path: Path, seed: int) -> None:
    """Batches of interleaved streams and mixed types, ids of every kind, truncations,
    deletions and purges: every read, fold and id lookup answers as the in-memory store's."""
    rng = random.Random(seed)
    streams = ["a", "b", "c", "pre-d"]
    types = ["X", "Y", "Z"]
    memory = MemoryStore()
    given: list[uuid.UUID] = []
    with SqliteStore(tmp_path / "e.db", synchronous="OFF") as sqlite:
        for step in range(60):
            roll = rng.random()
            if roll < 0.75:
                kind = rng.choice(["none", "random", "bucket"])
                size = rng.choice([1, 1, 2, 3, 8, 25])
                batch = []
                for _ in range(size):
                    i = _id(rng, kind)
                    batch.append(
                        NewEvent(
                            rng.choice(streams[:2]) if rng.random() < 0.5 else rng.choice(streams),
                            rng.choice(types[:1] if size > 8 else types),
                            rng.randbytes(rng.choice([0, 3])),
                            i if i is not None else uuid.uuid4(),
                            tags=[f"k:{rng.randrange(3)}"] if rng.random() < 0.3 else (),
                        )
                    )
                given += [e.event_id for e in batch]
                a, b = memory.append(batch), sqlite.append(batch)
                assert list(a.positions) == list(b.positions)
            elif roll < 0.85:
                s = rng.choice(streams)
                version = memory.stream_version(s)
                if version:
                    before = rng.randrange(1, version + 2)
                    assert memory.truncate_stream(s, before) == sqlite.truncate_stream(s, before)
            elif roll < 0.9:
                s = rng.choice(streams)
                assert memory.delete_stream(s) == sqlite.delete_stream(s)
            else:
                s = rng.choice(streams)
                m = memory.purge_stream(s, actor="t", reason="r")
                q_ = sqlite.purge_stream(s, actor="t", reason="r")
                assert (m.events, m.from_version, m.to_version) == (
                    q_.events,
                    q_.from_version,
                    q_.to_version,
                )
                assert (m.first_position, m.last_position) == (
                    q_.first_position,
                    q_.last_position,
                )
            head = memory.head()
            assert sqlite.head() == head
            after = rng.randrange(0, head + 1)
            limit = rng.choice([None, 1, 5, 40])
            for kwargs in (
                {},
                {"event_types": rng.sample(types, 2)},
                {"stream_prefix": "pre-"},
            ):
                got = sqlite.read_all(after_position=after, limit=limit, **kwargs)
                want = memory.read_all(after_position=after, limit=limit, **kwargs)
                assert list(map(_envelope, got)) == list(map(_envelope, want)), (step, kwargs)
            for s in streams:
                assert sqlite.stream_version(s) == memory.stream_version(s)
                v = rng.randrange(0, memory.stream_version(s) + 2)
                assert list(
                    map(_envelope, sqlite.read_stream(s, after_version=v, limit=limit))
                ) == list(map(_envelope, memory.read_stream(s, after_version=v, limit=limit)))
                assert list(
                    map(_envelope, sqlite.read_stream_backwards(s, before_version=v, limit=limit))
                ) == list(
                    map(_envelope, memory.read_stream_backwards(s, before_version=v, limit=limit))
                )
                assert sqlite.stream_bounds(s) == memory.stream_bounds(s)
            pair = rng.sample(streams, 2)
            assert list(map(_envelope, sqlite.read_streams(pair, limit=limit))) == list(
                map(_envelope, memory.read_streams(pair, limit=limit))
            )
            decoders = dict.fromkeys(types, bytes)
            folds = []
            for store in (sqlite, memory):
                rows, versions = store.read_fold(pair)
                folds.append((_core.fold([], _apply, decoders, rows), versions))
            assert folds[0] == folds[1]
            wanted = rng.sample(given, min(len(given), 5))
            assert list(map(_envelope, sqlite.read_events_by_id(wanted))) == list(
                map(_envelope, memory.read_events_by_id(wanted))
            )
            item = rng.choice(
                [
                    QueryItem(types=["Y"]),
                    QueryItem(tags=["k:1"]),
                    QueryItem(types=["X"], tags=["k:2"]),
                ]
            )
            assert list(map(_envelope, sqlite.read_query([item], after=after).events)) == list(
                map(_envelope, memory.read_query([item], after=after).events)
            )
            assert (
                sqlite.read_columns(after, limit, 0, 0)[0]
                == memory.read_columns(after, limit, 0, 0)[0]
            )
            assert sqlite.count_events(after, head) == len(memory.read_all(after_position=after))


def test_a_conflict_inside_a_segment_carries_the_tail_after_the_expected_version(
    tmp_path: Path,
) -> None:
    from eventcore import ConcurrencyConflict

    with SqliteStore(tmp_path / "e.db") as store:
        store.append([NewEvent("s", "A", b"%d" % i) for i in range(1, 11)])
        with pytest.raises(ConcurrencyConflict) as caught:
            store.append([NewEvent("s", "A", b"x")], expected=[("s", 5)])
        assert caught.value.tail_base == {"s": (5, 5)}
        assert [(r[3], r[4], r[2]) for r in caught.value.tail or ()] == [
            (v, v, b"%d" % v) for v in range(6, 11)
        ]
