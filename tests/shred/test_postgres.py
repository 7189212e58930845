"""Crypto-shredding on PostgreSQL: the key table, its grants, forgetting across processes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventcore import SerializationError, execute
from eventcore.postgres import PostgresStore
from eventcore.projection import ProjectionRunner
from eventcore.shredding import SubjectForgotten, SubjectKeyMissing
from eventcore.shredding.postgres import PostgresKeyStore
from tests.pgserver import new_schema_name
from tests.postgres.test_pg_app_role import readme_grants
from tests.shred.domain import Ordered, PlaceOrder, Register, Registered, Relocate, make_registry
from tests.shred.test_forget import Names

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def shredded(
    postgres_store_factory: Any, postgres_dsn: str
) -> AsyncIterator[tuple[PostgresStore, PostgresKeyStore]]:
    """A migrated PostgresStore whose registry keeps its keys in the same schema."""
    schema = new_schema_name()
    keys = PostgresKeyStore(postgres_dsn, schema=schema, cache_ttl=3600)
    store = await postgres_store_factory(schema=schema, registry=make_registry(keys))
    try:
        yield store, keys
    finally:
        keys.close()


async def key_rows(dsn: str, schema: str) -> dict[str, tuple[bool, bool]]:
    """subject -> (has a key, has a forgotten time)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT subject, key IS NOT NULL, forgotten_at IS NOT NULL"
            f' FROM "{schema}".subject_keys'
        )
    finally:
        await conn.close()
    return {r[0]: (r[1], r[2]) for r in rows}


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll ``check`` until true; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not seen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_forget_on_postgres_reads_folds_and_projects(
    shredded: tuple[PostgresStore, PostgresKeyStore], postgres_dsn: str
) -> None:
    store, keys = shredded
    await execute(store, Register(customer="c-1", name="Ann", email="ann@example.com", age=41))
    await execute(store, Register(customer="c-2", name="Bob", email="bob@example.com", age=30))
    await execute(store, PlaceOrder(customer="c-1", amount=5))
    names = Names()
    runner = ProjectionRunner(store, names)
    await runner.run_until_caught_up()
    assert names.names == {"c-1": "Ann", "c-2": "Bob"}
    payloads = [e.payload for e in await store.read_all()]
    assert not any(b"Ann" in p or b"ann@example.com" in p for p in payloads)

    assert keys.forget("c-1") is True
    assert await key_rows(postgres_dsn, store.schema) == {
        "c-1": (False, True),  # the key destroyed, the row kept
        "c-2": (True, False),
    }
    assert [e.data for e in await store.read_stream("c-1")] == [
        Registered("c-1", "", "forgotten@invalid", 0),
        Ordered(5),
    ]
    await execute(store, PlaceOrder(customer="c-1", amount=7))  # the fold still works
    with pytest.raises(SubjectForgotten):
        await execute(store, Relocate(customer="c-1", address="2 Low Road"))
    await runner.rebuild("names")
    assert names.names == {"c-1": "", "c-2": "Bob"}


async def test_a_missing_row_is_never_taken_for_forgotten(
    shredded: tuple[PostgresStore, PostgresKeyStore], postgres_dsn: str
) -> None:
    store, _ = shredded
    await execute(store, Register(customer="c-1", name="Ann", email="a@x.y", age=1))
    conn = await asyncpg.connect(postgres_dsn)  # the owner loses the row (a bad restore)
    try:
        await conn.execute(f'DELETE FROM "{store.schema}".subject_keys')
    finally:
        await conn.close()
    fresh = PostgresKeyStore(postgres_dsn, schema=store.schema)
    try:
        with pytest.raises(SubjectKeyMissing):
            fresh.key("c-1")
        reader = PostgresStore(postgres_dsn, schema=store.schema, registry=make_registry(fresh))
        async with reader:
            (recorded,) = await reader.read_stream("c-1")
            with pytest.raises(SerializationError) as info:
                recorded.data  # noqa: B018
            assert isinstance(info.value.__cause__, SubjectKeyMissing)
    finally:
        fresh.close()


def test_concurrent_first_events_of_a_subject_share_one_key(
    postgres_dsn: str, postgres_store: Any
) -> None:
    stores = [PostgresKeyStore(postgres_dsn, schema=postgres_store.schema) for _ in range(4)]
    found: list[bytes] = []
    barrier = threading.Barrier(len(stores))

    def create(keys: PostgresKeyStore) -> None:
        barrier.wait()
        found.append(keys.key_or_create("s-1"))

    threads = [threading.Thread(target=create, args=(k,)) for k in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(found) == 4 and len(set(found)) == 1
    finally:
        for k in stores:
            k.close()


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )


async def test_a_forget_in_another_process_is_seen_at_once(
    shredded: tuple[PostgresStore, PostgresKeyStore], postgres_dsn: str
) -> None:
    store, keys = shredded
    await execute(store, Register(customer="c-1", name="Ann", email="ann@example.com", age=41))
    (before,) = await store.read_stream("c-1")
    assert before.data.name == "Ann"  # the key is cached here now (for an hour)
    forgetter = (
        "import sys; from eventcore.shredding.postgres import PostgresKeyStore\n"
        "with PostgresKeyStore(sys.argv[1], schema=sys.argv[2]) as keys:\n"
        "    print(keys.forget('c-1'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", forgetter, postgres_dsn, store.schema],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    # the NOTIFY, not the hour-long cache expiry, makes this process drop the key
    took = await wait_until(lambda: keys.key("c-1") is None, timeout=10.0)
    assert took < 10.0
    (after,) = await store.read_stream("c-1")
    assert after.data.name == ""


async def test_without_the_notification_the_cache_ttl_bounds_a_stale_key(
    postgres_dsn: str, postgres_store: Any
) -> None:
    reader = PostgresKeyStore(postgres_dsn, schema=postgres_store.schema, cache_ttl=0.5)
    reader._on_forget = lambda *args: None  # type: ignore[method-assign]  # notifications lost
    other = PostgresKeyStore(postgres_dsn, schema=postgres_store.schema)
    try:
        assert reader.key_or_create("s-1") == other.key("s-1")
        other.forget("s-1")
        assert reader.key("s-1") is not None  # still cached: within the bound
        took = await wait_until(lambda: reader.key("s-1") is None, timeout=5.0)
        assert took < 1.5
    finally:
        reader.close()
        other.close()


def test_the_cli_in_another_process_reads_with_the_apps_keys(
    shredded: tuple[PostgresStore, PostgresKeyStore], postgres_dsn: str
) -> None:
    store, keys = shredded
    asyncio.run(execute(store, Register(customer="c-1", name="Ann", email="a@x.y", age=41)))

    def cli_read() -> dict[str, Any]:
        code = "from eventcore.cli import cli; cli()"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "read",
                "c-1",
                "--app",
                "tests.shred.pg_app:app",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("EVENTCORE_")},
                "SHRED_DSN": postgres_dsn,
                "SHRED_SCHEMA": store.schema,
            },
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        (line,) = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        return line["data"]  # type: ignore[no-any-return]

    assert cli_read()["name"] == "Ann"
    keys.forget("c-1")
    assert cli_read() == {
        "customer": "c-1",
        "name": "",
        "email": "forgotten@invalid",
        "age": 0,
        "plan": "basic",
    }


async def test_the_app_role_creates_reads_and_forgets_but_cannot_rewrite_keys(
    postgres_store: Any, postgres_dsn: str
) -> None:
    schema = postgres_store.schema
    role, password = f"app_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    admin = await asyncpg.connect(postgres_dsn)
    try:
        for statement in readme_grants(schema, role, password):
            await admin.execute(statement)
        parts = urlsplit(postgres_dsn)
        app_dsn = urlunsplit(
            parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}")
        )
        with PostgresKeyStore(app_dsn, schema=schema) as keys:
            key = keys.key_or_create("s-1")
            assert keys.key("s-1") == key
            assert keys.forget("s-1") is True
            assert keys.key("s-1") is None
            with pytest.raises(SubjectForgotten):
                keys.key_or_create("s-1")
        app = await asyncpg.connect(app_dsn)
        try:
            table = f'"{schema}".subject_keys'
            for sql in (
                f"UPDATE {table} SET key = $1, forgotten_at = NULL WHERE subject = 's-1'",
                f"DELETE FROM {table} WHERE subject = 's-1' AND $1::bytea IS NOT NULL",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(sql, os.urandom(32))
        finally:
            await app.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


def test_keys_are_never_logged(
    postgres_dsn: str, postgres_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with PostgresKeyStore(postgres_dsn, schema=postgres_store.schema) as keys:
        key = keys.key_or_create("s-1")
        keys.key("s-1")
        keys.forget("s-1")
        text = repr(keys)
    logged = "\n".join(r.getMessage() for r in caplog.records) + text
    for form in (key.hex(), repr(key), base64.b64encode(key).decode()):
        assert form not in logged
    assert postgres_dsn not in text  # the DSN may hold a password
