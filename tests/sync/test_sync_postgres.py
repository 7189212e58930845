"""SyncPostgresStore: PostgreSQL from synchronous code, with the async store's semantics."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventcore import (
    NO_STREAM,
    BusinessRuleViolation,
    ConcurrencyConflict,
    ConfigurationError,
    MemoryStore,
    NewEvent,
    RetryPolicy,
    StoreUnavailable,
    UsageError,
    ValidationError,
    execute_sync,
    observe,
)
from eventcore.postgres import PostgresStore, SyncPostgresStore
from eventcore.store import LoopThreadStore, SyncEventStore, SyncStreamLifecycle

from ..bank_domain import Deposit, OpenAccount, Transfer, Withdraw

pytestmark = pytest.mark.postgres

THREAD_NAME = "eventcore-postgres-sync"


def _loop_threads() -> int:
    return sum(t.name == THREAD_NAME for t in threading.enumerate())


def test_it_is_a_sync_event_store(sync_pg: Any) -> None:
    assert isinstance(sync_pg, SyncEventStore)
    assert isinstance(sync_pg, LoopThreadStore)
    assert isinstance(sync_pg, SyncStreamLifecycle)
    assert not isinstance(MemoryStore(), LoopThreadStore)


def test_a_new_registry_reaches_the_store_it_runs(sync_pg: Any) -> None:
    from eventcore import EventRegistry

    registry = EventRegistry()
    sync_pg.registry = registry
    assert sync_pg.registry is registry and sync_pg.loop_store.registry is registry


def test_commands_run_with_the_async_semantics_and_typed_errors(sync_pg: Any) -> None:
    execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"))
    execute_sync(sync_pg, OpenAccount(account="acc-2", owner="bob"))
    result = execute_sync(sync_pg, Deposit(account="acc-1", amount=100))
    assert len(result.events) == 1 and result.attempts == 1
    execute_sync(sync_pg, Transfer(source="acc-1", target="acc-2", amount=30))
    with pytest.raises(BusinessRuleViolation, match="insufficient funds"):
        execute_sync(sync_pg, Withdraw(account="acc-1", amount=71))
    with pytest.raises(BusinessRuleViolation, match="already open"):
        execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"))
    with pytest.raises(ValidationError):
        execute_sync(sync_pg, Deposit(account="acc-1", amount=0))
    # The failed commands wrote nothing.
    assert [e.event_type.rsplit(".", 1)[-1] for e in sync_pg.read_stream("acc-1")] == [
        "AccountOpened",
        "Deposited",
        "Withdrawn",
    ]
    assert sync_pg.stream_version("acc-2") == 2
    log = sync_pg.read_all()
    assert len(log) == 5 and log[-1].position == sync_pg.head()
    assert sync_pg.read_stream_backwards("acc-1", limit=1)[0].data.amount == 30
    assert [e.event_id for e in sync_pg.read_events_by_id([log[0].event_id])] == [log[0].event_id]
    assert sync_pg.list_streams() == [("acc-1", 3), ("acc-2", 2)]
    assert [e.position for e in sync_pg.iter_all(page_size=2)] == [e.position for e in log]


def test_an_idempotency_key_replays_the_first_outcome(sync_pg: Any) -> None:
    first = execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"), idempotency_key="k1")
    again = execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"), idempotency_key="k1")
    assert again.replayed and not first.replayed
    assert sync_pg.stream_version("acc-1") == 1


def test_appends_check_expected_versions(sync_pg: Any) -> None:
    sync_pg.append([NewEvent("s", "T", b"1")], expected={"s": NO_STREAM})
    with pytest.raises(ConcurrencyConflict) as info:
        sync_pg.append([NewEvent("s", "T", b"2")], expected={"s": NO_STREAM})
    assert info.value.conflicts[0].actual == 1
    assert sync_pg.stream_version("s") == 1


def test_execute_sync_on_the_async_store_names_sync_postgres_store(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)  # never opened: refused before any I/O
    with pytest.raises(UsageError, match="SyncPostgresStore") as info:
        execute_sync(store, OpenAccount(account="acc-1", owner="ann"))
    assert "await execute(store, command)" in str(info.value)
    assert "coroutine" not in str(info.value)
    memory = MemoryStore()
    with pytest.raises(UsageError, match="AsyncMemoryStore is asynchronous"):
        execute_sync(memory.aio, OpenAccount(account="acc-1", owner="ann"))  # type: ignore[arg-type]
    assert memory.head() == 0


async def test_a_call_inside_a_running_event_loop_is_a_usage_error(sync_pg: Any) -> None:
    with pytest.raises(UsageError, match="inside a running event loop"):
        sync_pg.head()
    with pytest.raises(UsageError, match="await execute"):
        execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"))
    # No deadlock, nothing written: the store still answers from another thread.
    assert await asyncio.to_thread(sync_pg.head) == 0


def test_a_call_from_the_stores_own_loop_is_a_usage_error(sync_pg: Any) -> None:
    async def nested() -> Any:
        return sync_pg.head()  # would wait for its own loop forever

    with pytest.raises(UsageError, match="inside a running event loop"):
        sync_pg.run_on_loop(nested())
    assert sync_pg.head() == 0


def test_options_are_checked_in_the_caller(postgres_dsn: str) -> None:
    threads = _loop_threads()
    with pytest.raises(ConfigurationError):
        SyncPostgresStore("mysql://nope")
    with pytest.raises(ValidationError):
        SyncPostgresStore(postgres_dsn, max_size=0)
    with pytest.raises(UsageError, match="own pool"):
        SyncPostgresStore(postgres_dsn, pool=object())
    assert _loop_threads() == threads  # no thread left behind


def test_close_and_the_context_manager_end_the_thread(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any]
) -> None:
    schema = sync_pg_factory().schema  # migrated (closed by the fixture)
    threads = _loop_threads()
    with SyncPostgresStore.connect(postgres_dsn, schema=schema) as store:
        assert _loop_threads() == threads + 1
        execute_sync(store, OpenAccount(account="acc-1", owner="ann"))
    assert _loop_threads() == threads
    with pytest.raises(UsageError, match="closed"):
        store.head()
    with pytest.raises(UsageError, match="closed"):
        execute_sync(store, Deposit(account="acc-1", amount=1))
    store.close()  # idempotent
    with SyncPostgresStore.connect(postgres_dsn, schema=schema) as again:
        assert again.stream_version("acc-1") == 1


def test_close_wakes_the_calls_in_flight_with_a_usage_error(
    postgres_dsn: str, sync_pg: Any
) -> None:
    store = SyncPostgresStore.connect(postgres_dsn, schema=sync_pg.schema)
    outcome: list[BaseException | int] = []

    def waiter() -> None:
        try:
            outcome.append(store.wait_for_append(store.head(), 60.0))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)  # the waiter is blocked on the loop
    started = time.monotonic()
    store.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 10
    [error] = outcome
    assert isinstance(error, UsageError) and "closed" in str(error)


def test_a_dropped_store_ends_its_thread(postgres_dsn: str, sync_pg: Any) -> None:
    threads = _loop_threads()
    store = SyncPostgresStore.connect(postgres_dsn, schema=sync_pg.schema)
    assert store.head() == 0
    assert _loop_threads() == threads + 1
    del store
    gc.collect()
    deadline = time.monotonic() + 10
    while _loop_threads() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _loop_threads() == threads


def test_connect_to_an_unreachable_server_fails_and_leaves_no_thread() -> None:
    threads = _loop_threads()
    with pytest.raises(StoreUnavailable):
        SyncPostgresStore.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    assert _loop_threads() == threads


def test_several_threads_share_one_store(sync_pg_factory: Callable[..., Any]) -> None:
    store = sync_pg_factory(max_size=4)
    execute_sync(store, OpenAccount(account="shared", owner="ann"))
    per_thread, threads = 15, 8
    errors: list[BaseException] = []
    go = threading.Barrier(threads)
    patient = RetryPolicy(max_attempts=100, initial_delay=0.001, max_delay=0.02)

    def client(k: int) -> None:
        try:
            go.wait()
            execute_sync(store, OpenAccount(account=f"own-{k}", owner="x"))
            for _ in range(per_thread):
                # Eight writers on one stream: conflicts, retried from fresh state.
                execute_sync(store, Deposit(account="shared", amount=1), retry=patient)
                execute_sync(store, Deposit(account=f"own-{k}", amount=2))
                store.read_stream(f"own-{k}")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors
    assert store.stream_version("shared") == 1 + threads * per_thread
    assert all(store.stream_version(f"own-{k}") == 1 + per_thread for k in range(threads))
    assert len(store.read_all()) == 1 + threads * (1 + 2 * per_thread)


@pytest.mark.skipif(sys.platform == "win32", reason="needs pthread_kill")
def test_ctrl_c_during_a_call_cancels_it_and_the_store_goes_on(sync_pg: Any) -> None:
    main = threading.main_thread()
    assert threading.current_thread() is main
    timer = threading.Timer(0.3, signal.pthread_kill, (main.ident, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sync_pg.wait_for_append(sync_pg.head(), 30.0)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10

    async def pending() -> int:
        await asyncio.sleep(0.05)  # the cancellation was scheduled before this call
        me = asyncio.current_task()
        return len([t for t in asyncio.all_tasks() if t is not me and not t.done()])

    assert sync_pg.run_on_loop(pending()) <= 1  # at most the listener's own task
    execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"))
    assert sync_pg.wait_for_append(0, 1.0) == sync_pg.head() > 0


def test_the_callers_context_goes_with_the_call(sync_pg: Any) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    class Hook(observe.Hook):
        def after_execute(self, report: Any) -> None:
            seen.append(var.get())

    hook = Hook()
    observe.add_hook(hook)
    try:
        var.set("req-42")
        execute_sync(sync_pg, OpenAccount(account="acc-1", owner="ann"))
    finally:
        observe.remove_hook(hook)
    assert seen == ["req-42"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_a_forked_child_opens_its_own_loop_and_pool(sync_pg: Any) -> None:
    execute_sync(sync_pg, OpenAccount(account="parent", owner="p"))  # the pool is open
    parent_loop = sync_pg.loop
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            assert sync_pg.loop is not parent_loop
            execute_sync(sync_pg, OpenAccount(account="child", owner="c"))
            execute_sync(sync_pg, Deposit(account="parent", amount=5))
            versions = (sync_pg.stream_version("child"), sync_pg.stream_version("parent"))
            sync_pg.close()
            os.write(write_fd, repr(versions).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"(1, 2)"
    # The parent's connections were left alone: its store goes on.
    assert sync_pg.loop is parent_loop
    execute_sync(sync_pg, Deposit(account="parent", amount=1))
    assert sync_pg.stream_version("parent") == 3
    assert sync_pg.stream_version("child") == 1
