"""Projection runners survive store faults on the real server (issue 10, section 1).

Every backend of the test database is terminated (``pg_terminate_backend``: the runner's
pool, listener and leader-lock connections), or the server is restarted, in the middle of
catch-up and of live delivery, for a plain and a transactional projection. Each test
checks that every event of the log was applied (exactly once in transactional mode, at
least once with no gap otherwise) and that status() went through ``reconnecting`` back to
``live``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest
from tests.projection.conftest import all_events, new_events

from eventcore import StoreUnavailable
from eventcore.observe import Hook, add_hook, remove_hook
from eventcore.projection import ProjectionRunner, ReconnectPolicy

pytestmark = pytest.mark.postgres

TOTAL = 1500  # events written before the runner starts (catch-up)
MORE = 300  # events written after the fault


class Plain:
    """Records every position delivered (duplicates included); slow enough to interrupt."""

    name = "plain"

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def apply_batch(self, events: list[Any]) -> None:
        await asyncio.sleep(0.01)
        self.seen += [e.position for e in events]

    @property
    def progress(self) -> int:
        return len(self.seen)

    async def applied(self, conn: Any) -> Counter[int]:
        return Counter(self.seen)


class Transactional:
    """Counts how often each position was applied, in the runner's transaction."""

    name = "transactional"

    def __init__(self, schema: str) -> None:
        self.table = f'"{schema}".rm_applied'
        self.progress = 0

    async def setup(self, conn: Any) -> None:
        await conn.execute(
            f"CREATE TABLE {self.table} (position bigint PRIMARY KEY, n int NOT NULL)"
        )

    async def apply_in_transaction(self, events: list[Any], conn: Any) -> None:
        await asyncio.sleep(0.01)
        await conn.execute(
            f"INSERT INTO {self.table} SELECT p, 1 FROM unnest($1::bigint[]) p"
            f" ON CONFLICT (position) DO UPDATE SET n = {self.table}.n + 1",
            [e.position for e in events],
        )
        self.progress += len(events)

    async def applied(self, conn: Any) -> Counter[int]:
        return Counter(dict(await conn.fetch(f"SELECT position, n FROM {self.table}")))


class Reconnects(Hook):
    """Counts on_projection_reconnect calls."""

    def __init__(self) -> None:
        self.calls = 0

    def on_projection_reconnect(
        self, projection: str, error: BaseException, attempt: int, delay: float
    ) -> None:
        self.calls += 1


async def append_retrying(store: Any, n: int, offset: int) -> int:
    """Append ``n`` events in appends of 50 (retrying while the server comes back)."""
    last = 0
    for start in range(0, n, 50):
        batch = new_events(min(50, n - start), offset=offset + start)
        for _ in range(200):
            try:
                last = (await store.append(batch)).last_position
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the store did not come back")
    return last


async def terminate_backends(dsn: str) -> int:
    """Terminate every other client backend of the test database; how many."""
    conn = await asyncpg.connect(dsn)
    try:
        return len(
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            )
        )
    finally:
        await conn.close()


class StateLog:
    """Samples status() of one projection and keeps the sequence of distinct states."""

    def __init__(self, runner: ProjectionRunner, name: str) -> None:
        self.runner, self.name = runner, name
        self.states: list[str] = []
        self.task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            state = (await self.runner.status())[self.name].state
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            await asyncio.sleep(0.01)

    async def stop(self) -> list[str]:
        if self.task.done():  # status() raised (e.g. while the server was down)
            self.task.result()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.states


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("phase", ["catch_up", "live"])
@pytest.mark.parametrize("fault", ["terminate", "restart"])
@pytest.mark.parametrize("mode", ["plain", "transactional"])
async def test_runner_survives_store_fault(
    postgres_server: Any,
    postgres_store: Any,
    postgres_dsn: str,
    mode: str,
    fault: str,
    phase: str,
) -> None:
    if fault == "restart" and not postgres_server.can_restart:
        pytest.skip("the server comes from EVENTCORE_TEST_DSN and is not restarted")
    store = postgres_store
    store.poll_interval = 0.2
    admin = await asyncpg.connect(postgres_dsn)
    projection: Any = Plain() if mode == "plain" else Transactional(store.schema)
    if mode == "transactional":
        await projection.setup(admin)
    await admin.close()
    await append_retrying(store, TOTAL if phase == "catch_up" else 100, 0)
    hook = Reconnects()
    add_hook(hook)
    # A first delay long enough for the sampler to see the state; no jitter.
    policy = ReconnectPolicy(initial_delay=0.2, max_delay=0.5, jitter=0.0)
    runner = ProjectionRunner(
        store, projection, page_size=50, poll_interval=0.2, lock_check_interval=0.2,
        reconnect=policy,
    )  # fmt: skip
    try:
        async with runner:
            log = StateLog(runner, projection.name)
            if phase == "catch_up":
                await wait_until(lambda: projection.progress >= 300)
            else:
                await runner.wait_for(await store.head())
                await wait_until(lambda: log.states[-1:] == ["live"])
            before = projection.progress
            if fault == "terminate":
                assert await terminate_backends(postgres_dsn) > 0
            else:
                await asyncio.to_thread(postgres_server.restart)
            if phase == "catch_up":
                assert before < TOTAL  # the fault hit the catch-up, not after it
            # An idle live runner notices at its next store call or lock check.
            await wait_until(lambda: hook.calls >= 1)
            last = await append_retrying(store, MORE, 10_000)
            await runner.wait_for(last, timeout=60)
            await wait_until(lambda: log.states[-1:] == ["live"])
            states = await log.stop()
            status = (await runner.status())[projection.name]
    finally:
        remove_hook(hook)
    assert hook.calls >= 1
    assert "reconnecting" in states and states[-1] == "live", states
    if phase == "catch_up":
        assert states.index("catching_up") < states.index("reconnecting"), states
    else:
        assert states.index("live") < states.index("reconnecting"), states
    assert status.reconnecting_since is None and status.error is None
    assert status.position >= last and status.lag_events == 0

    expected = [e.position for e in await all_events(store)]
    conn = await asyncpg.connect(postgres_dsn)
    try:
        applied = await projection.applied(conn)
    finally:
        await conn.close()
    assert sorted(applied) == expected  # every event, no gap
    if mode == "transactional":
        assert set(applied.values()) == {1}  # exactly once
