"""Projections need only the store protocols of eventcore.store (issue 13, section 1).

A store that implements :class:`~eventcore.store.ProjectionStore` and nothing else (no
pool, no Rust handle, no schema) runs projections like the shipped stores; the shipped
stores implement the protocols; projection code names no store internals.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.projection.conftest import Recorder, all_events, write

import eventcore
from eventcore import MemoryStore, UsageError
from eventcore.metadata import Metadata
from eventcore.projection import MemoryCheckpointStore, ProjectionRunner, Subscription
from eventcore.query import AppendCondition, Query, QueryItem, QueryResult
from eventcore.recorded import AppendResult, NewEvent, RecordedEvent, set_tags
from eventcore.store import (
    CheckpointStore,
    ColumnBuffers,
    EventStore,
    Expected,
    FoldRows,
    LogHoldback,
    ProjectionStore,
)

PROJECTION = Path(eventcore.__file__).parent / "projection"


class ProtocolOnlyStore:
    """A store that offers exactly the ProjectionStore protocol, with sparse positions.

    It keeps its events in a MemoryStore it reaches only through that store's public
    EventStore methods, and shifts every position by ``SPREAD`` so that positions have
    gaps (as on PostgreSQL); it has no columnar read.
    """

    SPREAD = 10

    def __init__(self) -> None:
        self._inner = MemoryStore().aio
        self.registry = self._inner.registry
        self.calls: set[str] = set()

    def _shift(self, events: list[RecordedEvent[Any]]) -> list[RecordedEvent[Any]]:
        shifted = [
            RecordedEvent(
                e.position * self.SPREAD,
                e.event_id,
                e.stream_id,
                e.version,
                e.event_type,
                e.payload,
                e.recorded_at,
                e.metadata,
                self.registry,
            )
            for e in events
        ]
        set_tags(shifted, [e.tags for e in events])
        return shifted

    async def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        if condition is not None:
            condition = condition._replace(after=condition.after // self.SPREAD)
        return await self._inner.append(
            events, expected=expected, metadata=metadata, condition=condition
        )

    async def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        found = await self._inner.read_query(query, after=after // self.SPREAD, limit=limit)
        return QueryResult(self._shift(found.events), found.position * self.SPREAD)

    async def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        rows, versions = await self._inner.read_fold(streams)
        return self._shift_rows(rows), versions

    async def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        found = await self._inner.read_tail(streams, versions, fold_from, hint)
        return None if found is None else (self._shift_rows(found[0]), found[1])

    def _shift_rows(self, rows: FoldRows) -> FoldRows:
        return [(r[0], r[1], r[2], r[3], r[4] * self.SPREAD) for r in rows]

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        found = await self._inner.read_stream(stream_id, after_version=after_version, limit=limit)
        return self._shift(found)

    async def read_streams(
        self, stream_ids: Sequence[str], *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        found = await self._inner.read_streams(stream_ids, after_version=after_version, limit=limit)
        return self._shift(found)

    async def read_stream_backwards(
        self, stream_id: str, *, before_version: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent[Any]]:
        found = await self._inner.read_stream_backwards(
            stream_id, before_version=before_version, limit=limit
        )
        return self._shift(found)

    async def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[RecordedEvent[Any]]:
        self.calls.add("read_all")
        found = await self._inner.read_all(
            after_position=after_position // self.SPREAD,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )
        return self._shift(found)

    async def read_events_by_id(
        self, event_ids: Sequence[uuid.UUID | int]
    ) -> list[RecordedEvent[Any]]:
        return self._shift(await self._inner.read_events_by_id(event_ids))

    async def stream_version(self, stream_id: str) -> int:
        return await self._inner.stream_version(stream_id)

    async def head(self) -> int:
        return await self._inner.head() * self.SPREAD

    @property
    def dense_positions(self) -> bool:
        return False

    async def wait_for_append(self, after_position: int, timeout: float) -> int:
        self.calls.add("wait_for_append")
        head = await self._inner.wait_for_append(after_position // self.SPREAD, timeout)
        return head * self.SPREAD

    async def count_events(self, after_position: int, upto: int) -> int:
        self.calls.add("count_events")
        return await self._inner.count_events(after_position // self.SPREAD, upto // self.SPREAD)

    async def log_holdback(self) -> LogHoldback | None:
        self.calls.add("log_holdback")
        return LogHoldback(7, 42, None, 0.0, 1)  # an append "in flight", for status()

    async def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers | None:
        self.calls.add("read_columns")
        return None

    def checkpoint_store(self) -> CheckpointStore:
        return MemoryCheckpointStore()


class Columns:
    """A columnar projection: counts events per type."""

    name = "columns"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.positions: list[int] = []

    def apply_columns(self, batch: Any) -> None:
        self.positions += [int(p) for p in batch.positions]
        for code, n in enumerate(np.bincount(batch.type_codes, minlength=len(batch.type_names))):
            name = batch.type_names[code]
            self.counts[name] = self.counts.get(name, 0) + int(n)


def test_the_shipped_stores_implement_the_protocols() -> None:
    memory = MemoryStore().aio
    assert isinstance(memory, ProjectionStore) and isinstance(memory, EventStore)
    assert memory.dense_positions
    checkpoints = memory.checkpoint_store()
    assert isinstance(checkpoints, CheckpointStore) and isinstance(
        checkpoints, MemoryCheckpointStore
    )
    assert not checkpoints.exclusive and not checkpoints.transactional
    assert isinstance(ProtocolOnlyStore(), ProjectionStore)


@pytest.mark.postgres
async def test_the_postgres_store_implements_the_protocols(postgres_store: Any) -> None:
    from eventcore.postgres import PostgresCheckpointStore
    from eventcore.store import CheckpointTransaction, Lease

    store = postgres_store
    assert isinstance(store, ProjectionStore) and not store.dense_positions
    checkpoints = store.checkpoint_store()
    assert isinstance(checkpoints, PostgresCheckpointStore)
    assert isinstance(checkpoints, CheckpointStore)
    assert checkpoints.exclusive and checkpoints.transactional
    lease = checkpoints.lease("p")
    assert isinstance(lease, Lease)
    assert await lease.acquire()
    other = checkpoints.lease("p")
    assert not await other.acquire()  # held by the first
    await lease.check()
    await lease.release()
    assert await other.acquire()  # free again
    await other.release()
    async with checkpoints.transaction() as tx:
        assert isinstance(tx, CheckpointTransaction)
        assert await tx.move("p", 0, 5)
        assert not await tx.move("p", 0, 6)  # not at 0 any more
    assert await checkpoints.load("p") == 5
    await write(store, 3)
    head = await store.head()
    assert await store.count_events(0, head) == 3
    assert await store.read_columns(0, 10, 0, 0) is None


async def test_a_store_with_only_the_protocol_runs_projections() -> None:
    store = ProtocolOnlyStore()
    await write(store, 120, per_append=7)
    rec, columns = Recorder(), Columns()
    progress: list[Any] = []
    runner = ProjectionRunner(
        store, [rec, columns], page_size=25, poll_interval=0.05, on_progress=progress.append
    )
    await runner.run_until_caught_up()
    expected = [e.position for e in await all_events(store)]
    assert rec.order == expected and columns.positions == expected
    assert columns.counts == {"T0": 40, "T1": 40, "T2": 40}
    assert progress[-1].done and progress[-1].events_done == 120
    status = (await runner.status())["recorder"]
    assert status.lag_events == 0 and status.position == expected[-1]
    assert status.held_back_by is not None and "42" in status.held_back_by
    async with ProjectionRunner(store, Recorder("live"), poll_interval=0.05) as live:
        written = await write(store, 10, offset=120)
        await live.wait_for(written, timeout=5)
        assert (await live.status())["live"].state == "live"
    assert {"read_all", "read_columns", "wait_for_append", "count_events"} <= store.calls


async def test_memory_checkpoints_offer_no_lease_and_no_transaction() -> None:
    checkpoints = MemoryCheckpointStore()
    await checkpoints.check()
    with pytest.raises(UsageError):
        checkpoints.lease("p")
    with pytest.raises(UsageError, match="apply_in_transaction"):
        checkpoints.transaction()
    with pytest.raises(eventcore.ValidationError, match="leases"):
        ProjectionRunner(MemoryStore(), Recorder(), exclusive=True)

    class InTransaction:
        name = "tx"

        async def apply_in_transaction(self, events: Any, connection: Any) -> None:
            pass

    with pytest.raises(eventcore.ValidationError, match="transactional checkpoints"):
        ProjectionRunner(MemoryStore(), InTransaction())


async def test_a_subscription_reads_columns_from_the_memory_store_itself() -> None:
    store = MemoryStore()
    await write(store.aio, 30)
    sub = Subscription(store, page_size=100, live=False, columns=True, event_types=["T1"])
    pages = [page async for page in sub]
    assert [len(p) for p in pages] == [10]
    assert pages[0].columns is not None and set(pages[0].columns.type_names) >= {"T1"}
    assert pages[0].position == 30


FORBIDDEN = ("_get_pool", "_core", "_dsn", "_upsert", "_pool", "_fetch", "_q")


def test_projection_code_names_no_store_internals_and_no_sql() -> None:
    for path in sorted(PROJECTION.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in FORBIDDEN, f"{path.name}:{node.lineno} .{node.attr}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
                target = ast.unparse(node.args[0])
                assert "store" not in target, f"{path.name}:{node.lineno} getattr({target})"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                for keyword in ("SELECT ", "INSERT ", "UPDATE ", "CREATE "):
                    assert keyword not in text, f"{path.name}:{node.lineno} SQL in {text!r}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = getattr(node, "module", None) or ""
                names = [a.name for a in node.names]
                assert "asyncpg" not in module and "asyncpg" not in names, path.name


def test_no_table_is_created_at_run_time() -> None:
    # Tables come from the versioned migrations (postgres/migrations/*.sql); the only one
    # in Python code is the migrations' own version table, made by the migrator.
    package = Path(eventcore.__file__).parent
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = text.count("CREATE TABLE")
        allowed = text.count("CREATE TABLE {s}.schema_version") if path.name == "_sql.py" else 0
        assert found == allowed, f"{path}: a table created outside the migrations"


def test_import_needs_no_asyncpg() -> None:
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import eventcore\n"
        "assert 'eventcore.postgres' not in sys.modules\n"
        "from eventcore.projection import PostgresCheckpointStore\n"
        "from eventcore.projection.checkpoint import PostgresCheckpointStore as Old\n"
        "from eventcore.postgres import PostgresCheckpointStore as New\n"
        "assert PostgresCheckpointStore is Old is New is eventcore.PostgresCheckpointStore\n"
        "assert 'asyncpg' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    from eventcore.postgres import PostgresStore\n"
        "except ImportError:\n"
        "    print('needs asyncpg')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "needs asyncpg"


def test_run_until_caught_up_on_a_sync_memory_store() -> None:
    store = MemoryStore()
    asyncio.run(write(store.aio, 5))
    rec = Recorder()
    asyncio.run(ProjectionRunner(store, rec).run_until_caught_up())
    assert rec.order == [1, 2, 3, 4, 5]
