"""The SQLite store's schema upgrades, its type index for type-only query items, and its
columnar reads.

A file made by the previous layout (schema 3, written here with that schema's statements
and rows, as eventcore 0003 wrote them) opens with everything kept and indexed; queries by
type only agree with a plain scan of the log whatever the batches, spans and purges.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventcore import ConditionFailed, DuplicateEventId, NewEvent
from eventcore.query import AppendCondition, QueryItem
from eventcore.sqlite import SqliteStore, _query
from eventcore.sqlite import _schema as q

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _schema_3_file(path: Path) -> list[tuple[int, bytes, str, int, str]]:
    """A file at schema 3 with 2,500 events of three types in two streams, some tagged;
    the stored ``(position, id, stream, version, type)`` rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for number, _name, statements in q.MIGRATIONS[:3]:
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    rng = random.Random(3)
    rows = []
    versions = {"s-1": 0, "s-2": 0}
    for position in range(1, 2501):
        stream = rng.choice(["s-1", "s-2"])
        versions[stream] += 1
        event_type = rng.choice(["A", "B", "C"])
        rows.append((position, uuid.uuid4().bytes, stream, versions[stream], event_type))
    conn.executemany(
        f"INSERT INTO events ({q.COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r, b"p%d" % r[0], 1_700_000_000_000_000, None) for r in rows],
    )
    conn.executemany(
        "INSERT INTO event_tags (position, tag) VALUES (?, ?)",
        [(r[0], "t:" + r[4]) for r in rows if r[0] % 7 == 0],
    )
    conn.execute("COMMIT")
    conn.close()
    return rows


def test_a_schema_3_file_is_upgraded_with_its_events_indexed_by_type(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rows = _schema_3_file(path)
    with SqliteStore(path) as store:
        version = store._one("PRAGMA user_version")
        assert version == q.SCHEMA_VERSION >= 4
        # Every event kept as it was: ids, streams, versions, types, payloads, tags.
        events = store.read_all()
        assert [
            (e.position, e.event_id.bytes, e.stream_id, e.version, e.event_type) for e in events
        ] == rows
        assert events[6].tags == ("t:" + rows[6][4],) and events[0].tags == ()
        # Type-only queries find exactly the old events of those types, via the index.
        for after in (0, 1, 1023, 1024, 1500, 2500):
            found = store.read_query([QueryItem(types=["B", "C"])], after=after)
            assert [e.position for e in found.events] == [
                r[0] for r in rows if r[0] > after and r[4] in ("B", "C")
            ]
            assert found.position == 2500
        # New appends go on from the old head; an old id is still a replay / a duplicate.
        result = store.append([NewEvent("s-3", "B", b"new")])
        assert list(result.positions) == [2501]
        old = rows[10]
        replay = store.append([NewEvent(old[2], old[4], b"p%d" % old[0], uuid.UUID(bytes=old[1]))])
        assert list(replay.positions) == [old[0]]
        with pytest.raises(DuplicateEventId):
            store.append([NewEvent("s-9", "A", b"other", uuid.UUID(bytes=old[1]))])
        assert [e.position for e in store.read_query([QueryItem(types=["B"])], after=2400).events][
            -1
        ] == 2501
    with SqliteStore(path) as again:  # reopening migrates nothing twice
        assert again.head() == 2501


def test_type_only_queries_use_the_type_index(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "e.db") as store:
        store.append([NewEvent("a", "A", b"") for _ in range(10)])
        plan = " ".join(
            r[3] for r in store._all("EXPLAIN QUERY PLAN " + _query.TYPE_SPANS, ('["A"]', 0))
        )
        assert "SEARCH r USING PRIMARY KEY (event_type=? AND last_position>?)" in plan
        # Each span's segments by a range of the rowid, its end found by the rowid too.
        assert "SEARCH s USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan
        assert "SEARCH f USING INTEGER PRIMARY KEY (rowid>?)" in plan


def test_type_only_queries_and_conditions_agree_with_a_scan(tmp_path: Path) -> None:
    """Batches of interleaved types and streams, reads after positions inside a batch's
    span, limits, and purged events (whose spans stay in the index)."""
    rng = random.Random(15)
    types = ["A", "B", "C", "D"]
    with SqliteStore(tmp_path / "e.db", synchronous="NORMAL") as store:
        for _ in range(60):
            size = rng.choice([1, 1, 2, 5, 40])
            store.append(
                [NewEvent(rng.choice(["x", "y", "z"]), rng.choice(types), b"") for _ in range(size)]
            )
        store.delete_stream("y")
        store.purge_stream("y", actor="test", reason="erase y")
        log = store.read_all()
        assert log and not any(e.stream_id == "y" for e in log)
        head = store.head()
        for _ in range(80):
            wanted = rng.sample(types, rng.choice([1, 2, 3]))
            after = rng.randrange(0, head + 1)
            limit = rng.choice([None, 1, 7])
            expect = [e.position for e in log if e.position > after and e.event_type in wanted]
            got = store.read_query([QueryItem(types=wanted)], after=after, limit=limit)
            assert [e.position for e in got.events] == expect[:limit]
            assert all(e.event_type in wanted for e in got.events)
            # The same item as an append condition: refused exactly when a match lies after.
            condition = AppendCondition([QueryItem(types=wanted)], after)
            try:
                store.append([NewEvent("w", "W", b"")], condition=condition)
                assert not expect
                log = store.read_all()
                head = store.head()
            except ConditionFailed as exc:  # at the first match
                assert expect and exc.position == expect[0], exc


def test_columns_agree_with_read_all_page_by_page(tmp_path: Path) -> None:
    """read_columns: the global log's envelopes, codes stable across pages, names sent
    once (from the codes the caller knows on)."""
    import numpy as np

    rng = random.Random(8)
    with SqliteStore(tmp_path / "e.db") as store:
        for _ in range(30):
            store.append(
                [
                    NewEvent(f"s-{rng.randrange(12)}", rng.choice(["A", "B", "C"]), b"")
                    for _ in range(rng.choice([1, 3, 10]))
                ]
            )
        events = store.read_all()
        types: list[str] = []
        streams: list[str] = []
        after, seen = 0, []
        while True:
            pos, tc, sc, rec, new_types, new_streams = store.read_columns(
                after, 17, len(types), len(streams)
            )
            types += new_types
            streams += new_streams
            positions = np.frombuffer(pos, "<i8")
            if not len(positions):
                break
            for p, t, s, r in zip(
                positions,
                np.frombuffer(tc, "<i4"),
                np.frombuffer(sc, "<i4"),
                np.frombuffer(rec, "<i8"),
                strict=True,
            ):
                seen.append((int(p), types[t], streams[s], int(r)))
            after = int(positions[-1])
        assert len(types) == 3 and len(streams) == len({e.stream_id for e in events})
        assert seen == [
            (
                e.position,
                e.event_type,
                e.stream_id,
                (e.recorded_at - EPOCH) // timedelta(microseconds=1),
            )
            for e in events
        ]
