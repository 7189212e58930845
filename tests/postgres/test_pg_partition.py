"""Partitioning the events table by position range (migration 0012,
eventcore.postgres.partition): conversion keeps every event, ids stay unique across
partitions, stream reads prune partitions, old partitions detach and attach again with
reads staying correct, purges and the readers' horizon work on partitions."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import asyncpg
import pytest
from tests.folds import fold_streams

from eventcore import NewEvent
from eventcore.errors import ConfigurationError, DuplicateEventId, StoreError
from eventcore.postgres.partition import (
    PartitionRefused,
    add_partitions,
    attach_partition,
    detach_partition,
    partition_events,
    partitions,
)

pytestmark = pytest.mark.postgres


def ev(stream: str, n: int = 1, event_id: uuid.UUID | None = None) -> list[NewEvent]:
    return [
        NewEvent(stream, "Noted", f"{stream}:{i}".encode(), event_id=event_id) for i in range(n)
    ]


async def log(store: Any) -> list[tuple[str, int, int]]:
    return [(e.stream_id, e.version, e.position) for e in await store.read_all(limit=100_000)]


async def stream(store: Any, stream_id: str) -> list[tuple[int, bytes]]:
    return [(e.version, e.payload) for e in await store.read_stream(stream_id)]


async def move_past(store: Any, parts: int = 2) -> None:
    """Append until the log is ``parts`` partitions (of the fixture's span) further on."""
    for _ in range(4 * parts + 1):
        await store.append(ev("filler"))


async def test_conversion_keeps_every_event_and_appends_go_on(postgres_store_factory: Any) -> None:
    store = await postgres_store_factory()
    for k in range(3):
        await store.append(ev(f"old-{k}", 3))
    before = await log(store)
    made = await partition_events(store, span=4, ahead=2)
    assert made[:2] == ["events_from_0", "events_default"] and len(made) >= 3
    assert await log(store) == before
    await store.append(ev("old-1", 2) + ev("new-1", 2))
    await move_past(store)
    await store.append(ev("old-1"))
    after = await log(store)
    assert after[: len(before)] == before
    assert [v for v, _ in await stream(store, "old-1")] == [1, 2, 3, 4, 5, 6]
    assert [v for v, _ in await stream(store, "new-1")] == [1, 2]
    # A fold (the command path) reads both streams across the partitions, in log order.
    state, versions = await fold_streams(
        store, ["old-1", "new-1"], [], lambda s, d, sid: [*s, (sid, d)], {"Noted": bytes}
    )
    assert versions == [6, 2]
    assert state == [
        (sid, f"{sid}:{i}".encode())
        for sid, i in [
            *[("old-1", 0), ("old-1", 1), ("old-1", 2), ("old-1", 0), ("old-1", 1)],
            *[("new-1", 0), ("new-1", 1), ("old-1", 0)],
        ]
    ]
    found = await partitions(store)
    assert found[0].name == "events_from_0" and found[0].lower is None
    assert found[-1].is_default and all(p.attached for p in found)
    bounded = [p for p in found if p.lower is not None]
    assert all(a.upper == b.lower for a, b in itertools.pairwise(bounded))
    with pytest.raises(ConfigurationError, match="partitioned already"):
        await partition_events(store, span=4)


async def test_an_event_id_is_unique_across_partitions(
    partitioned_postgres_store: Any, postgres_dsn: str
) -> None:
    store = partitioned_postgres_store
    taken = uuid.uuid4()
    [first] = (await store.append(ev("a", event_id=taken))).positions
    await move_past(store)
    # The store's own probe refuses the id with other content...
    with pytest.raises(DuplicateEventId):
        await store.append(ev("b", event_id=taken))
    # ...and the key refuses it where no probe runs: a row in another partition.
    conn = await asyncpg.connect(postgres_dsn)
    try:
        s = f'"{store.schema}"'
        later = await conn.fetchval(f"SELECT max(position) + 1 FROM {s}.events")
        assert later // (1 << 20) > first // (1 << 20)
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute(
                f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type,"
                " payload) VALUES ($1, $2, 'c', 1, 'Noted', 'x')",
                later,
                taken,
            )
        assert caught.value.constraint_name == "events_event_id_key"
    finally:
        await conn.close()


async def test_stream_reads_skip_the_partitions_a_stream_has_no_events_in(
    partitioned_postgres_store: Any, postgres_dsn: str
) -> None:
    store = partitioned_postgres_store
    await store.append(ev("early", 2))
    await move_past(store, 3)
    await store.append(ev("late", 2))
    await move_past(store, 1)
    await store.append(ev("early"))
    s = f'"{store.schema}"'
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for sid, expect in (("late", 1), ("early", None)):
            sql = store._q.read_stream.replace("$1", f"'{sid}'").replace("$2", "0")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    f"EXPLAIN (ANALYZE, COSTS OFF) {sql.replace('$3', '100')}"
                )
            )
            scans = [line for line in plan.splitlines() if "Index Scan using events_" in line]
            assert len(scans) >= 5, plan
            run = [line for line in scans if "never executed" not in line]
            if expect is not None:
                assert len(run) == expect, plan  # every other partition pruned at run time
            else:
                assert 2 <= len(run) < len(scans), plan
        row = await conn.fetchrow(
            f"SELECT first_position, last_position FROM {s}.streams WHERE stream_id = 'early'"
        )
        positions = [e.position for e in await store.read_stream("early")]
        assert row[0] <= min(positions) and max(positions) <= row[1]
    finally:
        await conn.close()
    assert [v for v, _ in await stream(store, "early")] == [1, 2, 3]
    assert [e.version for e in await store.read_stream_backwards("early")] == [3, 2, 1]
    assert [e.stream_id for e in await store.read_streams(["late", "early"])] == [
        "early",
        "early",
        "late",
        "late",
        "early",
    ]


async def test_the_snapshot_tail_read_skips_the_partitions_its_streams_have_no_events_in(
    partitioned_postgres_store: Any, postgres_dsn: str
) -> None:
    store = partitioned_postgres_store
    await add_partitions(store, ahead=10)  # no append of this test lands in DEFAULT
    await move_past(store, 2)
    await store.append(ev("snap", 3))
    await move_past(store, 1)
    await store.append(ev("snap", 2))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            store._q.save_snapshot,
            "k",
            1,
            ["snap"],
            [2],
            0,
            0,
            2,
            b"state",
            0.0,
            b"sum",
        )
        rows = await conn.fetch(store._q.load_snapshot_tail, "k", 100)
        # The snapshot row, then the last folded event (version 2) and the tail after it.
        assert [r[0] for r in rows] == [0, 1, 1, 1, 1]
        assert [r[12] for r in rows[1:]] == [2, 3, 4, 5]
        sql = store._q.load_snapshot_tail.replace("$1", "'k'").replace("$2", "100")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}"))
        scans = [line for line in plan.splitlines() if "Scan using events_" in line]
        run = [line for line in scans if "never executed" not in line]
        # Only the partitions holding the stream's events are read (two at most for each
        # of the two lateral reads); the others are pruned at run time.
        assert 1 <= len(run) <= 4, plan
        assert len(scans) - len(run) >= 6, plan
    finally:
        await conn.close()


async def test_an_old_partition_detaches_and_attaches_with_reads_staying_correct(
    partitioned_postgres_store: Any,
) -> None:
    store = partitioned_postgres_store
    await store.append(ev("closed", 3) + ev("kept", 2))
    await move_past(store, 3)
    await store.append(ev("kept", 1) + ev("fresh", 1))
    everything = await log(store)
    # The partition holding "closed".
    closed = [e.position for e in await store.read_stream("closed")]
    holder = next(
        p
        for p in await partitions(store)
        if (p.lower or 0) <= closed[0] and p.upper is not None and closed[0] < p.upper
    )
    # Events stream reads still return: refused.
    with pytest.raises(PartitionRefused, match="still return"):
        await detach_partition(store, holder.name)
    # A partition appends may still reach (one made ahead; the DEFAULT one): refused even
    # when forced.
    await add_partitions(store, ahead=2)
    found = await partitions(store)
    ahead = max((p for p in found if p.upper is not None), key=lambda p: p.upper or 0)
    for future in (ahead, next(p for p in found if p.is_default)):
        with pytest.raises(PartitionRefused, match="still receive"):
            await detach_partition(store, future.name, force=True)
    await store.delete_stream("closed")
    await store.truncate_stream("kept", 3)
    await store.delete_stream("filler")
    await detach_partition(store, holder.name)
    gone = {e.position for e in await store.read_all(limit=100_000)}
    assert all(p not in gone for p in closed)
    assert [pos for _, _, pos in everything if pos not in gone] == [
        pos for _, _, pos in everything if holder.lower <= pos < holder.upper
    ]
    assert [v for v, _ in await stream(store, "kept")] == [3]
    assert [v for v, _ in await stream(store, "fresh")] == [1]
    assert await store.read_stream("closed") == []
    listed = {p.name: p for p in await partitions(store)}
    assert not listed[holder.name].attached
    await store.append(ev("fresh"))
    await attach_partition(store, holder.name)
    again = await log(store)
    assert again[: len(everything)] == everything
    assert [v for v, _ in await stream(store, "kept")] == [3]
    assert all(p.attached for p in await partitions(store))
    with pytest.raises(ConfigurationError, match="not a detached partition"):
        await attach_partition(store, holder.name)


async def test_a_purge_erases_events_on_partitions_and_frees_their_ids(
    partitioned_postgres_store: Any,
) -> None:
    store = partitioned_postgres_store
    reused = uuid.uuid4()
    await store.append(ev("person", event_id=reused) + ev("person", 2))
    await move_past(store)
    await store.append(ev("person"))
    await store.truncate_stream("person", 4)
    record = await store.purge_stream("person", actor="test", reason="erasure")
    assert record.events == 3
    assert [e.stream_id for e in await store.read_all(limit=1000)].count("person") == 1
    await store.append(ev("someone-else", event_id=reused))  # the id is free again
    assert [v for v, _ in await stream(store, "someone-else")] == [1]


async def test_add_partitions_starts_above_what_the_default_partition_took(
    partitioned_postgres_store: Any,
) -> None:
    store = partitioned_postgres_store
    for _ in range(30):  # past the 5 spans made ahead: into the DEFAULT partition
        await store.append(ev("busy"))
    default = next(p for p in await partitions(store) if p.is_default)
    made = await add_partitions(store, ahead=3)
    assert made
    found = {p.name: p for p in await partitions(store)}
    newest = max(p.upper or 0 for p in found.values())
    busiest = max(e.position for e in await store.read_stream("busy"))
    assert all(found[n].lower > busiest for n in made)
    await store.append(ev("busy"))
    latest = max(e.position for e in await store.read_stream("busy"))
    assert latest < newest and default.is_default
    assert [v for v, _ in await stream(store, "busy")] == list(range(1, 32))
    with pytest.raises(ConfigurationError, match="ahead"):
        await add_partitions(store, ahead=0)


async def test_add_partitions_needs_a_partitioned_table(postgres_store: Any) -> None:
    with pytest.raises(ConfigurationError, match="not partitioned"):
        await add_partitions(postgres_store)
    assert await partitions(postgres_store) == []


async def test_a_session_that_read_before_the_conversion_still_waits_for_appends(
    postgres_store: Any, postgres_dsn: str
) -> None:
    store = postgres_store
    await store.append(ev("a"))
    s = f'"{store.schema}"'
    reader = await asyncpg.connect(postgres_dsn)
    writer = await asyncpg.connect(postgres_dsn)
    try:
        await reader.fetchval(f"SELECT {s}.log_horizon()")  # plans cached in this session
        await partition_events(store, span=4, ahead=2)
        await store.delete_stream("a")
        await move_past(store, 2)
        await store.delete_stream("filler")
        await detach_partition(store, "events_from_0", force=True)
        tx = writer.transaction()
        await tx.start()
        await writer.fetchrow(
            f"SELECT status FROM {s}.append_events('{{}}', '{{}}', $1::uuid[],"
            " '{b}', '{Noted}', $2::bytea[], NULL, NULL, NULL, NULL)",
            [uuid.uuid4()],
            [b"x"],
        )
        xid = int(await writer.fetchval("SELECT pg_current_xact_id()::text::bigint"))
        assert int(await reader.fetchval(f"SELECT {s}.log_horizon()")) <= xid
        await tx.rollback()
    finally:
        await reader.close()
        await writer.close()


def test_the_cli_converts_lists_adds_and_refuses_with_a_clear_error(postgres_dsn: str) -> None:
    import asyncio
    import json

    from click.testing import CliRunner
    from tests.pgserver import drop_schema, new_schema_name

    from eventcore.cli import cli

    schema = new_schema_name()
    base = ["--dsn", postgres_dsn, "--schema", schema]

    def call(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, *base], catch_exceptions=False)

    try:
        assert call("migrate").exit_code == 0
        refused = call("partitions", "list")
        assert refused.exit_code == 1 and "not partitioned" in refused.output
        made = call("partitions", "convert", "--span", "4", "--ahead", "2")
        assert made.exit_code == 0, made.output
        assert "made events_from_0" in made.output
        listed = [
            json.loads(line) for line in call("partitions", "list", "--json").output.splitlines()
        ]
        assert listed[0]["name"] == "events_from_0" and listed[-1]["is_default"]
        assert call("partitions", "add", "--ahead", "1").exit_code == 0
        current = listed[-2]["name"]
        detached = call("partitions", "detach", current)
        assert detached.exit_code == 1 and "still receive appends" in detached.output
        attached = call("partitions", "attach", "events_from_0")
        assert attached.exit_code == 1 and "not a detached partition" in attached.output
    finally:
        asyncio.run(drop_schema(postgres_dsn, schema))


async def test_the_application_role_keeps_its_rights_through_the_conversion(
    postgres_store: Any, postgres_dsn: str
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from tests.postgres.test_pg_app_role import readme_grants

    from eventcore.postgres import PostgresStore

    store = postgres_store
    role = f"app_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        for statement in readme_grants(store.schema, role, "secret"):
            await admin.execute(statement)
        await store.append(ev("before", 2))
        await partition_events(store, span=4, ahead=2)  # granted before: kept on the parent
        parts = urlsplit(postgres_dsn)
        netloc = f"{role}:secret@{parts.hostname}:{parts.port}"
        dsn = urlunsplit(parts._replace(netloc=netloc))
        app = PostgresStore(dsn, schema=store.schema)
        try:
            await app.append(ev("before") + ev("after"))
            await move_past(app)
            assert [v for v, _ in await stream(app, "before")] == [1, 2, 3]
            assert len(await app.read_all(limit=100)) == 2 + 2 + 9
            await app.delete_stream("after")
            with pytest.raises(StoreError, match="owner's work"):  # no EXECUTE for the app
                await add_partitions(app)
        finally:
            await app.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
