"""Projection runners ride out store failures (issue 10, section 1), on the in-memory store.

A :class:`~eventcore.testing.FaultyStore` fails reads on a script; checkpoint stores fail
on purpose. The PostgreSQL counterparts (killed connections, a server restart) are in
tests/postgres/test_pg_projection_faults.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.projection.conftest import all_events, write

from eventcore import ProjectionError, StoreError, StoreUnavailable
from eventcore.observe import Hook, add_hook, remove_hook
from eventcore.projection import (
    FailureStrategy,
    MemoryCheckpointStore,
    ProjectionRunner,
    ReconnectPolicy,
)
from eventcore.testing import FaultyStore

FAST = ReconnectPolicy(initial_delay=0.01, jitter=0.0)


class Recorder:
    """Records every position it is given (duplicates included)."""

    def __init__(self, name: str = "recorder", *, fail_at: int | None = None) -> None:
        self.name = name
        self.seen: list[int] = []
        self.fail_at = fail_at

    def apply(self, event: Any) -> None:
        if event.position == self.fail_at:
            # the projection's own code failing with a store-like error: its strategy
            raise StoreUnavailable("the read model's own database is down")
        self.seen.append(event.position)


class Reconnects(Hook):
    """Collects on_projection_reconnect calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, float]] = []

    def on_projection_reconnect(
        self, projection: str, error: BaseException, attempt: int, delay: float
    ) -> None:
        self.calls.append((projection, str(error), attempt, delay))


@pytest.fixture
def reconnects() -> Any:
    hook = Reconnects()
    add_hook(hook)
    yield hook
    remove_hook(hook)


async def positions(store: Any) -> list[int]:
    return [e.position for e in await all_events(store)]


async def wait_state(runner: ProjectionRunner, state: str, timeout: float = 5.0) -> Any:
    """Poll status() until the (only) projection is in ``state``; that status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        (status,) = (await runner.status()).values()
        if status.state == state:
            return status
        assert loop.time() < deadline, f"never reached {state!r}; last {status}"
        await asyncio.sleep(0.005)


async def test_read_failures_during_catch_up_are_retried(reconnects: Reconnects) -> None:
    faulty = FaultyStore(read_faults=[None, "unavailable", None, "unavailable", "unavailable"])
    await write(faulty.aio, 100)
    rec = Recorder()
    runner = ProjectionRunner(faulty.aio, rec, page_size=20, reconnect=FAST)
    await runner.run_until_caught_up()  # today: StoreUnavailable out of the runner
    assert rec.seen == await positions(faulty.aio)  # every event once, in order
    assert [c[2] for c in reconnects.calls] == [1, 1, 2]  # attempts per outage
    assert all(c[0] == "recorder" and "injected" in c[1] for c in reconnects.calls)
    assert (await runner.status())["recorder"].reconnecting_since is None


async def test_live_runner_reconnects_and_status_says_so(reconnects: Reconnects) -> None:
    faulty = FaultyStore()
    store = faulty.aio
    first = await write(store, 30)
    rec = Recorder()
    slow = ReconnectPolicy(initial_delay=0.3, multiplier=1.0, jitter=0.0)
    async with ProjectionRunner(store, rec, page_size=10, poll_interval=0.05, reconnect=slow) as r:
        await r.wait_for(first)
        faulty.read_faults = ["unavailable"] * 3
        last = await write(store, 20, offset=30)
        status = await wait_state(r, "reconnecting")
        assert status.reconnecting_since is not None and status.reconnect_attempts >= 1
        assert "injected" in (status.last_error or "") and status.error is None
        assert status.position == first  # status answers while the store fails
        await r.wait_for(last)  # today: times out, the background task died silently
        status = await wait_state(r, "live")
        assert (status.reconnecting_since, status.last_error, status.reconnect_attempts) == (
            None,
            None,
            0,
        )
        assert status.position == last and status.lag_events == 0
    assert rec.seen == await positions(store)  # no gap, no duplicate
    assert len(reconnects.calls) >= 1


class FlakyCheckpoints(MemoryCheckpointStore):
    """Fails chosen calls to save (1-based) with StoreUnavailable or ``error``."""

    def __init__(self, failing_saves: set[int], error: Exception | None = None) -> None:
        super().__init__()
        self.failing = failing_saves
        self.error = error
        self.saves = 0

    async def save(self, name: str, position: int) -> None:
        self.saves += 1
        if self.saves in self.failing:
            raise self.error or StoreUnavailable("injected: checkpoint save failed")
        await super().save(name, position)


async def test_failed_checkpoint_save_redelivers_without_gap() -> None:
    store = FaultyStore().aio
    await write(store, 100)
    rec = Recorder()
    cps = FlakyCheckpoints({2, 3})
    runner = ProjectionRunner(store, rec, checkpoints=cps, page_size=20, reconnect=FAST)
    await runner.run_until_caught_up()
    expected = await positions(store)
    assert sorted(set(rec.seen)) == expected  # no gap
    # at least once: the page whose checkpoint was lost came again (twice: 2 failures)
    assert rec.seen == expected[:40] + expected[20:40] * 2 + expected[40:]
    assert cps.positions["recorder"] == expected[-1]


async def test_gives_up_per_policy_and_run_forever_raises() -> None:
    faulty = FaultyStore(read_faults=["unavailable"] * 100)
    await write(faulty.aio, 10)
    policy = ReconnectPolicy(initial_delay=0.01, jitter=0.0, max_attempts=3)
    runner = ProjectionRunner(faulty.aio, Recorder(), reconnect=policy)
    with pytest.raises(ProjectionError, match="gave up") as info:
        await asyncio.wait_for(runner.run_forever(), 5)  # today: never returns
    assert isinstance(info.value.__cause__, StoreUnavailable)
    status = (await runner.status())["recorder"]
    assert status.state == "failed" and "gave up" in (status.error or "")
    assert "injected" in (status.error or "")


async def test_async_with_raises_on_exit_when_the_runner_stopped_for_good() -> None:
    faulty = FaultyStore(read_faults=["unavailable"] * 100)
    await write(faulty.aio, 10)
    policy = ReconnectPolicy(initial_delay=0.01, jitter=0.0, give_up_after=0.1)
    with pytest.raises(ProjectionError, match="gave up"):
        async with ProjectionRunner(faulty.aio, Recorder(), reconnect=policy) as runner:
            with pytest.raises(ProjectionError):
                await runner.wait_for(10, timeout=5)
            assert (await runner.status())["recorder"].state == "failed"


async def test_store_error_that_is_not_transient_stops_and_says_why() -> None:
    store = FaultyStore().aio
    await write(store, 50)
    cps = FlakyCheckpoints({1}, StoreError("permission denied for table projection_checkpoints"))
    with pytest.raises(ProjectionError, match="permission denied") as info:
        async with ProjectionRunner(store, Recorder(), checkpoints=cps, reconnect=FAST) as r:
            await wait_state(r, "failed")
    assert isinstance(info.value.__cause__, StoreError)


async def test_projection_own_store_unavailable_goes_to_its_strategy(
    reconnects: Reconnects,
) -> None:
    store = FaultyStore().aio
    await write(store, 30)
    bad = (await positions(store))[12]
    rec = Recorder(fail_at=bad)
    with pytest.raises(ProjectionError) as info:
        await ProjectionRunner(store, rec, reconnect=FAST).run_until_caught_up()
    assert info.value.position == bad and reconnects.calls == []
    rec = Recorder(fail_at=bad)
    rec.on_error = FailureStrategy.skip()  # type: ignore[attr-defined]
    runner = ProjectionRunner(store, rec, reconnect=FAST)
    await runner.run_until_caught_up()
    assert bad not in rec.seen and [d.position for d in await runner.dead_letters(rec.name)] == [
        bad
    ]
    assert reconnects.calls == []


def test_reconnect_policy_delays_and_validation() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, multiplier=2.0, max_delay=0.5, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 10)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = ReconnectPolicy(initial_delay=1.0, multiplier=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.0 for _ in range(100))
    assert ReconnectPolicy().give_up_after is None and ReconnectPolicy().max_attempts is None
    for bad in ({"multiplier": 0.5}, {"jitter": 2.0}, {"max_attempts": 0}, {"give_up_after": -1}):
        with pytest.raises(ValueError):
            ReconnectPolicy(**bad)


async def test_logging_and_prometheus_hooks_report_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from eventcore.logs import LoggingHook
    from eventcore.metrics import PrometheusHook

    metrics = prometheus_client.CollectorRegistry()
    hooks = [PrometheusHook(metrics), LoggingHook()]
    for hook in hooks:
        add_hook(hook)
    try:
        faulty = FaultyStore(read_faults=["unavailable", "unavailable"])
        await write(faulty.aio, 10)
        with caplog.at_level("WARNING", logger="eventcore"):
            await ProjectionRunner(faulty.aio, Recorder(), reconnect=FAST).run_until_caught_up()
    finally:
        for hook in hooks:
            remove_hook(hook)
    count = metrics.get_sample_value(
        "eventcore_projection_reconnects_total", {"projection": "recorder"}
    )
    assert count == 2
    records = [r for r in caplog.records if getattr(r, "attempt", None) is not None]
    assert [(r.levelname, r.projection, r.attempt) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "recorder", 1),
        ("WARNING", "recorder", 2),
    ]
    assert "injected" in records[0].error  # type: ignore[attr-defined]


class FakeConnection:
    def __init__(self, closed: bool) -> None:
        self.closed = closed

    def is_closed(self) -> bool:
        return self.closed


def test_transaction_failures_are_told_from_the_projections_own() -> None:
    from eventcore.postgres._sql import CheckpointQueries
    from eventcore.postgres.checkpoint import PostgresCheckpointTransaction
    from eventcore.projection.reconnect import transaction_failure

    queries = CheckpointQueries("eventcore")
    live = PostgresCheckpointTransaction(FakeConnection(False), queries)
    dead = PostgresCheckpointTransaction(FakeConnection(True), queries)
    # the projection's own errors on a live connection: its failure strategy
    assert transaction_failure(ValueError("bug"), live) is None
    assert transaction_failure(OSError("its own file"), live) is None
    assert transaction_failure(StoreError("constraint"), live) is None
    # whatever it raised once the connection died: the store's failure (reconnect)
    assert isinstance(transaction_failure(ValueError("bug"), dead), StoreUnavailable)
    assert isinstance(transaction_failure(OSError("reset"), dead), StoreUnavailable)
    # no transaction yet (taking the connection failed): the store's own error decides
    refused = StoreUnavailable("connection refused")
    assert transaction_failure(refused, None) is refused
    assert transaction_failure(StoreError("permission denied"), None) is None
    asyncpg = pytest.importorskip("asyncpg")
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    assert isinstance(transaction_failure(lost, live), StoreUnavailable)
    unique = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert transaction_failure(unique, live) is None
