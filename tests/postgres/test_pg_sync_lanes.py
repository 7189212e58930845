"""SyncPostgresStore's lanes: a call runs in the calling thread, on its own connection.

Each thread that calls the store gets a lane (its own event loop and connection) while a
slot of the store's ``max_size`` is free; the others go to the store's loop thread. These
tests check where calls run, the connection bound, that a thread's end and ``close()``
give the connections back, a lost connection, background snapshot writes and fork.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from tests.sync.adapter import sync_postgres_store

from eventcore import EventCoreError, UsageError, execute_sync, observe
from eventcore.examples.bank import Deposit, OpenAccount
from eventcore.examples.bank import registry as BANK
from eventcore.postgres import SyncPostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def sync_pg_factory(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``make(**options)``: a migrated SyncPostgresStore on a fresh schema (closed, and its
    schema dropped, after the test)."""
    return lambda **options: sync_postgres_store(request, **options)


def _fetchval(dsn: str, query: str, *args: Any) -> Any:
    """One statement on a connection of its own (from a thread that runs no loop)."""

    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _backends(dsn: str) -> int:
    """Open store connections on the server (the pools', not LISTEN/NOTIFY's). A backend
    whose client left mid-``pg_sleep`` ends only with the sleep: not counted."""
    return int(
        _fetchval(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'eventcore' "
            "AND query NOT LIKE '%pg_sleep%'",
        )
    )


def _settled(dsn: str, want: int, timeout: float = 10.0) -> int:
    """``_backends`` once it equals ``want`` (a closed client's backend ends soon after)."""
    deadline = time.monotonic() + timeout
    while (n := _backends(dsn)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


class Where(observe.Hook):
    """Records the thread each command's ``after_execute`` hook ran in."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def after_execute(self, report: Any) -> None:
        self.threads.append(threading.get_ident())


@pytest.fixture
def where() -> Any:
    hook = Where()
    observe.add_hook(hook)
    yield hook
    observe.remove_hook(hook)


def _lanes(store: SyncPostgresStore) -> Any:
    lt = store._holder[0]
    assert lt is not None
    return lt.lanes


def _backend_pid(store: SyncPostgresStore) -> int:
    """The server process of the connection the calling thread's store calls use."""

    async def pid() -> int:
        return int(await (await store._store._get_pool()).fetchval("SELECT pg_backend_pid()"))

    return store._run(pid())


def _free(store: SyncPostgresStore) -> int:
    return int(_lanes(store).store._pool_slots.free)


def test_a_command_runs_in_the_calling_thread(
    sync_pg_factory: Callable[..., Any], where: Where
) -> None:
    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))
    execute_sync(store, Deposit(account="a", amount=5))
    assert where.threads == [threading.get_ident()] * 2  # no hop to the loop thread
    assert store.read_stream("a")[-1].version == 2
    assert len(_lanes(store).all) == 1


def test_threads_beyond_the_free_slots_use_the_loop_thread(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any], where: Where
) -> None:
    before = _settled(postgres_dsn, _backends(postgres_dsn))
    store = sync_pg_factory(registry=BANK, max_size=3)
    loop_ident = store._holder[0].thread.ident
    threads, per_thread = 6, 5
    errors: list[BaseException] = []
    go = threading.Barrier(threads)
    peak = [0]

    def client(k: int) -> None:
        try:
            go.wait()
            execute_sync(store, OpenAccount(account=f"t{k}", owner="x"))
            for _ in range(per_thread):
                execute_sync(store, Deposit(account=f"t{k}", amount=1))
                peak[0] = max(peak[0], _backends(postgres_dsn) - before)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors
    assert all(store.stream_version(f"t{k}") == 1 + per_thread for k in range(threads))
    # Never more connections than max_size, lanes and the loop thread's pool together.
    assert 1 <= peak[0] <= 3
    assert _free(store) >= 0
    ran = set(where.threads)
    assert loop_ident in ran  # the threads that found no slot
    assert len(ran - {loop_ident}) >= 1  # and some ran in their own thread


def test_a_thread_that_ends_gives_its_connection_back(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any], where: Where
) -> None:
    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="main", owner="m"))  # the main thread's lane
    free, lanes = _free(store), len(_lanes(store).all)
    backends = _settled(postgres_dsn, _backends(postgres_dsn))
    idents: list[int] = []

    def client() -> None:
        idents.append(threading.get_ident())
        execute_sync(store, OpenAccount(account=f"worker-{len(idents)}", owner="w"))

    for _ in range(3):  # each thread a lane of its own, closed when it ends
        thread = threading.Thread(target=client)
        thread.start()
        thread.join(30)
        gc.collect()
        assert len(_lanes(store).all) == lanes and _free(store) == free
        assert _settled(postgres_dsn, backends) == backends
    assert where.threads[1:] == idents  # each in its own thread, on its own lane


def test_close_from_another_thread_closes_every_lane(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any]
) -> None:
    schema = sync_pg_factory().schema
    before = _settled(postgres_dsn, _backends(postgres_dsn))
    store = SyncPostgresStore.connect(postgres_dsn, schema=schema, registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))  # a lane here
    entered = threading.Event()
    outcome: list[BaseException | object] = []

    def sleeper() -> None:
        async def slow() -> Any:  # a lane call still running when the store closes
            pool = await store._store._get_pool()
            entered.set()
            return await pool.fetchval("SELECT pg_sleep(5)")

        try:
            outcome.append(store._run(slow()))
        except BaseException as exc:
            outcome.append(exc)

    busy = threading.Thread(target=sleeper)
    busy.start()
    assert entered.wait(10)
    time.sleep(0.2)
    assert len(_lanes(store).all) == 2
    closer = threading.Thread(target=store.close)
    started = time.monotonic()
    closer.start()
    closer.join(20)
    busy.join(20)
    assert not closer.is_alive() and not busy.is_alive()
    assert time.monotonic() - started < 15
    [error] = outcome
    assert isinstance(error, UsageError) and "closed" in str(error)
    assert _settled(postgres_dsn, before) == before  # every connection closed
    with pytest.raises(UsageError, match="closed"):
        execute_sync(store, Deposit(account="a", amount=1))  # this thread's lane too
    with pytest.raises(UsageError, match="closed"):
        store.head()


def test_a_connection_lost_between_commands_is_replaced(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any]
) -> None:
    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))

    first = _backend_pid(store)
    assert _fetchval(postgres_dsn, "SELECT pg_terminate_backend($1)", first)
    time.sleep(0.2)
    # The lane's connection is dead: its first statement fails as StoreUnavailable (the
    # snapshot probe's: a warning, then a full fold) and the lane opens a new connection.
    result = execute_sync(store, Deposit(account="a", amount=5))
    assert [e.version for e in result.events] == [2]
    assert _backend_pid(store) != first
    assert store.stream_version("a") == 2


def test_a_connection_lost_mid_command_is_retried_or_typed(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any]
) -> None:
    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))

    victim = _backend_pid(store)
    killed: list[bool] = []

    class Kill(Deposit):
        """Kills the lane's connection between the command's read and its append."""

        def handle(self, state: Any) -> Any:
            if not killed:
                killed.append(True)
                done: list[Any] = []
                helper = threading.Thread(  # this thread runs the lane's loop
                    target=lambda: done.append(
                        _fetchval(postgres_dsn, "SELECT pg_terminate_backend($1)", victim)
                    )
                )
                helper.start()
                helper.join(10)
                assert done == [True]
                time.sleep(0.2)
            return super().handle(state)

    try:
        result = execute_sync(store, Kill(account="a", amount=5))
    except EventCoreError as exc:  # e.g. OutcomeUnknown: typed, never a driver error
        assert type(exc).__module__.startswith("eventcore")
    else:
        assert result.attempts >= 2
    assert killed == [True]
    assert store.stream_version("a") in (1, 2)  # written once at most
    execute_sync(store, Deposit(account="a", amount=1))  # the lane goes on
    assert _backend_pid(store) != victim


def test_a_lanes_snapshot_is_written_in_the_background_on_the_loop_thread(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any], where: Where
) -> None:
    store = sync_pg_factory(registry=BANK, snapshot_every=3, state_cache=0)
    snapshots = store.snapshots
    assert snapshots is not None
    loop_ident = store._holder[0].thread.ident
    saved_in: list[int] = []
    save = snapshots.store.save

    def spy(snapshot: Any) -> Any:
        saved_in.append(threading.get_ident())
        return save(snapshot)

    snapshots.store.save = spy
    execute_sync(store, OpenAccount(account="a", owner="ann"))
    for _ in range(6):
        taken = snapshots.written
        execute_sync(store, Deposit(account="a", amount=1))
        if snapshots.written > taken:
            break
    assert snapshots.written == taken + 1
    assert set(where.threads) == {threading.get_ident()}  # the commands: in this thread
    lane = _lanes(store).get()
    assert lane is not None and not asyncio.all_tasks(lane.loop)  # nothing left in the lane
    table = f'"{store.schema}".snapshots'
    deadline = time.monotonic() + 10
    while _fetchval(postgres_dsn, f"SELECT count(*) FROM {table}") != 1:
        assert time.monotonic() < deadline, "the snapshot was never written"
        time.sleep(0.05)
    assert saved_in == [loop_ident]  # the write: on the loop thread, in the background
    # A new store folds from it.
    again = sync_pg_factory(registry=BANK, schema=store.schema)
    execute_sync(again, Deposit(account="a", amount=1))
    assert again.snapshots.found == 1


def test_a_lane_append_wakes_a_waiter_on_the_loop_thread(
    sync_pg_factory: Callable[..., Any],
) -> None:
    store = sync_pg_factory(registry=BANK, poll_interval=30.0)  # only NOTIFY wakes it soon
    execute_sync(store, OpenAccount(account="a", owner="ann"))
    head = store.head()
    woke: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        store.wait_for_append(head, 20.0)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)  # the listener is up
    for _ in range(3):  # the notifier may skip one while it looks for listeners
        execute_sync(store, Deposit(account="a", amount=1))
        time.sleep(0.2)
    thread.join(25)
    assert woke and woke[0] < 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_a_forked_child_leaves_the_parents_lane_alone(sync_pg_factory: Callable[..., Any]) -> None:
    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="parent", owner="p"))

    parent_backend = _backend_pid(store)
    parent_lane = _lanes(store).get()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_fd)
            execute_sync(store, Deposit(account="parent", amount=5))
            mine = _backend_pid(store)
            lane = _lanes(store).get()
            ok = mine != parent_backend and lane is not None and lane is not parent_lane
            store.close()
            os.write(write_fd, b"ok" if ok else b"shared")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and answer == b"ok"
    assert _backend_pid(store) == parent_backend  # the same connection, untouched
    execute_sync(store, Deposit(account="parent", amount=1))
    assert store.stream_version("parent") == 3


@pytest.mark.skipif(sys.platform == "win32", reason="needs pthread_kill")
def test_ctrl_c_in_a_lane_call_cancels_it_and_the_lane_goes_on(
    sync_pg_factory: Callable[..., Any],
) -> None:
    import signal

    store = sync_pg_factory(registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))
    main = threading.main_thread()
    assert threading.current_thread() is main

    async def slow() -> Any:
        return await (await store._store._get_pool()).fetchval("SELECT pg_sleep(5)")

    timer = threading.Timer(0.3, signal.pthread_kill, (main.ident, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store._run(slow())
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    execute_sync(store, Deposit(account="a", amount=1))  # a new connection of the lane
    assert store.stream_version("a") == 2


def test_a_closed_store_is_freed_though_its_thread_lives_on(
    postgres_dsn: str, sync_pg_factory: Callable[..., Any]
) -> None:
    import weakref

    schema = sync_pg_factory().schema
    store = SyncPostgresStore.connect(postgres_dsn, schema=schema, registry=BANK)
    execute_sync(store, OpenAccount(account="a", owner="ann"))  # a lane in this thread
    inner = weakref.ref(_lanes(store).store)
    store.close()
    del store
    gc.collect()
    assert inner() is None  # this thread's locals do not keep the store (its cache) alive


def test_the_callers_context_reaches_the_hooks_on_both_paths(
    sync_pg_factory: Callable[..., Any],
) -> None:
    import contextvars

    store = sync_pg_factory(registry=BANK, max_size=2)  # one lane: a second thread overflows
    loop_ident = store._holder[0].thread.ident
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[tuple[str, bool]] = []

    class Hook(observe.Hook):
        def after_execute(self, report: Any) -> None:
            seen.append((var.get(), threading.get_ident() == loop_ident))

    def call(name: str) -> None:
        var.set(name)
        execute_sync(store, OpenAccount(account=name, owner="x"))

    hook = Hook()
    observe.add_hook(hook)
    try:
        call("main")  # takes the lane
        other = threading.Thread(target=call, args=("other",))
        other.start()
        other.join(30)
    finally:
        observe.remove_hook(hook)
    assert seen == [("main", False), ("other", True)]


def test_lanes_through_pgbouncer(
    pgbouncer: Any, sync_pg_factory: Callable[..., Any], where: Where
) -> None:
    schema = sync_pg_factory().schema  # migrated directly
    with SyncPostgresStore.connect(
        pgbouncer.dsn, schema=schema, registry=BANK, pgbouncer=True
    ) as store:
        execute_sync(store, OpenAccount(account="a", owner="ann"))
        errors: list[BaseException] = []

        def client(k: int) -> None:
            try:
                execute_sync(store, OpenAccount(account=f"t{k}", owner="x"))
                execute_sync(store, Deposit(account="a", amount=1))
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert not errors
        assert store.stream_version("a") == 4
        assert threading.get_ident() in where.threads  # the main thread ran in its lane
