"""The README's least-privilege application role runs everything the application runs.

The GRANTs are taken from the README's SQL block itself (schema and role renamed), so the
documentation and this test cannot drift apart. As that role: commands and their durable
snapshots, a projection
runner (plain with a dead letter and a rebuild, transactional, live with its leader
lock), and the ``eventcore`` command line's reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner
from tests.postgres.pg_bank import BANK, Deposit, balance_of, open_accounts
from tests.projection.conftest import new_events

from eventcore import StoreError, execute
from eventcore.cli import cli
from eventcore.examples.bank import Account
from eventcore.postgres import PostgresStore
from eventcore.projection import FailureStrategy, ProjectionRunner
from eventcore.snapshot import snapshot_key

pytestmark = pytest.mark.postgres

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_grants(schema: str, role: str, password: str) -> list[str]:
    """The README's role and GRANT statements, for ``schema`` and ``role``."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "CREATE ROLE app" in b]
    sql = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    sql = re.sub(r"\beventcore\.", f'"{schema}".', sql)
    sql = re.sub(r"\bSCHEMA eventcore\b", f'SCHEMA "{schema}"', sql)
    sql = re.sub(r"\bapp\b", role, sql).replace("'...'", f"'{password}'")
    return [s.strip() for s in sql.split(";") if s.strip()]


class Totals:
    """Plain projection: deposits per account; fails on a deposit of 13 (dead letter)."""

    name = "totals"
    event_types = ("demo.bank.Deposited",)
    on_error = FailureStrategy.skip()

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def apply(self, event: Any) -> None:
        if event.data.amount == 13:
            raise ValueError("unlucky")
        self.totals[event.stream_id] = self.totals.get(event.stream_id, 0) + event.data.amount

    def reset(self) -> None:
        self.totals.clear()


class TxTotals:
    """Transactional projection into a read-model table the role was granted."""

    name = "tx_totals"
    event_types = ("demo.bank.Deposited",)

    def __init__(self, table: str) -> None:
        self.table = table

    async def apply_in_transaction(self, events: list[Any], conn: Any) -> None:
        await conn.executemany(
            f"INSERT INTO {self.table} (account, total) VALUES ($1, $2) ON CONFLICT (account)"
            f" DO UPDATE SET total = {self.table}.total + EXCLUDED.total",
            [(e.stream_id, e.data.amount) for e in events],
        )


def cli_json(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


async def test_readme_role_runs_commands_projections_and_cli(
    postgres_store: Any, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTCORE_DSN", raising=False)
    monkeypatch.delenv("EVENTCORE_APP", raising=False)
    schema = postgres_store.schema  # migrated by the owner (the test's superuser)
    role, password = f"app_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    models = f"rm_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        for statement in readme_grants(schema, role, password):
            await admin.execute(statement)
        # the application's own read model: its own schema and GRANTs
        await admin.execute(f'CREATE SCHEMA "{models}"')
        await admin.execute(
            f'CREATE TABLE "{models}".totals (account text PRIMARY KEY, total bigint NOT NULL)'
        )
        await admin.execute(f'GRANT USAGE ON SCHEMA "{models}" TO {role}')
        await admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{models}".totals TO {role}')
        parts = urlsplit(postgres_dsn)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
        app_dsn = urlunsplit(parts._replace(netloc=netloc))

        async with PostgresStore(app_dsn, schema=schema, registry=BANK) as app:
            assert await app.migrate() == PostgresStore.latest_schema_version()  # no DDL
            # commands
            await open_accounts(app, ["a", "b"], 0)
            for account, amount in [("a", 5), ("b", 13), ("a", 7), ("b", 2)]:
                await execute(app, Deposit(account=account, amount=amount))
            assert await balance_of(app, "a") == 12
            # durable snapshots: the role reads, writes and replaces them (raises if not)
            snaps = app.snapshots
            key = snapshot_key(Deposit, ["a"])
            await snaps.store.save(snaps.take(Deposit, key, ["a"], [3], 0, 0, Account(True, 7)))
            await snaps.store.save(snaps.take(Deposit, key, ["a"], [4], 0, 0, Account(True, 12)))
            assert (await snaps.read_async(Deposit, key)).versions == (4,)  # the UPDATE
            # a plain projection: checkpoints, a dead letter, a rebuild (reset)
            totals = Totals()
            runner = ProjectionRunner(app, totals)
            await runner.run_until_caught_up()  # today: permission denied (CREATE TABLE)
            assert totals.totals == {"a": 12, "b": 2}
            letters = await runner.dead_letters("totals")
            assert [(d.stream_id, d.event_type) for d in letters] == [("b", "demo.bank.Deposited")]
            await runner.rebuild("totals")
            assert totals.totals == {"a": 12, "b": 2}
            # a transactional projection, then both live (leader locks, LISTEN)
            tx = TxTotals(f'"{models}".totals')
            async with ProjectionRunner(app, [Totals(), tx]) as live:
                result = await execute(app, Deposit(account="a", amount=100))
                await live.wait_for(result.positions[-1])
                states = {s.state for s in (await live.status()).values()}
                assert states == {"live"}
            rows = await admin.fetch(f'SELECT account, total FROM "{models}".totals')
            assert dict(rows) == {"a": 112, "b": 15}

        # the command line's reads, as the role
        target = ["--dsn", app_dsn, "--schema", schema]
        streams = await asyncio.to_thread(cli_json, "streams", *target, "--json")
        assert sorted(r["stream_id"] for r in streams) == ["a", "b"]
        events = await asyncio.to_thread(cli_json, "read", "a", *target, "--json")
        assert len(events) == 5  # opened, 0, 5, 7, 100
        tail = await asyncio.to_thread(cli_json, "tail", *target, "-n", "2", "--json")
        assert len(tail) == 2
        app_target = [*target, "--app", "tests.observability.cliapp:pg_app"]
        status = await asyncio.to_thread(cli_json, "projections", "status", *app_target, "--json")
        assert [s["name"] for s in status] == ["counts"]
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{models}" CASCADE')
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def version_1_store(make: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A store on a fresh schema migrated to version 1 only: an install made before the
    checkpoint tables (and every later migration) existed."""
    from eventcore.postgres import _migrate, _sql

    with monkeypatch.context() as patch:
        patch.setattr(_migrate, "migrations", lambda: _sql.migrations()[:1])
        store = await make()
    return store


async def test_unmigrated_checkpoint_tables_say_how_to_migrate(
    postgres_store_factory: Any, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema without the checkpoint tables (an older version): a clear error."""
    store = await version_1_store(postgres_store_factory, monkeypatch)
    runner = ProjectionRunner(store, Totals())
    with pytest.raises(Exception, match="migrate") as info:
        await runner.run_until_caught_up()
    assert isinstance(info.value.__cause__, StoreError)
    assert "projection checkpoint tables are missing" in str(info.value)
    assert runner._workers[0].state == "failed"
    # a store opened on the old schema by this eventcore refuses it up front
    stale = PostgresStore(postgres_dsn, schema=store.schema)
    try:
        with pytest.raises(StoreError, match="is at version 1; this eventcore needs version"):
            await stale.head()
    finally:
        await stale.close()
    # the owner migrates (version 1 -> latest): the runner then works
    assert await store.migrate() == PostgresStore.latest_schema_version()
    await ProjectionRunner(store, Totals()).run_until_caught_up()


# What a runner of schema version 1 created at run time (before migration 0002).
OLD_RUNNER_TABLES = """
CREATE TABLE {s}.projection_checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.projection_dead_letters (
    id         bigserial   PRIMARY KEY,
    projection text        NOT NULL,
    position   bigint      NOT NULL,
    event_id   uuid,
    stream_id  text        NOT NULL,
    event_type text        NOT NULL,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projection_dead_letters_projection_idx
    ON {s}.projection_dead_letters (projection, id);
"""


async def test_migration_adopts_checkpoint_tables_an_older_runner_created(
    postgres_store_factory: Any, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 schema whose runner created the tables at run time migrates cleanly."""
    store = await version_1_store(postgres_store_factory, monkeypatch)
    schema = store.schema
    # A version-1 append_events answers without the conflict-tail columns of version 5.
    columns, call = store._q.append.split(" FROM ", 1)
    store._q.append = (
        columns.split(", tail_streams")[0] + ", NULL, NULL, NULL, NULL, NULL FROM " + call
    )
    await store.append(new_events(3))
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(OLD_RUNNER_TABLES.format(s=f'"{schema}"'))
        head = await admin.fetchval(f'SELECT max(position) FROM "{schema}".events')
        await admin.execute(
            f'INSERT INTO "{schema}".projection_checkpoints (name, position) VALUES ($1, $2)',
            "totals",
            head,
        )
        assert await store.migrate() == PostgresStore.latest_schema_version()
        after = await admin.fetchval(
            f'SELECT position FROM "{schema}".projection_checkpoints WHERE name = $1', "totals"
        )
        assert after == head  # the checkpoints were kept
    finally:
        await admin.close()
    # and the runner goes on from that checkpoint: nothing is applied again
    totals = Totals()
    await ProjectionRunner(store, totals).run_until_caught_up()
    assert totals.totals == {}
