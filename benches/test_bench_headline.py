"""pytest-benchmark subset of the PostgreSQL headline workloads (``benches/headline.py``).

Each round runs a batch of sequential single-stream commands (eventcore, then the raw
asyncpg limit in the same ``group``) or one batch append of 1,000 events. The server is the
one the test suite would use: ``EVENTCORE_TEST_DSN``, else a throwaway server started with
``tests/pgserver.py`` (skipped when neither is available). Nothing here asserts a speed;
compare runs with ``--benchmark-save`` / ``--benchmark-compare`` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from benches.domain import DC
from eventcore import NewEvent, execute

pw = pytest.importorskip("benches.pg_workloads")

ROUNDS = 5
COMMANDS = 200


@pytest.fixture(scope="module")
def pg(bench_dsn: str) -> Iterator[Any]:
    """A :class:`~benches.pg_workloads.PgBench` on the suite's server (no peer)."""
    bench = pw.PgBench(bench_dsn, pw.PG_QUICK)
    try:
        yield bench
    finally:
        bench.close()
        asyncio.set_event_loop(None)


def _pedantic(benchmark: Any, target: Any, units: int, group: str) -> None:
    benchmark.group = group
    benchmark.extra_info["units_per_round"] = units
    benchmark.pedantic(target, rounds=ROUNDS, warmup_rounds=1)


def test_postgres_command_c1(benchmark: Any, pg: Any) -> None:
    counter = itertools.count()

    async def run() -> None:
        r = next(counter)
        for i in range(COMMANDS):
            await execute(pg.ec, DC.OpenAccount(account=f"pb{r}-{i}", owner="o"))

    _pedantic(benchmark, lambda: pg.run(run()), COMMANDS, "postgres.command.c1")


def test_raw_asyncpg_command_c1(benchmark: Any, pg: Any) -> None:
    counter = itertools.count()
    sql, conn = pg.sql, pg.conns[0]

    async def run() -> None:
        r = next(counter)
        for i in range(COMMANDS):
            sid = f"rb{r}-{i}"
            rows = await conn.fetch(sql.fold, [sid])
            await conn.execute(
                sql.write1, sid, len(rows), uuid.uuid4(), pg.opened_type, pg.opened_payload
            )

    _pedantic(benchmark, lambda: pg.run(run()), COMMANDS, "postgres.command.c1")


def test_postgres_append_batch1000(benchmark: Any, pg: Any) -> None:
    counter = itertools.count()
    events = [DC.registry.encode(DC.Deposited(i + 1)) for i in range(1000)]

    async def run() -> None:
        r = next(counter)
        await pg.ec.append([NewEvent(f"pbb{r}", t, p) for t, p in events])

    _pedantic(benchmark, lambda: pg.run(run()), 1000, "postgres.append.batch1000")
